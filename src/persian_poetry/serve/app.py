"""The web app and its HTTP API: write a poem in the browser, watch it being written, look inside.

`create_app(poetry)` builds a FastAPI app around one loaded model (the shipped one by default);
`persian-poetry serve` runs it with uvicorn. Everything is offline: the page, its script and its
font (Vazirmatn) are files of this package.

    GET  /                        the page (static/index.html: right to left, Persian)
    GET  /healthz                 liveness, and per lane the requests in flight, served, refused
    GET  /api/options             the poets, forms and metres the model knows, with Persian names
    POST /api/generate            a poem as Server-Sent Events as it is written, then the whole
                                  poem and its scansion
    POST /api/scan                a text in; its metre, syllables and rhyme out
    POST /api/explain/tokens      how the model's tokenizer cuts a text, against the token limit
    POST /api/explain/attention   the model's attention weights over a text, one layer, per head
    GET  /api/explain/positions   the sinusoidal positional-encoding table (rotary: a head's angles)

The schema is FastAPI's own, at /openapi.json. There is no /docs page: Swagger UI loads its
script from a CDN, and this app promises to work with no network.

Requests in flight. Every request passes one gate, `Admission`, before anything reads its body.
It puts the request in one of three lanes, each with a bound on the requests in it (running or
waiting); past the bound the answer is 503 with a Retry-After and a message that names the limit:

    poems     /api/generate              `workers` threads write poems, `queue` more may wait
                                         (default 2 + 6)
    analysis  /api/scan, /api/explain/*  `analysis_workers` threads, `analysis_queue` waiting
                                         (default 2 + 14)
    light     everything else            `light_limit` at once (default 64): /healthz, the
                                         options, the page and its files, all constant work

Blocking CPU work (writing, scanning, running the model, rendering a large answer as JSON) never
runs on the event loop, nor on the framework's open-ended thread pool: it runs in its lane's worker
threads (BLAS on one thread for the whole process: batch-1 decoding of a small model is fastest
that way on a few cores, `gpt.inference.one_blas_thread`). A place is held while
the request is answered and while its work runs, whichever ends later, so a client that hangs up
cannot leave work running outside the bound. A poem's events cross to the event loop through an
asyncio queue; when its client goes away, the stream raises a flag that the poem sees at its next
step of the model (mid-hemistich too) or its next event, and the worker stops (a poem still
waiting for a worker is dropped, and its place freed, at once).

Work and memory per request. A request body is at most MAX_BODY_BYTES (64 KiB; 413 over it,
before any of it is parsed: a declared Content-Length at once, a chunked body as soon as it passes
the limit). A poem is at most 40 couplets, each hemistich written with a bounded number of tries
(writing.verse); its events are its text, so they are bounded with it. A text to scan or explain
is at most MAX_TEXT_CHARS characters (a few seconds of one worker's scanning at worst). Attention
is served one layer at a time (`layer`, default the last), each row cut at the diagonal (the model
attends to no later token), rounded to DECIMALS places: for the shipped model, at most
8 heads x 256 x 257 / 2 values, 1.8 MB of JSON (all six layers at once were 6 x 8 x 256 x 256).
The positional table is at most
MAX_TABLE_VALUES values (the shipped model's 256 x 256), rounded likewise. The scanner's word
memos are trimmed to SCANNER_CACHE_ENTRIES entries before each scan and each poem.

Hostile input is refused before it costs anything: the server listens on 127.0.0.1 unless told
otherwise, and answers only requests whose Host header names it (the bind address, and for a
loopback bind localhost, 127.0.0.1 and [::1]; `--allowed-host` adds others), which keeps a web page
from reaching it through DNS rebinding; request bodies are checked strictly against the schema
(no `false` for an integer, no "3" for a number, no field the schema does not name: 422 naming the
field); and only the package's own static/ and fonts/ files are served (Starlette refuses paths
that leave them, "../" or "%2e%2e" alike). Every answer carries an X-Request-ID header; an
unexpected error is a 500 that names only that id (the server's log has it with the traceback),
never the error's own text. tests/test_server_security.py and tests/test_server_limits.py try
each of these, tests/test_server_concurrency.py writes poems side by side, and
tests/test_schemathesis.py fuzzes the whole API against its OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
import logging
import math
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import numpy as np
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
from ..explain.lesson import encode_within_limit, tokenize_text
from ..gpt.inference import InferenceGPT, one_blas_thread
from ..gpt.positions import sinusoidal_table
from ..prosody.metres import metre_by_id
from ..prosody.scan import scan
from ..prosody.scansion import scan_hemistich, trim_word_caches
from ..text import normalize
from ..writing import generate
from ..writing.bundle import PoetryModel, load_model
from ..writing.generate import validate_request
from ..writing.request import FORM_COUPLETS, MAX_BEST_OF, MAX_COUPLETS, MAX_STRENGTH, PoemRequest

STATIC_DIR = Path(__file__).parent / "static"
MAX_TEXT_CHARS = 4000  # the longest text /api/scan and /api/explain/* accept (a long qasida)
MAX_CONTROL_CHARS = 120  # poet, form, metre name, rhyme, radif
# The largest request body accepted. The longest valid body is a MAX_TEXT_CHARS text whose every
# character is written as a JSON surrogate-pair escape (12 bytes): 48,000 bytes and change.
MAX_BODY_BYTES = 64 * 1024
MAX_TABLE_SIDE = 1024  # /api/explain/positions: rows and columns, each
MAX_TABLE_VALUES = 256 * 256  # /api/explain/positions: rows x columns (about 0.5 MB of JSON)
DECIMALS = 4  # attention weights and the positional table are rounded to this many places
SCANNER_CACHE_ENTRIES = 10_000  # the scanner's per-word memos a server keeps (see _bound_scanner_caches)
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")  # the Host names of a loopback server
FORM_NAMES = {"ghazal": "غزل", "rubai": "رباعی", "dobeyti": "دوبیتی", "masnavi": "مثنوی", "qasida": "قصیده",
              "qete": "قطعه"}
POET_NAMES: dict[str, str] = json.loads((STATIC_DIR / "poets.json").read_text(encoding="utf-8"))
REQUEST_ID = "X-Request-ID"

log = logging.getLogger("persian_poetry.server")


# ---------------------------------------------------------------------------------------------
# Request and response bodies (they are the OpenAPI schema)


DEFAULTS = PoemRequest()
# Strict: a body is read as its schema says, so `true` is not a number and "3" not an integer; and
# a field the schema does not name is refused (a misspelt "couplet" is not silently ignored).
STRICT = ConfigDict(strict=True, extra="forbid")


class GenerateIn(BaseModel):
    """What to write. Unset fields take the library's defaults (`PoemRequest`)."""

    model_config = STRICT

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
    best_of: int = Field(DEFAULTS.best_of, ge=1, le=MAX_BEST_OF,
                         description="candidates for each hemistich, the model's likeliest kept (constrained only)")


class TextIn(BaseModel):
    model_config = STRICT

    text: str = Field(..., min_length=1, max_length=MAX_TEXT_CHARS,
                      description=f"Persian verse, one hemistich a line; at most {MAX_TEXT_CHARS} characters")


class ScanIn(TextIn):
    form: str | None = Field(None, max_length=MAX_CONTROL_CHARS, description="ghazal, rubai, ...; null: guessed")


class AttentionIn(TextIn):
    layer: int | None = Field(None, ge=0, description="the layer (0-based); null: the last")


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
    layers: list[int] = Field(description="the one layer whose weights follow, 0-based")
    weights: list[list[list[list[float]]]] = Field(
        description=f"[layer of `layers`][head][query][key]; the row of query q holds keys 0..q (the model "
                    f"attends to no later token), rounded to {DECIMALS} places")


class LaneOut(BaseModel):
    in_flight: int = Field(description="requests of this lane being answered or waiting for a worker")
    limit: int = Field(description="the most in flight; past it, 503")
    workers: int = Field(description="threads that do this lane's work (0: none, it is answered at once)")
    served: int
    cancelled: int
    failed: int
    refused: int = Field(description="answered 503")


class HealthOut(BaseModel):
    status: str
    in_flight: int = Field(description="poems being written or waiting for a worker")
    limit: int = Field(description="the most poems in flight")
    served: int
    cancelled: int
    failed: int
    refused: int
    lanes: dict[str, LaneOut] = Field(description="every lane of the admission gate: poems, analysis, light")


class ErrorOut(BaseModel):
    detail: list[dict[str, Any]]
    message: str = Field(description="one readable line")
    request_id: str | None = Field(None, description="on a 500: the id the server's log has the error under")
    limit: int | None = Field(None, description="on a 503: the most requests of this kind in flight")


# ---------------------------------------------------------------------------------------------
# Errors: always one shape, with the field (or the limit) named and one readable line


def _error(status: int, kind: str, loc: list, message: str, field: str | None = None, headers: dict | None = None,
           **extra) -> JSONResponse:
    """{"detail": [{"type", "loc", "msg"}], "message": "field: msg"}: FastAPI's own shape for a
    422, and one readable line."""
    line = f"{field}: {message}" if field else message
    return JSONResponse({"detail": [{"type": kind, "loc": loc, "msg": message}], "message": line, **extra},
                        status_code=status, headers=headers)


def _field_of(message: str, names) -> str | None:
    """The request field a PoetryError is about: the first field name the message mentions
    (not as a command-line flag: "with --free a rhyme ..." is about the rhyme)."""
    hits = [(m.start(), name) for name in names if (m := re.search(rf"(?<![-\w]){name}(?!\w)", message))]
    return min(hits)[1] if hits else None


def _invalid(field: str | None, message: str, where: str = "body") -> JSONResponse:
    return _error(422, "value_error", [where, field] if field else [where], message, field)


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = jsonable_encoder(exc.errors())
    for e in errors:  # name what is allowed, not only what is not
        if e.get("type") == "extra_forbidden":
            e["msg"] = "not a field of this request (the schema at /openapi.json names them)"
    line = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": errors, "message": line}, status_code=422)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """FastAPI answers a body it cannot decode (not UTF-8, or JSON nested too deep for Python's
    parser) with a bare 400; bad input here is a 422 like any other. Everything else (404, 405)
    keeps FastAPI's answer."""
    if exc.status_code == 400:
        return _invalid(None, "the request body is not readable JSON (not UTF-8, or nested too deeply)")
    return await http_exception_handler(request, exc)


TOO_LARGE = {413: {"model": ErrorOut, "description": f"the request body is over {MAX_BODY_BYTES} bytes"}}
EVERY_ROUTE = {
    503: {"model": ErrorOut, "description": "too many requests of this kind in flight (the message names the "
                                            "limit); retry after Retry-After seconds"},
    500: {"model": ErrorOut, "description": f"an unexpected error: the answer names only its request id (as "
                                            f"{REQUEST_ID} does on every answer); the server logs it with the "
                                            f"traceback"},
}


# ---------------------------------------------------------------------------------------------
# The ASGI layers every request passes, outermost first: RequestIds, HostCheck, Admit, BodyLimit


class RequestIds:
    """Give every request an id: in its answer's X-Request-ID header, in `request.state.request_id`
    and in the log. An exception that reaches here is a bug: logged with its traceback and the id,
    and answered 500 with the id alone (its text may hold paths, values, a model's internals)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", ()),
                                                  (REQUEST_ID.lower().encode(), request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("request %s (%s %s) failed", request_id, scope.get("method"), scope.get("path"))
            if not started:  # (once an answer has begun, the connection is all that can be closed)
                message = f"an internal error; the server's log has it under request id {request_id}"
                await _error(500, "internal_error", [], message, request_id=request_id)(scope, receive, send_with_id)


def _host_name(header: str) -> str:
    """The name in a Host header, without its port: "127.0.0.1:8000" -> "127.0.0.1",
    "[::1]:8000" -> "[::1]", "Localhost" -> "localhost"."""
    header = header.strip().lower()
    if header.startswith("["):  # an IPv6 address: "[...]" then nothing or ":port"
        name, _, rest = header.partition("]")
        return name + "]" if rest == "" or (rest[:1] == ":" and rest[1:].isdigit()) else header
    name, colon, port = header.rpartition(":")
    return name if colon and port.isdigit() else header


def allowed_host_names(host: str, extra: Iterable[str] = ()) -> tuple[str, ...]:
    """The Host names a server bound to `host` answers to: the bind address itself, for a loopback
    bind also localhost, 127.0.0.1 and [::1], and `extra` (`--allowed-host`)."""
    names = [f"[{host}]" if ":" in host and not host.startswith("[") else host]
    if _is_loopback(host):
        names += LOOPBACK_HOSTS
    names += list(extra)
    return tuple(dict.fromkeys(_host_name(n) for n in names))


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class HostCheck:
    """Answer only requests whose Host header is one of `allowed` (400 otherwise). A web page can
    make a browser send requests to a server on the loopback address by pointing a name of its own
    at 127.0.0.1 (DNS rebinding); its requests then carry that name as their Host."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]):
        self.app, self.allowed = app, frozenset(_host_name(h) for h in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if _host_name(host) not in self.allowed:
                message = (f"the Host header {host[:100]!r} does not name this server (it answers to "
                           f"{', '.join(sorted(self.allowed))}); to allow another name, start it with "
                           f"--allowed-host NAME")
                refusal = _error(400, "host_not_allowed", ["header", "host"], message, "host")
                return await refusal(scope, receive, send)
        await self.app(scope, receive, send)


class Lane:
    """Requests of one kind: at most `limit` in flight (answered, running or waiting), their work
    done by `workers` threads of the lane's own."""

    def __init__(self, name: str, what: str, workers: int, queue: int, seconds: float = 1.0):
        if workers < 0 or queue < 0 or workers + queue < 1:
            raise ValueError(f"lane {name}: need workers >= 0, queue >= 0 and room for one request, "
                             f"got {workers} and {queue}")
        self.name, self.what, self.workers, self.queue, self.limit = name, what, workers, queue, workers + queue
        self.pool = self._new_pool()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.counts = {"served": 0, "cancelled": 0, "failed": 0, "refused": 0}
        self.mean_seconds = seconds  # running mean of a request's work, for Retry-After

    def _new_pool(self) -> ThreadPoolExecutor | None:
        if not self.workers:
            return None
        return ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)

    def close(self) -> None:
        """Stop the work in hand; a fresh (idle: threads start on demand) pool takes its place, so
        an app whose lifespan starts again (a second test client, say) still works."""
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = self._new_pool()

    def enter(self) -> Ticket | None:
        with self.lock:
            if self.in_flight >= self.limit:
                self.counts["refused"] += 1
                return None
            self.in_flight += 1
        return Ticket(self)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def record(self, outcome: str, seconds: float) -> None:
        with self.lock:
            self.counts[outcome] += 1
            if outcome == "served":
                self.mean_seconds = 0.8 * self.mean_seconds + 0.2 * seconds

    def retry_after(self) -> int:
        """Seconds until a place is likely free: with `workers` requests worked on side by side,
        one finishes every mean_seconds / workers on average."""
        with self.lock:
            return max(1, math.ceil(self.mean_seconds / max(1, self.workers)))

    def refusal(self) -> JSONResponse:
        seconds = self.retry_after()
        parts = f" ({self.workers} worked on at once, {self.queue} waiting)" if self.workers else ""
        message = f"too many {self.what} in flight: the limit is {self.limit}{parts}; retry in {seconds} s"
        return _error(503, "busy", [], message, headers={"Retry-After": str(seconds)}, limit=self.limit)

    def health(self) -> dict:
        with self.lock:
            return {"in_flight": self.in_flight, "limit": self.limit, "workers": self.workers, **self.counts}


class Ticket:
    """A place in a lane. The request holds it while it is answered, and its work (`submit`, `run`)
    while that runs or waits: the place is free again when both have let go."""

    def __init__(self, lane: Lane):
        self.lane = lane
        self._holds = 1
        self._lock = threading.Lock()

    def _hold(self) -> None:
        with self._lock:
            self._holds += 1

    def let_go(self) -> None:
        with self._lock:
            self._holds -= 1
            last = self._holds == 0
        if last:
            self.lane.leave()

    def submit(self, fn: Callable, *args) -> Future:
        """Run `fn(*args)` on one of the lane's threads; the place is held until it has run, or
        until it is cancelled before it starts (then it counts as cancelled)."""
        if self.lane.pool is None:
            raise RuntimeError(f"the {self.lane.name} lane has no worker threads")
        self._hold()

        def work():
            try:
                return fn(*args)
            finally:
                self.let_go()

        try:
            future = self.lane.pool.submit(work)
        except BaseException:
            self.let_go()
            raise

        def dropped(f: Future) -> None:
            if f.cancelled():  # it never ran, so `work` never let go
                self.lane.record("cancelled", 0.0)
                self.let_go()

        future.add_done_callback(dropped)
        return future

    async def run(self, fn: Callable, *args):
        """`fn(*args)` on one of the lane's threads, awaited; counted served (a PoetryError, bad
        input answered with a 422, too) or failed."""
        lane = self.lane

        def counted():
            started, outcome = time.perf_counter(), "failed"
            try:
                result = fn(*args)
                outcome = "served"
                return result
            except PoetryError:
                outcome = "served"
                raise
            finally:
                lane.record(outcome, time.perf_counter() - started)

        return await asyncio.wrap_future(self.submit(counted))


class Admission:
    """The one gate of the app: every HTTP request takes a place in its lane or is answered 503."""

    def __init__(self, *lanes: Lane):
        self.lanes = {lane.name: lane for lane in lanes}

    def lane_for(self, path: str) -> Lane:
        if path == "/api/generate":
            return self.lanes["poems"]
        if path == "/api/scan" or path.startswith("/api/explain/"):
            return self.lanes["analysis"]
        return self.lanes["light"]

    def close(self) -> None:
        for lane in self.lanes.values():
            lane.close()

    def health(self) -> dict:
        lanes = {name: lane.health() for name, lane in self.lanes.items()}
        poems = lanes["poems"]
        return {"status": "ok", **{k: poems[k] for k in ("in_flight", "limit", "served", "cancelled", "failed",
                                                          "refused")}, "lanes": lanes}


class Admit:
    """ASGI middleware: `Admission` for every HTTP request, before its body is read. The ticket
    is left in `request.state.ticket` for the endpoint's work."""

    def __init__(self, app: ASGIApp, admission: Admission):
        self.app, self.admission = app, admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        lane = self.admission.lane_for(scope["path"])
        ticket = lane.enter()
        if ticket is None:
            return await lane.refusal()(scope, receive, send)
        scope.setdefault("state", {})["ticket"] = ticket
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send)
        finally:
            if not lane.workers:  # a lane without work of its own counts its answers here
                lane.record("served", time.perf_counter() - started)
            ticket.let_go()


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
        response = _error(413, "too_large", ["body"], message, "body", headers={"Connection": "close"})  # unread
        await response(scope, receive, send)


# ---------------------------------------------------------------------------------------------
# The work: poems, scans, the model explained


class _Cancelled(Exception):
    """Raised inside a poem's worker to stop a poem whose reader has gone."""


class _Stoppable:
    """The model as a server's poem sees it: before each pass of the network (one per token, and
    one per prompt) it checks whether the poem's reader has gone, and if so stops the poem there,
    mid-hemistich, rather than at its next event. Everything else is the model's own."""

    def __init__(self, model: InferenceGPT, cancel: threading.Event):
        self._model, self._cancel = model, cancel

    def _check(self) -> None:
        if self._cancel.is_set():
            raise _Cancelled

    def forward(self, *args, **kwargs):
        self._check()
        return self._model.forward(*args, **kwargs)

    def decode_step(self, *args, **kwargs):
        self._check()
        return self._model.decode_step(*args, **kwargs)

    def __getattr__(self, name: str):
        if name == "_model":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self._model, name)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def _bound_scanner_caches(limit: int | None = None) -> None:
    """Keep the scanner's per-word memos small: a server meets new words without end (in a
    10-minute soak they grew its memory by 41%). Safe while other workers scan (see
    `trim_word_caches`)."""
    trim_word_caches(SCANNER_CACHE_ENTRIES if limit is None else limit)


def _hemistich_scan(text: str) -> dict:
    """The scanner's reading of one finished hemistich (its own best metre), sent at once; the
    whole poem's scansion, with one metre for all hemistichs, comes with the final event."""

    s = scan_hemistich(text, top=1)
    return {"metre_id": s.metre_id, "name": s.name, "weights": s.weights, "pattern": s.pattern,
            "syllables": [{"letters": y.letters, "weight": y.weight, "note": y.note} for y in s.syllables]}


def _poem_events(ticket: Ticket, poetry: PoetryModel, request: PoemRequest, request_id: str) -> AsyncIterator[bytes]:
    """Queue the poem on the poems lane and return its event stream."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    cancel = threading.Event()

    def emit(kind: str | None, data: Any = None) -> None:
        try:
            loop.call_soon_threadsafe(events.put_nowait, (kind, data))
        except RuntimeError:  # the loop is closed: the server is shutting down
            cancel.set()

    emit("start", {"seed": request.seed, "poet": request.poet, "form": request.form})
    future = ticket.submit(_write_poem, ticket.lane, poetry, request, emit, cancel, request_id)
    return _relay(events, cancel, future)


def _write_poem(lane: Lane, poetry: PoetryModel, request: PoemRequest, emit: Callable, cancel: threading.Event,
                request_id: str) -> None:
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
        view = copy.copy(poetry)  # the same bundle, with the model that stops when the reader has gone
        view.model = _Stoppable(poetry.model, cancel)
        poem = generate.write_poem(view, request, on_event=on_event)
        prosody = scan([h for couplet in poem.couplets for h in couplet], poem.form)
        emit("poem", {"poem": poem.to_dict(), "prosody": prosody.to_dict()})
        outcome = "served"
    except _Cancelled:
        outcome = "cancelled"
    except Exception:  # a bug, not bad input (that was refused before): log it, say only its id, keep serving
        log.exception("request %s: writing a poem failed", request_id)
        emit("error", {"message": f"the poem could not be written (an internal error); the server's log has it "
                                  f"under request id {request_id}", "request_id": request_id})
    finally:
        lane.record(outcome, time.perf_counter() - started)  # counted before the stream ends
        emit(None)


async def _relay(events: asyncio.Queue, cancel: threading.Event, future: Future) -> AsyncIterator[bytes]:
    try:
        while True:
            kind, data = await events.get()
            if kind is None:
                return
            yield _sse(kind, data)
    finally:  # finished, or cancelled because the client went away
        cancel.set()
        future.cancel()  # still waiting for a worker: it never runs, and its place is free now


def _scan(text: str, form: str | None) -> JSONResponse:
    _bound_scanner_caches()
    result = scan(text, form=form)
    if result.metre_id is None:
        return _invalid("text", "no Persian verse to scan")
    return JSONResponse(result.to_dict())


def _attention(poetry: PoetryModel, text: str, layer: int) -> JSONResponse:
    """One layer's attention weights over `text`: [head][query][key <= query], rounded. The model
    runs once; only the asked layer is turned into numbers for JSON, each value once, and the
    answer is rendered here, in the worker (not walked again by FastAPI on the event loop)."""
    ids = encode_within_limit(poetry, text)  # PoetryError past the context length
    _, weights = poetry.model.forward(np.array([ids]), return_weights=True)
    w = np.round(weights[layer][0].astype(np.float64), DECIMALS)  # (H, T, T), float64: 0.1235, not 0.12349999
    rows = [[w[h, q, :q + 1].tolist() for q in range(len(ids))] for h in range(w.shape[0])]
    return JSONResponse({"tokens": [poetry.tokenizer.id_to_token(i) for i in ids], "ids": ids, "layers": [layer],
                         "weights": [rows]})


def _positions(positions: int, dim: int, positional: str) -> JSONResponse:
    table = np.round(sinusoidal_table(positions, dim).astype(np.float64), DECIMALS).tolist()
    return JSONResponse({"positions": positions, "dim": dim, "positional": positional, "table": table})


def _tokens(poetry: PoetryModel, text: str) -> JSONResponse:
    return JSONResponse(tokenize_text(poetry, text).to_dict())


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
        "limits": {"couplets_min": 1, "couplets_max": MAX_COUPLETS, "text_chars": MAX_TEXT_CHARS,
                   "table_values": MAX_TABLE_VALUES},
        "model": {"context_length": config.context_length, "n_layer": config.n_layer, "n_head": config.n_head,
                  "n_embd": config.n_embd, "vocab_size": config.vocab_size},
    }


def create_app(poetry: PoetryModel | None = None, *, workers: int = 2, queue: int = 6, analysis_workers: int = 2,
               analysis_queue: int = 14, light_limit: int = 64,
               allowed_hosts: Iterable[str] | None = None) -> FastAPI:
    """The app around `poetry` (default: the shipped model, loaded once, now). At most `workers`
    poems are written at once and `queue` more wait; scans and explanations likewise with
    `analysis_workers` and `analysis_queue`; at most `light_limit` other requests are answered at
    once. Past a bound the answer is 503. It answers requests whose Host is one of `allowed_hosts`
    (default: the loopback names, LOOPBACK_HOSTS)."""
    if poetry is None:
        poetry = load_model()
    one_blas_thread()  # for the process, not a context: poems on several worker threads share the limit
    admission = Admission(Lane("poems", "poems", workers, queue, seconds=5.0),
                          Lane("analysis", "scan and explain requests", analysis_workers, analysis_queue),
                          Lane("light", "requests", 0, light_limit))
    options = _options(poetry)
    config = poetry.config

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        admission.close()

    app = FastAPI(title="Persian Poetry GPT", version="0.1.0", docs_url=None, redoc_url=None, lifespan=lifespan,
                  responses=EVERY_ROUTE,
                  description="Write classical Persian poems with a GPT trained from scratch, scan their metre "
                              "and rhyme, and look inside the model. Offline.")
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Added innermost first: a request meets RequestIds, HostCheck, Admit, then BodyLimit.
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    app.add_middleware(Admit, admission=admission)
    app.add_middleware(HostCheck, allowed=LOOPBACK_HOSTS if allowed_hosts is None else tuple(allowed_hosts))
    app.add_middleware(RequestIds)
    app.state.poetry, app.state.admission = poetry, admission

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")

    @app.get("/healthz", response_model=HealthOut, summary="liveness, and the requests in flight per lane")
    async def healthz() -> dict:
        return admission.health()

    @app.get("/api/options", response_model=OptionsOut, summary="poets, forms and metres the model knows")
    async def get_options() -> dict:
        return options

    @app.post("/api/generate", summary="write a poem, streamed as Server-Sent Events",
              response_class=StreamingResponse,
              responses={200: {"content": {"text/event-stream": {}},
                               "description": "events: start {seed}; text {text} as it is written; hemi, beyt "
                                              "and end {hemistich, scan} after each hemistich; poem {poem, "
                                              "prosody} at the end (or error {message, request_id})"},
                         422: {"description": "bad input; `message` names the field"}, **TOO_LARGE})
    async def generate_poem(body: GenerateIn, request: Request):
        values = body.model_dump()
        poem_request = PoemRequest(**values)
        try:
            _, poem_request.seed = validate_request(poetry, poem_request)
        except PoetryError as err:
            return _invalid(_field_of(str(err), values), str(err))
        stream = _poem_events(request.state.ticket, poetry, poem_request, request.state.request_id)
        return StreamingResponse(stream, media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @app.post("/api/scan", summary="metre, syllables and rhyme of a text", responses=TOO_LARGE)
    async def post_scan(body: ScanIn, request: Request):
        return await request.state.ticket.run(_scan, body.text, body.form)

    @app.post("/api/explain/tokens", summary="the text as the model's tokens, against the token limit",
              responses=TOO_LARGE)
    async def explain_tokens(body: TextIn, request: Request):
        return await request.state.ticket.run(_tokens, poetry, body.text)

    @app.post("/api/explain/attention", response_model=AttentionOut, responses=TOO_LARGE,
              summary="attention weights over a text: one layer, every head")
    async def explain_attention(body: AttentionIn, request: Request):
        layer = config.n_layer - 1 if body.layer is None else body.layer
        if layer >= config.n_layer:
            return _invalid("layer", f"layer must be between 0 and {config.n_layer - 1}, got {layer}")
        try:
            return await request.state.ticket.run(_attention, poetry, body.text, layer)
        except PoetryError as err:
            return _invalid("text", str(err))

    @app.get("/api/explain/positions", summary="the sinusoidal positional-encoding table (unscaled); for a model "
                                               "with rotary positions, the angles its heads turn by")
    async def explain_positions(
            request: Request,
            positions: int | None = Query(None, ge=1, le=MAX_TABLE_SIDE,
                                          description="rows; default: the context length (as many as fit)"),
            dim: int | None = Query(None, ge=1, le=MAX_TABLE_SIDE,
                                    description="columns; default: the model's width (rotary: one head's)"),
    ):
        dim = dim or min(config.position_width, MAX_TABLE_SIDE)
        positions = positions or max(1, min(config.context_length, MAX_TABLE_VALUES // dim))
        if positions * dim > MAX_TABLE_VALUES:
            return _invalid("positions", f"at most {MAX_TABLE_VALUES} values (positions x dim), asked for "
                                         f"{positions} x {dim} = {positions * dim}", where="query")
        return await request.state.ticket.run(_positions, positions, dim, config.positional)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.mount("/fonts", StaticFiles(directory=FONTS_DIR), name="fonts")
    return app


def serve(poetry: PoetryModel | None = None, host: str = "127.0.0.1", port: int = 8000, workers: int = 2,
          queue: int = 6, allowed_hosts: Iterable[str] = ()) -> None:
    """Run the app with uvicorn until interrupted. It listens on 127.0.0.1 (this machine only)
    unless another host is asked for, and answers requests whose Host header is the bind address
    (for a loopback bind also localhost, 127.0.0.1 or [::1]) or one of `allowed_hosts`."""

    names = allowed_host_names(host, allowed_hosts)
    if not _is_loopback(host):
        log.warning("listening on %s: anyone who can reach this address can use the server", host)
        if not list(allowed_hosts):
            log.warning("only requests with Host %s are answered; name the server's other names with "
                        "--allowed-host NAME", names[0])
    app = create_app(poetry, workers=workers, queue=queue, allowed_hosts=names)
    uvicorn.run(app, host=host, port=port, log_level="info")
