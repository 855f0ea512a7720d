"""Repetition in a hemistich: real test-split verse against what `generate` writes, with the
repetition control (`writing.verse.repeats`) on and, for comparison, switched off.

Counts, per hemistich (the radif set aside): a word said twice (any word, and a word that is not a
function word of `text.FUNCTION_WORDS`), and the longest run of function words. The generated poems
are the tell-apart judge's spread of requests (`tell_apart.spread_request`: the offered poets, four
forms, the commonest metres, constrained mode) from --first-seed, with the shipped model unless --model
says otherwise. One BLAS thread.

    python benchmarks/repetition.py --data ../shared/data/ganjoor/poems.jsonl.gz --poems 40 --out repetition.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from persian_poetry.data.corpus import read_jsonl, resolve_poets
from persian_poetry.gpt.inference import one_blas_thread
from persian_poetry.judges import tell_apart as ta
from persian_poetry.text import FREELY_REPEATED, FUNCTION_WORDS
from persian_poetry.writing import verse
from persian_poetry.writing.bundle import load_model
from persian_poetry.writing.generate import write_poem


def measure(hemistichs: list[list[str]]) -> dict:
    said_twice = content_twice = 0
    runs: Counter[int] = Counter()
    for words in hemistichs:
        twice = {w for w, n in Counter(words).items() if n > 1 and w not in FREELY_REPEATED}
        said_twice += bool(twice)
        content_twice += bool(twice - FUNCTION_WORDS)
        longest = run = 0
        for word in words:
            run = run + 1 if word in FUNCTION_WORDS else 0
            longest = max(longest, run)
        runs[longest] += 1
    n = len(hemistichs)
    return {"hemistichs": n, "word_said_twice": round(said_twice / n, 4),
            "content_word_said_twice": round(content_twice / n, 4),
            "function_run_4_or_more": round(sum(v for k, v in runs.items() if k >= 4) / n, 4),
            "function_run_3_or_more": round(sum(v for k, v in runs.items() if k >= 3) / n, 4)}


def generated(model, poems: int, first_seed: int) -> tuple[list[list[str]], float]:
    out, seconds = [], 0.0
    poets, metres = ta.spread_poets(model), ta.spread_metres(model)
    for k in range(poems):
        poem = write_poem(model, ta.spread_request(k, poets, metres, "constrained", first_seed))
        seconds += poem.seconds
        radif = poem.radif.split()
        for i, text in enumerate(h for couplet in poem.couplets for h in couplet):
            words = text.split()
            if radif and words[-len(radif):] == radif:
                words = words[:-len(radif)]
            if i not in poem.constraints["relaxed"]:
                out.append(words)
    return out, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--poems", type=int, default=40)
    parser.add_argument("--first-seed", type=int, default=1000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    one_blas_thread()
    real = [h.split() for p in read_jsonl(args.data, resolve_poets("classical")) if p.split == "test"
            for h in p.hemistichs]
    report = {"real_test": measure(real)}
    model = load_model(args.model)
    checked = verse.repeats
    for name, rule in (("generated, unchecked", lambda words: False), ("generated, checked", checked)):
        verse.repeats = rule
        started = time.perf_counter()
        hemistichs, seconds = generated(model, args.poems, args.first_seed)
        report[name] = measure(hemistichs) | {"write_seconds": round(seconds, 1),
                                              "wall_seconds": round(time.perf_counter() - started, 1)}
    verse.repeats = checked
    for name, figures in report.items():
        print(f"{name:22s}", json.dumps(figures))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
