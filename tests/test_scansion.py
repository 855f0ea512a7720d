"""The rule-based scanner, on famous public-domain lines whose metres are not in doubt."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from persian_poetry.prosody.scansion import (
    PoemScansion,
    Scansion,
    _readings,
    matching_metres,
    scan_hemistich,
    scan_poem,
)

# (hemistich, Ganjoor metre id)
LINES = [
    # Hafez, ghazal 1: هزج مثمن سالم (مفاعیلن x4), with and without Ganjoor's diacritics
    ("اَلا یا اَیُّهَا السّاقی اَدِرْ کَأْساً وَ ناوِلْها", 2),
    ("الا یا ایها الساقی ادر کاسا و ناولها", 2),
    ("که عشق آسان نمود اول ولی افتاد مشکل‌ها", 2),
    # Ferdowsi and Saadi: متقارب مثمن محذوف (فعولن فعولن فعولن فعل)
    ("توانا بود هر که دانا بود", 23),
    ("ز دانش دل پیر برنا بود", 23),
    ("به نام خداوند جان و خرد", 23),
    ("کزین برتر اندیشه برنگذرد", 23),
    ("بنی آدم اعضای یکدیگرند", 23),
    ("که در آفرینش ز یک گوهرند", 23),
    # Rumi, the Masnavi: رمل مسدس محذوف (فاعلاتن فاعلاتن فاعلن)
    ("بشنو این نی چون شکایت می‌کند", 6),
    ("از جدایی‌ها حکایت می‌کند", 6),
    ("کز نیستان تا مرا ببریده‌اند", 6),
    ("در نفیرم مرد و زن نالیده‌اند", 6),
    # Hafez: رمل مثمن محذوف and رمل مثمن مخبون محذوف
    ("یوسف گم گشته باز آید به کنعان غم مخور", 8),
    ("کلبهٔ احزان شود روزی گلستان غم مخور", 8),
    ("دوش دیدم که ملایک در میخانه زدند", 7),
]

KHAYYAM = [
    ["این کوزه چو من عاشق زاری بوده است", "در بند سر زلف نگاری بوده است",
     "این دسته که بر گردن او می‌بینی", "دستی است که بر گردن یاری بوده است"],
    ["این قافلهٔ عمر عجب می‌گذرد", "دریاب دمی که با طرب می‌گذرد",
     "ساقی غم فردای حریفان چه خوری", "پیش آر پیاله را که شب می‌گذرد"],
]


@pytest.mark.parametrize("text,metre", LINES)
def test_famous_lines(text, metre):
    scan = scan_hemistich(text)
    assert scan.metre_id == metre, (scan.candidates, scan.display())
    assert scan.matched and 0 < scan.score <= 1
    assert scan.candidates[0].metre_id == metre and scan.name.startswith(scan.candidates[0].name[:5])


def test_rubai_lines_can_be_read_in_the_rubai_metre():
    for quatrain in KHAYYAM:
        for line in quatrain:
            assert 24 in {c.metre_id for c in matching_metres(line)}, line


@pytest.mark.parametrize("quatrain", KHAYYAM)
def test_rubai_poem(quatrain):
    poem = scan_poem(quatrain)
    assert isinstance(poem, PoemScansion)
    assert poem.metre_id == 24 and poem.fitted == 4
    assert all(h.metre_id == 24 for h in poem.hemistichs)  # constrained to the poem's metre


def test_poem_fits_one_metre_to_all_hemistichs():
    masnavi = ["بشنو این نی چون شکایت می‌کند", "از جدایی‌ها حکایت می‌کند",
               "کز نیستان تا مرا ببریده‌اند", "در نفیرم مرد و زن نالیده‌اند",
               "سینه خواهم شرحه شرحه از فراق", "تا بگویم شرح درد اشتیاق"]
    poem = scan_poem(masnavi)
    assert poem.metre_id == 6 and poem.vote_metre_id == 6 and poem.votes[6] >= 4
    assert [h.metre_id for h in poem.hemistichs] == [6] * 6


def test_the_last_syllable_is_free():
    # فعولن فعولن فعولن فعل: ending on a short syllable (که) where the pattern has a long one
    long_end = scan_hemistich("توانا بود هر که دانا بود")
    short_end = scan_hemistich("توانا بود هر که دانا که")
    assert long_end.metre_id == short_end.metre_id == 23
    assert short_end.syllables[-1].note == "anceps" and short_end.syllables[-1].weight == "-"


def test_alignment_covers_the_pattern():
    scan = scan_hemistich("بشنو این نی چون شکایت می‌کند")
    assert "".join(s.weight for s in scan.syllables) == scan.pattern == scan.weights
    for s in scan.syllables:
        assert s.letters == "" or s.letters in s.word or s.note in ("o", "va", "ezafe", "ezafe+")
    assert [s.word_index for s in scan.syllables] == sorted(s.word_index for s in scan.syllables)
    shown = scan.display()
    assert "−" in shown and "∪" in shown


def test_overlong_and_nun_rules():
    weights = {tuple(s.weight for s in r.syls) for r in _readings("دست")}
    assert ("-U",) in weights                        # CVCC: long + short
    weights = {tuple(s.weight for s in r.syls) for r in _readings("جان")}
    assert ("-",) in weights and ("-U",) in weights  # ن after a long vowel: usually not counted


def test_diacritics_narrow_the_readings():
    plain = {tuple(s.weight for s in r.syls) for r in _readings("کند")}
    marked = {tuple(s.weight for s in r.syls) for r in _readings("کُنَد")}
    assert marked == {("U", "-")} and marked < plain
    # tashdid doubles: مُحَبَّت is mo-hab-bat
    assert {tuple(s.weight for s in r.syls) for r in _readings("مُحَبَّت")} == {("U", "-", "-")}


def test_unreadable_text_gives_no_metre():
    for text in ["", "   ", "hello world", "۱۲۳", "،؛؟"]:
        scan = scan_hemistich(text)
        assert isinstance(scan, Scansion) and scan.metre_id is None and not scan.matched
        assert "no metre" in scan.display()
    assert scan_poem([]).metre_id is None
    with pytest.raises(TypeError):
        scan_hemistich(None)  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_never_raises_on_arbitrary_text(text):
    scan = scan_hemistich(text)
    assert isinstance(scan, Scansion)
    assert scan.metre_id is None or scan.candidates


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from(list("ابپتجچدرزسشکگلمنوهیآءئؤ\u064e\u064f\u0650\u0651\u0652\u064b\u0654 \u200c")),
                max_size=50))
def test_never_raises_on_persian_letter_soup(chars):
    scan = scan_hemistich("".join(chars))
    assert isinstance(scan, Scansion)
    poem = scan_poem(["".join(chars), "".join(reversed(chars))])
    assert isinstance(poem, PoemScansion)


def _advance_by_the_book(tokens, compiled):
    """The scanner's dynamic programme written plainly: every reading from every node, then the beam."""
    from persian_poetry.prosody.scansion import STATE_BEAM, _merged_emissions
    states = {0: 0.0}
    for word, ctx in tokens:
        new: dict[int, float] = {}
        for node, c in states.items():
            for s, ec in _merged_emissions(word, ctx):
                n = compiled.walk(node, s)
                if n >= 0 and c + ec < new.get(n, float("inf")):
                    new[n] = c + ec
        if not new:
            return {}
        if len(new) > 4:
            bound = min(new.values()) + STATE_BEAM
            new = {n: c for n, c in new.items() if c <= bound}
        states = new
    return states


@pytest.mark.parametrize("text", [t for t, _ in LINES] + [line for q in KHAYYAM for line in q] + ["دل", "ای دل"])
def test_beam_first_advance_reaches_what_the_plain_programme_reaches(text):
    from persian_poetry.prosody.scansion import _advance, _compiled, _tokens
    compiled = _compiled()
    tokens = _tokens(text)
    assert _advance({0: 0.0}, tokens, compiled) == _advance_by_the_book(tokens, compiled)


def test_trim_word_caches_empties_the_memo_of_moves():
    from persian_poetry.prosody.scansion import _compiled, trim_word_caches
    scan_hemistich("بشنو این نی چون شکایت می‌کند")
    assert _compiled().moves
    trim_word_caches(0)
    assert not _compiled().moves
    assert scan_hemistich("بشنو این نی چون شکایت می‌کند").metre_id == 6
