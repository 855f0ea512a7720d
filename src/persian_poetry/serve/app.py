"""The web app and its HTTP API: write a poem in the browser, watch it being written, look inside.

`create_app(poetry)` builds a FastAPI app around one loaded model (the shipped one by default);
`persian-poetry serve` runs it with uvicorn. Everything is offline: the page, its script and its
font (Vazirmatn) are files of this package.

    GET  /                        the page (static/index.html: right to left, Persian)
    GET  /healthz                 liveness, and counts of the poems served, cancelled, refused
    GET  /api/options             the poets, forms and metres the model knows, with Persian names
    POST /api/generate            a poem as Server-Sent Events as it is written, then the whole
                                  poem and its scansion
    POST /api/scan                a text in; its metre, syllables and rhyme out
    POST /api/explain/tokens      how the model's tokenizer cuts a text, against the token limit
    POST /api/explain/attention   the model's attention weights over a text, per layer and head
    GET  /api/explain/positions   the sinusoidal positional-encoding table

The schema is FastAPI's own, at /openapi.json. There is no /docs page: Swagger UI loads its
script from a CDN, and this app promises to work with no network.

Writing a poem is blocking CPU work, so it never runs on the event loop. Each poem is written in
a small pool of worker threads (torch on one thread each: batch-1 decoding of a small model is
fastest that way on a few cores), and its events cross to the event loop through an asyncio
queue. At most `workers + queue` poems are in flight; past that the answer is 503 with a
Retry-After, rather than a pile-up that makes everyone wait. When a client goes away, Starlette
cancels its stream; the stream raises a flag that the poem's next event sees, and the worker
stops writing (a poem still waiting for a worker is dropped, and its place freed, at once).

Hostile input is refused before it costs anything: the server listens on 127.0.0.1 unless told
otherwise; a request body over MAX_BODY_BYTES is answered 413 before any of it is parsed (a
declared Content-Length at once, a chunked body as soon as it passes the limit); request bodies
are checked strictly against the schema (no `false` for an integer, no "3" for a number); and
only the package's own static/ and fonts/ files are served (Starlette refuses paths that leave
them, "../" or "%2e%2e" alike). tests/test_server_security.py tries each of these, and
tests/test_schemathesis.py fuzzes the whole API against its OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import torch
import uvicorn
from fastapi import FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..assets import FONTS_DIR
from ..errors import PoetryError
from ..explain.lesson import attention_trace, positional_table, tokenize_text
from ..prosody.metres import metre_by_id
from ..prosody.scan import scan
from ..prosody.scansion import scan_hemistich, trim_word_caches
from ..text import normalize
from ..writing.bundle import PoetryModel, load_model
from ..writing.generate import validate_request, write_poem
from ..writing.request import FORM_COUPLETS, MAX_COUPLETS, MAX_STRENGTH, PoemRequest

STATIC_DIR = Path(__file__).parent / "static"
MAX_TEXT_CHARS = 4000  # the longest text /api/scan and /api/explain/* accept (a long qasida)
MAX_CONTROL_CHARS = 120  # poet, form, metre name, rhyme, radif
# The largest request body accepted. The longest valid body is a MAX_TEXT_CHARS text whose every
# character is written as a JSON surrogate-pair escape (12 bytes): 48,000 bytes and change.
MAX_BODY_BYTES = 64 * 1024
MAX_TABLE_SIDE = 1024  # /api/explain/positions: at most 1024 x 1024 values (about 8 MB of JSON)
SCANNER_CACHE_ENTRIES = 10_000  # the scanner's per-word memos a server keeps (see _bound_scanner_caches)
FORM_NAMES = {"ghazal": "غزل", "rubai": "رباعی", "dobeyti": "دوبیتی", "masnavi": "مثنوی", "qasida": "قصیده",
              "qete": "قطعه"}
POET_NAMES: dict[str, str] = json.loads((STATIC_DIR / "poets.json").read_text(encoding="utf-8"))

log = logging.getLogger("persian_poetry.server")


# ---------------------------------------------------------------------------------------------
# Request and response bodies (they are the OpenAPI schema)


DEFAULTS = PoemRequest()


class GenerateIn(BaseModel):
    """What to write. Unset fields take the library's defaults (`PoemRequest`)."""

    # Strict: a body is read as its schema says, so `true` is not a number and "3" not an integer.
    model_config = ConfigDict(strict=True)

    poet: str = Field(DEFAULTS.poet, max_length=MAX_CONTROL_CHARS, description="poet slug, one of /api/options poets")
    form: str = Field(DEFAULTS.form, max_length=MAX_CONTROL_CHARS, description="form slug, one of /api/options forms")
    couplets: int | None = Field(None, ge=1, le=MAX_COUPLETS, description="number of couplets; null: the form's usual")
    metre: int | Annotated[str, StringConstraints(max_length=MAX_CONTROL_CHARS)] | None = Field(
        None, description="Ganjoor metre id, name or feet; null: the model chooses")
    rhyme: str | None = Field(None, max_length=MAX_CONTROL_CHARS, description="rhyme letters (qafiya); null: chosen")
    radif: str | None = Field(None, max_length=MAX_CONTROL_CHARS, description="refrain after the rhyme (needs rhyme)")
    free: bool = Field(False, description="no metre or rhyme constraints while decoding: the model alone, "
                                          "streamed token by token (constrained writing streams whole hemistichs)")
    temperature: float = Field(DEFAULTS.temperature, gt=0, le=10)
    top_k: int = Field(DEFAULTS.top_k, ge=0)
    top_p: float = Field(DEFAULTS.top_p, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=2**63, description="same seed, same poem; null: random (reported)")
    vowel_marks: bool = Field(False, description="allow short-vowel marks and tashdid")
    style: float = Field(DEFAULTS.style, ge=0, le=MAX_STRENGTH,
                         description="weight of the poet's word preferences (0: the model alone)")


class TextIn(BaseModel):
    model_config = ConfigDict(strict=True)  # as GenerateIn

    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS,
                      description=f"Persian verse, one hemistich a line; at most {MAX_TEXT_CHARS} characters")


class ScanIn(TextIn):
    form: str | None = Field(None, max_length=MAX_CONTROL_CHARS, description="ghazal, rubai, ...; null: guessed")


class AttentionIn(TextIn):
    layer: int | None = Field(None, ge=0, description="only this layer (0-based); null: every layer")


class Named(BaseModel):
    id: str | int
    name: str


class FormOut(Named):
    couplets: int


class OptionsOut(BaseModel):
    poets: list[Named]
    forms: list[FormOut]
    metres: list[Named]
    defaults: dict[str, Any]
    limits: dict[str, int]
    model: dict[str, int]


class AttentionOut(BaseModel):
    tokens: list[str]
    ids: list[int]
    layers: list[int] = Field(description="the layers whose weights follow, 0-based")
    weights: list[list[list[list[float]]]] = Field(description="[layer of `layers`][head][query][key]")


class HealthOut(BaseModel):
    status: str
    in_flight: int
    limit: int
    served: int
    cancelled: int
    failed: int
    refused: int


# ---------------------------------------------------------------------------------------------
# Errors: always 422 with the field named, in FastAPI's own shape plus one readable line


def _field_of(message: str, names) -> str | None:
    """The request field a PoetryError is about: the first field name the message mentions
    (not as a command-line flag: "with --free a rhyme ..." is about the rhyme)."""
    hits = [(m.start(), name) for name in names if (m := re.search(rf"(?<![-\w]){name}(?!\w)", message))]
    return min(hits)[1] if hits else None


def _invalid(field: str | None, message: str) -> JSONResponse:
    loc = ["body", field] if field else ["body"]
    line = f"{field}: {message}" if field else message
    return JSONResponse({"detail": [{"type": "value_error", "loc": loc, "msg": message}], "message": line},
                        status_code=422)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = jsonable_encoder(exc.errors())
    line = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": errors, "message": line}, status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI answers a body it cannot decode (not UTF-8, or JSON nested too deep for Python's
    parser) with a bare 400; bad input here is a 422 like any other. Everything else (404, 405)
    keeps FastAPI's answer."""
    if exc.status_code == 400:
        return _invalid(None, "the request body is not readable JSON (not UTF-8, or nested too deeply)")
    return await http_exception_handler(request, exc)


class ErrorOut(BaseModel):
    detail: list[dict[str, Any]]
    message: str = Field(description="one readable line")


TOO_LARGE = {413: {"model": ErrorOut, "description": f"the request body is over {MAX_BODY_BYTES} bytes"}}


class BodyLimit:
    """ASGI middleware: refuse a request body over `limit` bytes with a 413 before the app parses
    any of it. A declared Content-Length over the limit is refused unread; a body without one
    (chunked) is read only until it passes the limit. A body within the limit is handed on whole
    (it is small), and after it the app hears the client's own messages (a disconnect, say)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(scope, receive, send)
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client has gone: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._refuse(scope, receive, send)
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        message = f"the request body is over the limit of {self.limit} bytes"
        response = JSONResponse({"detail": [{"type": "too_large", "loc": ["body"], "msg": message}],
                                 "message": f"body: {message}"},
                                status_code=413, headers={"Connection": "close"})  # the rest is not read
        await response(scope, receive, send)


# ---------------------------------------------------------------------------------------------
# Poems in flight


class _Cancelled(Exception):
    """Raised inside write_poem's callback to stop a poem whose reader has gone."""


def _one_thread() -> None:

    torch.set_num_threads(1)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _bound_scanner_caches(limit: int = SCANNER_CACHE_ENTRIES) -> None:
    """Keep the scanner's per-word memos small: a server meets new words without end (in a
    10-minute soak they grew its memory by 41%)."""

    trim_word_caches(limit)


def _hemistich_scan(text: str) -> dict:
    """The scanner's reading of one finished hemistich (its own best metre), sent at once; the
    whole poem's scansion, with one metre for all hemistichs, comes with the final event."""

    s = scan_hemistich(text, top=1)
    return {"metre_id": s.metre_id, "name": s.name, "weights": s.weights, "pattern": s.pattern,
            "syllables": [{"letters": y.letters, "weight": y.weight, "note": y.note} for y in s.syllables]}


class Generations:
    """A pool of worker threads that write poems, and the bound on how many may run or wait."""

    def __init__(self, poetry: PoetryModel, workers: int, queue: int):
        if workers < 1 or queue < 0:
            raise ValueError(f"need workers >= 1 and queue >= 0, got {workers} and {queue}")
        self.poetry, self.workers, self.limit = poetry, workers, workers + queue
        self.pool = self._new_pool()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.counts = {"served": 0, "cancelled": 0, "failed": 0, "refused": 0}
        self.mean_seconds = 5.0  # running mean of a poem's time, for Retry-After

    def _new_pool(self) -> ThreadPoolExecutor:
        return ThreadPoolExecutor(self.workers, thread_name_prefix="poem", initializer=_one_thread)

    def close(self) -> None:
        """Stop the poems in hand; a fresh (idle: threads start on demand) pool takes their place,
        so an app whose lifespan starts again (a second test client, say) still writes poems."""
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = self._new_pool()

    def try_acquire(self) -> bool:
        with self.lock:
            if self.in_flight >= self.limit:
                self.counts["refused"] += 1
                return False
            self.in_flight += 1
            return True

    def _release(self, outcome: str, seconds: float) -> None:
        with self.lock:
            self.in_flight -= 1
            self.counts[outcome] += 1
            if outcome == "served":
                self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds

    def retry_after(self) -> int:
        """Seconds until a place is likely free: with `workers` poems written side by side, one
        finishes every mean_seconds / workers on average."""
        with self.lock:
            return max(1, math.ceil(self.mean_seconds / self.workers))

    def start(self, request: PoemRequest) -> AsyncIterator[bytes]:
        """Queue the poem (a place must have been acquired) and return its event stream."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        cancel = threading.Event()

        def emit(kind: str | None, data: Any = None) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, data))
            except RuntimeError:  # the loop is closed: the server is shutting down
                cancel.set()

        emit("start", {"seed": request.seed, "poet": request.poet, "form": request.form})
        future = self.pool.submit(self._write, request, emit, cancel)
        return self._relay(events, cancel, future)

    def _write(self, request: PoemRequest, emit: Callable, cancel: threading.Event) -> None:


        started, outcome, hemistich = time.perf_counter(), "failed", []

        def on_event(kind: str, text: str) -> None:
            if cancel.is_set():
                raise _Cancelled
            if kind == "text":
                hemistich.append(text)
                emit("text", {"text": text})
                return
            line = normalize("".join(hemistich))
            hemistich.clear()
            emit(kind, {"hemistich": line, "scan": _hemistich_scan(line)})

        try:
            if cancel.is_set():
                raise _Cancelled
            _bound_scanner_caches()
            # No autograd: a decoder whose first forward pass ran with gradients on keeps its KV cache
            # and saved tensors alive in a reference cycle inside torch's graph, megabytes a poem,
            # never freed (benchmarks/soak_test.py found it). Grad mode is per thread.
            with torch.no_grad():
                poem = write_poem(self.poetry, request, on_event=on_event)
            prosody = scan([h for couplet in poem.couplets for h in couplet], poem.form)
            emit("poem", {"poem": poem.to_dict(), "prosody": prosody.to_dict()})
            outcome = "served"
        except _Cancelled:
            outcome = "cancelled"
        except Exception as err:  # a bug, not bad input (that was refused before): say so, keep serving
            log.exception("writing a poem failed")
            emit("error", {"message": f"{type(err).__name__}: {err}"})
        finally:
            self._release(outcome, time.perf_counter() - started)
            emit(None)

    async def _relay(self, events: asyncio.Queue, cancel: threading.Event, future: Future) -> AsyncIterator[bytes]:
        try:
            while True:
                kind, data = await events.get()
                if kind is None:
                    return
                yield _sse(kind, data)
        finally:  # finished, or cancelled because the client went away
            cancel.set()
            if future.cancel():  # it was still waiting for a worker and now never runs: its place is free
                self._release("cancelled", 0.0)

    def health(self) -> dict:
        with self.lock:
            return {"status": "ok", "in_flight": self.in_flight, "limit": self.limit, **self.counts}


# ---------------------------------------------------------------------------------------------
# The app


def _options(poetry: PoetryModel) -> dict:
    def metre_name(m: int) -> str:
        known = metre_by_id(m)
        return poetry.metres.get(m) or (known.name if known else str(m))

    defaults = {f.name: f.default for f in fields(PoemRequest) if f.name in GenerateIn.model_fields}
    config = poetry.config
    return {
        "poets": [{"id": p, "name": POET_NAMES.get(p, p)} for p in poetry.controls.poets],
        "forms": [{"id": f, "name": FORM_NAMES.get(f, f), "couplets": FORM_COUPLETS[f]}
                  for f in poetry.controls.forms if f in FORM_COUPLETS],
        "metres": [{"id": m, "name": metre_name(m)} for m in poetry.controls.metres],
        "defaults": defaults,
        "limits": {"couplets_min": 1, "couplets_max": MAX_COUPLETS, "text_chars": MAX_TEXT_CHARS},
        "model": {"context_length": config.context_length, "n_layer": config.n_layer, "n_head": config.n_head,
                  "n_embd": config.n_embd, "vocab_size": config.vocab_size},
    }


def create_app(poetry: PoetryModel | None = None, *, workers: int = 2, queue: int = 6) -> FastAPI:
    """The app around `poetry` (default: the shipped model, loaded once, now). At most `workers`
    poems are written at once and `queue` more wait; more than that are refused with 503."""
    if poetry is None:
        poetry = load_model()
    generations = Generations(poetry, workers, queue)
    options = _options(poetry)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        generations.close()

    app = FastAPI(title="Persian Poetry GPT", version="0.1.0", docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Write classical Persian poems with a GPT trained from scratch, scan their metre "
                              "and rhyme, and look inside the model. Offline.")
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.state.poetry, app.state.generations = poetry, generations

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/healthz", response_model=HealthOut, summary="liveness and generation counts")
    def healthz() -> dict:
        return generations.health()

    @app.get("/api/options", response_model=OptionsOut, summary="poets, forms and metres the model knows")
    def get_options() -> dict:
        return options

    @app.post("/api/generate", summary="write a poem, streamed as Server-Sent Events",
              response_class=StreamingResponse,
              responses={200: {"content": {"text/event-stream": {}},
                               "description": "events: start {seed}; text {text} as it is written; hemi, beyt "
                                              "and end {hemistich, scan} after each hemistich; poem {poem, "
                                              "prosody} at the end (or error {message})"},
                         422: {"description": "bad input; `message` names the field"}, **TOO_LARGE,
                         503: {"description": "too many poems in flight; retry after Retry-After seconds"}})
    async def generate(body: GenerateIn):
        values = body.model_dump()
        request = PoemRequest(**values)
        try:
            _, request.seed = validate_request(poetry, request)
        except PoetryError as err:
            return _invalid(_field_of(str(err), values), str(err))
        if not generations.try_acquire():
            seconds = generations.retry_after()
            return JSONResponse({"detail": "busy", "message": f"too many poems in flight; retry in {seconds} s"},
                                status_code=503, headers={"Retry-After": str(seconds)})
        return StreamingResponse(generations.start(request), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/api/scan", summary="metre, syllables and rhyme of a text", responses=TOO_LARGE)
    def post_scan(body: ScanIn) -> dict:
        _one_thread()
        _bound_scanner_caches()
        result = scan(body.text, form=body.form)
        if result.metre_id is None:
            return _invalid("text", "no Persian verse to scan")
        return result.to_dict()

    @app.post("/api/explain/tokens", summary="the text as the model's tokens, against the token limit",
              responses=TOO_LARGE)
    def explain_tokens(body: TextIn) -> dict:
        return tokenize_text(poetry, body.text).to_dict()

    @app.post("/api/explain/attention", response_model=AttentionOut, responses=TOO_LARGE,
              summary="attention weights over a text, per layer and head")
    def explain_attention(body: AttentionIn):
        if body.layer is not None and body.layer >= poetry.config.n_layer:
            return _invalid("layer", f"layer must be between 0 and {poetry.config.n_layer - 1}, got {body.layer}")
        _one_thread()
        try:
            trace = attention_trace(poetry, body.text)
        except PoetryError as err:
            return _invalid("text", str(err))
        layers = list(range(poetry.config.n_layer)) if body.layer is None else [body.layer]
        weights = [[[[round(w, 4) for w in row] for row in head] for head in trace.weights[layer]]
                   for layer in layers]
        return {"tokens": trace.tokens, "ids": trace.ids, "layers": layers, "weights": weights}

    @app.get("/api/explain/positions", summary="the sinusoidal positional-encoding table (unscaled)")
    def explain_positions(
            positions: int | None = Query(None, ge=1, le=MAX_TABLE_SIDE, description="rows; default: context length"),
            dim: int | None = Query(None, ge=1, le=MAX_TABLE_SIDE, description="columns; default: the model's width"),
    ) -> dict:
        positions = positions or poetry.config.context_length
        dim = dim or poetry.config.n_embd
        table = positional_table(positions, dim)
        return {"positions": positions, "dim": dim, "table": [[round(v, 4) for v in row] for row in table]}

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/fonts", StaticFiles(directory=FONTS_DIR), name="fonts")
    return app


def serve(poetry: PoetryModel | None = None, host: str = "127.0.0.1", port: int = 8000, workers: int = 2,
          queue: int = 6) -> None:
    """Run the app with uvicorn until interrupted. It listens on 127.0.0.1 (this machine only)
    unless another host is asked for."""

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: anyone who can reach this address can use the server", host)
    uvicorn.run(create_app(poetry, workers=workers, queue=queue), host=host, port=port, log_level="info")
