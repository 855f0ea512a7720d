"""Constrained decoding of verse: each hemistich kept in its metre and landed on its rhyme.

One mechanism for every form. A hemistich is written token by token by the model; whenever a
word is finished (the next token starts a new word, or ends the hemistich) the prosody module
judges it:

- Words. A finished word must be a word of the poet whose style is asked for (his vocabulary in
  the train split, `lexicon.poet_words`), or of the classical poets where his is too small. This
  is looked ahead of as the word is written: a token after which the word begins no such word is
  refused where it is drawn, and another is drawn from the same logits (no decoding step lost).
- Metre. `scansion.MetreTracker` says whether the words so far can still scan in the requested
  metre. If not, the word is taken back (the decoder rewinds to where it began) and the token
  that began it is banned there, so the model says something else. The hemistich may end only
  where the scanner reads the whole of it in the metre (`scan_hemistich`, the same judge the
  evaluation uses).
- Rhyme. Where the form wants the rhyme, the last word before the radif is chosen by the model
  among the words of the rhyme lexicon (`lexicon.py`) that carry the qafiya, have not ended a
  hemistich of this poem yet, and fill exactly what is left of the metre; the radif follows as
  written. The writer switches to that ending once enough such words fit the room left.

Every step back counts as a try; after `MAX_TRIES` the hemistich starts over, and after
`RESTARTS` restarts it is written with the metre relaxed (reported in `HemistichResult`), so a
poem always ends, with the exact number of couplets.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache

import numpy as np

from ..assets import LEXICON_PATH
from ..files import cached_derivation
from ..gpt.engine import Decoder, sample
from ..gpt.sampling import Sampling
from ..prosody import lexicon as lexicon_module
from ..prosody import rhyme as rhyme_module
from ..prosody.lexicon import known_words, load_rhyme_lexicon, poet_words, verse_words
from ..prosody.rhyme import Rhyme, rhyme_key, rhymes_with, word_key
from ..prosody.scansion import MetreTracker, syllable_counts
from ..text import FREELY_REPEATED, FUNCTION_WORDS, PERSIAN_LETTERS, ZWNJ
from .style import poem_bias

MAX_TRIES = 50          # words taken back in one attempt at a hemistich
RESTARTS = 2            # attempts at a hemistich after the first, before the metre is relaxed
RHYME_ROOM = 2          # the rhyme word is chosen when at most this many syllables are left before the radif
MIN_POET_VOCABULARY = 3000  # a poet with fewer known words writes with every classical poet's words
MIN_RHYME_COUNT = 8     # a rhyme word must end this many hemistichs of the train split (not a typo)
MAX_CANDIDATES = 400    # rhyme words offered at once (the most frequent that fit)
MAX_REFUSED = 32        # tokens refused at one place before the word before it is taken back
LONG_VOWELS = "اوی"
MAX_FUNCTION_RUN = 3     # function words in a row (text.FUNCTION_WORDS); a fourth is taken back
# A generated hemistich must scan at most this costly (in guessed vowels and licences): 90% of
# Hafez's hemistichs do (measured on 60 ghazals of the `hafez` package: median 1.31, p90 2.91).
MAX_READING_COST = 3.0
# The writer holds its own lines lower than the judges hold the poets': at 3.0 it leaned on costly
# readings that scan on paper and that a reader does not hear in the metre (BENCHMARKS.md: the metre
# classifier alone heard the requested metre in 88.0% of its hemistichs at 3.0, 91.8% at 2.0, on
# seeds no reported figure uses; 1.5 took four times as long). The price: 30% more decoding steps.
WRITING_MAX_COST = 2.0


@dataclass(frozen=True)
class RhymeSpec:
    """What a rhyming hemistich must end with: a word ending in `qafiya`, then the radif words."""

    qafiya: str
    radif: tuple[str, ...] = ()

    @property
    def letters(self) -> str:
        """Qafiya and radif together, as the control header (and Ganjoor's RhymeLetters) write them."""
        return rhyme_key(self.qafiya) + rhyme_key(" ".join(self.radif))

    def judge(self) -> Rhyme:
        return Rhyme(radif=self.radif, qafiya=rhyme_key(self.qafiya), rhyme_letters=self.letters)

    def holds(self, hemistich: str) -> bool:
        return rhymes_with(hemistich, self.judge())


def qafiya_of(word: str) -> str:
    """The rhyme letters a word offers: from its last long vowel letter (within its last three
    letters) to its end, at least two letters: یار → ار، جان → ان، دل → دل."""
    return _qafiya_of_key(rhyme_key(word))


def _qafiya_of_key(letters: str) -> str:
    for k in range(len(letters) - 2, max(len(letters) - 4, 0) - 1, -1):
        if k > 0 and letters[k] in LONG_VOWELS:
            return letters[k:]
    return letters[-2:]


COMMON_QAFIYAS = 40       # qafiyas offered to poems that name none (the first 20 are drawn from)
MIN_QAFIYA_WORDS = 60     # rhyme words a common qafiya must have in the lexicon


@lru_cache(maxsize=1)
def _rhyme_tables() -> tuple[tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The rhyme words with their rhyme letters, and the common qafiyas: derived once per lexicon
    and per version of the code that derives them, then read from the cache
    (`files.cached_derivation`; deriving them took a fifth of every `generate` command)."""
    sources = [LEXICON_PATH, __file__, lexicon_module, rhyme_module]
    words, keys, qafiyas = cached_derivation("rhyme-tables", sources, _derive_rhyme_tables)
    return tuple(zip(words.split("\n"), keys.split("\n"), strict=True)), tuple(qafiyas)


def _derive_rhyme_tables() -> list:
    """[rhyme words, their rhyme letters, the common qafiyas]; the words newline-joined, which
    the cache reads back far faster than a list of strings."""
    lexicon = load_rhyme_lexicon(LEXICON_PATH)  # the file the cache key hashes
    # word_key maps letters one by one (and one three-letter spelling) and never touches a newline,
    # so it can run once over all the words joined: 48,000 calls cost 0.1 s.
    keys = word_key("\n".join(lexicon)).split("\n")
    index = list(zip(lexicon, keys, lexicon.values(), strict=True))
    rhyme_words = [(w, key) for w, key, n in index if n >= MIN_RHYME_COUNT]
    return ["\n".join(w for w, _ in rhyme_words), "\n".join(key for _, key in rhyme_words), list(_rank_qafiyas(index))]


def _rhyme_index() -> tuple[tuple[str, str], ...]:
    """(word, its rhyme letters) for the words that end at least MIN_RHYME_COUNT hemistichs, commonest first."""
    return _rhyme_tables()[0]


def common_qafiyas() -> tuple[str, ...]:
    """The COMMON_QAFIYAS qafiyas with at least MIN_QAFIYA_WORDS words in the rhyme lexicon, commonest first."""
    return _rhyme_tables()[1]


def _rank_qafiyas(index: list[tuple[str, str, int]]) -> tuple[str, ...]:
    # Past 4 letters a word's qafiya depends only on its last 4, so words are grouped by ending
    # first and each ending's qafiya found once (a loop over all 48,000 words took 0.3 s).
    endings = [key[-4:] if len(key) > 4 else "=" + key for _, key, _ in index]
    ending_ids: dict[str, int] = {}
    ids = np.fromiter((ending_ids.setdefault(e, len(ending_ids)) for e in endings), dtype=np.int64, count=len(endings))
    uses = np.bincount(ids, weights=np.fromiter((n for _, _, n in index), dtype=np.float64, count=len(index)))
    words = np.bincount(ids)
    first = np.unique(ids, return_index=True)[1]  # each ending's first word (ids count up in file order)
    counts: dict[str, float] = {}
    word_counts: dict[str, int] = {}
    for i, row in enumerate(first.tolist()):
        q = _qafiya_of_key(index[row][1])
        counts[q] = counts.get(q, 0.0) + uses[i]
        word_counts[q] = word_counts.get(q, 0) + int(words[i])
    ranked = sorted((q for q in counts if word_counts[q] >= MIN_QAFIYA_WORDS and len(q) >= 2), key=lambda q: -counts[q])
    return tuple(ranked[:COMMON_QAFIYAS])


def choose_qafiya(seed: int) -> str:
    return random.Random(seed).choice(common_qafiyas()[:20])


@dataclass
class HemistichResult:
    text: str
    tries: int = 0
    restarts: int = 0
    relaxed: bool = False  # the metre was given up for this hemistich
    rhyme_word: str = ""


@dataclass
class _Ending:
    """The rhyme word being written: token sequences of the candidates, as a trie."""

    sequences: dict[tuple[int, ...], str]  # token ids -> the word
    tail: list[int]  # radif tokens, forced after the word
    written: list[int] = field(default_factory=list)

    def allowed(self) -> tuple[set[int], bool]:
        """(tokens that continue some candidate, whether a candidate is complete)."""
        n = len(self.written)
        prefix = tuple(self.written)
        nxt = {seq[n] for seq in self.sequences if len(seq) > n and seq[:n] == prefix}
        return nxt, prefix in self.sequences


class _Verdict(Enum):
    """What becomes of a drawn token (`VerseWriter._judge`)."""

    WRITE = "write"  # it is written, and the next token drawn
    REDRAW = "redraw"  # it was refused, or a word taken back: draw again where the decoder now is
    DONE = "done"  # the hemistich is finished, its separator pushed (its text in `_Draft.text`)


@dataclass
class _Draft:
    """A hemistich being written in one attempt: the decoder's tokens from `start` on, where each
    word began, the tokens refused at each place, and how many words were taken back."""

    decoder: Decoder
    start: int
    word_starts: list[int]  # history lengths where each word began; the last is the word being written
    bans: dict[int, set[int]] = field(default_factory=dict)  # history length -> tokens refused there
    tries: int = 0  # words taken back
    text: str | None = None  # the hemistich, once finished

    @classmethod
    def begin(cls, decoder: Decoder) -> _Draft:
        start = len(decoder.history)
        return cls(decoder, start, [start])

    @property
    def position(self) -> int:
        """The history length: where the next token goes."""
        return len(self.decoder.history)

    def refused(self, position: int) -> set[int]:
        return self.bans.get(position, set())

    def refuse(self, position: int, token: int) -> None:
        self.bans.setdefault(position, set()).add(token)

    def dead_word(self) -> int:
        """Where the word to take back at a dead end began: the word being written, or at a word's
        start (nothing of it written yet) the word before."""
        position = self.position
        return self.word_starts[-1] if self.word_starts[-1] < position else self.word_starts[-2]

    def take_back_word(self) -> None:
        """Take back the last word (the one being written, or just finished)."""
        self.take_back(self.word_starts[-1])

    def take_back(self, position: int) -> None:
        """Rewind to `position` (a word start) and ban the token that began that word there, so the
        model says something else. Bans and word starts past it went with the text taken back."""
        self.tries += 1
        history = self.decoder.history
        token = history[position] if position < len(history) else None
        self.decoder.rewind(position)
        for p in [p for p in self.bans if p > position]:
            del self.bans[p]
        while self.word_starts and self.word_starts[-1] > position:
            self.word_starts.pop()
        if token is not None:
            self.refuse(position, token)


@lru_cache(maxsize=4)
def _word_token_classes(tok) -> tuple[np.ndarray, np.ndarray]:
    """(tokens that start a word, wordless tokens) over a tokenizer's vocabulary, read once (read-only,
    shared). Verse is words: tokens without a letter (punctuation, digits, bare spaces) would pass
    the scanner unread, and a model kept from its words would fill the line with them."""
    special = [tok.is_special(i) for i in range(tok.vocab_size)]
    pieces = ["" if s else piece for piece, s in zip(tok.pieces, special, strict=True)]
    starts_word = np.array([p.startswith(" ") for p in pieces])
    wordless = np.array([p != " " and not any(ch in PERSIAN_LETTERS for ch in p) for p in pieces]) & ~np.array(special)
    return starts_word, wordless


class VerseWriter:
    """Writes hemistichs under metre and rhyme constraints with one `Decoder`."""

    def __init__(self, poetry, decoder: Decoder, sampling: Sampling, generator: np.random.Generator,
                 metre_id: int, allowed_mask, max_cost: float = WRITING_MAX_COST, poet: str | None = None,
                 style_bias: np.ndarray | None = None):
        self.tok = poetry.tokenizer
        self.decoder = decoder
        self.sampling = sampling
        self.generator = generator
        self.tracker = MetreTracker(metre_id, max_cost)
        self.allowed_mask = allowed_mask  # (hemistich token ids) -> bool mask of the structurally allowed tokens
        self.style_bias = style_bias  # added to the logits: the poet's token preferences (style.py)
        self._body_start = len(decoder.history)  # the poem's tokens follow the prompt
        self.starts_word, self.wordless = _word_token_classes(self.tok)
        self._space_prefix = self.tok.encode("ا")
        self.used_rhyme_words: set[str] = set()
        # Words must be the poet's own where we know his vocabulary well enough, else any classical poet's.
        own = poet_words(poet) if poet else frozenset()
        self.known = own if len(own) >= MIN_POET_VOCABULARY else known_words()
        self.known_prefixes = _prefixes(poet if len(own) >= MIN_POET_VOCABULARY else None)
        self._pools: dict[str, list[str]] = {}

    # -- tokens of words in running text ------------------------------------------------------
    def _word_tokens(self, words: str) -> list[int]:
        """Token ids of " words" as they appear after a previous word."""
        ids = self.tok.encode("ا " + words)
        return ids[len(self._space_prefix):]

    # -- rhyme candidates ------------------------------------------------------------------------
    def candidates(self, words: list[str], rhyme: RhymeSpec, limit: int = MAX_CANDIDATES) -> list[str]:
        """Lexicon words that carry the qafiya and, followed by the radif, finish the hemistich
        in the metre after `words`; most frequent first."""
        q = rhyme_key(rhyme.qafiya)
        if q not in self._pools:
            self._pools[q] = [w for w in _words_ending(q) if w in self.known and not self._glued(w)]
        said = set(words)
        pool = [w for w in self._pools[q] if w not in self.used_rhyme_words and w not in said]
        return self.tracker.endings(words, pool, " ".join(rhyme.radif), limit)

    def _glued(self, word: str) -> bool:
        """Whether a lexicon word is two words run together in the source (از کار → ازکار),
        seen as a split of its tokens into two known words: offering it would let the model write
        a preposition and a noun without the space between them."""
        ids = self._word_tokens(word)
        for k in range(1, len(ids)):
            head, rest = self.tok.decode(ids[:k]).strip(), self.tok.decode(ids[k:])
            if head in self.known and rest in self.known and not rest.startswith(ZWNJ):
                return True
        return False

    def _known(self, word: str) -> bool:
        """Whether a written word is a word of the classical poets (see `lexicon`)."""
        return all(w in self.known for w in verse_words(word))

    def _could_be_known(self, start: int, token: int) -> bool:
        """Whether the hemistich's last word, once `token` is written, is a known word or the
        beginning of one (true while a letter is split over tokens and does not decode yet)."""
        text = self.tok.decode(self.decoder.history[start:] + [token])
        if text.endswith(("\ufffd", " ")):
            return True
        words = verse_words(text.rsplit(" ", 1)[-1])
        return not words or words[-1] in self.known_prefixes

    def _room(self, words: list[str]) -> int:
        """Fewest syllables the metre still wants after `words` (read as unfinished)."""
        states = self.tracker.nodes(words)
        return min((self.tracker.room(node) for node in states), default=0)

    # -- writing ---------------------------------------------------------------------------------
    def _sample(self, logits: np.ndarray, banned: set[int], only: set[int] | None = None) -> int | None:
        mask = self.allowed_mask(self.decoder.history[self._start:]) & ~self.wordless
        if only is not None:
            keep = np.zeros_like(mask)
            keep[list(only)] = True
            mask &= keep
        if banned:
            mask[list(banned)] = False
        if not mask.any():
            return None
        if self.style_bias is not None:
            logits = logits + poem_bias(self.style_bias, self.decoder.history[self._body_start:])
        return sample(np.where(mask, logits, -np.inf), self.sampling, self.generator)

    def write(self, separator: int, rhyme: RhymeSpec | None) -> HemistichResult:
        """Write one hemistich and push its separator; the decoder ends after the separator."""
        start = self._start = len(self.decoder.history)
        result = HemistichResult("")
        for attempt in range(RESTARTS + 1):
            self.decoder.rewind(start)
            text = self._attempt(separator, rhyme, result)
            if text is not None:
                result.text = text
                return result
            result.restarts = attempt + 1
        # Give up the metre for this hemistich: the form and the number of couplets still hold.
        self.decoder.rewind(start)
        result.relaxed = True
        result.text = self._free(separator, rhyme, result)
        return result

    def write_best(self, separator: int, rhyme: RhymeSpec | None, n: int) -> HemistichResult:
        """Write the hemistich n times from the same place and keep the candidate the model finds
        likeliest per character (its tokens' log-probabilities under the model alone, without the
        style prior or the constraints), preferring those that keep the metre. The decoder ends
        after the kept candidate's separator; the tries and restarts of all n are counted."""
        if n <= 1:
            return self.write(separator, rhyme)
        start = len(self.decoder.history)
        used = set(self.used_rhyme_words)
        best = None  # (keeps the metre, log-probability per character, tokens, result, rhyme words used)
        tries = restarts = 0
        for _ in range(n):
            self.decoder.rewind(start)
            self.used_rhyme_words = set(used)
            result = self.write(separator, rhyme)
            tries, restarts = tries + result.tries, restarts + result.restarts
            score = sum(self.decoder.logprobs[start:]) / (len(result.text) + 1)
            candidate = (not result.relaxed, score, self.decoder.history[start:], result, self.used_rhyme_words)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
        _, _, tokens, result, self.used_rhyme_words = best
        if self.decoder.history[start:] != tokens:
            self.decoder.rewind(start)
            for token in tokens:
                self.decoder.push(token)
        result.tries, result.restarts = tries, restarts
        return result

    def _text(self, start: int) -> str:
        return self.tok.decode(self.decoder.history[start:])

    def _attempt(self, separator: int, rhyme: RhymeSpec | None, result: HemistichResult) -> str | None:
        """One attempt at a hemistich in the metre, from where the decoder is: draw a token, judge
        it (and the word it finishes), write it or take something back, until the hemistich ends.
        Its text, with the separator pushed; None after MAX_TRIES words taken back, or when nothing
        can begin it."""
        draft = _Draft.begin(self.decoder)
        while draft.tries <= MAX_TRIES:
            token = self._draw(draft, separator)
            if token is None:  # nothing may be written here: the word before is a dead end
                if draft.position == draft.start and len(draft.word_starts) <= 1:
                    return None  # nothing can begin the hemistich (these tries are not added to result.tries)
                draft.take_back(draft.dead_word())
                continue
            verdict = self._judge(draft, token, separator, rhyme, result)
            if verdict is _Verdict.DONE:
                result.tries += draft.tries
                return draft.text
            if verdict is _Verdict.WRITE:
                self._write(draft, token)
        result.tries += draft.tries
        return None

    def _draw(self, draft: _Draft, separator: int) -> int | None:
        """A token for the draft's next place, none of those refused there (nor the separator where
        the hemistich begins); None when every token is refused, or more than MAX_REFUSED already
        were at this place."""
        position = draft.position
        token = self._sample(self.decoder.logits,
                             draft.refused(position) | ({separator} if position == draft.start else set()))
        # The draw comes before the count is looked at, so the generator advances even for a token
        # given up here: a seed writes the same poem only while this order holds.
        if len(draft.refused(position)) > MAX_REFUSED:
            return None
        return token

    def _judge(self, draft: _Draft, token: int, separator: int, rhyme: RhymeSpec | None,
               result: HemistichResult) -> _Verdict:
        """What to do with a drawn token. Most tokens go on with a word and are written; the
        separator ends the hemistich and a token that begins a word finishes the one before it,
        and that word is judged first."""
        position, text = draft.position, self._text(draft.start)
        if token == separator:
            return self._judge_end(draft, text, separator, rhyme)
        # Words are looked ahead of letter by letter: a token after which the word being
        # written begins no known word is refused where it was drawn, and another drawn from
        # the same logits. Taking the word back once written would throw away the decoding
        # steps of its tokens (Hafez ghazals, seeds 1-40: 16,955 -> 12,962 steps; BENCHMARKS.md).
        if not self._could_be_known(draft.start, token):
            draft.refuse(position, token)
            return _Verdict.REDRAW
        if not (self.starts_word[token] and text.strip()):
            return _Verdict.WRITE  # the word goes on, or the first one begins
        words = text.split()  # the token begins a word: words[-1] is finished
        if not self._keep_word(draft, words):
            return _Verdict.REDRAW
        if rhyme is not None:
            verdict = self._land_rhyme(draft, words, separator, rhyme, result)
            if verdict is not None:
                return verdict
        draft.word_starts.append(position)
        return _Verdict.WRITE

    def _judge_end(self, draft: _Draft, text: str, separator: int, rhyme: RhymeSpec | None) -> _Verdict:
        """The model would end the hemistich after `text`. It ends there if its last word is known
        and the whole scans in the metre (`complete`, the evaluation's judge) and rhymes. Else the
        end is refused at this place while more words can still fit the metre, or the last word
        is taken back when they cannot."""
        words = text.split()
        if not self._known(words[-1]) or (not (rhyme and rhyme.radif) and repeats(words)):
            draft.take_back_word()
            return _Verdict.REDRAW
        if self.tracker.complete(text) and (rhyme is None or rhyme.holds(text)):
            self.decoder.push(separator)
            draft.text = text
            return _Verdict.DONE
        if self.tracker.viable(words):
            draft.refuse(draft.position, separator)  # more words are needed
        else:
            draft.take_back_word()
        return _Verdict.REDRAW

    def _keep_word(self, draft: _Draft, words: list[str]) -> bool:
        """Whether the word just finished, `words[-1]`, stays: a known word, not said before in the
        hemistich, after which the words so far can still scan in the metre. One that is not is
        taken back."""
        if self._known(words[-1]) and not repeats(words) and self.tracker.viable(words):
            return True
        draft.take_back_word()
        return False

    def _land_rhyme(self, draft: _Draft, words: list[str], separator: int, rhyme: RhymeSpec,
                    result: HemistichResult) -> _Verdict | None:
        """Near the end of the metre (at most RHYME_ROOM syllables left before the radif), let the
        model write the rhyme word, chosen among those that fit, and the radif (`_rhyme_ending`).
        DONE when the hemistich so ends; REDRAW when no rhyme word could fit what is left (the last
        word is taken back); None when the hemistich goes on with another word first."""
        room = self._room(words) - _radif_syllables(rhyme)
        if room > RHYME_ROOM:
            return None
        fits = self.candidates(words, rhyme)
        if fits:
            draft.text = self._rhyme_ending(draft.start, fits, rhyme, separator, result)
            if draft.text is not None:
                return _Verdict.DONE
        if room <= 1:  # no rhyme word fits what is left
            draft.take_back_word()
            return _Verdict.REDRAW
        return None

    def _write(self, draft: _Draft, token: int) -> None:
        self.decoder.push(token)
        if len(self._text(draft.start)) > 120:  # a runaway hemistich: start this word again
            draft.take_back_word()

    def _rhyme_ending(self, start: int, fits: list[str], rhyme: RhymeSpec, separator: int,
                      result: HemistichResult, metre: bool = True) -> str | None:
        """Let the model pick the rhyme word among `fits`, then write the radif and check (the
        metre too, unless `metre` is False)."""
        decoder = self.decoder
        position = len(decoder.history)
        tail = self._word_tokens(" ".join(rhyme.radif)) if rhyme.radif else []
        stop_token = tail[0] if tail else separator
        left = list(fits)
        for _ in range(4):
            if not left:
                return None
            ending = _Ending({tuple(self._word_tokens(w)): w for w in left}, tail)
            while True:
                nxt, complete = ending.allowed()
                if not nxt or (complete and self._prefers_stop(nxt, stop_token)):
                    break
                token = self._sample(decoder.logits, set(), only=nxt)
                if token is None:
                    break
                ending.written.append(token)
                decoder.push(token)
            word = ending.sequences.get(tuple(ending.written))
            if word is not None:
                for t in tail:
                    decoder.push(t)
                text = self._text(start)
                if (not metre or self.tracker.complete(text)) and rhyme.holds(text):
                    decoder.push(separator)
                    self.used_rhyme_words.add(word)
                    result.rhyme_word = word
                    return text
                left.remove(word)
            else:
                written = tuple(ending.written)
                left = [w for w in left if tuple(self._word_tokens(w))[:len(written)] != written]
            decoder.rewind(position)
        return None

    def _prefers_stop(self, continuations: set[int], stop_token: int) -> bool:
        """At a complete candidate that is also the start of longer ones: ask the model whether
        the word ends here (the radif's first token or the separator) or goes on."""
        logits = self.decoder.logits
        go_on = np.logaddexp.reduce(logits[list(continuations)])
        return bool(logits[stop_token] >= go_on)

    def _free(self, separator: int, rhyme: RhymeSpec | None, result: HemistichResult) -> str:
        """A hemistich without the metre, when the constraints could not be met: the model writes
        until it would end the line (at most about a line's length of words), then, where the form
        wants the rhyme, a rhyme word of its choice and the radif."""
        decoder, start = self.decoder, len(self.decoder.history)
        words = 0
        word_starts = [start]
        refused: dict[int, set[int]] = {}  # position -> first tokens of words taken back there
        for _ in range(60):
            position = len(decoder.history)
            token = self._sample(decoder.logits, refused.get(position, set()) | ({separator} if position == start else set()))
            if token is None:
                break
            ends_word = token == separator or self.starts_word[token]
            if ends_word and len(word_starts) > 1 and repeats(verse_words(self._text(start))):
                # The word just finished repeats the line (the metre is given up here, the rule is not):
                # take it back and refuse its first token there.
                refused.setdefault(word_starts[-1], set()).add(decoder.history[word_starts[-1]])
                decoder.rewind(word_starts.pop())
                words -= 1
                continue
            if token == separator:
                break
            if self.starts_word[token]:
                words += 1
                if words >= 7:
                    break
                if position > start:
                    word_starts.append(position)
            decoder.push(token)
        if rhyme is not None:
            pool = self._pools.get(rhyme_key(rhyme.qafiya)) or _words_ending(rhyme_key(rhyme.qafiya))
            pool = [w for w in pool if w not in self.used_rhyme_words][:MAX_CANDIDATES]
            text = self._rhyme_ending(start, pool, rhyme, separator, result, metre=False)
            if text is not None:
                return text
        text = self._text(start)
        decoder.push(separator)
        return text


def repeats(words: list[str]) -> bool:
    """Whether the last of `words` repeats the hemistich: a word said before in it (other than
    text.FREELY_REPEATED), or one function word too many in a row («به من به تو بر»). The radif is
    written after this check and may repeat what it likes."""
    last = words[-1]
    if last not in FREELY_REPEATED and last in words[:-1]:
        return True
    run = words[-(MAX_FUNCTION_RUN + 1):]
    return len(run) > MAX_FUNCTION_RUN and all(w in FUNCTION_WORDS for w in run)


# Room for every key it is called with: the ten offered poets (data.corpus.OFFERED_POETS) and None.
# With fewer, poems by five poets in turn rebuilt a set of 10^4 to 10^5 strings each time (all eleven
# held, with the lexicon they come from: about 50 MB).
@lru_cache(maxsize=16)
def _prefixes(poet: str | None) -> frozenset[str]:
    """Every beginning of a word the writer may use (`poet`'s words, or with None the classical
    poets'), the words themselves included."""
    words = poet_words(poet) if poet is not None else known_words()
    return frozenset(word[:k] for word in words for k in range(1, len(word) + 1))


@lru_cache(maxsize=256)
def _radif_syllables(rhyme: RhymeSpec) -> int:
    """The fewest syllables the radif can take at the end of a hemistich."""
    return min(syllable_counts(" ".join(rhyme.radif)), default=0)


@lru_cache(maxsize=256)
def _words_ending(qafiya: str) -> tuple[str, ...]:
    """Rhyme-lexicon words whose rhyme letters end with `qafiya` (and are more than it), commonest first."""
    return tuple(w for w, key in _rhyme_index() if key.endswith(qafiya) and key != qafiya)
