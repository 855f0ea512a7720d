"""The tell-apart judge on the real corpus: its two controls and the generator's modes.

Reads the offered poets' couplets once, trains the reader every judge starts from (or reads it from
the cache: `tell_apart.pretrained_reader`; --pretrain-steps 0 for judges from scratch), then runs (a) real against the same couplets with their
words shuffled, (b) real against real (two disjoint samples), each at --controls-train/--controls-test
couplets a class, and the judge against each --mode at --train/--test couplets a class (generated
couplets come from the cache of `tell_apart.generated_couplets`, written where missing). One torch
thread and one BLAS thread, as the recipe has it. Writes every result as JSON to --out.

    OPENBLAS_NUM_THREADS=1 python benchmarks/tell_apart.py --data ../shared/data/ganjoor/poems.jsonl.gz \\
        --controls-train 2000 --controls-test 500 --mode constrained --train 600 --test 200 --out tell_apart.json
    OPENBLAS_NUM_THREADS=1 python benchmarks/tell_apart.py --data ../shared/data/ganjoor/poems.jsonl.gz \\
        --controls-train 0 --mode constrained --style 0 --style 1 --train 2000 --test 500 --held-out val
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from persian_poetry.judges import tell_apart as ta


def line(name: str, result: dict) -> str:
    low, high = result["accuracy_ci95"]
    return (f"{name:28s} accuracy {result['accuracy']:.3f} (95% {low:.3f}-{high:.3f}); real {result['real_accuracy']:.3f}, "
            f"other {result['generated_accuracy']:.3f}; {result['real_train']}+{result['generated_train']} train, "
            f"{result['real_test']}+{result['generated_test']} held out; {result['steps']} steps, {result['seconds']} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ta.DEFAULT_DATA))
    parser.add_argument("--model", default=None, help="model directory (default: the shipped model)")
    parser.add_argument("--mode", action="append", choices=list(ta.MODES), default=None,
                        help="generation mode to judge (repeatable; default: constrained)")
    parser.add_argument("--style", action="append", type=float, default=[], metavar="S",
                        help="also judge constrained poems at style strength S (a mode 'style-S'; repeatable)")
    parser.add_argument("--train", type=int, default=5000, help="training couplets a class for the modes")
    parser.add_argument("--test", type=int, default=1000, help="held-out couplets a class for the modes")
    parser.add_argument("--controls-train", type=int, default=2000, help="0: no controls")
    parser.add_argument("--controls-test", type=int, default=500)
    parser.add_argument("--max-steps", type=int, default=ta.MAX_STEPS)
    parser.add_argument("--pretrain-steps", type=int, default=ta.PRETRAIN_STEPS,
                        help="the reader's pretraining steps (cached per corpus); 0: every judge from scratch")
    parser.add_argument("--held-out", choices=list(ta.HELD_OUT), default="test",
                        help="score the modes on the test split and seeds (reported) or the val ones (tuning)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import torch

    from persian_poetry.gpt.inference import one_blas_thread

    torch.set_num_threads(1)
    one_blas_thread()
    started = time.perf_counter()
    pools = ta.real_couplet_pools(args.data, ("train", "test", "val"))
    report = {"data": args.data, "recipe": ta.recipe(args.pretrain_steps) | {"max_steps": args.max_steps},
              "modes": {}}
    reader = ta.pretrained_reader(args.data, steps=args.pretrain_steps) if args.pretrain_steps else None
    if args.controls_train:
        report["controls"] = ta.evaluate_controls(args.data, args.controls_train, args.controls_test,
                                                  max_steps=args.max_steps, pools=pools,
                                                  pretrain_steps=args.pretrain_steps, reader=reader)
        print(line("control: real vs shuffled", report["controls"]["shuffled"]), flush=True)
        print(line("control: real vs real", report["controls"]["real_vs_real"]), flush=True)
    for strength in args.style:  # constrained at another style strength: a mode of this run's own
        ta.MODES[f"style-{strength:g}"] = {"style": strength}
    modes = (args.mode or ([] if args.style or args.controls_train else ["constrained"])) \
        + [f"style-{s:g}" for s in args.style]
    if modes:
        from persian_poetry.writing.bundle import load_model

        poetry = load_model(args.model)
        for mode in modes:
            report["modes"][mode] = ta.evaluate_tell_apart(poetry, args.data, mode, args.train, args.test,
                                                           max_steps=args.max_steps, pools=pools,
                                                           held_out=args.held_out,
                                                           pretrain_steps=args.pretrain_steps, reader=reader)
            print(line(f"real vs {mode}", report["modes"][mode]), flush=True)
    report["wall_seconds"] = round(time.perf_counter() - started)
    if args.out:
        Path(args.out).write_text(json.dumps(report, ensure_ascii=False, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
