"""Load test of the web server: concurrent clients asking for poems over loopback for a while.

    python benchmarks/load_test.py                     # 20 clients, 60 s, its own server
    python benchmarks/load_test.py --url http://127.0.0.1:8000 --clients 5 --seconds 30

Without --url it starts `persian-poetry serve` (shipped model) on a free loopback port and stops it
at the end. Each client asks for a poem, reads the Server-Sent Events to the end, and asks again
until the time is up; a 503 (the server's bound on poems in flight) is counted and retried after
its Retry-After. Bounded: at most --max-requests requests, none started after --seconds, and a
hard stop --grace seconds later. Loopback only: it refuses any other host.

Prints requests served, refused (503) and failed (any other status, a broken stream, an error
event), and p50/p95 of the time to the first text event and to the whole poem (with its scansion).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from urllib.parse import urlparse

import httpx

LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Tally:
    def __init__(self):
        self.started = 0
        self.served = 0
        self.refused = 0
        self.failed: list[str] = []
        self.first: list[float] = []  # seconds to the first text event
        self.whole: list[float] = []  # seconds to the poem event


async def one_poem(http: httpx.AsyncClient, body: dict, tally: Tally) -> float:
    """One request; returns how long to wait before the next (Retry-After on a 503, else 0)."""
    started = time.perf_counter()
    first = None
    async with http.stream("POST", "/api/generate", json=body) as response:
        if response.status_code == 503:
            tally.refused += 1
            return float(response.headers.get("Retry-After", "1"))
        if response.status_code != 200:
            tally.failed.append(f"HTTP {response.status_code}: {(await response.aread())[:200]!r}")
            return 0.0
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "text" and first is None:
                    first = time.perf_counter() - started
                elif event == "error":
                    tally.failed.append(f"error event: {line[6:200]}")
                    return 0.0
                elif event == "poem":
                    poem = json.loads(line[6:])
                    if not poem["poem"]["couplets"] or "prosody" not in poem:
                        tally.failed.append("a poem event without couplets or prosody")
                        return 0.0
                    tally.served += 1
                    tally.first.append(first if first is not None else time.perf_counter() - started)
                    tally.whole.append(time.perf_counter() - started)
                    return 0.0
    tally.failed.append("the stream ended before the poem")
    return 0.0


async def client(index: int, http: httpx.AsyncClient, args, deadline: float, tally: Tally) -> None:
    while time.monotonic() < deadline and tally.started < args.max_requests:
        tally.started += 1
        body = {"poet": args.poet, "form": args.form, "seed": 1000 * index + tally.started, "free": args.free}
        if args.couplets:
            body["couplets"] = args.couplets
        try:
            wait = await one_poem(http, body, tally)
        except (httpx.HTTPError, json.JSONDecodeError) as err:
            tally.failed.append(f"{type(err).__name__}: {err}")
            wait = 0.5
        await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))


async def run(args, url: str) -> dict:
    tally = Tally()
    load_before = os.getloadavg()[0]
    deadline = time.monotonic() + args.seconds
    limits = httpx.Limits(max_connections=args.clients + 2)
    timeout = httpx.Timeout(args.seconds + args.grace)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout) as http:
        started = time.perf_counter()
        tasks = [asyncio.create_task(client(i, http, args, deadline, tally)) for i in range(args.clients)]
        _, pending = await asyncio.wait(tasks, timeout=args.seconds + args.grace)
        for task in pending:  # past the hard stop: give up on them
            task.cancel()
            tally.failed.append("still running at the hard stop")
        wall = time.perf_counter() - started
        health = (await http.get("/healthz")).json()

    def ms(q: float, values: list[float]) -> float | None:
        v = percentile(values, q)
        return None if v is None else round(v, 3)

    return {
        "clients": args.clients, "seconds": args.seconds, "wall_seconds": round(wall, 1),
        "request": {"poet": args.poet, "form": args.form, "couplets": args.couplets, "free": args.free},
        "requests": tally.started, "served": tally.served, "refused_503": tally.refused,
        "errors": len(tally.failed), "error_samples": tally.failed[:5],
        "time_to_first_text_s": {"p50": ms(0.5, tally.first), "p95": ms(0.95, tally.first)},
        "time_to_whole_poem_s": {"p50": ms(0.5, tally.whole), "p95": ms(0.95, tally.whole)},
        "poems_per_minute": round(60 * tally.served / wall, 1),
        "server": health,
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
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60, help="no request starts after this")
    parser.add_argument("--grace", type=float, default=120, help="hard stop this long after --seconds")
    parser.add_argument("--max-requests", type=int, default=2000)
    parser.add_argument("--poet", default="hafez")
    parser.add_argument("--form", default="ghazal")
    parser.add_argument("--couplets", type=int, default=None, help="default: the form's usual length")
    parser.add_argument("--free", action="store_true", help="unconstrained writing (token-by-token stream)")
    parser.add_argument("--workers", type=int, default=2, help="for the server this script starts")
    parser.add_argument("--queue", type=int, default=6, help="for the server this script starts")
    args = parser.parse_args(argv)
    if not (1 <= args.clients <= 200 and 0 < args.seconds <= 600 and 1 <= args.max_requests <= 10_000):
        parser.error("bounded on purpose: 1..200 clients, up to 600 s, 1..10000 requests")

    server = None
    if args.url:
        if urlparse(args.url).hostname not in LOOPBACK:
            parser.error(f"loopback only, not {urlparse(args.url).hostname!r}")
        url = args.url.rstrip("/")
    else:
        server, url = start_server(args)
    try:
        result = asyncio.run(run(args, url))
    finally:
        if server is not None:
            server.terminate()
            server.wait(30)
    print(json.dumps(result, ensure_ascii=False, indent=1))
    return 0 if result["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
