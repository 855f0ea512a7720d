"""Bits per character of general-purpose compressors on our test split: the floor a language
model must beat to have learned anything beyond string statistics.

The text is exactly what `evaluate` scores: each test poem's normalized hemistichs, each followed
by one separator character (here a newline), UTF-8 encoded. "primed" compressors first see up to
`--prime-mb` of train-split text the same way; the cost of the test text is the extra compressed
size. Needs `pip install pyppmd` for PPMd.

    python benchmarks/compression_baseline.py --data ../shared/data/ganjoor/poems.jsonl.gz
"""

from __future__ import annotations

import argparse
import lzma
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from persian_poetry.data.corpus import CLASSICAL_POETS, read_jsonl  # noqa: E402


def poem_text(poem) -> str:
    return "".join(h + "\n" for h in poem.hemistichs)


def xz_bytes(data: bytes) -> int:
    return len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))


def ppmd_bytes(data: bytes, order: int) -> int:
    import pyppmd

    encoder = pyppmd.Ppmd7Encoder(order, 256 << 20)
    return len(encoder.encode(data) + encoder.flush())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--poets", default="classical", help="'classical' or 'all'")
    parser.add_argument("--prime-mb", type=float, default=20)
    parser.add_argument("--order", type=int, default=12, help="PPMd model order")
    args = parser.parse_args()
    poets = list(CLASSICAL_POETS) if args.poets == "classical" else None
    test, prime, prime_chars = [], [], 0
    for poem in read_jsonl(args.data, poets):
        if poem.split == "test":
            test.append(poem_text(poem))
        elif poem.split == "train" and prime_chars < args.prime_mb * 1e6 / 2:  # ~2 bytes a char
            text = poem_text(poem)
            prime.append(text)
            prime_chars += len(text)
    test_text = "".join(test)
    chars = len(test_text)
    test_bytes, prime_bytes = test_text.encode(), "".join(prime).encode()
    print(f"test split: {len(test)} poems, {chars:,} characters; priming text {len(prime_bytes) / 1e6:.1f} MB")
    rows = [("xz -9e", xz_bytes(test_bytes)),
            ("xz -9e, primed", xz_bytes(prime_bytes + test_bytes) - xz_bytes(prime_bytes))]
    try:
        rows += [(f"PPMd order {args.order}", ppmd_bytes(test_bytes, args.order)),
                 (f"PPMd order {args.order}, primed",
                  ppmd_bytes(prime_bytes + test_bytes, args.order) - ppmd_bytes(prime_bytes, args.order))]
    except ImportError:
        print("(pyppmd not installed: PPMd rows skipped)")
    for name, size in rows:
        print(f"{name:28s} {8 * size / chars:.3f} bits/char")


if __name__ == "__main__":
    main()
