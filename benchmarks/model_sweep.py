"""Which model to train on this machine: short runs at equal wall-clock, one after another.

Each named variant is `persian-poetry train --preset default` plus its options, for the same
`--time-budget`, on the same data, tokenizer and seed; the table reports each run's steps, tokens,
tokens/s and the whole val split's bits/char at its end. Runs already finished in --out are reused,
so an interrupted sweep continues.

    python benchmarks/model_sweep.py --data ../shared/data/ganjoor/poems.jsonl.gz --out /root/runs/sweep \\
        --budget 600 --variants baseline rotary modern modern-untied modern-small
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from persian_poetry.assets import DEFAULT_MODEL_DIR

MODERN = ["--positional", "rotary", "--norm", "rmsnorm", "--mlp", "relu2", "--qk-norm"]
VARIANTS: dict[str, list[str]] = {
    "baseline": [],  # the shipped model's architecture: 6 x 256, sinusoidal, LayerNorm, GELU, tied
    "rotary": ["--positional", "rotary"],
    "modern": MODERN,
    "modern-swiglu": [*MODERN[:-3], "--mlp", "swiglu", "--qk-norm"],
    "modern-untied": [*MODERN, "--untied", "--logit-softcap", "15"],
    "modern-small": [*MODERN, "--n-layer", "4", "--n-head", "6", "--n-embd", "192"],
    "modern-wide": [*MODERN, "--n-layer", "6", "--n-head", "6", "--n-embd", "384"],
    "modern-deep": [*MODERN, "--n-layer", "10", "--n-head", "8", "--n-embd", "256"],
}


def run(name: str, args: argparse.Namespace) -> dict:
    out = Path(args.out) / name
    report = out / "model" / "report.json"
    if not report.exists():
        command = ["persian-poetry", "train", "--preset", "default", "--data", args.data, "--tokenizer",
                   str(DEFAULT_MODEL_DIR / "tokenizer.json"), "--threads", str(args.threads), "--seed", "1337",
                   "--time-budget", str(args.budget), "--eval-interval", "100", "--eval-poems", "100",
                   "--checkpoint-interval", "200",
                   "--out-dir", str(out), "--no-progress", "--resume", *VARIANTS[name]]
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    r = json.loads(report.read_text(encoding="utf-8"))
    return {"variant": name, "parameters": r["model"]["parameters"], "steps": r["steps"], "tokens": r["tokens_seen"],
            "tokens_per_s": round(r["tokens_seen"] / r["train_seconds"]), "seconds": r["train_seconds"],
            "val_bits_per_char": round(r["final_val"]["bits_per_char"], 4), "cpu": r["hardware"].get("cpu"),
            "options": " ".join(VARIANTS[name]) or "(none)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True, help="one run directory per variant here (reused when finished)")
    ap.add_argument("--budget", type=float, default=600, help="seconds of training per variant")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = ap.parse_args()
    rows = [run(name, args) for name in args.variants]
    print("| variant | options | parameters | steps | tokens | tokens/s | val bits/char |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['variant']} | `{r['options']}` | {r['parameters']:,} | {r['steps']:,} | {r['tokens']:,} | "
              f"{r['tokens_per_s']:,} | {r['val_bits_per_char']:.4f} |")
    json.dump(rows, sys.stderr, indent=1)


if __name__ == "__main__":
    main()
