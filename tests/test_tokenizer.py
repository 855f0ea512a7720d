"""Tokenizers: round trips, special tokens, save/load, the BPE pre-tokenizer, bad files."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tokenizers import decoders

from persian_poetry.data.controls import Controls
from persian_poetry.data.tokenizer import BPETokenizer, CharTokenizer, load_tokenizer
from persian_poetry.errors import TokenizerError
from persian_poetry.text import DIACRITICS, PERSIAN_DIGITS, PERSIAN_LETTERS, PUNCTUATION, ZWNJ, normalize

SPECIALS = Controls(poets=("hafez", "saadi"), forms=("ghazal", "rubai"), metres=(3, 24)).special_tokens()

# Hemistichs written for these tests (in the manner of the classical poets), ezafe kasra and
# ZWNJ included on purpose so that BPE learns merges across them.
_LINES = """\
بیا تا گل برافشانیم و می در ساغر اندازیم
فلک را سقف بشکافیم و طرحی نو دراندازیم
اگر غم لشکر انگیزد که خون عاشقان ریزد
من و ساقی به هم تازیم و بنیادش براندازیم
الا یا ایها الساقی ادر کاسا و ناولها
که عشق آسان نمود اول ولی افتاد مشکل‌ها
به بویِ نافه‌ای کآخر صبا زان طره بگشاید
ز تاب جعد مشکینش چه خون افتاد در دل‌ها
دوش دیدم که ملایک درِ میخانه زدند
گلِ آدم بسرشتند و به پیمانه زدند
یوسف گم گشته باز آید به کنعان غم مخور
کلبهٔ احزان شود روزی گلستان غم مخور
صبا به لطف بگو آن غزال رعنا را
که سر به کوه و بیابان تو داده‌ای ما را
بنی آدم اعضای یک پیکرند
که در آفرینش ز یک گوهرند
چو عضوی به درد آورد روزگار
دگر عضوها را نماند قرار
بشنو این نی چون شکایت می‌کند
از جدایی‌ها حکایت می‌کند
کز نیستان تا مرا ببریده‌اند
در نفیرم مرد و زن نالیده‌اند
توانا بود هر که دانا بود
ز دانش دل پیر برنا بود
این قافله عمر عجب می‌گذرد
دریاب دمی که با طرب می‌گذرد
ساقی غم فردای حریفان چه خوری
پیش آر پیاله را که شب می‌گذرد
رویِ تو ماه است و مویِ تو شب
بویِ تو جان است و کویِ تو طرب
سرِ کویِ دوست جایِ من است
غمِ رویِ یار دوایِ من است
بر سرِ آنم که گر ز دست برآید
دست به کاری زنم که غصه سرآید
خلوتِ دل نیست جایِ صحبتِ اضداد
دیو چو بیرون رود فرشته درآید
مژده ای دل که مسیحا نفسی می‌آید
که ز انفاس خوشش بویِ کسی می‌آید
از غم هجر مکن ناله و فریاد که دوش
زده‌ام فالی و فریادرسی می‌آید
رفتم به کنارِ جویِ آبی
دیدم گلِ سرخ و آفتابی
در کویِ تو معروفم و از رویِ تو محروم
گرگِ دهن آلوده و یوسف ندریده
ای پادشهِ خوبان داد از غم تنهایی
دل بی تو به جان آمد وقت است که بازآیی
دایم گل این بستان شاداب نمی‌ماند
دریاب ضعیفان را در وقت توانایی
دیشب گله زلفش با باد همی‌کردم
گفتا غلطی بگذر زین فکرت سودایی
صد بادِ صبا اینجا با سلسله می‌رقصند
این است حریف ای دل تا باد نپیمایی
مشتاقی و مهجوری دور از تو چنانم کرد
کز دست بخواهد شد پایابِ شکیبایی
یا رب به که شاید گفت این نکته که در عالم
رخساره به کس ننمود آن شاهدِ هرجایی
ساقی چمن گل را بی رویِ تو رنگی نیست
شمشاد خرامان کن تا باغ بیارایی
ای دل به کویِ عشق گذاری نمی‌کنی
اسبابِ جمع داری و کاری نمی‌کنی
چوگانِ حکم در کفِ و گویی نمی‌زنی
بازِ ظفر به دست و شکاری نمی‌کنی
این خون که موج می‌زند اندر جگر تو را
در کارِ رنگ و بویِ نگاری نمی‌کنی
مشکین از آن نشد دمِ خلقت که چون صبا
بر خاکِ کویِ دوست گذاری نمی‌کنی
ترسم کزین چمن نبری آستینِ گل
کز گلشنش تحملِ خاری نمی‌کنی
در آستینِ جان تو صد نافه مدرج است
وان را فدایِ طره یاری نمی‌کنی
ساغر لطیف و دلکش و می افکنی به خاک
و اندیشه از بلایِ خماری نمی‌کنی
حافظ برو که بندگیِ پیرِ میفروش
گر می‌کنی بجا کن و کاری نمی‌کنی
مرا عهدی است با جانان که تا جان در بدن دارم
هواداران کویش را چو جانِ خویشتن دارم
صفای خلوتِ خاطر از آن شمعِ چگل جویم
فروغِ چشم و نورِ دل از آن ماهِ ختن دارم
به کام و آرزوی دل چو دارم خلوتی حاصل
چه فکر از خبثِ بدگویان میانِ انجمن دارم
مرا در خانه سروی هست کاندر سایهٔ قدش
فراغ از سروِ بستانی و شمشادِ چمن دارم
گرم صد لشکر از خوبان به قصدِ دل کمین سازند
بحمدالله و المنه بتی لشکرشکن دارم
سزد کز خاتمِ لعلش زنم لافِ سلیمانی
چو اسمِ اعظمم باشد چه باک از اهرمن دارم
الا ای آهویِ وحشی کجایی
مرا با توست چندین آشنایی
دو تنها و دو سرگردان دو بی‌کس
دد و دامت کمین از پیش و از پس
بیا تا حالِ یک‌دیگر بدانیم
مرادِ هم بجوییم ار توانیم
که می‌بینم که این دشتِ مشوش
چراگاهی ندارد خرم و خوش
که خواهد شد بگویید ای رفیقان
رفیقِ بی‌کسان یارِ غریبان
مگر خضرِ مبارک پی تواند
که این تنها بدان تنها رساند
ای ساربان آهسته ران کآرامِ جانم می‌رود
وان دل که با خود داشتم با دلستانم می‌رود
من مانده‌ام مهجور از او بیچاره و رنجور از او
گویی که نیشی دور از او در استخوانم می‌رود
گفتم به نیرنگ و فسون پنهان کنم ریشِ درون
پنهان نمی‌ماند که خون بر آستانم می‌رود
محمل بدار ای ساربان تندی مکن با کاروان
کز عشقِ آن سروِ روان گویی روانم می‌رود
او می‌رود دامن کشان من زهرِ تنهایی چشان
دیگر مپرس از من نشان کز دل نشانم می‌رود
برگشت یارِ سرکش از حالِ معتادِ خوش
وز گریهٔ تلخ و خوش در چشمِ جانم می‌رود
هر شب به بویِ زلفِ تو تا صبح بیدارم
هر روز به یادِ رویِ تو در کارم
در کارِ گلاب و گل حکمِ ازلی این بود
کاین شاهدِ بازاری وان پرده‌نشین باشد
آن کس که به دست جام دارد
سلطانیِ جم مدام دارد
آبی که خضر حیات از او یافت
در میکده جو که جام دارد
سررشتهٔ جان به جام بگذار
کاین رشته از او نظام دارد
ما و می و زاهدان و تقوا
تا یار سرِ کدام دارد
بیرون ز لبِ تو ساقیا نیست
در دور کسی که کام دارد
نرگس همه شیوه‌های مستی
از چشمِ خوشت به وام دارد
ذکرِ رخ و زلفِ تو دلم را
وردی است که صبح و شام دارد
بر سینهٔ ریشِ دردمندان
لعلت نمکی تمام دارد
در چاهِ ذقن چو حافظ ای جان
حسنِ تو دو صد غلام دارد
شنیدم که جمشیدِ فرخ سرشت
به سرچشمه‌ای بر به سنگی نبشت
بر این چشمه چون ما بسی دم زدند
برفتند چون چشم بر هم زدند
گرفتیم عالم به مردی و زور
ولیکن نبردیم با خود به گور
هر آن کس که دارد ز دانش نشان
نگردد ز گفتارِ نیکان کشان
چو ایران نباشد تن من مباد
بدین بوم و بر زنده یک تن مباد
همه سر به سر تن به کشتن دهیم
از آن به که کشور به دشمن دهیم
بسی رنج بردم در این سال سی
عجم زنده کردم بدین پارسی
نمیرم از این پس که من زنده‌ام
که تخمِ سخن را پراکنده‌ام
میازار موری که دانه‌کش است
که جان دارد و جانِ شیرین خوش است
سیاه اندرون باشد و سنگدل
که خواهد که موری شود تنگدل
ای که پنجاه رفت و در خوابی
مگر این پنج روز دریابی
خجل آن کس که رفت و کار نساخت
کوسِ رحلت زدند و بار نساخت
این کوزه چو من عاشقِ زاری بوده است
در بندِ سرِ زلفِ نگاری بوده است
این دسته که بر گردنِ او می‌بینی
دستی است که بر گردنِ یاری بوده است
از منزلِ کفر تا به دین یک نفس است
وز عالمِ شک تا به یقین یک نفس است
این یک نفسِ عزیز را خوش می‌دار
کز حاصلِ عمرِ ما همین یک نفس است
می خوردن و شاد بودن آیینِ من است
فارغ بودن ز کفر و دین دینِ من است
گفتم به عروسِ دهر کابینِ تو چیست
گفتا دلِ خرمِ تو کابینِ من است
من بی می ناب زیستن نتوانم
بی باده کشید بارِ تن نتوانم
من بندهٔ آن دمم که ساقی گوید
یک جامِ دگر بگیر و من نتوانم
بر چهرهٔ گل نسیمِ نوروز خوش است
در صحنِ چمن رویِ دل‌افروز خوش است
از دی که گذشت هر چه گویی خوش نیست
خوش باش و ز دی مگو که امروز خوش است
دی شیخ با چراغ همی‌گشت گردِ شهر
کز دیو و دد ملولم و انسانم آرزوست
زین همرهانِ سست‌عناصر دلم گرفت
شیرِ خدا و رستمِ دستانم آرزوست
بنمای رخ که باغ و گلستانم آرزوست
بگشای لب که قندِ فراوانم آرزوست
ای آفتابِ حسن برون آ دمی ز ابر
کان چهرهٔ مشعشعِ تابانم آرزوست
یک دست جامِ باده و یک دست زلفِ یار
رقصی چنین میانهٔ میدانم آرزوست
جانا به غریبستان چندین به چه می‌مانی
بازآ تو از این غربت تا چند پریشانی
صد نامه فرستادم صد راه نشان دادم
یا راه نمی‌دانی یا نامه نمی‌خوانی
مرده بدم زنده شدم گریه بدم خنده شدم
دولتِ عشق آمد و من دولتِ پاینده شدم
دیدهٔ سیر است مرا جانِ دلیر است مرا
زهرهٔ شیر است مرا زهرهٔ تابنده شدم
گفت که سرمست نه‌ای رو که از این دست نه‌ای
رفتم و سرمست شدم وز طرب آکنده شدم
هر کسی کو دور ماند از اصلِ خویش
باز جوید روزگارِ وصلِ خویش
من به هر جمعیتی نالان شدم
جفتِ بدحالان و خوش‌حالان شدم
هر کسی از ظنِ خود شد یارِ من
از درونِ من نجست اسرارِ من
سرِ من از نالهٔ من دور نیست
لیک چشم و گوش را آن نور نیست
آتش است این بانگِ نای و نیست باد
هر که این آتش ندارد نیست باد
سال‌ها دل طلبِ جامِ جم از ما می‌کرد
آنچه خود داشت ز بیگانه تمنا می‌کرد
گوهری کز صدفِ کون و مکان بیرون است
طلب از گمشدگانِ لبِ دریا می‌کرد
مشکلِ خویش برِ پیرِ مغان بردم دوش
کو به تاییدِ نظر حلِ معما می‌کرد
دیدمش خرم و خندان قدحِ باده به دست
واندر آن آینه صد گونه تماشا می‌کرد
گفتم این جامِ جهان‌بین به تو کی داد حکیم
گفت آن روز که این گنبدِ مینا می‌کرد
ستاره‌ای بدرخشید و ماهِ مجلس شد
دلِ رمیدهٔ ما را انیس و مونس شد
نگارِ من که به مکتب نرفت و خط ننوشت
به غمزه مسئله‌آموزِ صد مدرس شد
به بویِ او دلِ بیمارِ عاشقان چو صبا
فدایِ عارضِ نسرین و چشمِ نرگس شد
به صدرِ مصطبه‌ام می‌نشاند اکنون دوست
گدایِ شهر نگه کن که میرِ مجلس شد
خیال آبِ خضر بست و جامِ کیخسرو
به جرعه‌نوشیِ سلطان ابوالفوارس شد
طربسرایِ محبت کنون شود معمور
که طاقِ ابرویِ یارِ منش مهندس شد
لبم از بوسه‌ربایانِ برِ یار مباد
که به جانِ تو که جز بویِ وفا کار مباد
گل بی رخِ یار خوش نباشد
بی باده بهار خوش نباشد
طرفِ چمن و هوایِ بستان
بی لاله‌عذار خوش نباشد
رقصیدنِ سرو و حالتِ گل
بی صوتِ هزار خوش نباشد
با یارِ شکرلب گل‌اندام
بی بوس و کنار خوش نباشد
هر نقش که دستِ عقل بندد
جز نقشِ نگار خوش نباشد
جان نقدِ محقر است حافظ
از بهرِ نثار خوش نباشد
در سال ۷۹۱ هجری و ۱۳۸۹ میلادی
«غزل» شمارهٔ ۱۲ و ۳۴۵ از دیوان: تصحیحِ قزوینی (چاپِ دوم)!
آیا دلِ من؟ آری؛ دلِ تو.
""".splitlines()
HEMISTICHS = [line for line in _LINES if line.strip()]

# Text for round trips: Persian letters, marks, digits, punctuation, joiners, and some foreign
# characters that normalize folds or drops.
PERSIAN_CHARS = list(PERSIAN_LETTERS + DIACRITICS + PERSIAN_DIGITS + PUNCTUATION + ZWNJ
                     + "   \t\u200dيكىةۀـ0123456789abc😀<|>")
persian_text = st.text(alphabet=st.sampled_from(PERSIAN_CHARS), max_size=60)
any_text = st.one_of(persian_text, st.text(max_size=40))


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(HEMISTICHS, vocab_size=400, special_tokens=SPECIALS, show_progress=False)


@pytest.fixture(scope="module")
def char() -> CharTokenizer:
    return CharTokenizer(SPECIALS)


@pytest.fixture(params=["char", "bpe"])
def tok(request, char, bpe):
    return char if request.param == "char" else bpe


def test_fixture_corpus_is_big_enough():
    assert len(HEMISTICHS) >= 200


# --- round trips --------------------------------------------------------------------------------

ROUND_TRIP = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@ROUND_TRIP
@given(text=any_text.map(lambda s: s.replace("\n", " ")))  # lines: test_lines_are_kept_and_each_normalized
def test_round_trip_is_normalize(tok, text):
    assert tok.decode(tok.encode(text)) == normalize(text)


@pytest.mark.parametrize("line", HEMISTICHS[:40] + ["ﺑﻴﺎ  ﺗﺎ ﮔﻞ", "علي كتاب ۀ 123", ""])
def test_round_trip_of_verse(tok, line):
    assert tok.decode(tok.encode(line)) == normalize(line)


def test_lines_are_kept_and_each_normalized(tok):
    text = "  بیا تا گل \n\n ﺑﻴﺎ\t123 \nabc\n"
    assert tok.decode(tok.encode(text)) == "بیا تا گل\nبیا ۱۲۳"


def test_bpe_compresses_verse(bpe, char):
    text = " ".join(HEMISTICHS[:20])
    assert len(bpe.encode(text)) < 0.8 * len(char.encode(text))


# --- special tokens -----------------------------------------------------------------------------


def test_special_tokens_take_the_first_ids(tok):
    assert tok.special_tokens == SPECIALS
    for i, token in enumerate(SPECIALS):
        assert tok.token_to_id(token) == i
        assert tok.is_special(i)
        assert tok.id_to_token(i) == token
        assert tok.decode([i]) == token
    assert not tok.is_special(len(SPECIALS))
    assert tok.vocab_size > len(SPECIALS)


def test_unknown_special_token_raises(tok):
    with pytest.raises(TokenizerError):
        tok.token_to_id("<|poet:nobody|>")
    with pytest.raises(TokenizerError):
        tok.token_to_id("ب")


def test_special_token_text_is_not_encoded_as_special(tok):
    for text in ["<|poem|>", "<|poem|> بیا <|end|>", "".join(SPECIALS), "<|poet:hafez|>گل<|body|>"]:
        ids = tok.encode(text)
        assert not any(tok.is_special(i) for i in ids), text
        assert tok.decode(ids) == normalize(text)
    assert tok.encode("<|poem|>") == []


@ROUND_TRIP
@given(text=any_text)
def test_encode_never_produces_special_ids(tok, text):
    assert all(i >= len(SPECIALS) for i in tok.encode(text))
    assert all(0 <= i < tok.vocab_size for i in tok.encode(text))


def test_specials_and_text_decode_together(tok):
    ids = [tok.token_to_id("<|poem|>")] + tok.encode("گل") + [tok.token_to_id("<|end|>")]
    assert tok.decode(ids) == "<|poem|>گل<|end|>"


# --- save / load --------------------------------------------------------------------------------


def test_char_save_load_round_trip(char, tmp_path):
    path = tmp_path / "char.json"
    char.save(path)
    loaded = load_tokenizer(path)
    assert isinstance(loaded, CharTokenizer)
    assert loaded.kind == "char"
    assert loaded.special_tokens == char.special_tokens
    assert loaded.vocab_size == char.vocab_size
    for line in HEMISTICHS[:30]:
        assert loaded.encode(line) == char.encode(line)
    assert [loaded.id_to_token(i) for i in range(loaded.vocab_size)] == [char.id_to_token(i) for i in range(char.vocab_size)]


def test_bpe_save_load_round_trip(bpe, tmp_path):
    path = tmp_path / "bpe.json"
    bpe.save(path)
    loaded = load_tokenizer(path)
    assert isinstance(loaded, BPETokenizer)
    assert loaded.kind == "bpe"
    assert loaded.special_tokens == bpe.special_tokens == SPECIALS
    assert loaded.vocab_size == bpe.vocab_size
    for token in SPECIALS:
        assert loaded.token_to_id(token) == bpe.token_to_id(token)
    for line in HEMISTICHS + ["<|poem|> ﺑﻴﺎ"]:
        assert loaded.encode(line) == bpe.encode(line)
        assert loaded.decode(loaded.encode(line)) == normalize(line)
    # A loaded tokenizer still does not read special-token text as a special token.
    assert "<|poem|>" not in loaded.hf.encode("<|poem|>", add_special_tokens=False).tokens


# --- the BPE pre-tokenizer ----------------------------------------------------------------------


def pre_tokens(bpe: BPETokenizer, text: str) -> list[str]:
    byte_level = decoders.ByteLevel()
    return [byte_level.decode([piece]) for piece, _ in bpe.hf.pre_tokenizer.pre_tokenize_str(text)]


def test_pre_tokenizer_keeps_kasra_and_zwnj_inside_words(bpe):
    assert pre_tokens(bpe, "بویِ گل") == ["بویِ", " گل"]
    assert pre_tokens(bpe, "می" + ZWNJ + "روم به کویِ دوست") == ["می" + ZWNJ + "روم", " به", " کویِ", " دوست"]
    assert pre_tokens(bpe, "کلبهٔ احزان") == ["کلبهٔ", " احزان"]
    assert pre_tokens(bpe, "بَّ") == ["بَّ"]


def test_pre_tokenizer_splits_digits_and_punctuation(bpe):
    assert pre_tokens(bpe, "سال ۷۹۱، دوست") == ["سال", " ۷۹۱", "،", " دوست"]


def test_no_bpe_token_starts_with_a_bare_mark(bpe):
    for text in ["بویِ گل", "رویِ تو ماه است", "سرِ کویِ دوست", "کلبهٔ احزان"]:
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text
        pieces = [bpe.id_to_token(i) for i in ids]
        assert "".join(pieces) == text  # every piece is whole characters
        for piece in pieces:
            assert not piece.startswith(("\u0650", "\u0654", ZWNJ)), (text, pieces)


# --- bad files ----------------------------------------------------------------------------------


def test_load_missing_file_raises(tmp_path):
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(tmp_path / "nope.json")


@pytest.mark.parametrize("content", [
    b"",
    b"not json at all",
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'"a string"',
    b"null",
    b'{"type": "word"}',
    b'{"type": "char"}',
    b'{"type": "char", "special_tokens": 5}',
    b'{"model": {"type": "BPE"}}',
    b'{"version": "1.0", "model": {"type": "BPE", "vocab": "oops"}}',
])
def test_load_invalid_file_raises_tokenizer_error(tmp_path, content):
    path = tmp_path / "tokenizer.json"
    path.write_bytes(content)
    with pytest.raises(TokenizerError):
        load_tokenizer(path)


def test_load_directory_raises_tokenizer_error(tmp_path):
    with pytest.raises(TokenizerError):
        load_tokenizer(tmp_path)


def test_truncated_bpe_file_raises_tokenizer_error(bpe, tmp_path):
    path = tmp_path / "bpe.json"
    bpe.save(path)
    data = path.read_text(encoding="utf-8")
    path.write_text(data[: len(data) // 2], encoding="utf-8")
    with pytest.raises(TokenizerError):
        load_tokenizer(path)


def test_tokenizer_error_is_a_value_error():
    assert issubclass(TokenizerError, ValueError)
