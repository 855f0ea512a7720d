"""The tell-apart judge's reader on its own: how often it tells held-out real couplets (test split)
from the same couplets with their words shuffled, before any judge is trained from it.

The reader (`tell_apart.pretrained_reader`) is read from the cache, or trained first (one thread):
the shipped recipe by default; --hidden, --couplets and --steps try another (its own cache key).

    OPENBLAS_NUM_THREADS=1 python benchmarks/tell_apart_reader.py --data ../shared/data/ganjoor/poems.jsonl.gz
    OPENBLAS_NUM_THREADS=1 python benchmarks/tell_apart_reader.py --data ../shared/data/ganjoor/poems.jsonl.gz \\
        --hidden 128 --couplets 100000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from persian_poetry.judges import tell_apart as ta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(ta.DEFAULT_DATA))
    parser.add_argument("--hidden", type=int, default=ta.HIDDEN, help="the network's GRU width")
    parser.add_argument("--couplets", type=int, default=ta.PRETRAIN_COUPLETS, help="real couplets (and as many shuffled)")
    parser.add_argument("--steps", type=int, default=ta.PRETRAIN_STEPS)
    parser.add_argument("--test", type=int, default=1000, help="held-out real couplets (and their shuffles)")
    args = parser.parse_args()

    import torch

    from persian_poetry.gpt.inference import one_blas_thread

    torch.set_num_threads(ta.THREADS)
    one_blas_thread()
    ta.HIDDEN = args.hidden  # the recipe's width, for this run (part of the reader's cache key)
    started = time.perf_counter()
    pools = ta.real_couplet_pools(args.data, ("test",))  # the reader reads its own train split
    reader = ta.pretrained_reader(args.data, steps=args.steps, couplets=args.couplets)
    network = ta.reader_network()
    network.load_state_dict(reader.weights)
    real = ta.sample_couplets(pools["test"], args.test, ta.SEED + 1)
    texts = [ta.model_text(c) for c in real + ta.shuffle_words(real, ta.SEED + 1)]
    predicted = network.probabilities(texts).argmax(-1).numpy()
    n = len(real)
    hits = int((predicted[:n] == 0).sum() + (predicted[n:] == 1).sum())
    low, high = ta._wilson(hits, 2 * n)
    print(f"reader (hidden {args.hidden}, {args.couplets} couplets a class, {args.steps} steps; val {reader.val_accuracy}): "
          f"real vs shuffled on {n} + {n} test couplets {hits / (2 * n):.3f} (95% {low:.3f}-{high:.3f}); "
          f"{reader.path} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
