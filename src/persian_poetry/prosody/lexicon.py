"""The lexicon of classical verse: its words, how often each is used, how often each ends a hemistich.

Constrained decoding uses it twice. A word the model writes must be a word of the classical
poets (one that occurs at least MIN_COUNT times in the train split), so that keeping the metre
cannot push an undertrained model into invented words. And a rhyming hemistich lands on its
rhyme by letting the model choose its last word (before the radif) among the words that end
hemistichs, carry the qafiya and fit what is left of the metre: a model cannot list the words it
knows; this list can. Built by `persian-poetry build-lexicon` from the train split of the
classical poets and shipped as a gzipped word<TAB>count<TAB>final-count<TAB>poets file, where
poets is a bit mask over `corpus.OFFERED_POETS` of the poets who use the word (their vocabulary:
writing in a poet's style, the model keeps to his words). Words are spelled as the scanner reads
them: normalized, marks and punctuation dropped, ZWNJ kept inside the word.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

from ..assets import LEXICON_PATH
from ..data import corpus
from ..data.corpus import OFFERED_POETS, read_jsonl
from ..files import atomic_write, cached_derivation
from ..text import PERSIAN_LETTERS, ZWNJ, normalize

MIN_COUNT = 3
MIN_POET_COUNT = 2  # a word is in a poet's vocabulary when he uses it this often
MAX_WORDS = 120_000


def verse_words(hemistich: str) -> list[str]:
    """The words of a hemistich as written: letters and ZWNJ, marks and punctuation dropped."""
    words = []
    for raw in normalize(hemistich).split(" "):
        word = "".join(ch for ch in raw if ch in PERSIAN_LETTERS or ch == ZWNJ).strip(ZWNJ)
        if word:
            words.append(word)
    return words


def build_lexicon(data: str | Path, poets: Iterable[str] | None = None, out: str | Path = LEXICON_PATH,
                  min_count: int = MIN_COUNT, max_words: int = MAX_WORDS, progress: bool = True) -> int:
    """Count every word of the train split's hemistichs, and how often each ends one (or stands
    before a one-word radif: the last two words), and write the lexicon; return its size."""
    from tqdm import tqdm  # here, not at the top: every poem written imports this module, and tqdm costs 25 ms

    counts: Counter = Counter()
    finals: Counter = Counter()
    by_poet: dict[str, Counter] = {poet: Counter() for poet in OFFERED_POETS}
    for poem in tqdm(read_jsonl(data, poets), desc="reading poems", unit=" poems", disable=not progress,
                     mininterval=2):
        if poem.split != "train":
            continue
        for hemistich in poem.hemistichs:
            words = verse_words(hemistich)
            counts.update(words)
            finals.update(words[-2:])
            if poem.poet in by_poet:
                by_poet[poem.poet].update(words)
    kept = [(w, c) for w, c in counts.most_common(max_words) if c >= min_count]

    def poets_mask(word: str) -> int:
        return sum(1 << i for i, poet in enumerate(OFFERED_POETS) if by_poet[poet][word] >= MIN_POET_COUNT)

    lines = "".join(f"{w}\t{c}\t{finals[w]}\t{poets_mask(w)}\n" for w, c in kept).encode("utf-8")
    atomic_write(Path(out), lambda tmp: Path(tmp).write_bytes(gzip.compress(lines, mtime=0)))
    return len(kept)


@lru_cache(maxsize=4)
def _columns(path: str) -> tuple[list[str], list[int], list[int], list[int]]:
    """(words, counts, final counts, poet masks) in file order (most frequent first). Parsed by one
    split of the whole text rather than line by line: this runs in every `generate` command, and
    75,000 lines parsed one at a time took 0.3 s of it."""
    fields = gzip.decompress(Path(path).read_bytes()).decode("utf-8").replace("\n", "\t").split("\t")
    fields = fields[:len(fields) // 4 * 4]  # drops the empty field after the last newline
    return fields[0::4], list(map(int, fields[1::4])), list(map(int, fields[2::4])), list(map(int, fields[3::4]))


@lru_cache(maxsize=16)
def _poet_words(poet: str, path: str) -> frozenset[str]:
    if poet not in OFFERED_POETS:
        return frozenset()
    # From the cache: parsing the whole lexicon for them took 0.07 s of every `generate` command.
    words = cached_derivation(f"poet-words-{poet}", [path, __file__, corpus],
                              lambda: _derive_poet_words(poet, path))
    return frozenset(words.split("\n")) if words else frozenset()


def _derive_poet_words(poet: str, path: str) -> str:
    """The poet's words, newline-joined (the cache reads one string back far faster than a list)."""
    bit = 1 << OFFERED_POETS.index(poet)
    words, _, _, masks = _columns(path)
    return "\n".join(w for w, mask in zip(words, masks, strict=True) if mask & bit)


@lru_cache(maxsize=4)
def _known_words(path: str) -> dict[str, int]:
    words, counts, _, _ = _columns(path)
    return dict(zip(words, counts, strict=True))


@lru_cache(maxsize=4)
def _rhyme_words(path: str) -> dict[str, int]:
    words, _, finals, _ = _columns(path)
    kept = [(i, f) for i, f in enumerate(finals) if f >= MIN_COUNT]
    kept.sort(key=lambda item: -item[1])  # stable: ties keep the file's order
    return {words[i]: f for i, f in kept}


def poet_words(poet: str, path: str | Path = LEXICON_PATH) -> frozenset[str]:
    """The words `poet` (one of corpus.OFFERED_POETS) uses at least MIN_POET_COUNT times in the
    train split; empty for other poets."""
    return _poet_words(poet, str(path))


def known_words(path: str | Path = LEXICON_PATH) -> dict[str, int]:
    """word -> count in the classical train split (at least MIN_COUNT), most frequent first."""
    return _known_words(str(path))


def load_rhyme_lexicon(path: str | Path = LEXICON_PATH) -> dict[str, int]:
    """word -> how often it ends a hemistich (at least MIN_COUNT times), most frequent first."""
    return _rhyme_words(str(path))
