"""Wall time of `persian-poetry generate` for a 7-couplet ghazal, start-up and model load included,
with the peak memory (RSS) of each run; beside it, in the same run, `python -c "import torch"` (the
start-up a PyTorch runtime would pay; skipped where torch is not installed), `persian-poetry --help`,
and how soon `persian-poetry serve` answers /healthz after it is started.

Each run is a fresh process, as a user would start it. Wall time, CPU time (user + system) and the
peak RSS come from `os.wait4` on that process; the median of the runs is reported. A busy CPU
lengthens wall time, not CPU time, so both are printed, with the load average.

    python benchmarks/generate_wall.py                       # 5 runs of each
    python benchmarks/generate_wall.py --runs 10 --breakdown # also where the time goes, in one process

A user's install has no PyTorch: run the script with that environment's Python and name one that has
it for the comparison (the two are timed in turn, run by run, so a change of load hits both):

    /tmp/user/bin/python benchmarks/generate_wall.py --torch-python .venv/bin/python

and to compare two versions of the code, each installed in its own environment, run by run:

    /tmp/user/bin/python benchmarks/generate_wall.py --against /tmp/old/bin/persian-poetry
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

GENERATE = ["generate", "--poet", "hafez", "--form", "ghazal", "--couplets", "7", "--seed", "1"]


def command() -> list[str]:
    exe = shutil.which("persian-poetry")
    return [exe] if exe else [sys.executable, "-m", "persian_poetry.cli"]


def run_once(args: list[str], exe: list[str] | None = None) -> dict:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one process (`exe`: another install's command)."""
    start = time.perf_counter()
    proc = subprocess.Popen((exe or command()) + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {err.decode()}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mib": usage.ru_maxrss / 1024,
            "stdout": out.decode()}


def breakdown() -> str:
    """Our imports, model load, the poem: timed inside one fresh process."""
    code = (
        "import time; t0 = time.perf_counter()\n"
        "from persian_poetry.writing.bundle import load_model\n"
        "from persian_poetry.writing.generate import PoemRequest, write_poem; t1 = time.perf_counter()\n"
        "poetry = load_model(); t2 = time.perf_counter()\n"
        "poem = write_poem(poetry, PoemRequest(poet='hafez', form='ghazal', couplets=7, seed=1)); t3 = time.perf_counter()\n"
        "import sys\n"
        "print(f'our modules {t1 - t0:.2f} s, load_model {t2 - t1:.2f} s, '\n"
        "      f'write_poem {t3 - t2:.2f} s ({poem.tokens} tokens); torch imported: {\"torch\" in sys.modules}')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def healthz_after_start() -> float:
    """Seconds from starting `persian-poetry serve` to its first answer on /healthz."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.perf_counter()
    proc = subprocess.Popen(command() + ["serve", "--port", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while time.perf_counter() - start < 120:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        return time.perf_counter() - start
            except OSError:
                time.sleep(0.01)
        raise SystemExit("the server did not answer /healthz within 120 s")
    finally:
        proc.terminate()
        proc.wait(10)


def report(name: str, runs: list[dict]) -> None:
    wall = [r["wall_s"] for r in runs]
    print(f"{name}: wall median {statistics.median(wall):.2f} s (min {min(wall):.2f}, max {max(wall):.2f}), "
          f"CPU median {statistics.median(r['cpu_s'] for r in runs):.2f} s, "
          f"peak RSS {max(r['peak_rss_mib'] for r in runs):.0f} MiB, {len(runs)} runs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--breakdown", action="store_true", help="also time the parts inside one process")
    ap.add_argument("--torch-python", default=sys.executable,
                    help="the Python that times `import torch` (default: this one; skipped if it has no torch)")
    ap.add_argument("--against", default=None, metavar="EXE",
                    help="another install's persian-poetry (older code, say), timed in turn with this one's")
    args = ap.parse_args()

    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    help_runs = [run_once(["--help"]) for _ in range(args.runs)]
    report("persian-poetry --help", help_runs)
    code = "import sys, persian_poetry.cli as c; c.build_parser(); print('torch' in sys.modules)"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    print(f"  torch imported by the CLI's parser: {probe.stdout.strip()}")

    run_once(GENERATE)  # warm the page cache
    find_torch = "import importlib.util as u, sys; sys.exit(u.find_spec('torch') is None)"
    has_torch = subprocess.run([args.torch_python, "-c", find_torch], check=False).returncode == 0
    runs, torch_runs, other_runs = [], [], []
    for _ in range(args.runs):
        runs.append(run_once(GENERATE))
        if args.against:
            other_runs.append(run_once(GENERATE, [args.against]))
        if has_torch:
            start = time.perf_counter()
            subprocess.run([args.torch_python, "-c", "import torch"], check=True)
            torch_runs.append(time.perf_counter() - start)
    report(f"persian-poetry {' '.join(GENERATE)}", runs)
    if len({r["stdout"] for r in runs}) != 1:
        raise SystemExit("the same seed gave different poems")
    if other_runs:
        report(f"{args.against} {' '.join(GENERATE)}", other_runs)
        same = other_runs[0]["stdout"] == runs[0]["stdout"]
        print(f"  this one / that one = {statistics.median(r['wall_s'] for r in runs) / statistics.median(r['wall_s'] for r in other_runs):.2f}; "
              f"the same poem: {same}")
    if torch_runs:
        ratio = statistics.median(r["wall_s"] for r in runs) / statistics.median(torch_runs)
        print(f'python -c "import torch": wall median {statistics.median(torch_runs):.2f} s; '
              f"generate / import torch = {ratio:.2f}")
    health = [healthz_after_start() for _ in range(args.runs)]
    print(f"persian-poetry serve, first /healthz answer after start: median {statistics.median(health):.2f} s "
          f"(min {min(health):.2f}, max {max(health):.2f})")
    if args.breakdown:
        print("breakdown (one process):", breakdown())
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
