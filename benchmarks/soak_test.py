"""Soak test of the web server: a long mix of poems, scans and explain requests, with clients that
hang up at random, watching the server's memory.

    python benchmarks/soak_test.py                      # 600 s, 4 clients, its own server
    python benchmarks/soak_test.py --seconds 120 --warmup 30

It starts `persian-poetry serve` (shipped model) on a free loopback port and stops it at the end;
it never talks to any other host. Each client loops until the time is up, picking at random:
a poem (free or constrained, 1 to 3 couplets; a third of them abandoned after a few events),
a scan, the tokens or the attention weights of a text, the positional table, the options. One
request in ten that is not a poem is abandoned too, a few milliseconds after it is sent. A 503
(the server's bound on requests in flight, per lane) is counted and retried after its Retry-After.

The server's resident memory (VmRSS) is read from /proc after --warmup seconds and again at the
end, once no poem is in flight. Targets: end RSS within 10% of the post-warm-up RSS, no 5xx but 503, no
poem that failed inside the server, no traceback in its log. Bounded: --seconds at most 3600, no
request started after it, and a hard stop --grace seconds later. Linux only (/proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx
from load_test import VERSES, rss_kib, start_server  # the same verses and server start as the load test (this folder)


class Tally:
    def __init__(self):
        self.sent = 0
        self.status: Counter = Counter()  # "endpoint status" -> count
        self.abandoned: Counter = Counter()  # endpoint -> requests we hung up on
        self.problems: list[str] = []  # 5xx other than 503, error events, broken streams
        self.refused = 0  # 503

    def saw(self, endpoint: str, status: int) -> None:
        self.status[f"{endpoint} {status}"] += 1


async def poem(http: httpx.AsyncClient, rng: random.Random, tally: Tally, options: dict) -> float:
    body = {"poet": rng.choice(options["poets"])["id"], "form": rng.choice(options["forms"])["id"],
            "couplets": rng.randint(1, 3),
            "free": rng.random() < 0.5, "seed": rng.randrange(2**31)}
    hang_up_after = rng.randint(1, 4) if rng.random() < 1 / 3 else None  # events to read first
    tally.sent += 1
    async with http.stream("POST", "/api/generate", json=body) as response:
        tally.saw("generate", response.status_code)
        if response.status_code == 503:
            tally.refused += 1
            return float(response.headers.get("Retry-After", "1"))
        if response.status_code != 200:
            text = (await response.aread())[:200]
            tally.problems.append(f"generate {body}: HTTP {response.status_code} {text!r}")
            return 0.0
        events, event = 0, None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event, events = line[7:], events + 1
                if hang_up_after is not None and events >= hang_up_after:
                    tally.abandoned["generate"] += 1
                    return 0.0  # leaving the block closes the connection mid-poem
            elif line.startswith("data: ") and event == "error":
                tally.problems.append(f"generate {body}: error event {line[6:200]}")
            elif line.startswith("data: ") and event == "poem":
                return 0.0
        if hang_up_after is None:
            tally.problems.append(f"generate {body}: the stream ended before the poem")
    return 0.0


def other_request(rng: random.Random, options: dict) -> tuple[str, str, dict]:
    """(endpoint, method, httpx keyword arguments) for one request that is not a poem."""
    text = "\n".join(rng.choice(VERSES) for _ in range(rng.randint(1, 4)))
    kind = rng.choice(["scan", "scan", "tokens", "attention", "attention", "positions", "options"])
    if kind == "scan":
        return kind, "POST", {"url": "/api/scan", "json": {"text": text}}
    if kind == "tokens":
        return kind, "POST", {"url": "/api/explain/tokens", "json": {"text": text}}
    if kind == "attention":
        layer = rng.choice([None, rng.randrange(options["model"]["n_layer"])])
        return kind, "POST", {"url": "/api/explain/attention", "json": {"text": text, "layer": layer}}
    if kind == "positions":
        return kind, "GET", {"url": "/api/explain/positions"}
    return kind, "GET", {"url": "/api/options"}


async def other(http: httpx.AsyncClient, rng: random.Random, tally: Tally, options: dict) -> float:
    kind, method, kwargs = other_request(rng, options)
    tally.sent += 1
    if rng.random() < 0.1:  # hang up a few milliseconds in, before the answer
        try:
            response = await asyncio.wait_for(http.request(method, **kwargs), timeout=rng.uniform(0.001, 0.02))
            tally.saw(kind, response.status_code)  # it was quicker than the hang-up
        except TimeoutError:
            tally.abandoned[kind] += 1
        return 0.0
    response = await http.request(method, **kwargs)
    tally.saw(kind, response.status_code)
    if response.status_code == 503:  # the bound on scans and explanations in flight
        tally.refused += 1
        return float(response.headers.get("Retry-After", "1"))
    if response.status_code != 200:
        tally.problems.append(f"{kind}: HTTP {response.status_code} {response.text[:200]!r}")
    return 0.0


async def client(index: int, url: str, args, deadline: float, tally: Tally) -> None:
    rng = random.Random(args.seed * 1000 + index)
    limits = httpx.Limits(max_connections=4)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=httpx.Timeout(120)) as http:
        options = (await http.get("/api/options")).json()
        while time.monotonic() < deadline:
            try:
                wait = await (poem if rng.random() < args.poem_share else other)(http, rng, tally, options)
            except httpx.HTTPError as err:
                tally.problems.append(f"{type(err).__name__}: {err}")
                wait = 0.5
            await asyncio.sleep(min(wait, max(0.0, deadline - time.monotonic())))


async def health(url: str) -> dict:
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        return (await http.get("/healthz")).json()


async def run(args, url: str, pid: int) -> dict:
    tally = Tally()
    started = time.monotonic()
    deadline = started + args.seconds
    tasks = [asyncio.create_task(client(i, url, args, deadline, tally)) for i in range(args.clients)]
    timeline = []  # (seconds, RSS MiB) every --sample seconds
    warm = None
    while not all(t.done() for t in tasks) and time.monotonic() < deadline + args.grace:
        await asyncio.sleep(min(args.sample, max(0.1, deadline + args.grace - time.monotonic())))
        elapsed = time.monotonic() - started
        timeline.append((round(elapsed), round(rss_kib(pid)["VmRSS"] / 1024, 1)))
        if warm is None and elapsed >= args.warmup:
            warm = {"seconds": round(elapsed, 1), **rss_kib(pid), "health": await health(url)}
    for task in tasks:
        if not task.done():
            task.cancel()
            tally.problems.append("a client still running at the hard stop")
    await asyncio.gather(*tasks, return_exceptions=True)
    # Abandoned poems stop at their next event; wait for them before the last reading.
    for _ in range(120):
        end_health = await health(url)
        if end_health["in_flight"] == 0:
            break
        await asyncio.sleep(0.5)
    end = {"seconds": round(time.monotonic() - started, 1), **rss_kib(pid), "health": end_health}
    return {"tally": tally, "warm": warm, "end": end, "timeline": timeline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600, help="no request starts after this")
    parser.add_argument("--warmup", type=float, default=60, help="the first RSS reading, this long in")
    parser.add_argument("--grace", type=float, default=180, help="hard stop this long after --seconds")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--poem-share", type=float, default=0.4, help="share of requests that ask for a poem")
    parser.add_argument("--sample", type=float, default=10, help="seconds between RSS samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2, help="for the server this script starts")
    parser.add_argument("--queue", type=int, default=6, help="for the server this script starts")
    parser.add_argument("--out", type=Path, help="also write the result here (JSON)")
    parser.add_argument("--server-log", type=Path, help="keep the server's output here (default: discarded)")
    args = parser.parse_args(argv)
    if not (0 < args.seconds <= 3600 and 0 <= args.warmup < args.seconds and 1 <= args.clients <= 32):
        parser.error("bounded on purpose: up to 3600 s, a warm-up shorter than that, 1..32 clients")
    if not Path("/proc/self/status").exists():
        parser.error("reads the server's memory from /proc: Linux only")

    load_before = os.getloadavg()[0]
    with (open(args.server_log, "w+") if args.server_log else tempfile.TemporaryFile("w+")) as log:
        server, url = start_server(args, log)
        try:
            result = asyncio.run(run(args, url, server.pid))
        finally:
            server.terminate()
            server.wait(30)
        log.seek(0)
        tracebacks = log.read().count("Traceback (most recent call last)")

    tally, warm, end = result["tally"], result["warm"], result["end"]
    five_hundreds = sum(n for key, n in tally.status.items() if int(key.split()[-1]) >= 500
                        and int(key.split()[-1]) != 503)  # a 503 is a bound doing its work: counted apart
    growth = (end["VmRSS"] - warm["VmRSS"]) / warm["VmRSS"]
    report = {
        "seconds": args.seconds, "warmup_seconds": args.warmup, "clients": args.clients,
        "requests": tally.sent,
        "status": dict(sorted(tally.status.items())), "abandoned": dict(sorted(tally.abandoned.items())),
        "5xx": five_hundreds, "refused_503": tally.refused, "problems": len(tally.problems),
        "problem_samples": tally.problems[:5], "server_tracebacks": tracebacks,
        "rss_mib": {"after_warmup": round(warm["VmRSS"] / 1024, 1), "end": round(end["VmRSS"] / 1024, 1),
                    "peak": round(end["VmHWM"] / 1024, 1), "growth_percent": round(100 * growth, 1)},
        "server_after_warmup": warm["health"], "server_end": end["health"],
        "rss_timeline_mib": result["timeline"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs; 1-minute load average {load_before:.2f} "
                   f"before, {os.getloadavg()[0]:.2f} after",
    }
    ok = (abs(growth) <= 0.10 and five_hundreds == 0 and not tally.problems and tracebacks == 0
          and end["health"]["failed"] == 0)
    report["target_met"] = ok
    text = json.dumps(report, ensure_ascii=False, indent=1)
    text = text.replace(json.dumps(report["rss_timeline_mib"], indent=1).replace("\n", "\n "),
                        json.dumps(report["rss_timeline_mib"]))  # the timeline on one line
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
