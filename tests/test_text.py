"""normalize: the one gate every outside text passes through. Properties first, then examples."""

from __future__ import annotations

import unicodedata
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from persian_poetry.text import ALPHABET, DIACRITICS, PERSIAN_DIGITS, PERSIAN_LETTERS, ZWNJ, normalize

ZWJ = "\u200d"
TATWEEL = "\u0640"
BIDI_MARKS = "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c"
ARABIC_VARIANTS = "يكىةۀۂھہەٱٲٳٶٸېێےۍڪۃ"
WHITESPACE = " \t\n\r\u00a0\u2009\u3000\u2028\u000b\u000c"
DIGITS = "0123456789" + "".join(chr(0x0660 + d) for d in range(10)) + PERSIAN_DIGITS
PUNCT = "،؛؟!.:«»()-\"?,;٫٬۔[]{}–—_¬"
# Characters that cannot combine with a neighbouring letter (no combining marks): with these around
# the letters, no letter can be composed away by NFKC.
JUNK = "abcXYZ" + TATWEEL + BIDI_MARKS + "😀✓€" + DIGITS + PUNCT

persian_chars = st.sampled_from(
    list(PERSIAN_LETTERS + DIACRITICS + ARABIC_VARIANTS + ZWNJ + ZWJ + TATWEEL + BIDI_MARKS + WHITESPACE
         + DIGITS + PUNCT + "\u0653\u0655abc")
)
presentation_forms = st.characters(min_codepoint=0xFB50, max_codepoint=0xFEFF)
# Persian-heavy text: letters and their foreign encodings, marks, joiners, bidi marks, whitespace.
persian_text = st.text(alphabet=st.one_of(persian_chars, persian_chars, presentation_forms), max_size=80)


def persian_letter_counts(text: str) -> Counter:
    return Counter(ch for ch in text if ch in PERSIAN_LETTERS)


def assert_canonical(out: str) -> None:
    assert set(out) <= ALPHABET, sorted(set(out) - ALPHABET)
    assert "  " not in out
    assert out == out.strip(" ")
    for word in out.split(" ") if out else []:
        assert word, "empty word means a double or edge space"
        assert not word.startswith(ZWNJ) and not word.endswith(ZWNJ), repr(word)
        assert ZWNJ * 2 not in word


# --- properties ---------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text())
@example("ا" + TATWEEL + "\u0654")   # dropping the tatweel lets NFKC compose ا + ٔ = أ
@example("ۀ" + ZWJ + ZWNJ + " ")
def test_idempotent_on_arbitrary_unicode(text):
    once = normalize(text)
    assert normalize(once) == once


@settings(max_examples=400, deadline=None)
@given(persian_text)
@example("\ufe8d\u0640\u0654")  # presentation-form alef, tatweel, hamza above
def test_idempotent_on_persian_heavy_text(text):
    once = normalize(text)
    assert normalize(once) == once


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), persian_text))
def test_output_is_canonical(text):
    assert_canonical(normalize(text))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(PERSIAN_LETTERS + ZWNJ + ZWJ + WHITESPACE + JUNK)), max_size=80))
def test_persian_letters_are_never_dropped_nor_reordered(text):
    # Around letters, junk that cannot compose with them (no combining marks): the letters of the
    # output are exactly the letters of the input, in order.
    out = normalize(text)
    assert [ch for ch in out if ch in PERSIAN_LETTERS] == [ch for ch in text if ch in PERSIAN_LETTERS]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.one_of(st.sampled_from(list(PERSIAN_LETTERS + ARABIC_VARIANTS + WHITESPACE + JUNK)),
                                  presentation_forms.filter(
                                      lambda c: not any(unicodedata.combining(d)
                                                        for d in unicodedata.normalize("NFKC", c)))),
               max_size=80))
def test_folding_only_adds_persian_letters(text):
    # Foreign encodings fold *into* Persian letters; a letter already Persian is never lost.
    before, after = persian_letter_counts(text), persian_letter_counts(normalize(text))
    for letter, count in before.items():
        assert after[letter] >= count, (letter, count, after[letter])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(PERSIAN_LETTERS + " ")), max_size=60))
def test_clean_persian_text_only_has_its_spaces_collapsed(text):
    assert normalize(text) == " ".join(text.split())


# --- examples -----------------------------------------------------------------------------------


def test_presentation_forms_are_folded():
    assert normalize("ﺑﻴﺎ") == "بیا"
    assert normalize("ﺑﻴﺎ  ﺗﺎ ﮔﻞ") == "بیا تا گل"
    assert normalize("\ufefb") == "لا"  # lam-alef ligature


def test_arabic_yeh_kaf_alef_maqsura_and_teh_marbuta_are_folded():
    assert normalize("علي") == "علی"
    assert normalize("كتاب") == "کتاب"
    assert normalize("موسى") == "موسی"
    assert normalize("فاطمة") == "فاطمه"
    assert set(normalize("يكىة")) <= set(PERSIAN_LETTERS)


def test_tatweel_and_bidi_marks_are_stripped():
    assert normalize("بـــا") == "با"
    assert normalize("\u200fسلام\u200e\u202b") == "سلام"


def test_heh_with_yeh_above_becomes_heh_and_hamza():
    assert normalize("ۀ") == "هٔ"
    assert normalize("خانۀ دوست") == "خانهٔ دوست"


def test_digits_become_persian():
    assert normalize("123") == "۱۲۳"
    assert normalize("٤٥٦") == "۴۵۶"
    assert normalize("0987654321") == "۰۹۸۷۶۵۴۳۲۱"
    assert normalize("۷") == "۷"


def test_whitespace_is_collapsed_and_trimmed():
    assert normalize("  گل\t\tو\n\nبلبل\u00a0 ") == "گل و بلبل"
    assert normalize(" \t\n ") == ""
    assert normalize("") == ""


def test_zwnj_only_inside_words_and_zwj_becomes_zwnj():
    assert normalize(ZWNJ + "می" + ZWNJ * 3 + "روم" + ZWNJ) == "می" + ZWNJ + "روم"
    assert normalize("می" + ZWJ + "روم") == "می" + ZWNJ + "روم"
    assert normalize("می" + ZWNJ + " روم") == "می روم"


def test_latin_and_emoji_are_dropped_diacritics_kept():
    assert normalize("abc دلِ 😀 من") == "دلِ من"
    assert normalize("بَّ") == "بَّ"


def test_hamza_brought_together_by_dropping_is_composed_and_stable():
    assert normalize("ا" + TATWEEL + "\u0654") == "أ"


def test_ascii_punctuation_is_folded():
    assert normalize("چرا?") == "چرا؟"
    assert normalize("گل, می; شب") == "گل، می؛ شب"


@pytest.mark.parametrize("bad", [123, None, b"\xd8\xa8", ["ب"]])
def test_non_string_raises_type_error(bad):
    with pytest.raises(TypeError):
        normalize(bad)


def test_characters_outside_the_basic_plane_are_dropped_without_growing_the_table():
    from persian_poetry.text import _CLOSE_TABLE
    before = len(_CLOSE_TABLE)
    assert normalize("دل\U0001F600\U00020000 جان") == "دل جان"
    assert not {0x1F600, 0x20000} & set(_CLOSE_TABLE)
    assert len(_CLOSE_TABLE) <= before + 1  # the space at most
    assert normalize("\u2003دل\u00a0\tجان\n") == "دل جان"  # spaces of every kind, met for the first time
