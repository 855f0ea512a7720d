"""Audit Ganjoor's metre labels poet by poet, then score the test split with and without the
poets whose labels fail the audit.

Why: most poem-level disagreements of `evaluate-prosody` on the test split come from a few poets,
and there our prediction often matches the label of the *neighbouring* poem (by Ganjoor id), not
the poem's own, as if those poets' labels had slipped by one place. This script measures that
mechanically, without reading any poem by eye:

1. For every poet with labelled poems in the test split, take their labelled train and val poems
   (at most --per-poet, lowest ids first) and predict each poem's metre with `prosody`'s combined
   score (the scanner and the classifier, summed over the poem's hemistichs), as
   `persian-poetry evaluate-prosody` does.
2. Per poet: how often the prediction equals the poem's own label, the label of the previous
   poem and the label of the next one (the poet's labelled poems of all splits, ordered by id).
3. A poet's labels are *flagged* when the prediction agrees with the own label less than
   --min-agreement of the time, or more often with a neighbour's label than with the own.
   (The audit sees only train and val poems, so the test split plays no part in the flagging.)
4. Poem- and hemistich-level accuracy of the combination on the test split: all poems, and the
   poems of unflagged poets.

    python benchmarks/metre_label_audit.py --data ../shared/data/ganjoor/poems.jsonl.gz
    python benchmarks/metre_label_audit.py --data ... --per-poet 100 --json runs/label-audit.json
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict

import numpy as np
from tqdm import tqdm

from persian_poetry.data.corpus import read_jsonl
from persian_poetry.prosody.evaluate import evaluate_prosody
from persian_poetry.prosody.metres import load_catalogue
from persian_poetry.prosody.scan import combined_scores


def predict_poem_metres(poems) -> list[int]:
    """The combined prediction for each poem: the metre with the highest summed score."""
    texts = [h for p in poems for h in p.hemistichs]
    owner = np.array([i for i, p in enumerate(poems) for _ in p.hemistichs], dtype=np.int64)
    ids, scores, _, _ = combined_scores(texts)  # numpy (N, M)
    totals = np.zeros((len(poems), len(ids)))
    np.add.at(totals, owner, scores)
    return [ids[j] for j in totals.argmax(1).tolist()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the Ganjoor export (JSONL, .gz)")
    ap.add_argument("--per-poet", type=int, default=150, help="train/val poems audited per poet (default 150)")
    ap.add_argument("--min-agreement", type=float, default=0.85,
                    help="flag a poet whose own labels agree less often than this (default 0.85)")
    ap.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = ap.parse_args()
    started = time.time()

    known = {m.id for m in load_catalogue()}
    labelled = defaultdict(list)  # poet -> their labelled poems of every split
    for poem in read_jsonl(args.data):
        if poem.metre in known and poem.hemistichs:
            labelled[poem.poet].append(poem)
    test_poets = sorted(p for p, poems in labelled.items() if any(x.split == "test" for x in poems))

    audit = {}
    for poet in tqdm(test_poets, desc="auditing poets", mininterval=2):
        ordered = sorted(labelled[poet], key=lambda p: int(p.id))
        position = {p.id: i for i, p in enumerate(ordered)}
        sample = [p for p in ordered if p.split != "test"][:args.per_poet]
        if not sample:
            continue
        predicted = predict_poem_metres(sample)

        def share(offset: int, predicted=predicted, sample=sample, ordered=ordered, position=position) -> float:
            pairs = [(m, position[p.id] + offset) for m, p in zip(predicted, sample, strict=True)]
            pairs = [(m, ordered[j].metre) for m, j in pairs if 0 <= j < len(ordered)]
            return sum(m == label for m, label in pairs) / max(1, len(pairs))

        own, previous, following = share(0), share(-1), share(+1)
        flagged = own < args.min_agreement or max(previous, following) > own
        audit[poet] = {"audited_poems": len(sample), "own_label": own, "previous_label": previous,
                       "next_label": following, "flagged": flagged}

    flagged = sorted(p for p, a in audit.items() if a["flagged"])
    kept = sorted(p for p in test_poets if p not in flagged)
    print(f"{len(test_poets)} poets have labelled test poems; {len(flagged)} flagged "
          f"(own-label agreement < {args.min_agreement:.0%} or a neighbour's label agrees more often)")
    print("| poet | audited train/val poems | prediction = own label | = previous poem's label | = next poem's label |")
    print("|---|---:|---:|---:|---:|")
    for poet in sorted(audit, key=lambda p: audit[p]["own_label"]):
        a = audit[poet]
        if a["flagged"] or a["own_label"] < 0.95:
            mark = " (flagged)" if a["flagged"] else ""
            print(f"| {poet}{mark} | {a['audited_poems']} | {a['own_label']:.1%} | {a['previous_label']:.1%} "
                  f"| {a['next_label']:.1%} |")
    print("(poets not listed agree with their own labels at least 95% of the time)")

    results = {"all poets": evaluate_prosody(args.data, "test", progress=False)}
    if flagged:
        results["unflagged poets"] = evaluate_prosody(args.data, "test", poets=kept, progress=False)
    print("\n| test split | poems | hemistichs | combined poem accuracy | combined hemistich accuracy |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        m = r["methods"]["combined"]
        print(f"| {name} | {r['poems']} | {r['hemistichs']} | {m['poem_accuracy']:.2%} | {m['hemistich_accuracy']:.2%} |")
    print(f"({time.time() - started:.0f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"per_poet": args.per_poet, "min_agreement": args.min_agreement, "audit": audit,
                       "flagged": flagged, "test": results}, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
