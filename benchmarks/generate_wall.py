"""Wall time of `persian-poetry generate` for a 7-couplet ghazal, start-up and model load included,
with the peak memory (RSS) of each run, and the time of `persian-poetry --help`.

Each run is a fresh process, as a user would start it. Wall time, CPU time (user + system) and the
peak RSS come from `os.wait4` on that process; the median of the runs is reported. A busy CPU
lengthens wall time, not CPU time, so both are printed, with the load average.

    python benchmarks/generate_wall.py                       # 5 runs, float and int8, and --help
    python benchmarks/generate_wall.py --runs 10 --breakdown # also where the time goes, in one process
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

GENERATE = ["generate", "--poet", "hafez", "--form", "ghazal", "--couplets", "7", "--seed", "1"]


def command() -> list[str]:
    exe = shutil.which("persian-poetry")
    return [exe] if exe else [sys.executable, "-m", "persian_poetry.cli"]


def run_once(args: list[str]) -> dict:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one process."""
    start = time.perf_counter()
    proc = subprocess.Popen(command() + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
    """import torch, our imports, model load, the poem: timed inside one fresh process."""
    code = (
        "import time; t0 = time.perf_counter()\n"
        "import torch; t1 = time.perf_counter(); torch.set_num_threads(1)\n"
        "from persian_poetry.writing.bundle import load_model\n"
        "from persian_poetry.writing.generate import PoemRequest, write_poem; t2 = time.perf_counter()\n"
        "poetry = load_model(); t3 = time.perf_counter()\n"
        "poem = write_poem(poetry, PoemRequest(poet='hafez', form='ghazal', couplets=7, seed=1)); t4 = time.perf_counter()\n"
        "print(f'import torch {t1 - t0:.2f} s, our modules {t2 - t1:.2f} s, load_model {t3 - t2:.2f} s, '\n"
        "      f'write_poem {t4 - t3:.2f} s ({poem.tokens} tokens, {poem.tokens / (t4 - t3):.0f} tokens/s)')\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def report(name: str, runs: list[dict]) -> None:
    wall = [r["wall_s"] for r in runs]
    print(f"{name}: wall median {statistics.median(wall):.2f} s (min {min(wall):.2f}, max {max(wall):.2f}), "
          f"CPU median {statistics.median(r['cpu_s'] for r in runs):.2f} s, "
          f"peak RSS {max(r['peak_rss_mib'] for r in runs):.0f} MiB, {len(runs)} runs")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-int8", action="store_true", help="skip the --quantize int8 runs")
    ap.add_argument("--breakdown", action="store_true", help="also time the parts inside one process")
    args = ap.parse_args()

    print(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    help_runs = [run_once(["--help"]) for _ in range(args.runs)]
    report("persian-poetry --help", help_runs)
    code = "import sys, persian_poetry.cli as c; c.build_parser(); print('torch' in sys.modules)"
    probe = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    print(f"  torch imported by the CLI's parser: {probe.stdout.strip()}")

    variants = {"generate (float32)": GENERATE}
    if not args.no_int8:
        variants["generate --quantize int8"] = GENERATE + ["--quantize", "int8"]
    for name, cli_args in variants.items():
        run_once(cli_args)  # warm the page cache
        runs = [run_once(cli_args) for _ in range(args.runs)]
        report(f"persian-poetry {' '.join(cli_args)}" if name.startswith("generate (") else name, runs)
        if len({r["stdout"] for r in runs}) != 1:
            raise SystemExit("the same seed gave different poems")
    if args.breakdown:
        print("breakdown (one process):", breakdown())
    print(f"load average at end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
