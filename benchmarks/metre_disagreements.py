"""Where `prosody`'s poem-level metre disagrees with Ganjoor's label: can the scanner read the label at all?

For each labelled poem of a split, the combined prediction (scanner and classifier summed over the
poem's hemistichs, as `persian-poetry evaluate-prosody` scores poems) is compared with the label.
For each poem where they differ, the rule-based scanner is asked, hemistich by hemistich, whether
it can read the hemistich in the labelled metre and whether in the predicted one. A disagreement
is counted as a *probable label error* when the scanner reads the labelled metre in at most 20% of
the poem's hemistichs and the predicted metre in at least 80% (two methods, one of them trained on
the labels themselves, agree on another metre, and the verse does not scan in the label's). The
rest are listed, with both counts. Nothing here is read by eye; the thresholds are fixed above.

It also gives the ceiling this implies: the poem accuracy a predictor that never agreed with those
labels could reach at most, (poems - probable label errors) / poems.

    python benchmarks/metre_disagreements.py --data ../shared/data/ganjoor/poems.jsonl.gz --split test
"""

from __future__ import annotations

import argparse
import json

from metre_label_audit import predict_poem_metres

from persian_poetry.data.corpus import read_jsonl
from persian_poetry.prosody.metres import load_catalogue
from persian_poetry.prosody.scansion import scan_hemistich

LABEL_AT_MOST = 0.2
PREDICTION_AT_LEAST = 0.8


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="the Ganjoor export (JSONL, .gz)")
    ap.add_argument("--split", default="test", choices=["test", "val", "train"])
    ap.add_argument("--audit", default=None,
                    help="runs/label-audit.json of metre_label_audit.py: also count the unflagged poets apart")
    ap.add_argument("--json", default=None, help="also write every disagreement to this JSON file")
    args = ap.parse_args()

    known = {m.id: m.name for m in load_catalogue()}
    poems = [p for p in read_jsonl(args.data) if p.split == args.split and p.metre in known and p.hemistichs]
    predicted = predict_poem_metres(poems)
    flagged = set(json.load(open(args.audit))["flagged"]) if args.audit else set()

    rows = []
    for poem, guess in zip(poems, predicted, strict=True):
        if guess == poem.metre:
            continue
        readable = [scan_hemistich(h, align=False).costs for h in poem.hemistichs]
        n = len(readable)
        label_read = sum(poem.metre in costs for costs in readable)
        guess_read = sum(guess in costs for costs in readable)
        rows.append({"id": poem.id, "poet": poem.poet, "hemistichs": n, "label": poem.metre, "predicted": guess,
                     "label_read": label_read, "predicted_read": guess_read, "flagged_poet": poem.poet in flagged,
                     "probable_label_error": label_read <= LABEL_AT_MOST * n and guess_read >= PREDICTION_AT_LEAST * n})

    def summary(selected_poems: int, selected_rows: list[dict], name: str) -> None:
        probable = sum(r["probable_label_error"] for r in selected_rows)
        print(f"{name}: {selected_poems} poems, {len(selected_rows)} disagreements "
              f"(accuracy {1 - len(selected_rows) / selected_poems:.2%}); probable label errors {probable} "
              f"(the label read in <= {LABEL_AT_MOST:.0%} of hemistichs, the prediction in >= "
              f"{PREDICTION_AT_LEAST:.0%}); ceiling against these labels {1 - probable / selected_poems:.2%}")

    summary(len(poems), rows, f"{args.split}, all poets")
    if flagged:
        summary(sum(p.poet not in flagged for p in poems), [r for r in rows if not r["flagged_poet"]],
                f"{args.split}, poets the audit did not flag")
    print("the other disagreements (id poet hemistichs: label read / predicted read):")
    for r in rows:
        if not r["probable_label_error"]:
            print(f"  {r['id']} {r['poet']} {r['hemistichs']}: {known[r['label']]} {r['label_read']} / "
                  f"{known[r['predicted']]} {r['predicted_read']}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    main()
