"""Rhyme analysis: which hemistichs rhyme, the radif (ردیف), the qafiya (قافیه) and the lines
that break the rhyme.

A hemistich end is compared in its *written* form, as Ganjoor's rhyme finder does: the text is
normalized (`text.normalize`), short vowels, tashdid, sukun and the ezafe hamza are dropped,
punctuation goes, آ أ إ are written ا, ئ is written ی, ؤ is written و, and "لله" is written
"للاه" (Allah's long a rhymes with ا). Spaces and ZWNJ are removed, so a rhyme can run across
words. Two letters also count as equal when they are د/ذ, ی/ا or ب/پ (Ganjoor's equivalences;
ة/ت no longer occurs because `normalize` writes ة as ه).

Ganjoor's `RhymeLetters` is the longest common written suffix of the rhyming hemistichs, spaces
removed, qafiya and radif together, spelled as in the first rhyming second hemistich.
`Rhyme.rhyme_letters` follows that convention exactly, so the two compare with `==` after
`rhyme_key`. Where we differ from Ganjoor on purpose: the suffix is taken over the hemistichs
that keep the rhyme (a hemistich that breaks it is reported, not allowed to shorten the rhyme of
the whole poem), and a rhyme must hold at least one letter before its radif (a common ending made
only of whole repeated words is a radif without a qafiya, and the hemistichs that lack the
qafiya letters the others share are the broken ones).

>>> r = analyze_rhyme(["دلم گرفته ز هجران یار ما", "بیا که نیست کسی غمگسار ما",
...                   "شبی به کوی تو آمد دل", "که باز گشت به سامان کار ما"], "ghazal")
>>> r.radif, r.qafiya, r.rhyme_letters
(('ما',), 'ار', 'ارما')
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import pairwise

from ..text import DIACRITICS, PERSIAN_LETTERS, ZWNJ, normalize

__all__ = ["Rhyme", "analyze_rhyme", "rhyme_key", "rhymes_with", "rhyming_positions"]

# Letters as Ganjoor's rhyme finder writes them (after dropping the marks).
_SPELLING = str.maketrans({"آ": "ا", "أ": "ا", "إ": "ا", "ئ": "ی", "ؤ": "و", "ة": "ت"})
# Letters that count as the same for rhyming: د/ذ, ی/ا, ب/پ (and ة/ت, folded by normalize).
_EQUAL = str.maketrans({"ذ": "د", "ا": "ی", "پ": "ب", "ة": "ت"})
_LETTERS = frozenset(PERSIAN_LETTERS)
_MARKS = frozenset(DIACRITICS)

# A rhyme may be shared by most, not all, of the rhyming hemistichs: at least this share of them
# must keep it (and at least two). One odd hemistich in a long ghazal is a broken line; it does
# not shorten the rhyme of the poem.
MAJORITY = 0.6
# Ganjoor stores no rhyme longer than this; neither do we.
MAX_RHYME = 50

_FIRST_COUPLET_FORMS = {"ghazal", "qasida"}
_QUATRAIN_FORMS = {"rubai", "dobeyti"}


# Honorifics written in parentheses after a name, e.g. مصطفی (ص), حسین (ع): not part of the verse.
_HONORIFIC = re.compile(r"\(\s*[^()\s]{1,3}\s*\)")


def _clean(hemistich: str) -> str:
    text = normalize(hemistich) if isinstance(hemistich, str) else ""
    return _HONORIFIC.sub(" ", text) if "(" in text else text


def _words(hemistich: str) -> list[str]:
    """The written words of a hemistich: normalized, marks and punctuation dropped, spelled as
    the rhyme finder spells them. Spaces and ZWNJ both separate words here."""
    text = _clean(hemistich)
    words = []
    for raw in re.split(f"[ {ZWNJ}]+", text):
        word = "".join(ch for ch in raw if ch in _LETTERS and ch not in _MARKS)
        word = word.translate(_SPELLING).replace("لله", "للاه")
        if word:
            words.append(word)
    return words


def rhyme_key(text: str | None) -> str:
    """The written letters of `text` as rhyme letters are compared: normalized, no marks, no
    punctuation, no spaces or ZWNJ, آ written ا and so on (see the module docstring).

    Apply it to both sides before comparing with Ganjoor's `RhymeLetters`.

    >>> rhyme_key("برآید") == rhyme_key("بر آید") == "براید"
    True
    """
    if not text:
        return ""
    return "".join(_words(text))


def word_key(word: str) -> str:
    """`rhyme_key` of one word already written as letters and ZWNJ only (a lexicon word), fast."""
    return word.replace(ZWNJ, "").translate(_SPELLING).replace("لله", "للاه")


@dataclass(frozen=True)
class _Line:
    """One rhyming hemistich as the analysis sees it."""

    position: int
    display: tuple[str, ...]  # normalized words (split on spaces), punctuation stripped
    letters: str  # rhyme_key of the hemistich
    same: str  # letters with the equivalent letters made equal
    starts: frozenset[int]  # offsets in `letters` where a written word starts
    display_of: tuple[int, ...]  # for each letter, the index of its word in `display`


def _line(position: int, hemistich: str) -> _Line:
    text = _clean(hemistich)
    display, letters, starts, display_of = [], [], set(), []
    for token in text.split(" "):
        shown = "".join(ch for ch in token if ch in _LETTERS or ch in _MARKS or ch == ZWNJ).strip(ZWNJ)
        written = [w for w in _words(token)]
        if not written:
            continue
        display.append(shown)
        for word in written:
            starts.add(len(letters))
            letters.extend(word)
            display_of.extend([len(display) - 1] * len(word))
    joined = "".join(letters)
    return _Line(position, tuple(display), joined, joined.translate(_EQUAL), frozenset(starts), tuple(display_of))


@dataclass(frozen=True)
class Rhyme:
    """The rhyme of a poem (or, for a masnavi, of its first couplet; see `couplets`).

    - `radif`: the refrain, the words repeated identically after the qafiya (may be empty).
    - `qafiya`: the rhyme letters before the radif ("" when no rhyme was found).
    - `rhyme_letters`: qafiya and radif written together without spaces, spelled as Ganjoor's
      `RhymeLetters` (compare with `rhyme_key(ganjoor_letters)`).
    - `positions`: indices (into the hemistich list) of the hemistichs that should rhyme.
    - `broken`: those of `positions` that do not share the rhyme.
    - `words`: for each of `positions`, its rhyme word (the word that carries the qafiya, or for
      a broken hemistich the word where the qafiya should be).
    - `form`: the form the positions were chosen for (a guess when the form was unknown).
    - `couplets`: for a masnavi, one Rhyme per couplet; empty otherwise.
    """

    radif: tuple[str, ...] = ()
    qafiya: str = ""
    rhyme_letters: str = ""
    positions: tuple[int, ...] = ()
    broken: tuple[int, ...] = ()
    words: tuple[str, ...] = ()
    form: str = "unknown"
    couplets: tuple[Rhyme, ...] = field(default=(), repr=False)

    @property
    def found(self) -> bool:
        """Whether a rhyme was found at all."""
        return bool(self.qafiya)

    @property
    def radif_text(self) -> str:
        return " ".join(self.radif)


# ---------------------------------------------------------------------------------------------
# Positions


def rhyming_positions(n_hemistichs: int, form: str) -> list[int]:
    """The hemistichs that should rhyme, for a poem of `n_hemistichs` hemistichs in couplets.

    ghazal, qasida, qete (and most stanza forms): the first hemistich and every second one;
    rubai, dobeyti: 1, 2 and 4 (0-based 0, 1, 3); masnavi: all (each couplet rhymes in itself).
    """
    if n_hemistichs <= 0:
        return []
    if form in _QUATRAIN_FORMS:
        return [i for i in (0, 1, 3) if i < n_hemistichs]
    if form == "masnavi":
        return list(range(n_hemistichs))
    return sorted({0} | set(range(1, n_hemistichs, 2)))


# ---------------------------------------------------------------------------------------------
# The common rhyme of a set of lines


def _tail_aligned(line: _Line, length: int) -> bool:
    """Whether the last `length` letters of `line` start at a word boundary."""
    return (len(line.letters) - length) in line.starts


def _radif_length(lines: list[_Line], length: int) -> int:
    """Letters of the longest run of whole words, identical in every line, at the end of the
    common suffix of `length` letters, shorter than it (so at least one qafiya letter is left)."""
    best = 0
    for t in range(1, length):
        if all(_tail_aligned(line, t) for line in lines) and len({line.letters[-t:] for line in lines}) == 1:
            best = t
    return best


def _valid(lines: list[_Line], length: int) -> bool:
    """A common suffix is a rhyme when it holds at least one letter before its radif: not made
    only of whole repeated words in every line."""
    if length <= 0:
        return False
    return not all(_tail_aligned(line, length) for line in lines)


def _common_suffix(lines: list[_Line]) -> int:
    if not lines:
        return 0
    first = lines[0].same
    n = 0
    limit = min(len(line.same) for line in lines)
    while n < limit and all(line.same[-1 - n] == first[-1 - n] for line in lines):
        n += 1
    return n


def _best_suffix(lines: list[_Line], majority: float) -> tuple[int, list[_Line]]:
    """The rhyme of `lines`: (its length in letters, the lines that keep it).

    The longest common suffix of all the lines when it is a rhyme (Ganjoor's rule). When it is
    not (empty, or only whole repeated words), the longest rhyme that at least `majority` of the
    lines share, and the lines without it are broken. When there is none, the common ending
    of whole words (its first word is then the qafiya: a rhyme on a repeated word).
    """
    if not lines:
        return 0, []
    everyone = min(_common_suffix(lines), MAX_RHYME)
    if _valid(lines, everyone):
        return everyone, list(lines)
    if len(lines) <= 2:
        return everyone, list(lines)
    need = max(2, math.ceil(majority * len(lines) - 1e-9))
    best_len, best_lines = 0, []
    longest = min(max(len(line.same) for line in lines), MAX_RHYME)
    for length in range(1, longest + 1):
        groups: dict[str, list[_Line]] = defaultdict(list)
        for line in lines:
            if len(line.same) >= length:
                groups[line.same[-length:]].append(line)
        candidates = [g for g in groups.values() if len(g) >= need]
        if not candidates:
            break
        # Two groups can both pass only when need is at most half: take the bigger.
        group = max(candidates, key=len)
        if _valid(group, length):
            best_len, best_lines = length, group
    if not best_len and everyone:
        # No qafiya shared by most lines: the common ending is whole repeated words, and its
        # first word is the rhyme word itself (a rhyme on one word, as masnavi couplets do).
        return everyone, list(lines)
    return best_len, best_lines


def _rhyme_word(line: _Line, qafiya_end: int) -> str:
    """The word of `line` holding the letter `qafiya_end` letters from its end (the last qafiya
    letter), as displayed."""
    if not line.display:
        return ""
    if qafiya_end <= 0 or qafiya_end > len(line.letters):
        return line.display[-1]
    return line.display[line.display_of[len(line.letters) - qafiya_end]]


def _analyze_lines(lines: list[_Line], form: str, majority: float, optional: frozenset[int] = frozenset(),
                   lead: bool = False) -> Rhyme:
    """The rhyme of these lines. Lines at positions in `optional` (the first hemistich of a
    qete) join the rhyme when they share it and are not reported when they do not. With `lead`
    (ghazal, qasida), the rhyme is the one of the second hemistichs when there are at least
    three of them, and hemistich 0 must share it."""
    core = [line for line in lines if line.position not in optional] or lines
    length, keep = 0, []
    if lead:
        # The opening hemistich must carry the rhyme that the second hemistichs share (as
        # Ganjoor reads it); when it does not, it is the broken one.
        seconds = [line for line in core if line.position != 0]
        if len(seconds) >= 3:
            length, keep = _best_suffix(seconds, majority)
            if length:
                suffix = keep[0].same[-length:]
                keep = [line for line in core if line.position == 0 and line.same.endswith(suffix)] + keep
    if not length:
        length, keep = _best_suffix(core, majority)
    if length == 0:
        return Rhyme(positions=tuple(line.position for line in lines if line.position not in optional),
                     words=tuple(line.display[-1] if line.display else "" for line in lines
                                 if line.position not in optional),
                     form=form)
    suffix = keep[0].same[-length:]
    keep_ids = {id(line) for line in keep}
    for line in lines:
        if line.position in optional and line.same.endswith(suffix):
            keep_ids.add(id(line))
    kept = [line for line in lines if id(line) in keep_ids]
    positions = [line.position for line in lines if line.position not in optional or id(line) in keep_ids]
    radif_len = _radif_length(kept, length)
    # Ganjoor spells the rhyme as its first rhyming second hemistich does.
    reference = next((line for line in kept if line.position > 0), kept[0])
    letters = reference.letters[-length:]
    radif_letters = letters[len(letters) - radif_len:] if radif_len else ""
    radif: tuple[str, ...] = ()
    if radif_len:
        cut = len(reference.letters) - radif_len
        bounds = sorted(s for s in reference.starts if s >= cut) + [len(reference.letters)]
        radif = tuple(reference.letters[a:b] for a, b in pairwise(bounds))
    qafiya = letters[: len(letters) - len(radif_letters)]
    words = []
    for line in lines:
        if line.position not in positions:
            continue
        has_radif = bool(radif_len) and line.letters.endswith(radif_letters) and _tail_aligned(line, radif_len)
        if id(line) in keep_ids or has_radif:
            words.append(_rhyme_word(line, radif_len + 1))
        else:
            words.append(line.display[-1] if line.display else "")
    broken = tuple(line.position for line in lines if line.position in positions and id(line) not in keep_ids)
    return Rhyme(radif=radif, qafiya=qafiya, rhyme_letters=qafiya + radif_letters, positions=tuple(positions),
                 broken=broken, words=tuple(words), form=form)


# ---------------------------------------------------------------------------------------------
# Poems


def _masnavi(hemistichs: list[str]) -> Rhyme:
    couplets = []
    for start in range(0, len(hemistichs) - 1, 2):
        pair = [_line(start, hemistichs[start]), _line(start + 1, hemistichs[start + 1])]
        couplets.append(_analyze_lines(pair, "masnavi", 1.0))
    if not couplets:
        return Rhyme(form="masnavi")  # a lone hemistich has nothing to rhyme with
    first = couplets[0]
    positions = tuple(p for c in couplets for p in c.positions)
    broken = tuple(p for c in couplets for p in (c.positions if not c.found else c.broken))
    words = tuple(w for c in couplets for w in c.words)
    return Rhyme(radif=first.radif, qafiya=first.qafiya, rhyme_letters=first.rhyme_letters, positions=positions,
                 broken=broken, words=words, form="masnavi", couplets=tuple(couplets))


def _guess_form(hemistichs: list[str]) -> str:
    """A form for a poem whose form is unknown, from how its hemistichs rhyme."""
    n = len(hemistichs)
    if n < 2:
        return "qete"
    lines = [_line(i, h) for i, h in enumerate(hemistichs)]
    if n == 4:
        rubai = _analyze_lines([lines[i] for i in (0, 1, 3)], "rubai", 1.0)
        if rubai.found and not rubai.broken:
            return "rubai"
    ghazal = _analyze_lines([lines[i] for i in rhyming_positions(n, "ghazal")], "ghazal", MAJORITY,
                            lead=True)
    if n >= 4 and (not ghazal.found or ghazal.broken):
        # A masnavi: most couplets rhyme in themselves (a qafiya, not only a shared radif).
        pairs = [lines[i:i + 2] for i in range(0, n - 1, 2)]
        rhymed = sum(_valid(pair, _common_suffix(pair)) for pair in pairs)
        if rhymed >= 0.75 * len(pairs):
            return "masnavi"
    if ghazal.found and 0 not in ghazal.broken:
        return "ghazal"
    return "qete"


def analyze_rhyme(hemistichs: list[str], form: str | None = "unknown") -> Rhyme:
    """The rhyme of a poem given as its hemistichs in reading order (couplets as consecutive
    pairs) and its form slug (`corpus.FORMS`: ghazal, qasida, qete, masnavi, rubai, dobeyti, ...).

    Never raises on odd input: an empty poem or one without a common rhyme gives a `Rhyme` with
    empty `qafiya` (`found` is False).
    """
    hemistichs = [h if isinstance(h, str) else "" for h in (hemistichs or [])]
    form = form if isinstance(form, str) and form else "unknown"
    n = len(hemistichs)
    if n == 0:
        return Rhyme(form=form)
    if form not in _FIRST_COUPLET_FORMS | _QUATRAIN_FORMS | {"masnavi", "qete"}:
        form = _guess_form(hemistichs)
    if form == "masnavi":
        return _masnavi(hemistichs)
    positions = rhyming_positions(n, form)
    lines = [_line(i, hemistichs[i]) for i in positions]
    # A qete often has no opening couplet that rhymes: its first hemistich rhymes if it does.
    optional = frozenset({0}) if form == "qete" and len(positions) > 2 else frozenset()
    return _analyze_lines(lines, form, MAJORITY, optional, lead=form in _FIRST_COUPLET_FORMS)


def rhymes_with(hemistich: str, rhyme: Rhyme) -> bool:
    """Whether `hemistich` ends in the rhyme: its written ending is the rhyme letters (with the
    equivalent letters equal), the radif stands as whole words, and there is a qafiya before it.

    A rhyme that was not found (empty qafiya) constrains nothing: every hemistich passes.
    """
    if not isinstance(rhyme, Rhyme) or not rhyme.found:
        return True
    line = _line(0, hemistich if isinstance(hemistich, str) else "")
    target = rhyme.rhyme_letters.translate(_EQUAL)
    if not target or not line.same.endswith(target):
        return False
    radif_len = len(rhyme.rhyme_letters) - len(rhyme.qafiya)
    return not radif_len or _tail_aligned(line, radif_len)
