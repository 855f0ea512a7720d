"""Bounds on every endpoint: one admission gate for all of them (a lane per kind of request, each
with a bound on the requests in flight, 503 with Retry-After past it), and a bound on each
request's answer (attention one layer at a time, rounded and cut at the diagonal; the positional
table by its number of values).

A tiny untrained GPT with the shipped tokenizer stands in for the model, as in tests/test_server.py.
Waits only guard against a hang (conftest.wait_until); nothing asserts a speed."""

from __future__ import annotations

import json
import threading

import httpx
import pytest
from conftest import live_url, untrained_poetry, wait_until
from fastapi.testclient import TestClient

from persian_poetry.serve import app as server_module
from persian_poetry.serve.app import MAX_TABLE_SIDE, MAX_TABLE_VALUES, Admission, Lane, create_app
from persian_poetry.writing.bundle import PoetryModel

HAFEZ = "الا یا ایها الساقی ادر کاسا و ناولها\nکه عشق آسان نمود اول ولی افتاد مشکل‌ها"


@pytest.fixture(scope="module")
def poetry() -> PoetryModel:
    return untrained_poetry()



def test_every_route_passes_the_one_gate_in_a_lane_with_a_bound(poetry):
    app = create_app(poetry)
    admission: Admission = app.state.admission
    assert set(admission.lanes) == {"poems", "analysis", "light"}
    paths = {route.path for route in app.routes}
    assert {"/api/generate", "/api/scan", "/api/explain/tokens", "/api/explain/attention",
            "/api/explain/positions", "/healthz", "/api/options", "/", "/static", "/fonts"} <= paths
    lanes = {path: admission.lane_for(path).name for path in paths}
    assert lanes["/api/generate"] == "poems"
    assert {lanes[p] for p in paths if p == "/api/scan" or p.startswith("/api/explain/")} == {"analysis"}
    assert {lanes[p] for p in ("/healthz", "/api/options", "/", "/static", "/fonts", "/openapi.json")} == {"light"}
    for lane in admission.lanes.values():
        assert lane.limit >= 1
    # The work of the two heavy lanes runs on threads of their own, never on the framework's pool.
    assert admission.lanes["poems"].pool is not None and admission.lanes["analysis"].pool is not None


def test_a_lane_refuses_past_its_bound_and_frees_a_place_when_request_and_work_are_both_done():
    lane = Lane("analysis", "scan and explain requests", 1, 1)
    first, second = lane.enter(), lane.enter()
    assert first and second and lane.enter() is None
    refusal = lane.refusal()
    body = json.loads(refusal.body)
    assert refusal.status_code == 503 and int(refusal.headers["Retry-After"]) >= 1
    assert "the limit is 2" in body["message"] and body["limit"] == 2 and body["detail"][0]["type"] == "busy"
    # A place is held by the request and by its work: free when both have let go, in either order.
    release = threading.Event()
    future = first.submit(release.wait, 60)
    first.let_go()  # the request is answered (or its client gone), the work still runs
    assert lane.health()["in_flight"] == 2
    release.set()
    future.result(60)
    wait_until(lambda: lane.health()["in_flight"] == 1, "the first place to be free")
    # Work still waiting for a worker, cancelled: its place is free at once.
    blocker = threading.Event()
    running = second.submit(blocker.wait, 60)
    third = lane.enter()
    waiting = third.submit(lambda: None)
    assert waiting.cancel()
    third.let_go()
    assert lane.health()["in_flight"] == 1 and lane.health()["cancelled"] == 1
    blocker.set()
    running.result(60)
    second.let_go()
    wait_until(lambda: lane.health()["in_flight"] == 0, "every place to be free")
    assert lane.health()["refused"] == 1
    lane.close()


def test_scan_and_explain_share_a_bounded_lane_and_the_rest_still_answers(poetry, monkeypatch):
    release, entered, real = threading.Event(), threading.Event(), server_module._scan

    def held_scan(text, form):
        entered.set()
        release.wait(60)
        return real(text, form)

    monkeypatch.setattr(server_module, "_scan", held_scan)
    app = create_app(poetry, analysis_workers=1, analysis_queue=0)
    with live_url(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        answers = []
        first = threading.Thread(target=lambda: answers.append(http.post("/api/scan", json={"text": HAFEZ})))
        first.start()
        try:
            wait_until(entered.is_set, "the first scan to be in its worker")
            health = http.get("/healthz").json()  # the light lane answers while the analysis lane is full
            assert health["lanes"]["analysis"]["in_flight"] == 1 and health["lanes"]["analysis"]["limit"] == 1
            for method, path, body in (("POST", "/api/scan", {"text": HAFEZ}),
                                       ("POST", "/api/explain/tokens", {"text": HAFEZ}),
                                       ("POST", "/api/explain/attention", {"text": HAFEZ}),
                                       ("GET", "/api/explain/positions", None)):
                busy = http.request(method, path, json=body)
                assert busy.status_code == 503, path
                assert int(busy.headers["Retry-After"]) >= 1
                assert busy.json()["message"].startswith("too many scan and explain requests in flight: "
                                                         "the limit is 1")
            assert http.get("/api/options").status_code == 200
            assert http.post("/api/generate", json={"couplets": 1, "free": True}).status_code == 200  # its own lane
        finally:
            release.set()
            first.join(60)
        assert answers[0].status_code == 200 and answers[0].json()["metre_id"] == 2
        health = wait_until(lambda: (h := http.get("/healthz").json())["lanes"]["analysis"]["in_flight"] == 0 and h,
                            "the analysis lane to be empty")
        assert health["lanes"]["analysis"]["refused"] == 4 and health["lanes"]["analysis"]["served"] == 1


def test_the_light_lane_is_bounded_too(poetry):
    app = create_app(poetry, light_limit=1)
    light = app.state.admission.lanes["light"]
    with TestClient(app, base_url="http://localhost") as c:
        held = light.enter()  # another request in flight
        busy = c.get("/healthz")
        assert busy.status_code == 503 and "the limit is 1" in busy.json()["message"]
        assert c.get("/static/app.js").status_code == 503
        held.let_go()
        assert c.get("/healthz").status_code == 200


def test_attention_is_one_layer_cut_at_the_diagonal_and_rounded(client, poetry):
    n_layer, n_head, context = poetry.config.n_layer, poetry.config.n_head, poetry.config.context_length
    text = HAFEZ.replace("\n", " ")
    while len(poetry.tokenizer.encode(text + " ا")) <= context:
        text += " ا"
    ids = poetry.tokenizer.encode(text)
    assert len(ids) == context  # the longest text it explains
    response = client.post("/api/explain/attention", json={"text": text})
    assert response.status_code == 200
    answer = response.json()
    assert answer["layers"] == [n_layer - 1] and len(answer["weights"]) == 1
    heads = answer["weights"][0]
    values = sum(len(row) for rows in heads for row in rows)
    assert values == n_head * context * (context + 1) // 2  # one layer, each row up to its diagonal
    assert all(round(w, 4) == w for rows in heads for row in rows for w in row)
    # Compact JSON: no spaces, at most 7 characters a value ("0.1234,") and the tokens besides.
    assert b", " not in response.content and len(response.content) < 7 * values + 64 * context
    layer = client.post("/api/explain/attention", json={"text": text, "layer": n_layer}).json()
    assert layer["message"] == f"layer: layer must be between 0 and {n_layer - 1}, got {n_layer}"


def test_the_positional_table_is_bounded_by_its_number_of_values(client):
    side = int(MAX_TABLE_VALUES ** 0.5)
    ok = client.get("/api/explain/positions", params={"positions": side, "dim": side})
    assert ok.status_code == 200 and len(ok.json()["table"]) == side
    assert all(round(v, 4) == v for v in ok.json()["table"][7])
    over = client.get("/api/explain/positions", params={"positions": side + 1, "dim": side})
    assert over.status_code == 422
    assert over.json()["detail"][0]["loc"] == ["query", "positions"]
    assert over.json()["message"] == (f"positions: at most {MAX_TABLE_VALUES} values (positions x dim), asked for "
                                      f"{side + 1} x {side} = {(side + 1) * side}")
    assert client.get("/api/explain/positions", params={"positions": MAX_TABLE_SIDE, "dim": 1}).status_code == 200


def test_limits_are_documented_in_the_schema(client):
    schema = client.get("/openapi.json").json()
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            assert "503" in operation["responses"] and "500" in operation["responses"], (method, path)
    options = client.get("/api/options").json()
    assert options["limits"]["table_values"] == MAX_TABLE_VALUES
