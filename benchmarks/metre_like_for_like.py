"""The learned metre classifier on generated verse against real verse of the same metres and poets.

`evaluate-generation` compares the share of generated hemistichs that the metre classifier (a judge
the decoding never consults) hears in their requested metre with its share on 200 real test-split
poems, of whatever metres those hold. Some metres are harder to hear than others, so this takes the
real reference like for like: the offered poets' test-split poems in each metre of the report (the
first --per-metre of each, in corpus order), the classifier's share per metre, and the real shares
weighted as the report's generated hemistichs are spread over the metres.

    persian-poetry evaluate-generation --data ../shared/data/ganjoor/poems.jsonl.gz --compare --out compare.json
    python benchmarks/metre_like_for_like.py --data ../shared/data/ganjoor/poems.jsonl.gz --report compare.json
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict

from persian_poetry.data.corpus import OFFERED_POETS, read_jsonl
from persian_poetry.gpt.inference import one_blas_thread
from persian_poetry.judges.evaluate_generation import classifier_metres


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--report", required=True, help="evaluate-generation --out JSON (with --compare: its constrained run)")
    parser.add_argument("--per-metre", type=int, default=60, help="real test-split poems a metre, at most")
    args = parser.parse_args()
    one_blas_thread()
    with open(args.report, encoding="utf-8") as f:
        report = json.load(f)
    report = next(r for r in report if r["constraints"]) if isinstance(report, list) else report
    metres = report["metres"]
    generated = defaultdict(lambda: [0, 0])  # metre -> [heard in it, hemistichs]
    for poem in report["poems_detail"]:
        cell = generated[poem["request"]["metre"]]
        cell[0] += poem["metre_classifier"]
        cell[1] += poem["hemistichs"]
    real = defaultdict(list)
    for poem in read_jsonl(args.data, set(OFFERED_POETS)):
        if poem.split == "test" and poem.metre in metres and len(real[poem.metre]) < args.per_metre:
            real[poem.metre].append(poem)
    weighted_real = heard_generated = total = 0.0
    print("metre  real: poems, hemistichs, heard  generated: hemistichs, heard")
    for metre in metres:
        hemistichs = [h for poem in real[metre] for h in poem.hemistichs]
        real_share = sum(m == metre for m in classifier_metres(hemistichs)) / max(1, len(hemistichs))
        heard, n = generated[metre]
        print(f"{metre:>5}  {len(real[metre]):>4} {len(hemistichs):>5} {real_share:7.2%}  {n:>5} {heard / max(1, n):7.2%}")
        weighted_real += real_share * n
        heard_generated += heard
        total += n
    print(f"all, weighted as the generated hemistichs: real {weighted_real / total:.2%}, "
          f"generated {heard_generated / total:.2%}")


if __name__ == "__main__":
    main()
