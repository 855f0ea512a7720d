"""How costly a reading the writer may accept (`VerseWriter`'s `max_cost`, the scanner's guessed
vowels and licences), judged by the learned metre classifier alone, which the decoding never
consults, on poems that are not the reported ones (`evaluate-generation`'s requests from seed 5000
instead of 1000). The judge's own ceiling (`verse.MAX_READING_COST`, what 90% of Hafez's
hemistichs meet) stays as it is; only the writer's (`verse.WRITING_MAX_COST`) moves. Each ceiling also counts the
decoding steps (forward passes) of the Hafez ghazals of seeds 1-10, what a lower ceiling costs in
speed.

    python benchmarks/tune_reading_cost.py --data ../shared/data/ganjoor/poems.jsonl.gz -n 60 --costs 3 2.5 2
"""

from __future__ import annotations

import argparse
import json

from persian_poetry.gpt.inference import InferenceGPT, one_blas_thread
from persian_poetry.judges.evaluate_generation import evaluate_generation, read_train_text
from persian_poetry.judges.poet import load_poet_classifier
from persian_poetry.writing import verse
from persian_poetry.writing.bundle import load_model
from persian_poetry.writing.generate import PoemRequest, write_poem

_MAKE_WRITER = verse.VerseWriter.__init__


def hold_writer_to(cost: float) -> None:
    """Every VerseWriter made from now on accepts readings of at most `cost` (unless told otherwise)."""
    def init(self, *args, **kwargs):
        kwargs.setdefault("max_cost", cost)
        _MAKE_WRITER(self, *args, **kwargs)
    verse.VerseWriter.__init__ = init


def decoding_steps(poetry, seeds=range(1, 11)) -> int:
    forward = InferenceGPT.forward
    steps = 0

    def counted(self, *args, **kwargs):
        nonlocal steps
        steps += 1
        return forward(self, *args, **kwargs)
    InferenceGPT.forward = counted
    try:
        for seed in seeds:
            write_poem(poetry, PoemRequest(poet="hafez", form="ghazal", couplets=7, seed=seed))
    finally:
        InferenceGPT.forward = forward
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("-n", type=int, default=60)
    parser.add_argument("--costs", type=float, nargs="+", default=[verse.MAX_READING_COST, verse.WRITING_MAX_COST])
    parser.add_argument("--first-seed", type=int, default=5000)
    args = parser.parse_args()
    one_blas_thread()
    poetry = load_model()
    train = read_train_text(args.data)
    classifier = load_poet_classifier()
    for cost in args.costs:
        hold_writer_to(cost)
        report = evaluate_generation(poetry, args.data, n=args.n, train=train, progress=False,
                                     poet_classifier=classifier, first_seed=args.first_seed)
        keys = ("metre_classifier_share", "metre_share", "metre_top_share", "rhyme_share", "poet_share",
                "repeat_share", "relaxed_hemistichs", "seconds_mean")
        print(json.dumps({"max_cost": cost, **{k: report[k] for k in keys},
                          "hafez_ghazal_steps": decoding_steps(poetry),
                          "real_test_verse": report["real_poems_reference"]}, ensure_ascii=False), flush=True)


if __name__ == "__main__":
    main()
