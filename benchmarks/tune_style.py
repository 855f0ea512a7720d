"""Choose the default poet-style strength (`style.DEFAULT_STRENGTH`) on poems that are not the
reported ones: `evaluate-generation`'s requests with other poem seeds (5000, 5001, ... instead of
1000, 1001, ...), written at each strength, judged for poet, metre, rhyme, diversity and time.

    python benchmarks/tune_style.py --data ../shared/data/ganjoor/poems.jsonl.gz -n 40 --strengths 0 1 2

The corpus is read once (about 2 minutes, seconds once `read_train_text` has cached it); each
strength then costs n poems, written with the numpy engine, as `evaluate-generation` writes them.
"""

from __future__ import annotations

import argparse
import json

from persian_poetry.gpt.inference import one_blas_thread
from persian_poetry.judges.evaluate_generation import evaluate_generation, read_train_text
from persian_poetry.judges.poet import load_poet_classifier
from persian_poetry.writing.bundle import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--strengths", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    parser.add_argument("--first-seed", type=int, default=5000)
    parser.add_argument("--free", action="store_true")
    parser.add_argument("--model", default=None)
    args = parser.parse_args()
    one_blas_thread()  # numpy's BLAS on one thread for the whole run, as `evaluate-generation` (no torch)
    poetry = load_model(args.model)
    if poetry.style is None:
        raise SystemExit("the model has no style prior: run persian-poetry build-style first")
    train = read_train_text(args.data)
    classifier = load_poet_classifier()
    for strength in args.strengths:
        report = evaluate_generation(poetry, args.data, n=args.n, free=args.free, train=train, progress=False,
                                     poet_classifier=classifier, style=strength, first_seed=args.first_seed)
        keys = ("poet_share", "metre_share", "rhyme_share", "distinct_2", "repeat_share", "verbatim_share", "longest_shared_run",
                "seconds_mean", "relaxed_hemistichs")
        print(json.dumps({"style": strength, **{k: report[k] for k in keys},
                          "by_poet": report["poet_share_by_poet"]}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
