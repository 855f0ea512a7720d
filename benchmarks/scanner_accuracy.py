"""Accuracy of the rule-based metre scanner against Ganjoor's metre labels.

Reads the Ganjoor export by path and scores the poems of one split (default: test) that carry a
metre label: each hemistich against its poem's label, and each poem (one metre fitted to all its
hemistichs, and the hemistich vote), over all labelled poems and over the 20 most common metres
of the catalogue. Then it sorts the failures into categories.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/scanner_accuracy.py --split test
    python benchmarks/scanner_accuracy.py --split val --limit 300
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

from persian_poetry.data.corpus import read_labelled
from persian_poetry.prosody.metres import RUBAI_ID, load_catalogue
from persian_poetry.prosody.scansion import scan_poem

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ganjoor" / "poems.jsonl.gz"


def labelled_poems(path: Path, split: str, limit: int | None):
    return read_labelled(path, split, limit)


def pct(a: int, b: int) -> str:
    return f"{100 * a / b:5.1f}% ({a}/{b})" if b else "  n/a"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("PERSIAN_POETRY_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--split", default="test", choices=("train", "val", "test"))
    ap.add_argument("--limit", type=int, default=None, help="at most this many labelled poems")
    ap.add_argument("--max-hemistichs", type=int, default=None,
                    help="score at most this many hemistichs of each poem (all of them by default)")
    ap.add_argument("--confusions", type=int, default=15, help="how many label->scan pairs to list")
    args = ap.parse_args(argv)

    catalogue = {m.id: m for m in load_catalogue()}
    top20 = {m.id for m in sorted(catalogue.values(), key=lambda m: -m.poems)[:20]}
    family = {m.id: m.family for m in catalogue.values()}

    start = time.perf_counter()
    h_total = h_ok = h_top_total = h_top_ok = 0
    p_total = p_ok = p_vote_ok = p_top_total = p_top_ok = p_top_vote_ok = 0
    h_fail: Counter = Counter()
    p_fail: Counter = Counter()
    pairs: Counter = Counter()
    poem_pairs: Counter = Counter()
    n_hemistichs = 0
    for poem in labelled_poems(Path(args.data), args.split, args.limit):
        label = poem.metre
        hemistichs = poem.hemistichs[: args.max_hemistichs] if args.max_hemistichs else poem.hemistichs
        result = scan_poem(hemistichs, align=False)
        in_top = label in top20
        for scan in result.hemistichs:
            n_hemistichs += 1
            ok = scan.metre_id == label
            h_total += 1
            h_ok += ok
            if in_top:
                h_top_total += 1
                h_top_ok += ok
            if ok:
                continue
            if scan.metre_id is None:
                h_fail["no metre of the catalogue reads it"] += 1
            elif label not in scan.costs:
                h_fail["the label's metre cannot read it (another can)"] += 1
            elif RUBAI_ID in (label, scan.metre_id):
                h_fail["rubai confusion (label's metre readable, ranked lower)"] += 1
            elif family.get(label) and family.get(label) == family.get(scan.metre_id):
                h_fail["same family (label's metre readable, ranked lower)"] += 1
            else:
                h_fail["other metre ranked higher (label's metre readable)"] += 1
            pairs[(label, scan.metre_id)] += 1
        ok = result.metre_id == label
        p_total += 1
        p_ok += ok
        p_vote_ok += result.vote_metre_id == label
        if in_top:
            p_top_total += 1
            p_top_ok += ok
            p_top_vote_ok += result.vote_metre_id == label
        if not ok:
            if result.metre_id is None:
                p_fail["no metre reads any hemistich"] += 1
            elif RUBAI_ID in (label, result.metre_id):
                p_fail["rubai confusion"] += 1
            elif family.get(label) and family.get(label) == family.get(result.metre_id):
                p_fail["same family"] += 1
            else:
                p_fail["other"] += 1
            poem_pairs[(label, result.metre_id)] += 1
    elapsed = time.perf_counter() - start

    def name(i):
        return "none" if i is None else f"{i} {catalogue[i].short_name}" if i in catalogue else str(i)

    print(f"split={args.split} poems={p_total} hemistichs={h_total} time={elapsed:.1f}s "
          f"({n_hemistichs / max(elapsed, 1e-9):.0f} hemistichs/s incl. reading)")
    print(f"hemistich accuracy, all metres: {pct(h_ok, h_total)}")
    print(f"hemistich accuracy, top-20 metres: {pct(h_top_ok, h_top_total)}")
    print(f"poem accuracy (one metre fitted to all hemistichs), all: {pct(p_ok, p_total)}")
    print(f"poem accuracy (fitted), top-20: {pct(p_top_ok, p_top_total)}")
    print(f"poem accuracy (hemistich vote), all: {pct(p_vote_ok, p_total)}  top-20: {pct(p_top_vote_ok, p_top_total)}")
    print("hemistich failures:")
    for k, v in h_fail.most_common():
        print(f"  {v:6d}  {k}")
    print("poem failures:")
    for k, v in p_fail.most_common():
        print(f"  {v:6d}  {k}")
    print("commonest hemistich confusions (label -> scanner):")
    for (a, b), v in pairs.most_common(args.confusions):
        print(f"  {v:6d}  {name(a)} -> {name(b)}")
    print("commonest poem confusions (label -> scanner):")
    for (a, b), v in poem_pairs.most_common(args.confusions):
        print(f"  {v:6d}  {name(a)} -> {name(b)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
