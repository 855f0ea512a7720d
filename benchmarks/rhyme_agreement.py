"""Agreement of `rhyme.analyze_rhyme` with Ganjoor's `RhymeLetters`.

For every ghazal and qasida of the chosen split (by default the test split, `poem.split ==
"test"`) that has a Ganjoor `RhymeLetters`, compare our `Rhyme.rhyme_letters` with it. Both
sides go through `rhyme.rhyme_key` (the corpus reader has already applied `text.normalize` and
removed spaces and ZWNJ from Ganjoor's letters; `rhyme_key` also drops short-vowel marks and
punctuation and writes آ as ا, as Ganjoor's rhyme finder does).

- exact (the primary figure): rhyme_key(ours) == rhyme_key(Ganjoor's).
- lenient: equal once the letters Ganjoor's finder treats as equal (د/ذ, ی/ا, ب/پ) are made
  equal.

Disagreements are sorted into categories, and a second figure leaves out the poems whose Ganjoor
letters are not the written ending of any of the poem's rhyming hemistichs (the label describes
some other text: on train/val most of these carry the letters of a neighbouring poem id).
Nothing is written to disk; examples are printed as ids and short endings.

    python benchmarks/rhyme_agreement.py                       # test split, ghazal + qasida
    python benchmarks/rhyme_agreement.py --split val --limit 300 --examples 5
    python benchmarks/rhyme_agreement.py --audit runs/label-audit.json   # without the flagged poets
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

from persian_poetry.data.corpus import read_jsonl
from persian_poetry.prosody.rhyme import analyze_rhyme, rhyme_key

_EQUAL = str.maketrans({"ذ": "د", "ا": "ی", "پ": "ب"})

CATEGORIES = {
    "label_not_in_text": "Ganjoor's letters end none of the rhyming hemistichs (label of other text)",
    "ours_longer_broken": "ours longer: we set a hemistich aside as broken, Ganjoor's suffix includes it",
    "ours_longer": "ours longer, nothing set aside: Ganjoor's text or letters differ from this text",
    "ours_shorter": "ours shorter: a hemistich we keep is left out or spelled otherwise at Ganjoor",
    "equivalent_letters": "same rhyme up to the letters Ganjoor treats as equal (د/ذ, ی/ا, ب/پ)",
    "label_in_minority": "Ganjoor's letters end fewer than half of the rhyming hemistichs",
    "other": "other",
}


def default_data() -> Path:
    env = os.environ.get("PERSIAN_POETRY_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "ganjoor" / "poems.jsonl.gz"


def categorize(hemistichs: list[str], positions: tuple[int, ...], broken: tuple[int, ...], ours: str,
               theirs: str) -> str:
    if ours.translate(_EQUAL) == theirs.translate(_EQUAL):
        return "equivalent_letters"
    endings = [rhyme_key(hemistichs[i]).translate(_EQUAL) for i in positions]
    target = theirs.translate(_EQUAL)
    share = sum(e.endswith(target) for e in endings) / max(1, len(endings))
    if share == 0:
        return "label_not_in_text"
    if share < 0.5:
        return "label_in_minority"
    if ours.endswith(theirs):
        return "ours_longer_broken" if broken else "ours_longer"
    if theirs.endswith(ours):
        return "ours_shorter"
    return "other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=default_data(), help="Ganjoor-schema JSONL (.gz)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"))
    parser.add_argument("--forms", default="ghazal,qasida", help="comma-separated form slugs")
    parser.add_argument("--limit", type=int, default=None, help="stop after N labelled poems")
    parser.add_argument("--examples", type=int, default=3, help="examples printed per category")
    parser.add_argument("--audit", type=Path, default=None,
                        help="the JSON of benchmarks/metre_label_audit.py: leave out the poets it flags")
    args = parser.parse_args(argv)
    left_out = set(json.loads(args.audit.read_text(encoding="utf-8"))["flagged"]) if args.audit else set()

    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    start = time.perf_counter()
    counts: dict[str, Counter] = defaultdict(Counter)
    examples: dict[str, list[str]] = defaultdict(list)
    unlabelled = Counter()
    done = 0
    for poem in read_jsonl(args.data):
        if poem.form not in forms or poem.split != args.split or poem.poet in left_out:
            continue
        if not poem.rhyme:
            unlabelled[poem.form] += 1
            continue
        result = analyze_rhyme(poem.hemistichs, poem.form)
        ours, theirs = rhyme_key(result.rhyme_letters), rhyme_key(poem.rhyme)
        for key in (poem.form, "all"):
            c = counts[key]
            c["poems"] += 1
            if ours == theirs:
                c["exact"] += 1
            if ours.translate(_EQUAL) == theirs.translate(_EQUAL):
                c["lenient"] += 1
        if ours != theirs:
            category = categorize(poem.hemistichs, result.positions, result.broken, ours, theirs)
            for key in (poem.form, "all"):
                counts[key][category] += 1
            if len(examples[category]) < args.examples:
                ends = " | ".join(poem.hemistichs[i][-22:] for i in result.positions[:2])
                examples[category].append(
                    f"id {poem.id} {poem.poet} {poem.form}: ganjoor {theirs!r} ours {ours!r} "
                    f"broken {list(result.broken)} ends: {ends}")
        done += 1
        if args.limit is not None and done >= args.limit:
            break

    elapsed = time.perf_counter() - start
    print(f"rhyme agreement with Ganjoor RhymeLetters: split={args.split} forms={','.join(forms)} "
          f"data={args.data} ({elapsed:.0f} s)")
    if left_out:
        print(f"left out: the {len(left_out)} poets flagged by {args.audit}: {', '.join(sorted(left_out))}")
    print("agreement = rhyme_key(ours) == rhyme_key(RhymeLetters); lenient also equates د/ذ, ی/ا, ب/پ")
    print(f"{'':8} {'poems':>6} {'exact':>6} {'exact %':>8} {'lenient %':>10} "
          f"{'label in text':>14} {'exact % of those':>17}")
    for key in [*forms, "all"]:
        c = counts.get(key)
        if not c or not c["poems"]:
            continue
        consistent = c["poems"] - c["label_not_in_text"]
        print(f"{key:8} {c['poems']:6d} {c['exact']:6d} {100 * c['exact'] / c['poems']:7.2f}% "
              f"{100 * c['lenient'] / c['poems']:9.2f}% {consistent:14d} "
              f"{100 * c['exact'] / max(1, consistent):16.2f}%")
    if unlabelled:
        print("without RhymeLetters (not counted): " + ", ".join(f"{f} {n}" for f, n in unlabelled.items()))
    total = counts["all"]
    print("\ndisagreements by category:")
    for category, description in CATEGORIES.items():
        if total[category]:
            print(f"  {category:20} {total[category]:5d}  {description}")
            for line in examples[category]:
                print(f"      {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
