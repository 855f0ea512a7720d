"""Write docs/samples.md: ten poems of the shipped model, at fixed seeds, none picked.

The spread (poets, forms, metres) and the seeds are fixed below, before any poem is seen; the page
is whatever the model writes for them, so a reader sees what a user gets. `tests/test_samples.py`
regenerates the page and compares, so it never drifts from the code or the model.

    python scripts/write_samples.py            # rewrite docs/samples.md
    python scripts/write_samples.py --check    # exit 1 if docs/samples.md is not what the code writes
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from persian_poetry import PoemRequest, load_model, write_poem

SAMPLES_PAGE = Path(__file__).resolve().parents[1] / "docs" / "samples.md"

# (poet, form, metre id or None for the model's choice, seed): one line each, chosen for spread alone.
SPREAD = [
    ("hafez", "ghazal", 3, 1),
    ("saadi", "ghazal", 8, 2),
    ("moulavi", "ghazal", 2, 3),
    ("ferdousi", "masnavi", 23, 4),
    ("nezami", "masnavi", 13, 5),
    ("khayyam", "rubai", 24, 6),
    ("attar", "masnavi", 6, 7),
    ("sanaee", "qasida", 1, 8),
    ("jami", "qete", 9, 9),
    ("saeb", "ghazal", None, 10),
]

HEADER = """# Samples

Ten poems of the shipped model, as `persian-poetry generate` writes them with its defaults, at the poets,
forms, metres and seeds fixed in `scripts/write_samples.py` before any poem was seen: nothing is picked or
edited. `python scripts/write_samples.py` writes this page again; a test checks that it is what the code
writes. Each hemistich scans in the stated metre and each rhyming one ends on the rhyme, by construction; what
the verse says is up to the model: many lines read as Persian clauses, few couplets hold one thought.
"""


def command_line(poet: str, form: str, metre: int | None, seed: int) -> str:
    metre_option = f" --metre {metre}" if metre is not None else ""
    return f"persian-poetry generate --poet {poet} --form {form}{metre_option} --seed {seed}"


def samples_page() -> str:
    poetry = load_model()
    parts = [HEADER]
    for number, (poet, form, metre, seed) in enumerate(SPREAD, start=1):
        poem = write_poem(poetry, PoemRequest(poet=poet, form=form, metre=metre, seed=seed))
        rhyme = poem.constraints.get("qafiya", "") if poem.constraints else poem.rhyme
        radif = f", radif {poem.radif}" if poem.radif else ""
        parts.append(f"## {number}. {poet}, {form}\n\n`{command_line(poet, form, metre, seed)}`: "
                     f"{poem.metre_name} (Ganjoor id {poem.metre}), qafiya {rhyme}{radif}.\n\n"
                     f"```text\n{poem.text()}\n```\n")
    return "\n".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--check", action="store_true", help="compare with docs/samples.md instead of writing it")
    args = ap.parse_args()
    page = samples_page()
    if args.check:
        same = SAMPLES_PAGE.exists() and SAMPLES_PAGE.read_text(encoding="utf-8") == page
        print("docs/samples.md is up to date" if same else "docs/samples.md differs from what the code writes")
        return 0 if same else 1
    SAMPLES_PAGE.write_text(page, encoding="utf-8")
    print(f"wrote {SAMPLES_PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
