"""Rebuild the metre catalogue (src/persian_poetry/assets/metres.json) and docs/metres.md from a
Ganjoor export:

    python scripts/build_metre_catalogue.py ../shared/data/ganjoor/poems.jsonl.gz [DOCS.md]

The catalogue is parsed from the export's metre labels; then the shares of the patterns within
each metre are measured by the scanner on training poems (twice: the second pass scans with the
costs the first pass set).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from persian_poetry.assets import CATALOGUE_PATH
from persian_poetry.prosody import metres as catalogue
from persian_poetry.prosody.scansion import estimate_shares


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("corpus", help="a Ganjoor export (.jsonl.gz)")
    ap.add_argument("docs", nargs="?", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "metres.md")
    args = ap.parse_args()
    metres = catalogue.build_catalogue(args.corpus)
    catalogue.write_catalogue(metres)
    for _ in range(2):
        catalogue._load.cache_clear()
        shares = estimate_shares(args.corpus)
        metres = [replace(m, shares=shares.get(m.id, ())) for m in metres]
        catalogue.write_catalogue(metres)
    catalogue._load.cache_clear()
    docs = args.docs
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(catalogue.catalogue_markdown(metres), encoding="utf-8")
    print(f"{len(metres)} metres -> {CATALOGUE_PATH} and {docs}")


if __name__ == "__main__":
    main()
