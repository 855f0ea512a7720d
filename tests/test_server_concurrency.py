"""Poems written side by side share one model and the scanner's memos: they must come out exactly as
they do one at a time, the shared caches must stay whole while a worker empties them, and a client
that hangs up in the middle of a constrained hemistich must free its worker.

A tiny untrained GPT with the shipped tokenizer stands in for the model, as in tests/test_server.py.
Every wait here only guards against a hang (conftest.wait_until); nothing asserts a speed."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from conftest import FAMOUS_COUPLETS as VERSES
from conftest import live_url, untrained_poetry, wait_until

from persian_poetry.data.corpus import OFFERED_POETS
from persian_poetry.prosody import scansion
from persian_poetry.prosody.scan import scan
from persian_poetry.serve import app as server_module
from persian_poetry.serve.app import create_app
from persian_poetry.writing import generate, verse
from persian_poetry.writing.request import PoemRequest

POETS = ("hafez", "saadi", "moulavi", "attar")


def final_poem(text: str) -> dict:
    """The poem event's poem from a text/event-stream body."""
    blocks = [dict(line.split(": ", 1) for line in block.split("\n")) for block in text.strip().split("\n\n")]
    poem = next(b for b in blocks if b["event"] == "poem")
    return json.loads(poem["data"])["poem"]


def same_poem(poem: dict) -> dict:
    """What must agree between two runs of one request (not the time it took)."""
    return {k: v for k, v in poem.items() if k != "seconds"}


def reset_shared_caches() -> None:
    """Start cold, so that the workers race to build the caches, not only to read them."""
    scansion.trim_word_caches(0)
    verse._prefixes.cache_clear()


def test_eight_poems_in_four_workers_are_the_poems_of_eight_sequential_runs(monkeypatch):
    poetry = untrained_poetry()  # a model of its own: its decode cache is built by the workers, at once
    bodies = [{"poet": POETS[i % len(POETS)], "couplets": 1, "seed": 100 + i} for i in range(8)]
    # Every poem empties the scanner's memos before it starts (the server's bound, at 0), while the
    # other workers read and fill them.
    monkeypatch.setattr(server_module, "SCANNER_CACHE_ENTRIES", 0)
    reset_shared_caches()
    app = create_app(poetry, workers=4, queue=4)
    with live_url(app) as url, httpx.Client(base_url=url, timeout=300) as http:
        def ask(body: dict) -> dict:
            response = http.post("/api/generate", json=body)
            assert response.status_code == 200, response.text
            return final_poem(response.text)

        with ThreadPoolExecutor(len(bodies)) as clients:
            side_by_side = list(clients.map(ask, bodies))
        health = http.get("/healthz").json()
        assert health["served"] == 8 and health["failed"] == 0 and health["refused"] == 0
        assert health["lanes"]["poems"]["workers"] == 4

    reset_shared_caches()
    with torch.no_grad():
        one_at_a_time = [write_poem_dict(poetry, body) for body in bodies]
    assert [same_poem(p) for p in side_by_side] == [same_poem(p) for p in one_at_a_time]
    assert len({tuple(map(tuple, p["couplets"])) for p in side_by_side}) == 8  # eight poems, not one eight times


def write_poem_dict(poetry, body: dict) -> dict:
    return generate.write_poem(poetry, PoemRequest(**body)).to_dict()


def test_threads_writing_with_one_model_agree_with_one_thread():
    # The library alone, without the server: four threads calling write_poem on one loaded model.
    poetry = untrained_poetry()
    requests = [PoemRequest(poet=POETS[i % len(POETS)], couplets=1, seed=200 + i, free=i % 2 == 1) for i in range(8)]

    def write(request: PoemRequest) -> dict:
        with torch.no_grad():
            return same_poem(generate.write_poem(poetry, request).to_dict())

    reset_shared_caches()
    barrier = threading.Barrier(4)

    def write_together(request: PoemRequest) -> dict:
        if requests.index(request) < 4:
            barrier.wait(60)  # the first four start at the same moment
        return write(request)

    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(write_together, requests))
    reset_shared_caches()
    assert together == [write(r) for r in requests]


def test_the_scanners_memos_stay_whole_while_another_thread_empties_them():
    expected = [scan(text).to_dict() for text in VERSES]
    stop = threading.Event()
    trims = 0

    def trim():
        nonlocal trims
        while not stop.is_set():
            scansion.trim_word_caches(0)
            trims += 1
            stop.wait(0.001)

    trimmer = threading.Thread(target=trim)
    trimmer.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(lambda text: scan(text).to_dict(), VERSES * 4))
    finally:
        stop.set()
        trimmer.join(60)
    assert trims > 0 and results == expected * 4
    # What the bound counts is what the memos hold: every set of readings and every node under it.
    for text in VERSES:
        scan(text)
    moves = scansion._compiled().moves
    lru = sum(f.cache_info().currsize for f in scansion._WORD_MEMOS)
    assert scansion.word_cache_entries() == lru + len(moves) + sum(len(by_node) for by_node in moves.values())
    assert sum(len(by_node) for by_node in moves.values()) > 0


def test_the_writers_prefix_sets_have_room_for_every_poet():
    # One set per offered poet, and one (None) for the classical poets together: all kept, so that
    # poems by many poets in turn do not rebuild them.
    assert verse._prefixes.cache_info().maxsize >= len(OFFERED_POETS) + 1


@pytest.fixture
def held_mid_hemistich(monkeypatch):
    """A model whose 5th one-token step (inside the first hemistich of a constrained poem, which
    streams nothing until the hemistich is done) waits until the test lets it go. Yields
    (poetry, reached, go, counts): `reached` is set when the step is reached, `go` lets it go on,
    counts["steps"] counts steps, counts["hemistichs"] hemistichs finished."""
    poetry = untrained_poetry()
    reached, go = threading.Event(), threading.Event()
    counts = {"steps": 0, "hemistichs": 0}
    real_step, real_write = poetry.model.decode_step, verse.VerseWriter.write

    def step(*args, **kwargs):
        counts["steps"] += 1
        if counts["steps"] == 5:
            reached.set()
            go.wait(60)
        return real_step(*args, **kwargs)

    def write(self, *args, **kwargs):
        result = real_write(self, *args, **kwargs)
        counts["hemistichs"] += 1
        return result

    poetry.model.decode_step = step  # on the instance: the server's stoppable view calls it
    monkeypatch.setattr(verse.VerseWriter, "write", write)
    yield poetry, reached, go, counts
    go.set()


def test_a_client_that_hangs_up_mid_hemistich_frees_its_worker(held_mid_hemistich):
    poetry, reached, go, counts = held_mid_hemistich
    app = create_app(poetry, workers=1, queue=0)
    long_poem = {"couplets": 40, "seed": 3}  # constrained
    with live_url(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        with http.stream("POST", "/api/generate", json=long_poem) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines) == "event: start"
            wait_until(reached.is_set, "the poem's worker to be inside its first hemistich")
            assert counts["hemistichs"] == 0
            assert http.get("/healthz").json()["in_flight"] == 1
        # The client has gone, mid-hemistich. Let the worker go on: it must stop, not write 80 hemistichs.
        go.set()
        health = wait_until(lambda: (h := http.get("/healthz").json())["in_flight"] == 0 and h,
                            "the worker to be freed")
        assert health["cancelled"] == 1 and health["served"] == 0 and health["failed"] == 0
        assert counts["hemistichs"] <= 1  # stopped in the first hemistich, or at its end at the latest
        # The worker is free for the next poem.
        assert http.post("/api/generate", json={"couplets": 1, "seed": 4, "free": True}).status_code == 200
        assert http.get("/healthz").json()["served"] == 1


def test_a_poem_stops_at_the_next_step_of_the_model_once_its_reader_has_gone(held_mid_hemistich):
    # The same, without the network, so that when the reader goes is known exactly: while the
    # worker is held at its 5th step. It must take no further step.
    poetry, reached, go, counts = held_mid_hemistich
    lane = server_module.Lane("poems", "poems", 1, 0)
    cancel, events = threading.Event(), []
    request = PoemRequest(couplets=40, seed=3)
    request.seed = generate.validate_request(poetry, request)[1]
    worker = threading.Thread(target=server_module._write_poem,
                              args=(lane, poetry, request, lambda kind, data=None: events.append(kind), cancel, "t"))
    worker.start()
    wait_until(reached.is_set, "the worker to be inside its first hemistich")
    cancel.set()  # what the stream does when its client goes away
    go.set()
    worker.join(60)
    assert not worker.is_alive()
    assert counts["steps"] == 5 and counts["hemistichs"] == 0  # stopped mid-hemistich, at once
    assert events == [None] and lane.health()["cancelled"] == 1
