"""A rule-based, explainable metre scanner (تقطیع) for classical Persian verse.

The script hides much of the sound: short vowels are mostly unwritten, و and ی are vowels or
consonants, a final ه is sometimes a vowel, and the ezafe is not written at all. The scanner keeps
that ambiguity as alternatives and lets the metres decide:

1. A hemistich is normalized (`text.normalize`) and cut into words; a lone و (the conjunction) is
   fused with the word before it.
2. Each word is read into phonemes in every way the rules allow (`_readings`): a consonant without
   a mark may carry an unwritten short vowel (CVC or CV+CV), و is u, v or o (and silent in خوا),
   ی is i or y, a final ه after a consonant is the silent e (های غیرملفوظ) or h, a word-initial ا
   or آ is a glottal onset that can be elided (وصل). Diacritics narrow the choice: fatha, kasra,
   damma force a short vowel, sukun forbids one, tashdid doubles the consonant, tanvin adds -an,
   a final kasra or هٔ is an ezafe. Each reading is syllabified (one onset consonant, a coda of at
   most two) and weighed: CV short (U); CVC and CVV long (-); CVCC and CVVC overlong, long + short
   (- U), except that ن after a long vowel usually does not count (جان is -).
3. Each word, in its context (next word vowel-initial? conjunction after it? last word?), becomes
   a small set of weight strings with costs (`_emissions`): plain, with ezafe (short, or long by
   licence), with its last consonant carried onto the next word's vowel (elision), with its final
   short vowel lengthened, and so on. The last syllable of the hemistich is free (anceps).
4. The catalogue's patterns are compiled into one trie; a dynamic programme walks the words'
   weight strings through it (memoized transitions), keeping the cheapest cost per trie node, so
   the cartesian product of the alternatives is never built. Every metre whose pattern is reached
   gets a cost: the cheapest reading + its licence + a prior from how common the metre is.

`scan_hemistich(text)` returns a `Scansion` (best metre, runner-ups, weights, syllable alignment);
`scan_poem(hemistichs)` votes over hemistichs and also fits one metre to all of them;
`matching_metres(text)` lists the metres a hemistich can be read in.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache

from ..data.corpus import read_labelled
from ..text import ALPHABET, ZWNJ, normalize
from .metres import Metre, load_catalogue, show_pattern

# ---------------------------------------------------------------------------------------------
# Letters and marks

FATHA, DAMMA, KASRA = "\u064e", "\u064f", "\u0650"
SUKUN, SHADDA = "\u0652", "\u0651"
TANVIN = "\u064b\u064c\u064d"
HAMZA_ABOVE, DAGGER_ALEF = "\u0654", "\u0670"
SHORT_MARKS = FATHA + DAMMA + KASRA
MARKS = SHORT_MARKS + SUKUN + SHADDA + TANVIN + HAMZA_ABOVE + DAGGER_ALEF
LETTERS = set("ءآأؤإئابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهی")
ALEFS = set("اآأإ")
VOWEL_LETTERS = set("اوی")

# ---------------------------------------------------------------------------------------------
# Costs (in arbitrary units; lower is more natural). Set by hand, then tuned by coordinate descent
# on 1,964 hemistichs of 500 training poems (hemistich accuracy 66.8% -> 77.1% there).

COST = {
    "y_consonant": 0.29,      # ی after a consonant read as y (ey, ay) rather than i
    "w_consonant": 0.58,      # و after a consonant read as v (ow, av) rather than u
    "w_short": 0.15,          # و read as the short o (تو، چو، خود)
    "h_consonant": 2.0,      # final ه after a consonant read as h (شه، مه) rather than silent e
    "nun_counted": 0.25,      # ن after a long vowel counted (overlong) rather than dropped
    "ezafe": 0.68,            # an unwritten ezafe
    "ezafe_long": 1.2,       # ... lengthened by licence
    "elide": 0.1,            # final consonant carried onto the next word's initial vowel
    "drop_short": 0.4,       # final short vowel dropped before a vowel (بوده است -> بودست)
    "drop_single": 0.05,     # ز آن -> زان
    "drop_article": 0.2,     # ایها الساقی -> ایهس ساقی
    "drop_long": 0.75,        # final long vowel dropped before a vowel
    "shorten_long": 1.0,     # final long vowel counted short before a vowel
    "lengthen_mono": 1.7,    # که، چه، نه counted long
    "lengthen_final": 1.7,   # the final short vowel of a longer word counted long
    "vav_o_long": 0.6,       # the conjunction o counted long
    "vav_va": 0.4,           # the conjunction read va
    "unparsed": 4.0,         # a word the rules cannot read at all
    "geminate": 1.7,         # an unwritten tashdid (مدعا، محبت)
}
PRIOR_WEIGHT = 1.2          # cost per nat of metre rarity
BEAM = 5.0                   # readings costlier than the cheapest by more are dropped
STATE_BEAM = 3.0             # ... and partial readings of the hemistich, at each word
MAX_READINGS = 32            # weight strings kept per word in context
MISS_COST = 6.0              # poem level: a hemistich the metre does not fit (also prosody.scan's)
POEM_PRIOR_WEIGHT = 1.5      # poem level: cost per nat of metre rarity (given the poem's shape)


# ---------------------------------------------------------------------------------------------
# Reading a word into phonemes

@dataclass(frozen=True)
class _Unit:
    letter: str
    marks: str
    start: int          # offset of the letter in the word
    end: int            # offset after its marks
    part_initial: bool  # first letter of the word or after a ZWNJ
    part_final: bool    # last letter of the word or before a ZWNJ


def _units(word: str) -> list[_Unit]:
    raw: list[list] = []
    boundary = True
    for i, ch in enumerate(word):
        if ch in LETTERS:
            raw.append([ch, "", i, i + 1, boundary, False])
            boundary = False
        elif ch in MARKS and raw:
            raw[-1][1] += ch
            raw[-1][3] = i + 1
        elif ch == ZWNJ:
            if raw:
                raw[-1][5] = True
            boundary = True
    if raw:
        raw[-1][5] = True
    return [_Unit(*r) for r in raw]


# A phoneme is (kind, unit index): kind "C" consonant, "V" long vowel, "v" written/ silent short
# vowel, "i" inserted (unwritten) short vowel, "e" ezafe vowel forced by a mark.

def _options(units: list[_Unit], k: int, single: bool) -> list[tuple[tuple[str, ...], float, bool]]:
    """The phoneme readings of unit k: (kinds, cost, may_insert_after)."""
    u = units[k]
    L, marks = u.letter, u.marks
    prev = units[k - 1].letter if k > 0 and not u.part_initial else None
    prev_is_cons = prev is not None and (prev not in VOWEL_LETTERS or units[k - 1].part_initial)
    nxt = units[k + 1].letter if k + 1 < len(units) and not u.part_final else None
    has_vowel_mark = any(m in marks for m in SHORT_MARKS + SHADDA + TANVIN + SUKUN)

    def consonant(cost: float = 0.0, geminate: bool = False) -> list[tuple[tuple[str, ...], float, bool]]:
        kinds: list[str] = ["C"]
        if SHADDA in marks:
            kinds.append("C")
        if DAGGER_ALEF in marks:
            kinds.append("V")
            return [(tuple(kinds), cost, False)]
        if any(t in marks for t in TANVIN):
            kinds += ["v", "C"]
            return [(tuple(kinds), cost, False)]
        if any(m in marks for m in SHORT_MARKS):
            kinds.append("e" if (KASRA in marks and u.part_final and len(units) > 1) else "v")
            return [(tuple(kinds), cost, False)]
        if SUKUN in marks:
            return [(tuple(kinds), cost, False)]
        if single:
            return [(tuple(kinds) + ("v",), cost, False)]
        out = [(tuple(kinds), cost, not u.part_final)]
        if geminate and k > 0 and not u.part_initial and not u.part_final:
            # an unwritten tashdid (مدعا، محبت): doubled between two vowels
            out.append((("C", "C"), cost + COST["geminate"], True))
        return out

    if L == "ل" and k == 1 and units[0].letter == "ا" and len(units) > 3 and SHADDA in units[2].marks:
        return [((), 0.0, False)]  # the ل of ال before a doubled sun letter (السّاقی) is not heard
    if L == "ا":
        if any(t in marks for t in TANVIN):
            return [(("v", "C"), 0.0, False)]
        if k == 1 and units[0].letter in "کزچ" and nxt in ("ی", "و"):
            # کاین، زاین، کاو: که/از + این/او fused, the alef only marks the joint (kin, zu)
            return [(("V",), 0.0, False), ((), COST["elide"], False)]
        if u.part_initial:
            if k > 0 and units[k - 1].letter not in VOWEL_LETTERS | {"ه"}:
                # اش، ام، است after a consonant inside a word: the glottal onset is elided
                return consonant() + [(("v",), COST["elide"], False)]
            return consonant()
        return [(("V",), 0.0, False)]
    if L == "آ":
        if k == 0:
            return [(("C", "V"), 0.0, False)]
        # زآن، کآن: a one-letter word fused with the next; دل‌آرام: elided inside a compound
        return [(("C", "V"), 0.0, False), (("V",), 0.0 if k == 1 else COST["elide"], False)]
    if L in "أإؤئ":
        return consonant()
    if L == "ء":
        if u.part_final and prev in ("ا", "و", "ی"):
            return consonant() + [((), 0.3, False)]
        return consonant()
    if L == "و":
        if u.part_initial or has_vowel_mark:
            return consonant()
        if not prev_is_cons:
            return consonant()
        out = [(("V",), 0.0, False)] + consonant(COST["w_consonant"])
        if prev == "خ" and nxt in ("ا", "ی"):
            out.append(((), 0.0, False))  # the silent و of خواب، خویش
        if (prev == "خ" and nxt is not None) or u.part_final:
            out.append((("v",), COST["w_short"], False))  # خود، تو، چو، همچو
        return out
    if L == "ی":
        if u.part_initial or has_vowel_mark:
            return consonant()
        if prev in ("ا", "آ") and not units[k - 1].part_initial:
            if k == 2 and units[0].letter in "کزچ":  # کاین: kin
                return [(("V",), 0.0, False)] + consonant()
            return consonant()
        return [(("V",), 0.0, False)] + consonant(COST["y_consonant"])
    if L == "ه":
        if HAMZA_ABOVE in marks and u.part_final:
            if prev_is_cons:
                return [(("v", "e"), 0.0, False)]
            return [(("C", "e"), 0.0, False)]
        if u.part_final and not u.part_initial and not has_vowel_mark:
            if prev_is_cons:
                return [(("v",), 0.0, False)] + consonant(COST["h_consonant"])
            return consonant()
        return consonant()
    return consonant(geminate=True)


@dataclass(frozen=True)
class _Syl:
    weight: str      # "U", "-" or "-U" (overlong)
    start: int
    end: int
    open_long: bool  # long vowel, no coda
    coda: int
    long_vowel: bool
    nun: bool        # the coda is a single ن after a long vowel


@dataclass(frozen=True)
class _Reading:
    syls: tuple[_Syl, ...]
    cost: float
    end: str          # "C" consonant, "v" short vowel, "V" long vowel
    ezafe: bool       # an ezafe is written (final kasra, هٔ)
    single: bool      # a one-consonant word (ز، ب)


def _weight(long_vowel: bool, coda: int) -> str:
    if long_vowel:
        return "-" if coda == 0 else "-U"
    return "U" if coda == 0 else "-" if coda == 1 else "-U"


@lru_cache(maxsize=200_000)
def _readings(word: str) -> tuple[_Reading, ...]:
    """Every reading of `word` the letter rules allow, one per distinct outcome (syllable weights,
    kind of ending), the cheapest kept.

    A dynamic programme over the letters, not an enumeration: a state is the weights of the
    syllables closed so far plus what the open syllable needs to know (its vowel, the consonants
    after it, the constraints pending), so readings that agree on those merge. Syllables: one
    onset consonant at the start of the word and of each part after a ZWNJ, codas of at most two;
    two vowels meet only as i + vowel (a glide) or before an ezafe; a made-up vowel never meets
    a vowel; a doubled consonant stands between vowels.
    """
    units = _units(word)
    if not units:
        return ()
    single = len(units) == 1 and units[0].letter not in VOWEL_LETTERS | {"آ", "ه"}
    # state key: (weights, nucleus kind or "", nucleus letter is ی, consonants since the nucleus,
    #             first of them is ن, last phone kind, a part-initial consonant awaits its vowel,
    #             a doubled consonant awaits its vowel)
    # value: (cost, onset units of the syllables, unit of the last consonant)
    start_key = ((), "", False, 0, False, "", False, False)
    states: dict[tuple, tuple[float, tuple[int, ...], int]] = {start_key: (0.0, (), -1)}

    def push(key, value, into):
        old = into.get(key)
        if old is None or old[0] > value[0]:
            into[key] = value

    for k in range(len(units)):
        options = []
        for kinds, c, may_insert in _options(units, k, single):
            options.append((kinds, c))
            if may_insert and kinds and kinds[-1] == "C":
                options.append((kinds + ("i",), c))
        part_initial = units[k].part_initial and k > 0
        new_states: dict[tuple, tuple[float, tuple[int, ...], int]] = {}
        for key, value in states.items():
            for kinds, c in options:
                cur = key
                cost, onsets, last_cons = value
                cost += c
                ok = True
                for j, kind in enumerate(kinds):
                    weights, nuc, nuc_ye, t, nun1, last, await_part, await_gem = cur
                    if kind == "C":
                        if await_part or await_gem or t >= 3 or (not nuc and t >= 1):
                            ok = False
                            break
                        gem = j > 0 and kinds[j - 1] == "C"  # the second of a doubled consonant
                        if gem and t != 1:
                            ok = False
                            break
                        first_nun = nun1 if t else (nuc == "V" and units[k].letter == "ن")
                        cur = (weights, nuc, nuc_ye, t + 1, first_nun, "C",
                               part_initial and j == 0 and bool(nuc), gem)
                        last_cons = k
                        continue
                    # a vowel
                    if not nuc:
                        if t != 1:
                            ok = False
                            break
                        cur = (weights, kind, units[k].letter == "ی", 0, False, kind, False, False)
                        onsets = (last_cons,)
                        continue
                    if t == 0:
                        if last == "v" and kind == "V":
                            # a short-vowel mark before its long vowel letter only spells it
                            cur = (weights, "V", units[k].letter == "ی", 0, False, "V", False, False)
                            continue
                        if (kind == "e" and last != "i") or (kind == "V" and nuc == "V" and nuc_ye):
                            cur = (weights + (_weight(nuc == "V", 0),), kind, units[k].letter == "ی",
                                   0, False, kind, False, False)
                            onsets = onsets + (k,)
                            continue
                        ok = False
                        break
                    if kind == "i" and last != "C":
                        ok = False
                        break
                    coda = t - 1
                    w = _weight(nuc == "V", coda)
                    cur = (weights + (w,), kind, units[k].letter == "ی", 0, False, kind, False, False)
                    onsets = onsets + (last_cons,)
                    if nuc == "V" and coda == 1 and nun1:
                        # ن after a long vowel mostly does not count: long, or overlong at a cost
                        push((weights + ("-",),) + cur[1:], (cost, onsets, last_cons), new_states)
                        cost += COST["nun_counted"]
                if ok:
                    push(cur, (cost, onsets, last_cons), new_states)
        if not new_states:
            return ()
        if len(new_states) > MAX_READINGS:  # long words: keep the cheapest partial readings
            ranked = sorted(new_states.items(), key=lambda item: item[1][0])[:MAX_READINGS]
            new_states = dict(ranked)
        states = new_states

    out: dict[tuple, _Reading] = {}
    for key, (cost, onsets, _) in states.items():
        weights, nuc, nuc_ye, t, nun1, last, await_part, await_gem = key
        if not nuc or t > 2 or await_gem:
            continue
        finals = [(_weight(nuc == "V", t), 0.0)]
        if nuc == "V" and t == 1 and nun1:
            finals = [("-", 0.0), ("-U", COST["nun_counted"])]
        end = "C" if t else "V" if nuc == "V" else "v"
        ezafe = nuc == "e" and t == 0
        starts = [0] + [units[o].start for o in onsets[1:]]
        for fw, fc in finals:
            all_w = weights + (fw,)
            syls = []
            for n, w in enumerate(all_w):
                a = starts[n]
                b = starts[n + 1] if n + 1 < len(starts) else len(word)
                is_last = n + 1 == len(all_w)
                syls.append(_Syl(w, a, b, nuc == "V" and t == 0 and is_last, t if is_last else 0,
                                 nuc == "V" if is_last else False, False))
            reading = _Reading(tuple(syls), cost + fc, end, ezafe, single)
            rkey = (all_w, end, ezafe, t)
            if rkey not in out or out[rkey].cost > reading.cost:
                out[rkey] = reading
    return tuple(sorted(out.values(), key=lambda r: r.cost))


# ---------------------------------------------------------------------------------------------
# Words in context: weight strings with costs

@dataclass(frozen=True)
class _Emission:
    weights: tuple[str, ...]          # one entry per syllable ("U", "-", "-U")
    cost: float
    spans: tuple[tuple[int, int], ...]  # letters of each syllable in the word
    notes: tuple[str, ...]


def _detached(s: _Syl) -> str:
    """The weight of a final syllable whose last consonant goes to the next syllable."""
    coda = s.coda - 1
    if s.long_vowel:
        return "-"
    return "U" if coda == 0 else "-"


def _final_weight(s: _Syl) -> list[tuple[str, float]]:
    return [(s.weight, 0.0)]


@lru_cache(maxsize=200_000)
def _emissions(word: str, context: str) -> tuple[_Emission, ...]:
    """The weight strings of `word` in `context`: "last", "vav", "vav_last", "elide", "article" or
    "" (followed by a consonant-initial word)."""
    readings = _readings(word)
    out: dict[tuple, _Emission] = {}

    def add(weights: list[str], cost: float, spans: list[tuple[int, int]], notes: list[str]) -> None:
        key = tuple(weights)
        if key not in out or out[key].cost > cost:
            out[key] = _Emission(key, cost, tuple(spans), tuple(notes))

    if not readings:
        add([], COST["unparsed"], [], [])
        return tuple(out.values())
    last = context in ("last", "vav_last")
    for r in readings:
        syls = r.syls
        head_w = [s.weight for s in syls[:-1]]
        head_s = [(s.start, s.end) for s in syls[:-1]]
        head_n = [""] * len(head_w)
        fin = syls[-1]
        fin_span = (fin.start, fin.end)
        c = r.cost
        if context == "last":
            add(head_w + ["*"], c, head_s + [fin_span], head_n + ["anceps"])
            continue
        if r.ezafe:  # a written ezafe (final kasra or هٔ): the ezafe vowel is the last syllable
            add(head_w + ["U"], c, head_s + [fin_span], head_n + ["ezafe"])
            add(head_w + ["-"], c + COST["ezafe_long"], head_s + [fin_span], head_n + ["ezafe+"])
            continue
        finals = _final_weight(fin)
        if context in ("vav", "vav_last"):
            tail_notes = "o"
            if r.end == "C":
                base = [_detached(fin)]
            else:
                base = [fin.weight]
            if last:
                add(head_w + base + ["*"], c, head_s + [fin_span, fin_span], head_n + ["", "o"])
                continue
            add(head_w + base + ["U"], c, head_s + [fin_span, fin_span], head_n + ["", tail_notes])
            add(head_w + base + ["-"], c + COST["vav_o_long"], head_s + [fin_span, fin_span],
                head_n + ["", "o+"])
            for fw, fc in finals:
                add(head_w + [fw, "U"], c + fc + COST["vav_va"], head_s + [fin_span, fin_span],
                    head_n + ["", "va"])
            continue
        for fw, fc in finals:
            add(head_w + [fw], c + fc, head_s + [fin_span], head_n + [""])
        # ezafe
        if r.end == "C":
            ez = [_detached(fin)]
        else:
            ez = [fin.weight]
        add(head_w + ez + ["U"], c + COST["ezafe"], head_s + [fin_span, fin_span], head_n + ["", "ezafe"])
        add(head_w + ez + ["-"], c + COST["ezafe_long"], head_s + [fin_span, fin_span], head_n + ["", "ezafe+"])
        # a final short vowel counted long
        if r.end == "v":
            lc = COST["lengthen_mono"] if len(syls) == 1 else COST["lengthen_final"]
            add(head_w + ["-"], c + lc, head_s + [fin_span], head_n + ["lengthened"])
        if context in ("elide", "article"):
            if r.end == "C":
                add(head_w + [_detached(fin)], c + COST["elide"], head_s + [fin_span], head_n + ["elision"])
            elif r.end == "v":
                dc = COST["drop_single"] if r.single else COST["drop_article"] if context == "article" \
                    else COST["drop_short"]
                add(head_w, c + dc, head_s, head_n)
            else:
                dc = COST["drop_article"] if context == "article" else COST["drop_long"]
                add(head_w, c + dc, head_s, head_n)
                add(head_w + ["U"], c + COST["shorten_long"], head_s + [fin_span], head_n + ["shortened"])
    return tuple(sorted(out.values(), key=lambda e: e.cost))


@lru_cache(maxsize=200_000)
def _compact(word: str, context: str) -> tuple[tuple[str, float], ...]:
    """`_emissions` as (weight string, cost) pairs for the dynamic programme."""
    best: dict[str, float] = {}
    for e in _emissions(word, context):
        s = "".join(w for w in e.weights if w != "*")
        if s not in best or best[s] > e.cost:
            best[s] = e.cost
    ranked = sorted(best.items(), key=lambda item: item[1])
    if not ranked:
        return ()
    bound = ranked[0][1] + BEAM
    return tuple(item for item in ranked[:MAX_READINGS] if item[1] <= bound)


# After `normalize` the alphabet is closed, so the scanner's view of a word (its letters, marks
# and ZWNJ; then its letters alone) is a deletion of the rest, done in C by str.translate.
_NOT_IN_WORDS = str.maketrans("", "", "".join(sorted(ALPHABET - LETTERS - set(MARKS) - {ZWNJ, " "})))
_NOT_LETTERS = str.maketrans("", "", MARKS + ZWNJ)


def _words(text: str) -> list[str]:
    out = []
    for raw in normalize(text).translate(_NOT_IN_WORDS).split(" "):
        word = raw.strip(ZWNJ)
        if word.translate(_NOT_LETTERS):
            out.append(word)
    return out


def _plain(word: str) -> str:
    """The letters of a word of `_words`."""
    return word.translate(_NOT_LETTERS)


def _tokens(text: str) -> list[tuple[str, str]]:
    """(word, context) pairs; the conjunction و is folded into the word before it."""
    words = _words(text)
    merged: list[tuple[str, bool]] = []  # (word, followed by the conjunction)
    for w in words:
        if _plain(w) == "و" and merged and not merged[-1][1]:
            merged[-1] = (merged[-1][0], True)
        else:
            merged.append((w, False))
    out = []
    for k, (w, vav) in enumerate(merged):
        is_last = k == len(merged) - 1
        if vav:
            ctx = "vav_last" if is_last else "vav"
        elif is_last:
            ctx = "last"
        else:
            nxt = _plain(merged[k + 1][0])
            if nxt.startswith("ال") and len(nxt) > 3:
                ctx = "article"
            elif nxt[:1] in ALEFS and nxt != "و":
                ctx = "elide"
            else:
                ctx = ""
        out.append((w, ctx))
    return out


# ---------------------------------------------------------------------------------------------
# The compiled catalogue

class _Compiled:
    """All patterns of the catalogue in one trie over their weights (the last syllable, which is
    free, left off); `accept[node]` lists (metre index, pattern index, licence cost)."""

    def __init__(self, metres: tuple[Metre, ...]):
        self.metres = metres
        self.children: list[dict[str, int]] = [{}]
        self.accept: list[list[tuple[int, int, float]]] = [[]]
        total = sum(m.poems for m in metres) + len(metres)
        self.prior = [PRIOR_WEIGHT * -math.log((m.poems + 1) / total) for m in metres]
        # Poem level: the shape of the poem says much (four hemistichs: a rubai or a dobeyti).
        quatrains = sum(m.quatrains for m in metres) + len(metres)
        longer = total - quatrains
        self.prior_quatrain = [-math.log((m.quatrains + 1) / quatrains) for m in metres]
        self.prior_longer = [-math.log((m.poems - m.quatrains + 1) / longer) for m in metres]
        for mi, m in enumerate(metres):
            for pi, pattern in enumerate(m.patterns):
                node = 0
                for ch in pattern[:-1]:
                    nxt = self.children[node].get(ch)
                    if nxt is None:
                        nxt = len(self.children)
                        self.children[node][ch] = nxt
                        self.children.append({})
                        self.accept.append([])
                    node = nxt
                self.accept[node].append((mi, pi, m.licence_cost(pi)))
        # a word's readings (weight string, cost) -> {node -> the (node reached, cost) of each reading
        # the trie can take from there}, filled as words come up. Most readings lead nowhere from a
        # given node; keeping only those that do makes the inner loop of the scanner (most of its
        # time) one lookup per node and one per move, not one per reading. Keyed by the readings,
        # not the word: a hemistich's words share a few thousand sets of readings among them.
        # Shared by every thread that scans (a server's workers): it is read without a lock (one
        # dict lookup is atomic), but written (`remember`), counted and emptied (`trim_word_caches`)
        # only under _MEMO_LOCK; `move_entries` counts what it holds, its keys and their nodes.
        self.moves: dict[tuple[tuple[str, float], ...], dict[int, tuple[tuple[int, float], ...]]] = {}
        self.move_entries = 0
        # node -> {weight string -> node it leads to (-1: nowhere)}: many words share a reading.
        self.trans: list[dict[str, int]] = [{} for _ in self.children]

    def walk(self, node: int, s: str) -> int:
        """The node that weights `s` lead to from `node`; -1 where the trie has none."""
        n = node
        for ch in s:
            n = self.children[n].get(ch, -1)
            if n < 0:
                break
        self.trans[node][s] = n
        return n

    def remember(self, emissions: tuple[tuple[str, float], ...], node: int,
                 moves: tuple[tuple[int, float], ...]) -> None:
        """Keep `moves_from(node, emissions)` in the memo of moves. Looked up again under the lock,
        so that an entry never goes into a dict that `trim_word_caches` has just dropped."""
        with _MEMO_LOCK:
            by_node = self.moves.get(emissions)
            if by_node is None:
                by_node = self.moves[emissions] = {}
                self.move_entries += 1
            if node not in by_node:
                by_node[node] = moves
                self.move_entries += 1

    def moves_from(self, node: int, emissions: tuple[tuple[str, float], ...]) -> tuple[tuple[int, float], ...]:
        """(node reached, cost) of each reading that goes somewhere from `node`, cheapest first."""
        row = self.trans[node]
        out = []
        for s, ec in emissions:
            n = row.get(s)
            if n is None:
                n = self.walk(node, s)
            if n >= 0:
                out.append((n, ec))
        out.sort(key=lambda move: move[1])  # cheapest first: `_advance` stops at its beam
        return tuple(out)


# Guards the writes to the memo of moves (`_Compiled.remember`) and `trim_word_caches`. The
# lru_cache memos need no lock of ours: functools documents them as thread-safe (an entry may be
# computed twice by two threads at once, never stored half-made), and emptying one while other
# threads read it is safe too.
_MEMO_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _compiled() -> _Compiled:
    return _Compiled(load_catalogue())


# ---------------------------------------------------------------------------------------------
# Results

@dataclass(frozen=True)
class Syllable:
    """One syllable of the chosen reading: the letters of `word` (index `word_index`) that make it,
    its weight ("-" long, "U" short, "-U" overlong: it fills a long and a short position),
    and a note: "ezafe", "o" (the conjunction), "elision", "anceps" (the free last syllable),
    "lengthened", ... or ""."""

    word_index: int
    word: str
    letters: str
    weight: str
    note: str = ""


@dataclass(frozen=True)
class Candidate:
    metre_id: int
    name: str
    cost: float     # reading + licence + prior
    score: float    # share of exp(-cost) among the candidates
    pattern: str
    licence: str


@dataclass
class Scansion:
    """The scansion of one hemistich. `metre_id` is None when no metre of the catalogue fits."""

    text: str
    metre_id: int | None = None
    name: str | None = None
    score: float = 0.0
    cost: float = math.inf
    weights: str = ""             # the chosen reading, one character a syllable position (the
                                  # free last syllable given the pattern's weight)
    pattern: str = ""             # the metre pattern it fills
    licence: str = ""
    syllables: list[Syllable] = field(default_factory=list)
    candidates: list[Candidate] = field(default_factory=list)
    costs: dict[int, float] = field(default_factory=dict, repr=False)  # reading + licence, no prior

    @property
    def matched(self) -> bool:
        return self.metre_id is not None

    @property
    def runner_ups(self) -> list[Candidate]:
        return self.candidates[1:]

    def display(self) -> str:
        """Syllables and their signs (− long, ∪ short), in reading order, one pair a line."""
        if not self.syllables:
            return f"{self.text}\n(no metre)"
        top = " ".join(s.letters or "·" for s in self.syllables)
        bottom = " ".join(show_pattern(s.weight) for s in self.syllables)
        return f"{top}\n{bottom}\n{self.name}"


@dataclass
class PoemScansion:
    """The metre of a poem: `metre_id` fits one metre to all hemistichs at once (cheapest total,
    a hemistich the metre cannot read costs MISS_COST); `vote_metre_id` is the commonest
    hemistich-level answer. `hemistichs` are the scansions under the poem's metre."""

    metre_id: int | None
    name: str | None
    score: float
    vote_metre_id: int | None
    votes: Counter
    fitted: int                   # hemistichs that the chosen metre reads
    hemistichs: list[Scansion]
    candidates: list[Candidate] = field(default_factory=list)


_UNREACHED = float("inf")
_NO_MOVES: dict = {}  # stands for a set of readings not in the memo yet (never written to)


@lru_cache(maxsize=100_000)
def _merged_emissions(word: str, ctx: str | tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    """`_compact` of a word; for a tuple of contexts, the cheapest cost of each weight string."""
    if not isinstance(ctx, tuple):
        return _compact(word, ctx)
    merged: dict[str, float] = {}
    for c in ctx:
        for s, ec in _compact(word, c):
            if s not in merged or merged[s] > ec:
                merged[s] = ec
    return tuple(merged.items())


def _advance(states: dict[int, float], tokens: list[tuple[str, str | tuple[str, ...]]], compiled: _Compiled,
             keep=None, beam: bool = True) -> dict[int, float]:
    """Carry the trie nodes reached (node -> cheapest cost) over more (word, context) tokens.

    A context may be a tuple of contexts, any of which may hold (a word whose next word is not
    written yet). `keep(node)` drops nodes that lead nowhere wanted. With `beam`, after each word
    the nodes costlier than the cheapest by more than STATE_BEAM are dropped (when more than four
    are reached): the cheapest is found first, so those are never written down.
    """
    if beam and keep is not None:  # the beam's bound is found before `keep` is asked; no caller needs both
        raise ValueError("_advance: a beam and keep are not combined")
    memo = compiled.moves
    for word, ctx in tokens:
        emissions = _merged_emissions(word, ctx)
        by_node = memo.get(emissions, _NO_MOVES)  # read without the lock: see _Compiled.moves
        reachable: list[tuple[float, tuple[tuple[int, float], ...]]] = []  # (cost so far, moves cheapest first)
        append = reachable.append
        lowest = _UNREACHED
        for node, c in states.items():
            moves = by_node.get(node)
            if moves is None:
                moves = compiled.moves_from(node, emissions)
                compiled.remember(emissions, node, moves)
            if moves:
                append((c, moves))
                cheapest = c + moves[0][1]
                if cheapest < lowest:
                    lowest = cheapest
        if not reachable:
            return {}
        if beam:
            new = _reach(reachable, None, lowest + STATE_BEAM)
            if len(new) <= 4:  # the beam only thins out more than four nodes
                everything = _reach(reachable, None, _UNREACHED)
                if len(everything) <= 4:
                    new = everything
        else:
            new = _reach(reachable, keep, _UNREACHED)
            if not new:
                return {}
        states = new
    return states


def _reach(reachable: list[tuple[float, tuple[tuple[int, float], ...]]], keep, bound: float) -> dict[int, float]:
    """node -> cheapest cost, over the moves no costlier than `bound` (kept by `keep`)."""
    new: dict[int, float] = {}
    get = new.get
    for c, moves in reachable:
        for n, ec in moves:
            nc = c + ec
            if nc > bound:
                break
            if nc < get(n, _UNREACHED) and (keep is None or keep(n)):
                new[n] = nc
    return new


def _metre_costs(tokens: list[tuple[str, str]], compiled: _Compiled) -> dict[int, tuple[float, int]]:
    """metre index -> (cheapest reading + licence cost, pattern index)."""
    states = _advance({0: 0.0}, tokens, compiled)
    best: dict[int, tuple[float, int]] = {}
    accept = compiled.accept
    for node, c in states.items():
        for mi, pi, lc in accept[node]:
            total = c + lc
            if mi not in best or (total, pi) < best[mi]:  # ties: the first pattern, whatever the order
                best[mi] = (total, pi)
    return best


@lru_cache(maxsize=100_000)
def _tail_tokens(word: str, after: str) -> list[tuple[str, str]]:
    return _tokens(f"{word} {after}" if after else word)


def syllable_counts(text: str) -> set[int]:
    """How many syllables `text` can have when it ends a hemistich (its free last one included)."""
    tokens = _tokens(text)
    counts = {0}
    for word, ctx in tokens:
        counts = {c + len(s) for c in counts for s, _ in _compact(word, ctx)}
    return {c + 1 for c in counts} if tokens else set()


_WORD_MEMOS = (_readings, _emissions, _compact, _merged_emissions, _tail_tokens)


def word_cache_entries() -> int:
    """What the per-word memos hold: the entries of each lru_cache memo, and of the memo of moves
    its sets of readings and, under each, the trie nodes it was asked from."""
    compiled = _compiled()
    with _MEMO_LOCK:
        return sum(f.cache_info().currsize for f in _WORD_MEMOS) + compiled.move_entries


def trim_word_caches(limit: int) -> None:
    """Empty the per-word memos once they hold more than `limit` entries together (counted as
    `word_cache_entries` counts them). They are sized for scanning a corpus (a few KB an entry); a
    long-lived server meets new words without end. Emptied between poems they cost nothing
    measurable: a poem refills what it reuses. Safe while other threads scan: the check and the
    emptying happen under the memo's lock, and a scan under way keeps (and finishes with) the
    entries it already holds."""
    compiled = _compiled()
    with _MEMO_LOCK:
        if sum(f.cache_info().currsize for f in _WORD_MEMOS) + compiled.move_entries > limit:
            for f in _WORD_MEMOS:
                f.cache_clear()
            compiled.moves.clear()
            compiled.move_entries = 0


# Contexts a finished word may be read in while the word after it is not yet written.
_OPEN = {"last": ("", "elide", "article"), "vav_last": ("vav",)}


MAX_REMEMBERED_PREFIXES = 10_000  # a tracker's memo of hemistich beginnings; a poem asks a few hundred


class MetreTracker:
    """Word by word, whether a hemistich being written can still scan in one metre.

    The sampling engine asks it after every finished word (`viable`), and at the end of the
    hemistich (`complete`, which is `scan_hemistich` itself, so the writer and the judge agree).
    """

    def __init__(self, metre_id: int, max_cost: float = math.inf):
        compiled = _compiled()
        index = next((i for i, m in enumerate(compiled.metres) if m.id == metre_id), None)
        if index is None:
            raise ValueError(f"metre {metre_id} is not in the catalogue")
        self.metre_id, self.index, self.compiled = metre_id, index, compiled
        self.metre = compiled.metres[index]
        self.max_cost = max_cost  # readings costlier than this (in licences and guesses) don't count
        self._leads: dict[int, bool] = {}
        self._room: dict[int, int] = {}
        self._reached: dict[tuple, dict[int, float]] = {}  # tokens -> the nodes they reach (`_nodes_of`)

    def leads(self, node: int) -> bool:
        """Whether some pattern of this metre passes through trie node `node`."""
        known = self._leads.get(node)
        if known is None:
            known = any(mi == self.index for mi, _, _ in self.compiled.accept[node]) or \
                any(self.leads(child) for child in self.compiled.children[node].values())
            self._leads[node] = known
        return known

    def nodes(self, words: list[str], finished: bool = False) -> dict[int, float]:
        """Trie nodes the words can reach in this metre; unless `finished`, the last word may be
        read in any context the next word could give it."""
        tokens: list = _tokens(" ".join(words))
        if tokens and not finished:
            word, ctx = tokens[-1]
            tokens[-1] = (word, _OPEN.get(ctx, ctx))
        return self._cheap(self._nodes_of(tokens))

    def _nodes_of(self, tokens: list) -> dict[int, float]:
        """The trie nodes that `tokens` reach from the root in this metre, at any cost, carried on
        from the longest prefix asked before: the writer asks after every word of a hemistich, so
        each question repeats the one before it but for a word or two."""
        key = tuple(tokens)
        done = len(key)
        while done and key[:done] not in self._reached:
            done -= 1
        states = self._reached[key[:done]] if done else {0: 0.0}
        if len(self._reached) > MAX_REMEMBERED_PREFIXES:
            self._reached.clear()
        for i in range(done, len(key)):
            states = _advance(states, [key[i]], self.compiled, keep=self.leads, beam=False)
            self._reached[key[:i + 1]] = states
            if not states:
                break
        return states

    def _cheap(self, states: dict[int, float]) -> dict[int, float]:
        return {n: c for n, c in states.items() if c <= self.max_cost}

    def viable(self, words: list[str]) -> bool:
        return bool(self.nodes(words))

    def accepts(self, states: dict[int, float]) -> bool:
        return any(mi == self.index for node in states for mi, _, _ in self.compiled.accept[node])

    def complete(self, text: str) -> bool:
        """Whether the scanner can read the whole hemistich in this metre (within `max_cost`)."""
        return self.accepts(self.nodes(text.split(), finished=True))

    def room(self, node: int) -> int:
        """Fewest syllables this metre still wants after trie node `node` (the free last one included)."""
        known = self._room.get(node)
        if known is None:
            if any(mi == self.index for mi, _, _ in self.compiled.accept[node]):
                known = 1
            else:
                known = 1 + min((self.room(c) for c in self.compiled.children[node].values() if self.leads(c)),
                                default=10_000)
            self._room[node] = known
        return known

    def endings(self, words: list[str], candidates: list[str], after: str = "", limit: int = 10**9) -> list[str]:
        """The candidates that, each followed by `after` (the radif), finish the hemistich that
        starts with `words` in this metre; in the given order, at most `limit`."""
        prefix_by_class: dict[str, dict[int, float]] = {}
        out = []
        for word in candidates:
            first = _plain(word)
            kind = "article" if first.startswith("ال") and len(first) > 3 else "elide" if first[:1] in ALEFS else ""
            states = prefix_by_class.get(kind)
            if states is None:
                stand_in = {"article": "البیت", "elide": "اب", "": "بب"}[kind]
                tokens = _tokens(" ".join(words + [stand_in]))[:-1]
                states = self._cheap(self._nodes_of(tokens))
                prefix_by_class[kind] = states
            if not states:
                continue
            tail = _tail_tokens(word, after)
            if self.accepts(self._cheap(_advance(states, tail, self.compiled, keep=self.leads, beam=False))):
                out.append(word)
                if len(out) >= limit:
                    break
        return out


def _align(tokens: list[tuple[str, str]], pattern: str) -> list[Syllable] | None:
    """The cheapest reading of the tokens that fills `pattern`, syllable by syllable."""
    body = pattern[:-1]
    # states: position in body -> (cost, backpointer)
    states: dict[int, tuple[float, tuple | None]] = {0: (0.0, None)}
    for k, (word, ctx) in enumerate(tokens):
        new: dict[int, tuple[float, tuple]] = {}
        for pos, (c, bp) in states.items():
            for e in _emissions(word, ctx):
                s = "".join(w for w in e.weights if w != "*")
                if not body.startswith(s, pos):
                    continue
                n = pos + len(s)
                nc = c + e.cost
                if n not in new or nc < new[n][0]:
                    new[n] = (nc, (bp, k, e))
        states = new
        if not states:
            return None
    if len(body) not in states:
        return None
    chain = []
    bp = states[len(body)][1]
    while bp is not None:
        bp, k, e = bp
        chain.append((k, e))
    chain.reverse()
    out = []
    pos = 0
    for k, e in chain:
        word = tokens[k][0]
        for w, (a, b), note in zip(e.weights, e.spans, e.notes):
            letters = word[a:b]
            if note in ("o", "o+", "va"):
                letters = "و"
            elif note in ("ezafe", "ezafe+") and len(e.weights) > 1 and (a, b) == e.spans[-2] and w != "*":
                letters = "ِ" if not word.endswith(("هٔ", "ِ")) else letters
            if w == "*":
                out.append(Syllable(k, word, letters, pattern[-1], "anceps"))
            else:
                out.append(Syllable(k, word, letters, w, note))
    return out


def scan_hemistich(text: str, metre: int | None = None, top: int = 5, align: bool = True) -> Scansion:
    """Scan one hemistich. With `metre` (a Ganjoor metre id), only that metre is tried.

    Never raises on text: anything unreadable gives a Scansion with `metre_id` None.
    """
    if not isinstance(text, str):
        raise TypeError(f"scan_hemistich() expects str, got {type(text).__name__}")
    compiled = _compiled()
    text = normalize(text)
    tokens = _tokens(text)
    result = Scansion(text=text)
    if not tokens:
        return result
    found = _metre_costs(tokens, compiled)
    metres = compiled.metres
    if metre is not None:
        found = {mi: v for mi, v in found.items() if metres[mi].id == metre}
    result.costs = {metres[mi].id: c for mi, (c, _) in found.items()}
    if not found:
        return result
    ranked = sorted(((c + compiled.prior[mi], mi, pi) for mi, (c, pi) in found.items()))
    lowest = ranked[0][0]
    z = sum(math.exp(lowest - c) for c, _, _ in ranked)
    cands = []
    for c, mi, pi in ranked[:top]:
        m = metres[mi]
        cands.append(Candidate(m.id, m.name, round(c, 3), math.exp(lowest - c) / z, m.patterns[pi],
                               m.licences[pi] if m.licences else ""))
    best = cands[0]
    result.metre_id, result.name, result.score, result.cost = best.metre_id, best.name, best.score, best.cost
    result.pattern, result.licence, result.candidates = best.pattern, best.licence, cands
    if align:
        syllables = _align(tokens, best.pattern) or []
        result.syllables = syllables
        result.weights = "".join(s.weight for s in syllables)
    return result


def matching_metres(text: str) -> list[Candidate]:
    """Every metre of the catalogue that can read `text`, most likely first."""
    return scan_hemistich(text, top=10_000, align=False).candidates


def scan_poem(hemistichs: list[str], top: int = 5, align: bool = True) -> PoemScansion:
    """Scan a poem: each hemistich alone (the vote), and one metre fitted to all of them."""
    compiled = _compiled()
    metres = compiled.metres
    scans = [scan_hemistich(h, top=top, align=False) for h in hemistichs]
    votes = Counter(s.metre_id for s in scans if s.metre_id is not None)
    vote_id = votes.most_common(1)[0][0] if votes else None
    ids = {m.id: mi for mi, m in enumerate(metres)}
    seen = set().union(*(s.costs for s in scans)) if scans else set()
    totals = []
    for metre_id in seen:
        mi = ids[metre_id]
        fitted = sum(1 for s in scans if metre_id in s.costs)
        prior = compiled.prior_quatrain if len(hemistichs) == 4 else compiled.prior_longer
        total = sum(s.costs.get(metre_id, MISS_COST) for s in scans) + POEM_PRIOR_WEIGHT * prior[mi]
        totals.append((total, metre_id, fitted))
    totals.sort()
    if not totals:
        return PoemScansion(None, None, 0.0, vote_id, votes, 0, scans)
    lowest = totals[0][0]
    z = sum(math.exp(lowest - t) for t, _, _ in totals)
    cands = [Candidate(mid, metres[ids[mid]].name, round(t, 3), math.exp(lowest - t) / z,
                       metres[ids[mid]].pattern, "") for t, mid, _ in totals[:top]]
    _, best_id, fitted = totals[0]
    per = [scan_hemistich(h, metre=best_id, top=1, align=align) for h in hemistichs] if align else scans
    return PoemScansion(best_id, metres[ids[best_id]].name, cands[0].score, vote_id, votes, fitted, per, cands)


def estimate_shares(corpus_path, stride: int = 25, per_poem: int = 6,
                    seed_split: str = "train") -> dict[int, tuple[float, ...]]:
    """How often each pattern of a metre is the reading of a hemistich labelled with that metre,
    over every `stride`-th labelled poem of the training split (add-one smoothing). Used by
    `scripts/build_metre_catalogue.py` to set the catalogue's `shares`."""

    _compiled.cache_clear()
    compiled = _compiled()
    counts: dict[int, Counter] = {}
    seen = 0
    for poem in read_labelled(corpus_path, seed_split):
        seen += 1
        if seen % stride:
            continue
        for h in poem.hemistichs[:per_poem]:
            scan = scan_hemistich(h, metre=poem.metre, top=1, align=False)
            if scan.matched:
                counts.setdefault(poem.metre, Counter())[scan.pattern] += 1
    out = {}
    for m in compiled.metres:
        if len(m.patterns) < 2:
            continue
        c = counts.get(m.id, Counter())
        total = sum(c.values()) + len(m.patterns)
        out[m.id] = tuple(round((c[p] + 1) / total, 5) for p in m.patterns)
    _compiled.cache_clear()
    return out
