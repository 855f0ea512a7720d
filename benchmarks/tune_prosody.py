"""Choose prosody.RULE_WEIGHT and MISS_COST on the val split (never the test split).

    python benchmarks/tune_prosody.py --data ../shared/data/ganjoor/poems.jsonl.gz
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from persian_poetry.prosody.classifier import labelled_hemistichs  # noqa: E402
from persian_poetry.prosody.metres import load_catalogue  # noqa: E402
from persian_poetry.prosody.scan import combined_scores  # noqa: E402
from persian_poetry.prosody.scansion import scan_hemistich  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--limit", type=int, default=600, help="val poems")
    args = parser.parse_args()
    torch.set_num_threads(1)
    known = {m.id for m in load_catalogue()}
    texts, labels, poem_of = labelled_hemistichs(args.data, ("val",), None, known)["val"]
    keep = [i for i, p in enumerate(poem_of) if p < args.limit]
    texts, labels, poem_of = [texts[i] for i in keep], [labels[i] for i in keep], [poem_of[i] for i in keep]
    scans = [scan_hemistich(t, top=1, align=False) for t in texts]
    gold, poems = torch.tensor(labels), torch.tensor(poem_of)
    n_poems = int(poems.max()) + 1
    poem_gold = torch.zeros(n_poems, dtype=torch.long)
    poem_gold[poems] = gold
    print(f"val: {n_poems} poems, {len(texts)} hemistichs")
    for weight in (0.0, 0.25, 0.5, 1.0, 2.0):
        for miss in (3.0, 6.0, 10.0):
            ids, scores, _, _ = combined_scores(texts, None, weight, miss, scans)
            ids = torch.tensor(ids)
            hemi = (ids[scores.argmax(1)] == gold).float().mean().item()
            poem_scores = torch.zeros(n_poems, scores.size(1)).index_add_(0, poems, scores)
            poem = (ids[poem_scores.argmax(1)] == poem_gold).float().mean().item()
            print(f"rule_weight {weight:4.2f} miss {miss:4.1f}: hemistich {hemi:.4f} poem {poem:.4f}")


if __name__ == "__main__":
    main()
