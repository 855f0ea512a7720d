"""Rebuild the metre catalogue (src/persian_poetry/assets/metres.json) and docs/metres.md from a
Ganjoor export:

    python scripts/build_metre_catalogue.py ../shared/data/ganjoor/poems.jsonl.gz [DOCS.md]

The catalogue is parsed from the export's metre labels; then the shares of the patterns within
each metre are measured by the scanner on training poems (twice: the second pass scans with the
costs the first pass set).
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from persian_poetry.assets import CATALOGUE_PATH
from persian_poetry.prosody import metres as catalogue
from persian_poetry.prosody.scansion import estimate_shares


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit(__doc__)
    metres = catalogue.build_catalogue(argv[0])
    catalogue.write_catalogue(metres)
    for _ in range(2):
        catalogue._load.cache_clear()
        shares = estimate_shares(argv[0])
        metres = [replace(m, shares=shares.get(m.id, ())) for m in metres]
        catalogue.write_catalogue(metres)
    catalogue._load.cache_clear()
    docs = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / "docs" / "metres.md"
    docs.parent.mkdir(parents=True, exist_ok=True)
    docs.write_text(catalogue.catalogue_markdown(metres), encoding="utf-8")
    print(f"{len(metres)} metres -> {CATALOGUE_PATH} and {docs}")


if __name__ == "__main__":
    main(sys.argv[1:])
