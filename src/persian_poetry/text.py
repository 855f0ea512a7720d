"""Persian text normalization: the one place where raw text becomes the text we model.

Everything that reads text from outside (corpus files, prompts, rhyme letters, the scanner)
passes it through `normalize` first, so the models, the tokenizers and the metrics all see one
spelling of each word. The output alphabet is closed (`ALPHABET`): characters outside it are
dropped, letters that are Persian in a foreign encoding (Arabic yeh and kaf, presentation forms
from PDFs, Urdu heh shapes) are folded to their Persian form, and no Persian letter is ever dropped.
"""

from __future__ import annotations

import re
import unicodedata

ZWNJ = "\u200c"

PERSIAN_LETTERS = "ءآأؤإئابپتثجچحخدذرزژسشصضطظعغفقکگلمنوهی"
# Short vowels, tanvin, tashdid, sukun, hamza above (the ezafe of هٔ) and dagger alef: kept
# because the metre of a hemistich depends on them.
DIACRITICS = "\u064b\u064c\u064d\u064e\u064f\u0650\u0651\u0652\u0654\u0670"
PERSIAN_DIGITS = "۰۱۲۳۴۵۶۷۸۹"
PUNCTUATION = "،؛؟!.:«»()-\""
ALPHABET: frozenset[str] = frozenset(PERSIAN_LETTERS + DIACRITICS + PERSIAN_DIGITS + PUNCTUATION + " " + ZWNJ)

# Words that carry grammar rather than sense: prepositions, conjunctions, the object marker, the
# personal and demonstrative pronouns. Strung together («به من به تو بر») they say nothing: four in a
# row end 0.5% of the test split's hemistichs, three in a row 3.8% (BENCHMARKS.md, "Repetition control").
FUNCTION_WORDS: frozenset[str] = frozenset(
    "و به بر از در با ز که چو چون تا را بی ای این آن تو من ما او هر نه چه گر اگر".split())
# The one word a hemistich repeats as often as not: «و ... و» joins a list.
FREELY_REPEATED: frozenset[str] = frozenset({"و"})

# Applied after NFKC (which already folds the Arabic presentation forms U+FB50-U+FEFF).
_FOLD = {
    "ي": "ی", "ى": "ی", "ې": "ی", "ێ": "ی", "ے": "ی", "ۍ": "ی", "ی": "ی",
    "ك": "ک", "ڪ": "ک",
    "ة": "ه", "ۃ": "ه", "ھ": "ه", "ہ": "ه", "ە": "ه",
    "ۀ": "هٔ", "ۂ": "هٔ",
    "ٱ": "ا", "ٲ": "أ", "ٳ": "إ",
    "ٶ": "ؤ", "ٸ": "ئ",
    "?": "؟", ",": "،", ";": "؛", "٫": "،", "٬": "،", "۔": ".",
    "[": "(", "]": ")", "{": "(", "}": ")", "–": "-", "—": "-", "_": "-",
    "¬": ZWNJ,  # a keyboard layout types ZWNJ as the not sign
    "\u200d": ZWNJ,
}
_FOLD.update({str(d): PERSIAN_DIGITS[d] for d in range(10)})
_FOLD.update({chr(0x0660 + d): PERSIAN_DIGITS[d] for d in range(10)})
_FOLD_TABLE = str.maketrans(_FOLD)



class _Closing(dict):
    """`str.translate` table that closes the alphabet: whitespace of every kind (tabs, newlines,
    no-break and thin spaces) becomes a space; everything else outside the alphabet (tatweel, bidi
    marks, Latin, emoji) is dropped. Filled as characters are first met; the scanner and the
    tokenizers normalize every line they read, and a lookup in C beats a test per character."""

    def __missing__(self, code: int) -> int | str | None:
        ch = chr(code)
        value = code if ch in ALPHABET else " " if ch.isspace() else None
        if code <= 0xFFFF:  # bounded: text full of rare planes cannot grow it without end
            self[code] = value
        return value


_CLOSE_TABLE = _Closing()
_ZWNJ_RUN = re.compile(ZWNJ + "{2,}")


def _normalize_once(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).translate(_FOLD_TABLE).translate(_CLOSE_TABLE)
    # A ZWNJ only means something between two letters of one word: one per joint, none at edges.
    words = (word.strip(ZWNJ) for word in _ZWNJ_RUN.sub(ZWNJ, text).split(" "))
    return " ".join(word for word in words if word)


def normalize(text: str) -> str:
    """Return the canonical form of `text`: Persian letters, diacritics, digits, a little
    punctuation, single spaces and ZWNJ only inside words. Idempotent.

    >>> normalize("ﺑﻴﺎ  ﺗﺎ ﮔﻞ") == "بیا تا گل"
    True
    """
    if not isinstance(text, str):
        raise TypeError(f"normalize() expects str, got {type(text).__name__}")
    # Dropping a character can bring together a letter and a mark that NFKC composes
    # (ا + ٔ = أ), so repeat until nothing changes; in practice one extra pass.
    while True:
        once = _normalize_once(text)
        if once == text:
            return once
        text = once
