"""Speed of the rule-based metre scanner: hemistichs per second on one core.

Takes N hemistichs of the Ganjoor export's test split (by path), or a short built-in list
repeated when the export is not there, scans each once with a cold word cache ("cold": every
word's readings are worked out for the first time in this process) and then again ("warm": the
readings come from the cache, as in a long run over a corpus), and prints one line.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/scanner_speed.py -n 5000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from pathlib import Path

from persian_poetry.data.corpus import poem_from_ganjoor, split_of
from persian_poetry.prosody.scansion import _compiled, scan_hemistich

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "ganjoor" / "poems.jsonl.gz"
FALLBACK = [
    "توانا بود هر که دانا بود",
    "بشنو این نی چون شکایت می‌کند",
    "از جدایی‌ها حکایت می‌کند",
    "الا یا ایها الساقی ادر کاسا و ناولها",
    "که عشق آسان نمود اول ولی افتاد مشکل‌ها",
    "این قافلهٔ عمر عجب می‌گذرد",
    "به نام خداوند جان و خرد",
    "کزین برتر اندیشه برنگذرد",
]


def hemistichs(path: Path, n: int) -> list[str]:
    if not path.exists():
        return (FALLBACK * (n // len(FALLBACK) + 1))[:n]
    out: list[str] = []
    with gzip.open(path, "rb") as f:
        for line in f:
            record = json.loads(line)
            if split_of(record["Id"]) != "test":
                continue
            poem = poem_from_ganjoor(record)
            if poem is not None:
                out.extend(poem.hemistichs)
            if len(out) >= n:
                break
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=5000, help="how many hemistichs")
    ap.add_argument("--data", default=os.environ.get("PERSIAN_POETRY_DATA", str(DEFAULT_DATA)))
    ap.add_argument("--align", action="store_true", help="also build the syllable alignment")
    args = ap.parse_args()
    texts = hemistichs(Path(args.data), args.n)
    _compiled()  # the catalogue trie is built once, at import time of a real program
    rates = []
    for _ in range(2):
        start = time.perf_counter()
        matched = sum(scan_hemistich(t, align=args.align).matched for t in texts)
        rates.append(len(texts) / (time.perf_counter() - start))
    print(f"scanner speed: {rates[0]:.0f} hemistichs/s cold, {rates[1]:.0f} warm "
          f"({len(texts)} hemistichs, {matched} matched a metre, align={args.align}, one process)")


if __name__ == "__main__":
    main()
