"""Load test of the web server: concurrent clients over loopback, mixing every endpoint, for a while.

    python benchmarks/load_test.py                     # 20 clients, 60 s, its own server
    python benchmarks/load_test.py --seconds 20 --warmup 5 --max-requests 400
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --clients 5 --seconds 30

Without --url it starts `persian-poetry serve` (shipped model) on a free loopback port and stops it
at the end; with --url it uses that server (and reads its memory only if --pid names it). Each
client loops until the time is up, picking at random: a poem (free or constrained, 1 or 2
couplets, read to its end), a scan, the tokens or the attention weights of 1 to 9 couplets (a
layer picked at random, or the default), the positional table, the options, the page or one of its
files. A 503 (the server's bound on requests in flight, per lane) is counted and the client waits
its Retry-After. Meanwhile a separate client asks /healthz every --health-every seconds: it must
answer every time, however busy the poem and analysis lanes are.

The server's resident memory (VmRSS, from /proc) is read after --warmup seconds and again at the
end, once nothing is in flight. Bounded: at most --max-requests requests, none started after
--seconds, and a hard stop --grace seconds later. Loopback only: it refuses any other host.

Prints per endpoint the answers by status and p50/p95 of their time (a poem's: to its last
event), the /healthz record, the server's RSS, and its own count of requests by lane; exits 1 if
any answer was neither a 200 nor a 503, a stream broke, or /healthz failed to answer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlparse

import httpx

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
VERSES = [  # Hafez, Saadi, Rumi, Ferdowsi, Khayyam: one couplet each, one hemistich a line
    "الا یا ایها الساقی ادر کاسا و ناولها\nکه عشق آسان نمود اول ولی افتاد مشکل‌ها",
    "بنی آدم اعضای یکدیگرند\nکه در آفرینش ز یک گوهرند",
    "بشنو این نی چون شکایت می‌کند\nاز جدایی‌ها حکایت می‌کند",
    "توانا بود هر که دانا بود\nز دانش دل پیر برنا بود",
    "این قافله عمر عجب می‌گذرد\nدریاب دمی که با طرب می‌گذرد",
    "دوش دیدم که ملایک در میخانه زدند\nگل آدم بسرشتند و به پیمانه زدند",
]
# (kind, weight): what a client asks for, and how often.
MIX = [("poem", 3), ("scan", 3), ("tokens", 2), ("attention", 3), ("positions", 1), ("options", 1), ("page", 1),
       ("static", 1)]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 3)


def rss_kib(pid: int | None) -> dict[str, int]:
    """The process's resident memory now and at its peak, in KiB, from /proc/PID/status."""
    if pid is None or not Path(f"/proc/{pid}/status").exists():
        return {}
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


class Tally:
    def __init__(self):
        self.started = 0
        self.status: dict[str, Counter] = defaultdict(Counter)  # kind -> status -> count
        self.seconds: dict[str, list[float]] = defaultdict(list)  # kind -> times of its 200s
        self.problems: list[str] = []
        self.attention_bytes = 0  # the largest attention answer
        self.health_polls = 0
        self.health_failures: list[str] = []
        self.health_seconds: list[float] = []


def request_for(kind: str, rng: random.Random, options: dict, index: int) -> tuple[str, str, dict]:
    """(method, path, httpx keyword arguments) for one request of `kind`."""
    text = "\n".join(rng.choice(VERSES) for _ in range(rng.randint(1, 9)))
    if kind == "poem":
        body = {"poet": rng.choice(options["poets"])["id"], "couplets": rng.randint(1, 2),
                "free": rng.random() < 0.5, "seed": rng.randrange(2**31)}
        return "POST", "/api/generate", {"json": body}
    if kind == "scan":
        return "POST", "/api/scan", {"json": {"text": text}}
    if kind == "tokens":
        return "POST", "/api/explain/tokens", {"json": {"text": text}}
    if kind == "attention":
        body = {"text": text}
        if rng.random() < 0.5:
            body["layer"] = rng.randrange(options["model"]["n_layer"])
        return "POST", "/api/explain/attention", {"json": body}
    if kind == "positions":
        return "GET", "/api/explain/positions", {}
    if kind == "options":
        return "GET", "/api/options", {}
    if kind == "page":
        return "GET", "/", {}
    return "GET", rng.choice(["/static/app.js", "/static/app.css", "/fonts/Vazirmatn-Regular.woff2"]), {}


async def poem(http: httpx.AsyncClient, kwargs: dict, tally: Tally) -> float:
    started = time.perf_counter()
    async with http.stream("POST", "/api/generate", **kwargs) as response:
        tally.status["poem"][response.status_code] += 1
        if response.status_code == 503:
            return float(response.headers.get("Retry-After", "1"))
        if response.status_code != 200:
            tally.problems.append(f"poem: HTTP {response.status_code} {(await response.aread())[:200]!r}")
            return 0.0
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event == "error":
                tally.problems.append(f"poem: error event {line[6:200]}")
                return 0.0
            elif line.startswith("data: ") and event == "poem":
                tally.seconds["poem"].append(time.perf_counter() - started)
                return 0.0
    tally.problems.append("poem: the stream ended before the poem")
    return 0.0


async def one(http: httpx.AsyncClient, kind: str, rng: random.Random, options: dict, index: int,
              tally: Tally) -> float:
    """One request; returns how long to wait before the next (Retry-After on a 503, else 0)."""
    method, path, kwargs = request_for(kind, rng, options, index)
    if kind == "poem":
        return await poem(http, kwargs, tally)
    started = time.perf_counter()
    response = await http.request(method, path, **kwargs)
    tally.status[kind][response.status_code] += 1
    if response.status_code == 503:
        return float(response.headers.get("Retry-After", "1"))
    if response.status_code != 200:
        tally.problems.append(f"{kind} {path}: HTTP {response.status_code} {response.text[:200]!r}")
        return 0.0
    tally.seconds[kind].append(time.perf_counter() - started)
    if kind == "attention":
        tally.attention_bytes = max(tally.attention_bytes, len(response.content))
    return 0.0


async def client(index: int, http: httpx.AsyncClient, args, deadline: float, tally: Tally, options: dict) -> None:
    rng = random.Random(args.seed * 1000 + index)
    kinds, weights = zip(*MIX, strict=True)
    while time.monotonic() < deadline and tally.started < args.max_requests:
        tally.started += 1
        kind = rng.choices(kinds, weights)[0]
        try:
            wait = await one(http, kind, rng, options, index, tally)
        except (httpx.HTTPError, json.JSONDecodeError) as err:
            tally.problems.append(f"{kind}: {type(err).__name__}: {err}")
            wait = 0.5
        await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))


async def watch_health(url: str, every: float, stop: asyncio.Event, tally: Tally) -> None:
    """/healthz, on a connection of its own, every `every` seconds until `stop`."""
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        while not stop.is_set():
            started = time.perf_counter()
            tally.health_polls += 1
            try:
                response = await http.get("/healthz")
                if response.status_code != 200:
                    tally.health_failures.append(f"HTTP {response.status_code}: {response.text[:200]}")
            except httpx.HTTPError as err:
                tally.health_failures.append(f"{type(err).__name__}: {err}")
            tally.health_seconds.append(time.perf_counter() - started)
            try:
                await asyncio.wait_for(stop.wait(), every)
            except TimeoutError:
                pass


async def run(args, url: str, pid: int | None) -> dict:
    tally = Tally()
    load_before = os.getloadavg()[0]
    limits = httpx.Limits(max_connections=args.clients + 2)
    timeout = httpx.Timeout(args.seconds + args.grace)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as http:
        options = (await http.get("/api/options")).json()
        started = time.monotonic()
        deadline = started + args.seconds
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_health(url, args.health_every, stop, tally))
        tasks = [asyncio.create_task(client(i, http, args, deadline, tally, options)) for i in range(args.clients)]
        await asyncio.sleep(min(args.warmup, args.seconds))
        warm = {"seconds": round(time.monotonic() - started, 1), **rss_kib(pid),
                "health": (await http.get("/healthz")).json()}
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline + args.grace - time.monotonic()))
        for task in pending:  # past the hard stop: give up on them
            task.cancel()
            tally.problems.append("a client still running at the hard stop")
        await asyncio.gather(*pending, return_exceptions=True)
        wall = time.monotonic() - started
        for _ in range(120):  # what is still in flight (a poem whose reader has gone) ends first
            end_health = (await http.get("/healthz")).json()
            if all(lane["in_flight"] == 0 for name, lane in end_health["lanes"].items() if name != "light"):
                break
            await asyncio.sleep(0.5)
        stop.set()
        await watcher
        end = {"seconds": round(time.monotonic() - started, 1), **rss_kib(pid), "health": end_health}

    def mib(kib: int | None) -> float | None:
        return None if kib is None else round(kib / 1024, 1)

    endpoints = {kind: {"status": dict(sorted(tally.status[kind].items())),
                        "p50_s": percentile(tally.seconds[kind], 0.5), "p95_s": percentile(tally.seconds[kind], 0.95)}
                 for kind, _ in MIX}
    answered = sum(sum(c.values()) for c in tally.status.values())
    refused = sum(c[503] for c in tally.status.values())
    rss = {"after_warmup": mib(warm.get("VmRSS")), "end": mib(end.get("VmRSS")), "peak": mib(end.get("VmHWM"))}
    if warm.get("VmRSS") and end.get("VmRSS"):
        rss["growth_percent"] = round(100 * (end["VmRSS"] - warm["VmRSS"]) / warm["VmRSS"], 1)
    return {
        "clients": args.clients, "seconds": args.seconds, "wall_seconds": round(wall, 1),
        "requests": tally.started, "answered": answered, "ok_200": answered - refused, "refused_503": refused,
        "errors": len(tally.problems), "error_samples": tally.problems[:5],
        "endpoints": endpoints,
        "largest_attention_answer_bytes": tally.attention_bytes,
        "healthz": {"polls": tally.health_polls, "failed": len(tally.health_failures),
                    "failure_samples": tally.health_failures[:3], "p50_s": percentile(tally.health_seconds, 0.5),
                    "max_s": round(max(tally.health_seconds), 3) if tally.health_seconds else None,
                    "answered_throughout": tally.health_polls > 0 and not tally.health_failures},
        "server_rss_mib": rss,
        "server_lanes_after_warmup": warm["health"]["lanes"], "server_lanes_end": end["health"]["lanes"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs; 1-minute load average {load_before:.2f} "
                   f"before, {os.getloadavg()[0]:.2f} after",
    }


def start_server(args, log=subprocess.DEVNULL) -> tuple[subprocess.Popen, str]:
    """`persian-poetry serve` on a free loopback port (its output to `log`); (process, base URL)
    once /healthz answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "persian_poetry.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(args.workers), "--queue", str(args.queue)]
    server = subprocess.Popen(command, stdout=log, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with status {server.returncode}")
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return server, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.terminate()
    raise SystemExit("the server did not answer /healthz within 120 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server on this machine (default: start one)")
    parser.add_argument("--pid", type=int, help="with --url: the server's process, to read its memory")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60, help="no request starts after this")
    parser.add_argument("--warmup", type=float, default=15, help="the first RSS reading, this long in")
    parser.add_argument("--grace", type=float, default=120, help="hard stop this long after --seconds")
    parser.add_argument("--max-requests", type=int, default=2000)
    parser.add_argument("--health-every", type=float, default=0.25, help="seconds between /healthz polls")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="for the server this script starts")
    parser.add_argument("--queue", type=int, default=6, help="for the server this script starts")
    parser.add_argument("--out", type=Path, help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 200 and 0 < args.seconds <= 600 and 1 <= args.max_requests <= 10_000
            and 0 <= args.warmup <= args.seconds and 0 < args.grace <= 600 and args.health_every >= 0.05):
        parser.error("bounded on purpose: 1..200 clients, up to 600 s (a warm-up within it, a grace of up to "
                     "600 s), 1..10000 requests, /healthz at most 20 times a second")

    server, pid = None, args.pid
    if args.url:
        if urlparse(args.url).hostname not in LOOPBACK:
            parser.error(f"loopback only, not {urlparse(args.url).hostname!r}")
        url = args.url.rstrip("/")
    else:
        server, url = start_server(args)
        pid = server.pid
    try:
        result = asyncio.run(run(args, url, pid))
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    text = json.dumps(result, ensure_ascii=False, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if result["errors"] == 0 and result["healthz"]["answered_throughout"] else 1


if __name__ == "__main__":
    sys.exit(main())
