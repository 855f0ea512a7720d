"""The HTTP API: options, streamed poems, scansion, the explain endpoints, every bad input as a
422 that names its field, the bound on poems in flight (503 + Retry-After) and a client that
hangs up stopping its poem.

A tiny untrained GPT with the shipped tokenizer stands in for the model: the controls, the
vocabulary and the poem structure are real, and it writes a poem in well under a second."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
import torch
from conftest import live_url, untrained_poetry, wait_until

from persian_poetry.gpt.model import sinusoidal_table
from persian_poetry.serve.app import MAX_TABLE_VALUES, MAX_TEXT_CHARS, create_app
from persian_poetry.text import normalize
from persian_poetry.writing.bundle import PoetryModel

HAFEZ = "الا یا ایها الساقی ادر کاسا و ناولها\nکه عشق آسان نمود اول ولی افتاد مشکل‌ها"


@pytest.fixture(scope="module")
def poetry() -> PoetryModel:
    return untrained_poetry()



def events_of(text: str) -> list[tuple[str, dict]]:
    """Parse a text/event-stream body into (event, data) pairs."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_options_name_the_models_poets_forms_and_metres_in_persian(client, poetry):
    options = client.get("/api/options").json()
    poets = {p["id"]: p["name"] for p in options["poets"]}
    assert set(poets) == set(poetry.controls.poets)
    assert poets["hafez"] == "حافظ" and poets["saadi"] == "سعدی"
    forms = {f["id"]: f for f in options["forms"]}
    assert forms["ghazal"]["name"] == "غزل" and forms["ghazal"]["couplets"] == 7 and "rubai" in forms
    metres = {m["id"]: m["name"] for m in options["metres"]}
    assert set(metres) == set(poetry.controls.metres)
    assert metres[24].startswith("مفعول مفاعیل مفاعیل فعل")
    assert options["limits"] == {"couplets_min": 1, "couplets_max": 40, "text_chars": MAX_TEXT_CHARS,
                                 "table_values": MAX_TABLE_VALUES}
    assert options["model"]["n_head"] == 2 and options["defaults"]["poet"] == "hafez"


def test_openapi_schema_documents_the_api_and_its_limits(client):
    schema = client.get("/openapi.json").json()
    assert {"/api/options", "/api/generate", "/api/scan", "/api/explain/attention", "/api/explain/tokens",
            "/api/explain/positions", "/healthz"} <= set(schema["paths"])
    body = schema["components"]["schemas"]["GenerateIn"]["properties"]
    couplets = next(s for s in body["couplets"]["anyOf"] if s.get("type") == "integer")
    assert (couplets["minimum"], couplets["maximum"]) == (1, 40)
    assert body["temperature"]["exclusiveMinimum"] == 0
    assert schema["components"]["schemas"]["TextIn"]["properties"]["text"]["maxLength"] == MAX_TEXT_CHARS
    assert "503" in schema["paths"]["/api/generate"]["post"]["responses"]


def test_a_poem_streams_token_by_token_then_arrives_whole_with_its_scansion(client):
    response = client.post("/api/generate", json={"poet": "saadi", "couplets": 2, "seed": 3, "free": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = events_of(response.text)
    assert events[0] == ("start", {"seed": 3, "poet": "saadi", "form": "ghazal"})
    kinds = [k for k, _ in events]
    assert [k for k in kinds if k not in ("text", "start")] == ["hemi", "beyt", "hemi", "end", "poem"]
    assert kinds.count("text") > 4  # token by token, not a hemistich at a time
    streamed, hemistichs = "", []
    for kind, data in events[1:-1]:
        if kind == "text":
            streamed += data["text"]
        else:
            assert data["hemistich"] == normalize(streamed)
            assert set(data["scan"]) >= {"metre_id", "weights", "syllables"}
            hemistichs.append(data["hemistich"])
            streamed = ""
    poem = events[-1][1]["poem"]
    assert [h for pair in poem["couplets"] for h in pair] == hemistichs
    assert poem["seed"] == 3 and poem["poet"] == "saadi"
    assert "metre_id" in events[-1][1]["prosody"] and "hemistichs" in events[-1][1]["prosody"]
    again = client.post("/api/generate", json={"poet": "saadi", "couplets": 2, "seed": 3, "free": True})
    assert events_of(again.text)[-1][1]["poem"]["couplets"] == poem["couplets"]  # same seed, same poem


def test_constrained_writing_streams_whole_hemistichs_in_the_asked_metre(client):
    events = events_of(client.post("/api/generate", json={"couplets": 1, "seed": 1, "metre": 2}).text)
    assert [k for k, _ in events] == ["start", "text", "hemi", "text", "end", "poem"]
    assert events[-1][1]["poem"]["metre"] == 2
    assert events[0][1]["seed"] == 1


def test_an_unset_seed_is_chosen_and_reported(client):
    events = events_of(client.post("/api/generate", json={"couplets": 1, "free": True}).text)
    seed = events[0][1]["seed"]
    assert isinstance(seed, int) and events[-1][1]["poem"]["seed"] == seed


@pytest.mark.parametrize("url,body,field,words", [
    ("/api/generate", {"poet": "shakespeare"}, "poet", "unknown poet 'shakespeare'"),
    ("/api/generate", {"form": "sonnet"}, "form", "unknown form 'sonnet'"),
    ("/api/generate", {"couplets": 0}, "couplets", "greater than or equal to 1"),
    ("/api/generate", {"couplets": 41}, "couplets", "less than or equal to 40"),
    ("/api/generate", {"temperature": 0}, "temperature", "greater than 0"),
    ("/api/generate", {"temperature": -1.5}, "temperature", "greater than 0"),
    ("/api/generate", {"top_p": 0}, "top_p", "greater than 0"),
    ("/api/generate", {"couplets": "many"}, "couplets", "valid integer"),
    ("/api/generate", {"metre": 99999}, "metre", "unknown metre"),
    ("/api/generate", {"metre": 2, "rhyme": "abc"}, "rhyme", "holds no Persian letters"),
    ("/api/generate", {"radif": "ما"}, "radif", "needs a rhyme"),
    ("/api/scan", {"text": "ا" * (MAX_TEXT_CHARS + 1)}, "text", f"at most {MAX_TEXT_CHARS} characters"),
    ("/api/scan", {"text": ""}, "text", "at least 1 character"),
    ("/api/scan", {"text": "hello world"}, "text", "no Persian verse"),
    ("/api/explain/tokens", {"text": "ب" * (MAX_TEXT_CHARS + 1)}, "text", f"at most {MAX_TEXT_CHARS}"),
    ("/api/explain/attention", {"text": "ا" * (MAX_TEXT_CHARS + 1)}, "text", f"at most {MAX_TEXT_CHARS}"),
    ("/api/explain/attention", {"text": HAFEZ * 3}, "text", "at most 64"),  # over the token limit
    ("/api/explain/attention", {"text": "hello"}, "text", ""),  # the explain module words it
    ("/api/explain/attention", {"text": HAFEZ, "layer": 2}, "layer", "between 0 and 1"),
])
def test_bad_input_is_a_422_that_names_the_field(client, url, body, field, words):
    response = client.post(url, json=body)
    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["detail"][0]["loc"] == ["body", field]
    assert answer["message"].startswith(f"{field}: ") and words in answer["message"]


def test_positions_out_of_range_are_a_422(client):
    response = client.get("/api/explain/positions", params={"positions": 0})
    assert response.status_code == 422 and response.json()["message"].startswith("positions: ")


def test_scan_gives_metre_syllables_and_rhyme(client):
    result = client.post("/api/scan", json={"text": HAFEZ}).json()
    assert result["metre_id"] == 2 and "هزج" in result["name"]
    assert len(result["hemistichs"]) == 2 and result["hemistichs"][0]["syllables"]
    assert result["rhyme"]["qafiya"]


def test_attention_weights_per_head_are_causal_distributions_one_layer_at_a_time(client, poetry):
    tokens = client.post("/api/explain/tokens", json={"text": HAFEZ}).json()
    assert tokens["fits"] and tokens["context_length"] == 64 and len(tokens["char_tokens"]) > len(tokens["ids"])
    ids = np.array([tokens["ids"]])
    _, expected = poetry.model.forward(ids, return_weights=True)  # per layer: (1, H, T, T)
    n = ids.shape[1]
    for layer in (0, 1):
        answer = client.post("/api/explain/attention", json={"text": HAFEZ, "layer": layer}).json()
        assert answer["ids"] == tokens["ids"] and answer["layers"] == [layer] and len(answer["weights"]) == 1
        heads = answer["weights"][0]
        assert len(heads) == 2
        for h, rows in enumerate(heads):
            # Row q holds the weights of keys 0..q (none after: the mask), rounded to 4 places.
            assert [len(row) for row in rows] == list(range(1, n + 1))
            for q, row in enumerate(rows):
                assert abs(sum(row) - 1) < 1e-3
                np.testing.assert_allclose(np.array(row, dtype=np.float32), expected[layer][0, h, q, :q + 1],
                                           rtol=0, atol=6e-5)
                assert all(round(w, 4) == w for w in row)
    # No layer: the last one, not all of them.
    assert client.post("/api/explain/attention", json={"text": HAFEZ}).json()["layers"] == [1]


def test_positional_table_is_the_models_formula(client, poetry):
    default = client.get("/api/explain/positions").json()
    assert (default["positions"], default["dim"], default["positional"]) == (64, 32, poetry.config.positional)
    assert torch.allclose(torch.tensor(default["table"]), sinusoidal_table(64, 32), atol=1e-4)
    assert all(round(v, 4) == v for row in default["table"] for v in row)


def test_a_rotary_models_table_is_one_heads_angles():
    from fastapi.testclient import TestClient

    from persian_poetry.serve.app import create_app

    rotary = untrained_poetry(positional="rotary", norm="rmsnorm", mlp="relu2", qk_norm=True)
    with TestClient(create_app(rotary), base_url="http://localhost") as c:
        table = c.get("/api/explain/positions").json()
    assert (table["positions"], table["dim"], table["positional"]) == (64, 16, "rotary")  # 32 wide, 2 heads
    assert torch.allclose(torch.tensor(table["table"]), sinusoidal_table(64, 16), atol=1e-4)


def test_page_script_and_font_are_served_offline(client):
    page = client.get("/")
    assert page.status_code == 200 and 'dir="rtl"' in page.text and 'lang="fa"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from elsewhere
    for path in ("/static/app.js", "/static/app.css"):
        response = client.get(path)
        assert response.status_code == 200 and "https://" not in response.text
    font = client.get("/fonts/Vazirmatn-Regular.woff2")
    assert font.status_code == 200 and font.content[:4] == b"wOF2"


def test_a_full_server_answers_503_and_a_client_that_hangs_up_stops_its_poem(poetry):
    app = create_app(poetry, workers=1, queue=0)  # one poem in flight at most
    long_poem = {"couplets": 40, "seed": 5, "free": True}
    with live_url(app) as url, httpx.Client(base_url=url, timeout=30) as http:
        with http.stream("POST", "/api/generate", json=long_poem) as stream:
            assert stream.status_code == 200
            lines = stream.iter_lines()
            assert next(lines) == "event: start"
            assert next(line for line in lines if line.startswith("event: ")) == "event: text"
            # The poem is being written in a worker thread; the event loop answers while it is.
            health = http.get("/healthz").json()
            assert health["in_flight"] == 1 and health["limit"] == 1
            busy = http.post("/api/generate", json={"couplets": 1, "free": True})
            assert busy.status_code == 503
            assert int(busy.headers["Retry-After"]) >= 1 and "retry" in busy.json()["message"]
        # The stream is closed before the poem's end: the worker must notice and stop.
        health = wait_until(lambda: (h := http.get("/healthz").json())["in_flight"] == 0 and h,
                            "no poem in flight")
        assert health["cancelled"] == 1 and health["served"] == 0 and health["refused"] == 1
        assert http.post("/api/generate", json={"couplets": 1, "free": True}).status_code == 200
        assert http.get("/healthz").json()["served"] == 1
