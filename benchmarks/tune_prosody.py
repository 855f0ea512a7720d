"""Choose prosody.RULE_WEIGHT and MISS_COST on the val split (never the test split).

    python benchmarks/tune_prosody.py --data ../shared/data/ganjoor/poems.jsonl.gz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np

from persian_poetry.gpt.inference import one_blas_thread
from persian_poetry.prosody.classifier import labelled_hemistichs
from persian_poetry.prosody.metres import load_catalogue
from persian_poetry.prosody.scan import combined_scores
from persian_poetry.prosody.scansion import scan_hemistich


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=600, help="val poems")
    args = parser.parse_args()
    one_blas_thread()  # the metre classifier runs on numpy now
    known = {m.id for m in load_catalogue()}
    texts, labels, poem_of = labelled_hemistichs(args.data, ("val",), None, known)["val"]
    keep = [i for i, p in enumerate(poem_of) if p < args.limit]
    texts, labels, poem_of = [texts[i] for i in keep], [labels[i] for i in keep], [poem_of[i] for i in keep]
    scans = [scan_hemistich(t, top=1, align=False) for t in texts]
    gold, poems = np.array(labels, dtype=np.int64), np.array(poem_of, dtype=np.int64)
    n_poems = int(poems.max()) + 1
    poem_gold = np.zeros(n_poems, dtype=np.int64)
    poem_gold[poems] = gold
    print(f"val: {n_poems} poems, {len(texts)} hemistichs")
    for weight in (0.0, 0.25, 0.5, 1.0, 2.0):
        for miss in (3.0, 6.0, 10.0):
            ids, scores, _, _ = combined_scores(texts, None, weight, miss, scans)
            ids = np.array(ids, dtype=np.int64)  # combined_scores gives numpy scores (N, M)
            hemi = float((ids[scores.argmax(1)] == gold).mean())
            poem_scores = np.zeros((n_poems, scores.shape[1]))
            np.add.at(poem_scores, poems, scores)
            poem = float((ids[poem_scores.argmax(1)] == poem_gold).mean())
            print(f"rule_weight {weight:4.2f} miss {miss:4.1f}: hemistich {hemi:.4f} poem {poem:.4f}")


if __name__ == "__main__":
    main()
