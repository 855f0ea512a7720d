"""Where the learned metre classifier fails generated rubais: by the pattern the scanner reads.

The writer's rubais are recognised in their metre by the classifier (a judge the decoding never
consults) far less often than real rubais. A rubai has twelve patterns (`metres.rubai_forms`); if the
writer leaned on patterns that real rubais seldom use, or that sound like another metre, weighting
the patterns would close the gap; if generated lines fail in the same patterns that real lines pass
in, the gap is in the words. This prints, for each pattern: its share of real test-split rubai
hemistichs of the offered poets and of generated ones (`write_poem` at its defaults, the offered
poets in turn, seeds from --first-seed), and how often the classifier names the rubai's metre in each;
and the generated ones' share by the poet asked for (the classifier learned from real poems, where
a poet's words go with his metres: Ferdowsi wrote the Shahnameh in one).

    python benchmarks/metre_by_pattern.py --data ../shared/data/ganjoor/poems.jsonl.gz --poems 40
"""

from __future__ import annotations

import argparse
from collections import Counter

from persian_poetry.data.corpus import OFFERED_POETS, read_jsonl
from persian_poetry.gpt.inference import one_blas_thread
from persian_poetry.judges.evaluate_generation import classifier_metres
from persian_poetry.prosody.metres import RUBAI_ID, load_catalogue
from persian_poetry.prosody.scansion import scan_hemistich
from persian_poetry.writing.bundle import load_model
from persian_poetry.writing.generate import PoemRequest, write_poem


def tally(hemistichs: list[str]) -> tuple[Counter, Counter]:
    """(hemistichs by the rubai pattern the scanner reads them in, those the classifier calls rubai)."""
    seen, recognised = Counter(), Counter()
    for text, metre in zip(hemistichs, classifier_metres(hemistichs), strict=True):
        pattern = scan_hemistich(text, metre=RUBAI_ID, align=False).pattern or "(none)"
        seen[pattern] += 1
        recognised[pattern] += metre == RUBAI_ID
    return seen, recognised


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--poems", type=int, default=40, help="generated rubais")
    parser.add_argument("--first-seed", type=int, default=7000)
    args = parser.parse_args()
    one_blas_thread()

    real = [h for poem in read_jsonl(args.data, set(OFFERED_POETS))
            if poem.split == "test" and poem.form == "rubai" for couplet in poem.couplets for h in couplet if h]
    poetry = load_model()
    poets = [p for p in OFFERED_POETS if p in poetry.controls.poets]
    generated, by_poet = [], {}
    for k in range(args.poems):
        poet = poets[k % len(poets)]
        poem = write_poem(poetry, PoemRequest(poet=poet, form="rubai", seed=args.first_seed + k))
        lines = [h for couplet in poem.couplets for h in couplet]
        generated += lines
        by_poet.setdefault(poet, []).extend(lines)

    rubai = next(m for m in load_catalogue() if m.id == RUBAI_ID)
    (real_seen, real_ok), (gen_seen, gen_ok) = tally(real), tally(generated)
    print(f"real rubai hemistichs (test split, offered poets): {len(real)}, the classifier names the rubai's metre "
          f"for {sum(real_ok.values()) / max(1, len(real)):.1%}")
    print(f"generated ({args.poems} rubais, seeds {args.first_seed}-{args.first_seed + args.poems - 1}): "
          f"{len(generated)}, {sum(gen_ok.values()) / max(1, len(generated)):.1%}")
    print("generated, recognised by the poet asked for: " + ", ".join(
        f"{poet} {sum(m == RUBAI_ID for m in classifier_metres(lines)) / len(lines):.0%} of {len(lines)}"
        for poet, lines in by_poet.items()))
    print("| pattern | share of real hemistichs (catalogue) | real: n, recognised | generated: n, recognised |")
    print("|---|---:|---:|---:|")
    shares = dict(zip(rubai.patterns, rubai.shares or [None] * len(rubai.patterns), strict=True))
    for pattern in sorted(set(real_seen) | set(gen_seen), key=lambda p: -(real_seen[p] + gen_seen[p])):
        share = f"{shares[pattern]:.1%}" if shares.get(pattern) is not None else "–"
        cells = [f"{seen[pattern]}, {ok[pattern] / seen[pattern]:.0%}" if seen[pattern] else "0"
                 for seen, ok in ((real_seen, real_ok), (gen_seen, gen_ok))]
        print(f"| `{pattern}` | {share} | {cells[0]} | {cells[1]} |")


if __name__ == "__main__":
    main()
