"""Rhyme analysis: radif, qafiya, rhyming positions, broken lines, Ganjoor's spelling of the rhyme
letters. Fixtures are written here: couplets of Saadi, Rumi and Khayyam (public domain) and
invented lines; nothing is read from ../shared."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from persian_poetry.prosody.rhyme import (
    Rhyme,
    analyze_rhyme,
    rhyme_key,
    rhymes_with,
    rhyming_positions,
)

# Invented ghazal: qafiya ار, radif ما.
YAR_MA = [
    "ای که از لطف تو روشن شد دیار ما",
    "خوش بود گر بگذری روزی کنار ما",
    "دل به دست عشق دادیم و نترسیدیم",
    "تا که آمد بر سر کوی تو یار ما",
    "شب همه شب در خیال روی تو بودیم",
    "وه چه خوش باشد به بستان بهار ما",
]

# Invented ghazal without radif: qafiya ام.
JAM = [
    "بیا که وقت گل آمد بده به دستم جام",
    "که بی تو تلخ شد ای دوست روزگار به کام",
    "ز عشق روی تو رسوا شدم به کوی و به بام",
    "هزار شکر که ماند از وفای تو نام",
    "مرا ز دست مده ای نگار سیم اندام",
    "بیا که روز جوانی گذشت و آمد شام",
]

# Saadi: qafiya انم, radif می‌رود.
SAADI = [
    "ای ساربان آهسته رو کآرام جانم می‌رود",
    "وان دل که با خود داشتم با دلستانم می‌رود",
    "من مانده‌ام مهجور از او بیچاره و رنجور از او",
    "گویی که نیشی دور از او در استخوانم می‌رود",
]

# Rumi, the opening of the Masnavi: each couplet rhymes in itself.
MASNAVI = [
    "بشنو این نی چون شکایت می‌کند",
    "از جداییها حکایت می‌کند",
    "کز نیستان تا مرا ببریده‌اند",
    "در نفیرم مرد و زن نالیده‌اند",
]

# Khayyam: hemistichs 1, 2 and 4 rhyme (qafiya ب, radif می‌گذرد); 3 does not.
RUBAI = [
    "این قافله عمر عجب می‌گذرد",
    "دریاب دمی که با طرب می‌گذرد",
    "ساقی غم فردای حریفان چه خوری",
    "پیش آر پیاله را که شب می‌گذرد",
]


def test_radif_and_qafiya():
    r = analyze_rhyme(YAR_MA, "ghazal")
    assert r.radif == ("ما",)
    assert r.qafiya == "ار"
    assert r.rhyme_letters == "ارما"
    assert r.positions == (0, 1, 3, 5)
    assert r.broken == ()
    assert r.words == ("دیار", "کنار", "یار", "بهار")
    assert r.found and r.form == "ghazal"


def test_ghazal_without_radif():
    r = analyze_rhyme(JAM, "ghazal")
    assert r.radif == ()
    assert r.qafiya == "ام"
    assert r.rhyme_letters == "ام"
    assert r.words == ("جام", "کام", "نام", "شام")
    assert r.broken == ()


def test_radif_of_two_written_words_and_ganjoor_spelling():
    r = analyze_rhyme(SAADI, "ghazal")
    # ZWNJ separates written words; Ganjoor's letters run them together with no space.
    assert r.radif == ("می", "رود")
    assert r.qafiya == "انم"
    assert r.rhyme_letters == "انممیرود"
    assert r.words == ("جانم", "دلستانم", "استخوانم")


def test_masnavi_pairs():
    r = analyze_rhyme(MASNAVI, "masnavi")
    assert r.positions == (0, 1, 2, 3)
    assert r.broken == ()
    assert len(r.couplets) == 2
    first, second = r.couplets
    assert first.radif == ("می", "کند") and first.qafiya == "کایت"  # ش|کایت, ح|کایت
    assert second.radif == ("اند",) and second.qafiya == "یده"
    assert r.rhyme_letters == first.rhyme_letters == "کایتمیکند"


def test_masnavi_couplet_that_does_not_rhyme_is_broken():
    r = analyze_rhyme(MASNAVI + ["سینه خواهم شرحه شرحه از فراق", "تا بگویم شرح درد اشتیاق"] +
                      ["این سخن را نیست پایانی دگر", "بگذر از این قصه و رو کار کن"], "masnavi")
    assert r.couplets[2].qafiya == "اق"
    assert not r.couplets[3].found
    assert r.broken == (6, 7)


def test_rubai_positions():
    assert rhyming_positions(4, "rubai") == [0, 1, 3]
    assert rhyming_positions(4, "dobeyti") == [0, 1, 3]
    r = analyze_rhyme(RUBAI, "rubai")
    assert r.positions == (0, 1, 3)
    assert r.radif == ("می", "گذرد")
    assert r.qafiya == "ب"
    assert r.rhyme_letters == "بمیگذرد"
    assert r.words == ("عجب", "طرب", "شب")


def test_ghazal_positions():
    assert rhyming_positions(10, "ghazal") == [0, 1, 3, 5, 7, 9]
    assert rhyming_positions(10, "qasida") == [0, 1, 3, 5, 7, 9]
    assert rhyming_positions(0, "ghazal") == []


def test_broken_line_is_found_and_does_not_destroy_the_rhyme():
    poem = YAR_MA + ["گرچه دوری از برم هر دم به یادت زنده‌ام", "بی تو شد آشفته و حیران دل ما"]
    r = analyze_rhyme(poem, "ghazal")
    assert r.rhyme_letters == "ارما"
    assert r.broken == (7,)
    assert r.words[-1] == "دل"  # where the qafiya should have been


def test_line_with_another_ending_is_broken():
    poem = JAM[:4] + ["دلم ز غصه بسوخت و نیامدی آخر", "که بی تو هیچ نمی‌خواهم از خدا دیگر"] + JAM[4:]
    r = analyze_rhyme(poem, "ghazal")
    assert r.qafiya == "ام"
    assert r.broken == (5,)


def test_unrhymed_opening_hemistich_is_broken():
    poem = ["این مصراع با دیگران هم‌قافیه نیست"] + YAR_MA[1:] + ["باز هم", "در دل شب‌ها بیاید غمگسار ما"]
    r = analyze_rhyme(poem, "ghazal")
    assert r.rhyme_letters == "ارما"
    assert r.broken == (0,)


def test_qete_first_hemistich_may_not_rhyme():
    poem = ["این مصراع قافیه ندارد اصلا"] + YAR_MA[1:]
    r = analyze_rhyme(poem, "qete")
    assert r.rhyme_letters == "ارما"
    assert r.broken == ()
    assert 0 not in r.positions
    assert analyze_rhyme(YAR_MA, "qete").positions == (0, 1, 3, 5)


def test_equivalent_letters():
    # د/ذ: استاذ (old spelling) rhymes with یاد; the letters are spelled as the first rhyming
    # second hemistich spells them, as Ganjoor does.
    dal = ["دلم به عشق تو شد شاد", "که بود عشق مرا استاذ", "..", "مباد آنکه روی تو رود از یاد"]
    r = analyze_rhyme(dal, "ghazal")
    assert r.found and r.broken == ()
    assert r.rhyme_letters == "اذ"
    assert rhymes_with("به باغ آمد نسیم باد", r)
    # ی/ا: عصا rhymes with موسی in writing as in Ganjoor's finder.
    ya = ["بگرفت به دست خود عصا", "چون معجزه‌ای ز دست موسی", "...", "از دل برآید این دعا"]
    r = analyze_rhyme(ya, "ghazal")
    assert r.found and r.broken == ()
    # ب/پ
    be = ["دوش دیدم به خواب", "رفت از دل من تاب", "...", "کرد گل را چو آپ"]
    assert analyze_rhyme(be, "ghazal").broken == ()


def test_spelling_of_rhyme_key():
    assert rhyme_key("برآید") == rhyme_key("بر آید") == rhyme_key("بر‌آید") == "براید"
    assert rhyme_key("جانِ من،") == "جانمن"
    assert rhyme_key("در آئی") == "درایی"
    assert rhyme_key("الله را") == "اللاهرا"  # Allah's long a, as Ganjoor writes it
    assert rhyme_key("") == rhyme_key(None) == ""
    assert rhyme_key("مصطفی (ص)") == "مصطفی"


def test_rhymes_with():
    r = analyze_rhyme(YAR_MA, "ghazal")
    assert rhymes_with("ای صبا برگو که آمد آن نگار ما", r)
    assert rhymes_with("آمد اینک روزگار ما!", r)
    assert not rhymes_with("بی تو شد آشفته و حیران دل ما", r)  # no qafiya
    assert not rhymes_with("تا که آمد بر سر کوی تو یار", r)  # no radif
    assert not rhymes_with("تا که آمد بر سر کوی تو یار من", r)
    assert not rhymes_with("", r)
    s = analyze_rhyme(SAADI, "ghazal")
    assert rhymes_with("گویی که از من دور شد آن آسمانم می‌رود", s)
    assert rhymes_with("جانم میرود", s) and rhymes_with("جانم می رود", s)
    assert not rhymes_with("دلم می‌رود", s)
    assert rhymes_with("هر چه باشد", Rhyme())  # no rhyme found: no constraint


def test_unknown_form_is_guessed():
    assert analyze_rhyme(YAR_MA, "unknown").form == "ghazal"
    assert analyze_rhyme(YAR_MA, "unknown").rhyme_letters == "ارما"
    assert analyze_rhyme(MASNAVI + ["سینه خواهم شرحه شرحه از فراق", "تا بگویم شرح درد اشتیاق"],
                         None).form == "masnavi"
    assert analyze_rhyme(RUBAI, "tarjiband").form == "rubai"


def test_empty_and_degenerate_input():
    assert analyze_rhyme([], "ghazal") == Rhyme(form="ghazal")
    assert not analyze_rhyme(["", ""], "ghazal").found
    assert not analyze_rhyme(["abc", "!!!"], "unknown").found
    one = analyze_rhyme(["تنها یک مصراع"], "ghazal")
    assert one.positions == (0,)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=12),
       st.sampled_from(["ghazal", "qasida", "qete", "masnavi", "rubai", "dobeyti", "unknown", "", "x"]),
       st.text(max_size=40))
def test_arbitrary_unicode_never_raises(hemistichs, form, candidate):
    r = analyze_rhyme(hemistichs, form)
    assert r.rhyme_letters == r.qafiya + "".join(r.radif)
    assert set(r.broken) <= set(r.positions)
    assert len(r.words) == len(r.positions)
    assert all(0 <= p < len(hemistichs) for p in r.positions)
    assert isinstance(rhymes_with(candidate, r), bool)


persian = st.text(alphabet=st.sampled_from(list("ابپتجدذرزسشکگلمنوهیآ  \u200c\u064e\u0650")), max_size=30)


@settings(max_examples=100, deadline=None)
@given(st.lists(persian, min_size=2, max_size=12), st.sampled_from(["ghazal", "qasida", "qete", "masnavi"]))
def test_kept_hemistichs_end_in_the_rhyme(hemistichs, form):
    r = analyze_rhyme(hemistichs, form)
    if form == "masnavi" or not r.found:
        return
    for p in r.positions:
        if p not in r.broken:
            assert rhyme_key(hemistichs[p]).translate(str.maketrans("ذپا", "دبی")).endswith(
                r.rhyme_letters.translate(str.maketrans("ذپا", "دبی")))
