"""The server against hostile clients: it listens on this machine only unless told otherwise, a
request body over the limit is refused (declared or streamed in chunks) before it is read, bodies
are read strictly by their schema, and nothing outside the package's static/ and fonts/ is ever
served, however the path is spelled.

The traversal and chunked-body tests talk raw HTTP to a real uvicorn over loopback: an HTTP client
library would tidy "/static/../server.py" into "/server.py" before sending it, and the test
client has no sockets. A tiny untrained GPT stands in for the model, as in tests/test_server.py."""

from __future__ import annotations

import gc
import json
import logging
import socket
import threading

import pytest
import torch
from conftest import live_server, untrained_poetry, wait_until
from fastapi.testclient import TestClient

from persian_poetry.cli import build_parser, main
from persian_poetry.serve import app as server_module
from persian_poetry.serve.app import (
    MAX_BODY_BYTES,
    MAX_TABLE_SIDE,
    MAX_TEXT_CHARS,
    create_app,
    serve,
)
from persian_poetry.writing.bundle import PoetryModel

HAFEZ = "الا یا ایها الساقی ادر کاسا و ناولها\nکه عشق آسان نمود اول ولی افتاد مشکل‌ها"
SERVER_SOURCE = "def create_app"  # words of server.py, which must never come back
LOCAL = "http://localhost"  # a TestClient's base URL: a Host the app answers to


@pytest.fixture(scope="module")
def poetry() -> PoetryModel:
    return untrained_poetry()



@pytest.fixture(scope="module")
def port(poetry):
    with live_server(create_app(poetry)) as p:
        yield p


def raw_http(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send bytes exactly as given (head's lines joined with CRLF), read the answer until the
    server closes; returns (status, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def get(port: int, path: str) -> tuple[int, bytes]:
    return raw_http(port, f"GET {path} HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n")


# ---------------------------------------------------------------------------------------------
# Listening


def test_serve_listens_on_loopback_unless_told_otherwise(monkeypatch, poetry, capsys, caplog):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    monkeypatch.setattr("persian_poetry.writing.bundle.load_model", lambda *a, **k: poetry)
    assert build_parser().parse_args(["serve"]).host == "127.0.0.1"
    assert main(["serve"]) == 0  # `persian-poetry serve`, as a user types it
    assert calls[-1]["host"] == "127.0.0.1" and "http://127.0.0.1:8000/" in capsys.readouterr().err
    serve(poetry)
    assert calls[-1]["host"] == "127.0.0.1"
    with caplog.at_level(logging.WARNING, logger="persian_poetry.serve.app"):
        serve(poetry, host="0.0.0.0")
    assert calls[-1]["host"] == "0.0.0.0" and "anyone who can reach" in caplog.text


# ---------------------------------------------------------------------------------------------
# Request bodies


def test_a_body_over_the_limit_is_a_413_that_says_so(client):
    body = json.dumps({"text": "ا" * MAX_BODY_BYTES}).encode()
    for url in ("/api/scan", "/api/generate", "/api/explain/tokens", "/api/explain/attention"):
        response = client.post(url, content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == 413, url
        assert response.json()["message"] == f"body: the request body is over the limit of {MAX_BODY_BYTES} bytes"
        assert response.json()["detail"][0]["loc"] == ["body"]
    # A body of exactly the limit is read (and refused for what it says, not for its size); one
    # byte more is not.
    exact = b'{"text": "' + b"a" * (MAX_BODY_BYTES - 12) + b'"}'
    assert len(exact) == MAX_BODY_BYTES
    response = client.post("/api/scan", content=exact, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "at most" in response.json()["message"]
    response = client.post("/api/scan", content=exact + b" ", headers={"Content-Type": "application/json"})
    assert response.status_code == 413


def test_the_longest_valid_body_fits_under_the_limit(client):
    # Every character a JSON surrogate-pair escape (12 bytes): the largest body the schema allows.
    body = json.dumps({"text": "\U0001F339" * MAX_TEXT_CHARS}).encode()
    assert MAX_BODY_BYTES - 1024 > len(body) > 12 * MAX_TEXT_CHARS
    response = client.post("/api/explain/tokens", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200


def test_the_limit_is_in_the_schema(client):
    schema = client.get("/openapi.json").json()
    for path in ("/api/generate", "/api/scan", "/api/explain/tokens", "/api/explain/attention"):
        assert str(MAX_BODY_BYTES) in schema["paths"][path]["post"]["responses"]["413"]["description"]


def test_a_declared_length_over_the_limit_is_refused_unread(port):
    # Ten gigabytes announced, none sent: a server that waited for them would never answer, and
    # raw_http's socket would time out instead of reading the refusal.
    status, body = raw_http(port, "POST /api/scan HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
                                  "Content-Length: 10000000000\n")
    assert status == 413 and b"over the limit" in body


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit(port):
    # No Content-Length: chunks of 16 KiB, stopped (unfinished) just past the limit. The server
    # must answer 413 now rather than read on, and stay up for the next client.
    chunk = b"a" * 16384
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(MAX_BODY_BYTES // len(chunk) + 1))
    status, body = raw_http(port, "POST /api/scan HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
                                  "Transfer-Encoding: chunked\n", chunks)
    assert status == 413 and json.loads(body)["message"].endswith(f"over the limit of {MAX_BODY_BYTES} bytes")
    # A chunked body within the limit is read whole, as if it had come in one piece.
    text = json.dumps({"text": HAFEZ}).encode()
    pieces = [text[:7], text[7:50], text[50:]]
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    status, body = raw_http(port, "POST /api/scan HTTP/1.1\nHost: 127.0.0.1\nContent-Type: application/json\n"
                                  "Transfer-Encoding: chunked\nConnection: close\n", chunks)
    assert status == 200 and json.loads(body)["metre_id"] == 2


@pytest.mark.parametrize("body,words", [
    (b'{"text": "\xff\xfe"}', "not readable JSON"),  # not UTF-8
    (b"[" * 30000 + b"]" * 30000, "not readable JSON"),  # nested too deep for Python's parser
    (b'{"text": "abc', "JSON decode error"),
])
def test_an_unreadable_body_is_a_422(client, body, words):
    response = client.post("/api/scan", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and words in response.json()["message"]


@pytest.mark.parametrize("url,body,field", [
    ("/api/explain/attention", {"text": HAFEZ, "layer": False}, "layer"),  # a boolean is not a layer
    ("/api/generate", {"couplets": "2"}, "couplets"),  # a string is not a number
    ("/api/generate", {"free": 1}, "free"),
    ("/api/generate", {"metre": "م" * 121}, "metre"),
    ("/api/scan", {"text": ["a", "b"]}, "text"),
])
def test_bodies_are_read_strictly_by_their_schema(client, url, body, field):
    response = client.post(url, json=body)
    assert response.status_code == 422 and response.json()["message"].startswith(f"{field}")


def test_a_number_may_still_be_written_without_a_point(client):
    response = client.post("/api/generate", json={"couplets": 1, "temperature": 1, "top_p": 1, "free": True})
    assert response.status_code == 200 and "event: poem" in response.text


def test_the_positional_table_is_bounded(client):
    response = client.get("/api/explain/positions", params={"positions": MAX_TABLE_SIDE + 1, "dim": 8})
    assert response.status_code == 422 and response.json()["message"].startswith("positions: ")
    response = client.get("/api/explain/positions", params={"positions": 8, "dim": MAX_TABLE_SIDE + 1})
    assert response.status_code == 422 and response.json()["message"].startswith("dim: ")


# ---------------------------------------------------------------------------------------------
# Static files


@pytest.mark.parametrize("path", [
    "/static/../server.py",
    "/static/../../persian_poetry/server.py",
    "/static/%2e%2e/server.py",
    "/static/%2E%2E/server.py",
    "/static/..%2fserver.py",
    "/static/%2e%2e%2fserver.py",
    "/static/%252e%252e/server.py",  # encoded twice
    "/static/..\\server.py",
    "/static/..%5cserver.py",
    "/fonts/..%2f..%2fpersian_poetry/server.py",
    "/fonts/..%2fserver.py",
    "/fonts/../static/app.js",  # a file of ours, but not under /fonts
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/../../../../../../../../etc/passwd",
    "/fonts/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "//etc/passwd",
    "/server.py",
    "/static/",
    "/static/%00app.js",
])
def test_path_traversal_finds_nothing(port, path):
    status, body = get(port, path)
    assert status in (400, 404, 405), (path, status)
    assert SERVER_SOURCE.encode() not in body and b"root:" not in body and b"console.log" not in body


def test_the_raw_client_does_reach_our_own_files(port):
    # The control for the test above: the same requests, to files that are ours, succeed.
    status, body = get(port, "/static/app.js")
    assert status == 200 and b"fetch(" in body
    status, body = get(port, "/fonts/Vazirmatn-Regular.woff2")
    assert status == 200 and body[:4] == b"wOF2"


def test_a_symlink_planted_in_static_is_not_followed(tmp_path, monkeypatch, poetry):
    static = tmp_path / "static"
    static.mkdir()
    (static / "index.html").write_text("<html></html>", encoding="utf-8")
    (static / "ok.js").write_text("ours", encoding="utf-8")
    secret = tmp_path / "secret.txt"
    secret.write_text("not for the web", encoding="utf-8")
    (static / "leak.txt").symlink_to(secret)
    monkeypatch.setattr(server_module, "STATIC_DIR", static)
    with TestClient(create_app(poetry), base_url=LOCAL) as c:
        assert c.get("/static/ok.js").text == "ours"
        leak = c.get("/static/leak.txt")
        assert leak.status_code == 404 and "not for the web" not in leak.text


def test_an_app_started_twice_still_writes_poems(poetry):
    # Stopping the app stops its poem-writing threads; starting it again (a second test client,
    # a server restarted in the same process) must bring them back, not answer with an error.
    app = create_app(poetry)
    for _ in range(2):
        with TestClient(app, base_url=LOCAL) as c:
            response = c.post("/api/generate", json={"couplets": 1, "seed": 1, "free": True})
            assert response.status_code == 200 and "event: poem" in response.text


def test_poems_leave_no_tensors_behind(client):
    # A decoder run with autograd on keeps its KV cache alive in a reference cycle inside torch's
    # graph: memory that grows by a cache per poem and is never freed (the soak test found it).
    def graph_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if type(o) is torch.Tensor and o.grad_fn is not None)

    client.post("/api/generate", json={"couplets": 1, "seed": 0})  # first use: lazy imports, caches
    before = graph_tensors()
    for seed in range(1, 4):
        for free in (False, True):
            response = client.post("/api/generate", json={"couplets": 1, "seed": seed, "free": free})
            assert response.status_code == 200 and "event: poem" in response.text
    assert graph_tensors() == before


def test_a_queued_poem_whose_client_left_frees_its_place_at_once(poetry, monkeypatch):
    # One worker, one place in the queue. The first poem is held in the worker; the second waits
    # for it and its client hangs up. Its place must come back now, not when the worker is free,
    # or clients that give up fill the queue with poems nobody reads and the server answers 503.
    from persian_poetry.writing import generate

    release, real = threading.Event(), generate.write_poem

    def held(poetry, request, on_event=None):
        release.wait(20)
        return real(poetry, request, on_event=on_event)

    monkeypatch.setattr(generate, "write_poem", held)
    app = create_app(poetry, workers=1, queue=1)
    poem = {"couplets": 1, "seed": 2, "free": True}
    with live_server(app) as p:
        import httpx

        with httpx.Client(base_url=f"http://127.0.0.1:{p}", timeout=30) as http:
            with http.stream("POST", "/api/generate", json=poem) as first:
                first_lines = first.iter_lines()  # kept: a dropped line iterator closes the stream
                assert next(first_lines) == "event: start"
                with http.stream("POST", "/api/generate", json=poem) as second:
                    second_lines = second.iter_lines()
                    assert next(second_lines) == "event: start"
                    assert http.get("/healthz").json()["in_flight"] == 2
                # The second client has gone while its poem was still queued.
                health = wait_until(lambda: (h := http.get("/healthz").json())["in_flight"] == 1 and h,
                                    "one poem in flight")
                assert health["cancelled"] == 1
                with http.stream("POST", "/api/generate", json=poem) as third:
                    assert third.status_code == 200  # queued, not refused
                    release.set()
                    assert "event: poem" in "".join(first_lines)
                    assert "event: poem" in "".join(third.iter_lines())
            assert http.get("/healthz").json()["served"] == 2


def test_the_scanners_word_memos_are_bounded_in_a_server(client):
    # The scanner memoizes every word it reads, in caches sized for a corpus (200,000 entries
    # each); a server meets new words without end, so it empties them past a bound.
    from persian_poetry.prosody import scansion
    from persian_poetry.serve.app import _bound_scanner_caches

    memos = [f for f in vars(scansion).values()
             if callable(getattr(f, "cache_info", None)) and f.cache_info().maxsize >= 10_000]
    assert len(memos) >= 3

    def entries() -> int:  # the word memos, and the memo of trie moves: its sets of readings and their nodes
        moves = scansion._compiled().moves
        return (sum(f.cache_info().currsize for f in memos) + len(moves)
                + sum(len(by_node) for by_node in moves.values()))

    assert client.post("/api/scan", json={"text": HAFEZ}).status_code == 200
    filled, catalogue = entries(), scansion._compiled.cache_info().currsize
    assert filled > 0 and catalogue == 1
    assert scansion.word_cache_entries() == filled  # what the bound counts is what the memos hold
    _bound_scanner_caches(limit=filled)  # at the bound: kept
    assert entries() == filled
    _bound_scanner_caches(limit=filled - 1)  # past it: emptied, the compiled catalogue kept
    assert entries() == 0 and scansion._compiled.cache_info().currsize == catalogue


# ---------------------------------------------------------------------------------------------
# Unknown fields, request ids and errors that say nothing of the server's insides


@pytest.mark.parametrize("url,body,field", [
    ("/api/generate", {"couplets": 1, "free": True, "couplet": 2}, "couplet"),  # misspelt: not ignored
    ("/api/generate", {"poet": "hafez", "admin": True}, "admin"),
    ("/api/scan", {"text": HAFEZ, "metre": 2}, "metre"),
    ("/api/explain/tokens", {"text": HAFEZ, "layer": 0}, "layer"),
    ("/api/explain/attention", {"text": HAFEZ, "head": 0}, "head"),
])
def test_an_unknown_field_is_a_422_that_names_it(client, url, body, field):
    response = client.post(url, json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["detail"][0]["loc"] == ["body", field] and answer["detail"][0]["type"] == "extra_forbidden"
    assert answer["message"].startswith(f"{field}: not a field of this request")


def test_every_answer_carries_a_request_id(client, port):
    answers = [client.get("/"), client.get("/healthz"), client.get("/api/options"), client.get("/static/app.js"),
               client.get("/nowhere"), client.post("/api/scan", json={"text": ""}),
               client.post("/api/scan", content=b"x" * (MAX_BODY_BYTES + 1)),
               client.post("/api/generate", json={"couplets": 1, "free": True}),
               TestClient(client.app).get("/healthz")]  # refused: not a Host of this server
    ids = [a.headers.get("X-Request-ID") for a in answers]
    assert [a.status_code for a in answers] == [200, 200, 200, 200, 404, 422, 413, 200, 400]
    assert all(ids) and len(set(ids)) == len(ids)
    status, _ = raw_http(port, "GET /healthz HTTP/1.1\nHost: 127.0.0.1\nConnection: close\n")
    assert status == 200


def test_an_unexpected_error_is_a_500_that_names_only_its_request_id(poetry, monkeypatch, caplog):
    def broken(text, form):
        raise RuntimeError("secret: /home/poet/.ssh/id_rsa")

    monkeypatch.setattr(server_module, "_scan", broken)
    with TestClient(create_app(poetry), base_url=LOCAL) as c, \
            caplog.at_level(logging.ERROR, logger="persian_poetry.server"):
        response = c.post("/api/scan", json={"text": HAFEZ})
    request_id = response.headers["X-Request-ID"]
    assert response.status_code == 500
    assert response.json()["request_id"] == request_id and request_id in response.json()["message"]
    assert "secret" not in response.text and "RuntimeError" not in response.text
    # The server's log has it all: the id, the error and its traceback.
    record = next(r for r in caplog.records if request_id in r.getMessage())
    assert record.exc_info and "secret: /home/poet/.ssh/id_rsa" in caplog.text and "Traceback" in caplog.text


def test_a_poem_that_fails_says_only_its_request_id(poetry, monkeypatch, caplog):
    from persian_poetry.writing import generate

    def broken(poetry, request, on_event=None):
        raise KeyError("internal table 'decoder.weights' at 0x7f00")

    monkeypatch.setattr(generate, "write_poem", broken)
    with TestClient(create_app(poetry), base_url=LOCAL) as c, \
            caplog.at_level(logging.ERROR, logger="persian_poetry.server"):
        response = c.post("/api/generate", json={"couplets": 1, "free": True})
        assert c.get("/healthz").json()["failed"] == 1
    request_id = response.headers["X-Request-ID"]
    assert response.status_code == 200 and "event: error" in response.text
    error = json.loads(response.text.split("event: error\ndata: ", 1)[1].split("\n", 1)[0])
    assert error["request_id"] == request_id and request_id in error["message"]
    assert "decoder.weights" not in response.text and "KeyError" not in response.text
    assert "decoder.weights" in caplog.text and request_id in caplog.text


# ---------------------------------------------------------------------------------------------
# The Host header (DNS rebinding)


@pytest.mark.parametrize("host,status", [
    ("127.0.0.1", 200), ("127.0.0.1:8000", 200), ("localhost", 200), ("LocalHost:8000", 200), ("[::1]:8000", 200),
    ("evil.example", 400), ("evil.example:8000", 400), ("127.0.0.1.evil.example", 400), ("localhost.", 400),
    ("127.0.0.2", 400), ("[::1].evil.example", 400), ("", 400),
])
def test_a_host_header_that_does_not_name_the_server_is_refused(port, host, status):
    code, body = raw_http(port, f"GET /api/options HTTP/1.1\nHost: {host}\nConnection: close\n")
    assert code == status, host
    if status == 400:
        answer = json.loads(body)
        assert answer["detail"][0]["loc"] == ["header", "host"]
        assert answer["message"].startswith("host: the Host header") and "--allowed-host" in answer["message"]


def test_a_request_without_a_host_header_is_refused(port):
    status, body = raw_http(port, "GET /api/options HTTP/1.0\n")
    assert status == 400 and b"Host header" in body


def test_allowed_host_names_follow_the_bind_address():
    from persian_poetry.serve.app import allowed_host_names

    assert allowed_host_names("127.0.0.1") == ("127.0.0.1", "localhost", "[::1]")
    assert allowed_host_names("::1") == ("[::1]", "127.0.0.1", "localhost")
    assert allowed_host_names("localhost", ["Poems.LAN"]) == ("localhost", "127.0.0.1", "[::1]", "poems.lan")
    assert allowed_host_names("192.168.1.5") == ("192.168.1.5",)  # not a loopback bind: its own address only
    assert allowed_host_names("0.0.0.0", ["poems.lan"]) == ("0.0.0.0", "poems.lan")


def test_serve_allowed_host_is_repeatable_and_adds_to_the_defaults(monkeypatch, poetry):
    import uvicorn

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    monkeypatch.setattr("persian_poetry.writing.bundle.load_model", lambda *a, **k: poetry)
    assert build_parser().parse_args(["serve"]).allowed_host == []
    assert main(["serve", "--allowed-host", "poems.lan", "--allowed-host", "poems.example:8000"]) == 0
    for base, status in (("http://poems.lan", 200), ("http://poems.example:8000", 200), ("http://localhost", 200),
                         ("http://127.0.0.1:8000", 200), ("http://evil.example", 400), ("http://poems.lan.evil", 400)):
        with TestClient(apps[-1], base_url=base) as c:
            assert c.get("/healthz").status_code == status, base
    assert main(["serve"]) == 0
    with TestClient(apps[-1], base_url="http://poems.lan") as c:
        assert c.get("/healthz").status_code == 400
