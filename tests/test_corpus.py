"""Reading the Ganjoor export: verse positions, forms, malformed lines, .gz, poet filter, splits."""

from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from collections import Counter

import pytest

from persian_poetry.data.corpus import CorpusWarning, Poem, poem_from_ganjoor, read_jsonl, read_plain_text, split_of
from persian_poetry.text import ZWNJ


def verse(position: str, index: int, text: str) -> dict:
    return {"Position": position, "CoupletIndex": index, "Text": text}


def record(poem_id, poet="hafez", form="Ghazal", metre=(3, "فاعلاتن فاعلاتن فاعلاتن فاعلن"), rhyme="ار",
           verses=None) -> dict:
    return {
        "Id": poem_id, "Poet": poet, "PoetName": poet.title(), "PoemFormat": form,
        "Metre": {"Id": metre[0], "Rhythm": metre[1]} if metre else None,
        "RhymeLetters": rhyme,
        "Verses": verses if verses is not None else [
            verse("Right", 0, "بیا تا گل برافشانیم"), verse("Left", 0, "و می در ساغر اندازیم"),
            verse("Right", 1, "فلک را سقف بشکافیم"), verse("Left", 1, "و طرحی نو دراندازیم"),
        ],
    }


GHAZAL = record(1)
RUBAI = record(2, poet="khayyam", form="Robaee", metre=(24, "مفعول مفاعیل مفاعیل فعل"), rhyme=None, verses=[
    verse("Paragraph", 0, "این متن نثر است"),
    verse("Right", 0, "این قافله عمر عجب می‌گذرد"), verse("Left", 0, "دریاب دمی که با طرب می‌گذرد"),
    verse("Comment", 0, "حاشیهٔ مصحح"),
    verse("Right", 1, "ساقی غم فردای حریفان چه خوری"), verse("Left", 1, "پیش آر پیاله را که شب می‌گذرد"),
])
PROSE = record(3, poet="saadi", form="Generic", metre=None, rhyme=None, verses=[
    verse("Paragraph", 0, "یکی از ملوک عجم حکایت کنند"), verse("Comment", 1, "توضیح"),
])
ODD = record(4, poet="saadi", form="SomethingNew", metre=None, rhyme=" ا ر" + ZWNJ, verses=[
    verse("Right", 0, "ﺑﻨﻲ آدم اعضای یک پیکرند"), verse("Left", 0, "که در آفرینش ز یک گوهرند"),
    verse("CenteredVerse1", 1, "چو عضوی به درد آورد روزگار"), verse("CenteredVerse2", 1, "دگر عضوها را نماند قرار"),
    verse("Single", 2, "تو کز محنت دیگران بی‌غمی"),
    verse("Right", 3, "نشاید که نامت نهند آدمی"),
])
EMPTY_TEXT = record(5, verses=[verse("Right", 0, "abc 😀"), verse("Left", 0, "")])
NO_FORM = record(6, form=None, metre=None, rhyme="")
GOOD = [GHAZAL, RUBAI, PROSE, ODD, EMPTY_TEXT, NO_FORM]


def write_jsonl(path, records, extra_lines: list[bytes] = ()):
    lines = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in records] + list(extra_lines)
    data = b"\n".join(lines) + b"\n"
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def read_all(path, poets=None) -> tuple[list[Poem], list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        poems = list(read_jsonl(path, poets))
    return poems, [w for w in caught if issubclass(w.category, CorpusWarning)]


@pytest.fixture
def corpus(tmp_path):
    return write_jsonl(tmp_path / "poems.jsonl", GOOD)


def test_verse_positions_and_pairing(corpus):
    poems, caught = read_all(corpus)
    assert caught == []
    by_id = {p.id: p for p in poems}
    assert sorted(by_id) == [1, 2, 4, 6]  # prose-only (3) and no-verse-text (5) poems are skipped

    ghazal = by_id[1]
    assert ghazal.poet == "hafez" and ghazal.form == "ghazal" and ghazal.metre == 3 and ghazal.rhyme == "ار"
    assert ghazal.hemistichs == ["بیا تا گل برافشانیم", "و می در ساغر اندازیم", "فلک را سقف بشکافیم",
                                 "و طرحی نو دراندازیم"]
    assert ghazal.couplet_ends == [False, True, False, True]
    assert ghazal.couplets == [("بیا تا گل برافشانیم", "و می در ساغر اندازیم"),
                               ("فلک را سقف بشکافیم", "و طرحی نو دراندازیم")]

    rubai = by_id[2]
    assert rubai.form == "rubai" and rubai.metre == 24 and rubai.rhyme is None
    assert len(rubai.hemistichs) == 4  # Paragraph and Comment dropped
    assert not any("نثر" in h or "مصحح" in h for h in rubai.hemistichs)
    assert [len(c) for c in rubai.couplets] == [2, 2]


def test_centered_single_and_unpaired_verses(corpus):
    poem = {p.id: p for p in read_all(corpus)[0]}[4]
    assert poem.form == "unknown"  # a PoemFormat we do not map
    assert poem.metre is None
    assert poem.rhyme == "ار"  # normalized, spaces and ZWNJ removed
    assert poem.hemistichs[0] == "بنی آدم اعضای یک پیکرند"  # presentation forms folded
    assert poem.couplet_ends == [False, True, False, True, True, True]  # Single closes; last always closes
    assert [len(c) for c in poem.couplets] == [2, 2, 1, 1]


def test_missing_form_maps_to_unknown(corpus):
    poem = {p.id: p for p in read_all(corpus)[0]}[6]
    assert poem.form == "unknown" and poem.metre is None and poem.rhyme is None


@pytest.mark.parametrize("ganjoor, ours", [("Robaee", "rubai"), ("Ghazal", "ghazal"), ("Masnavi", "masnavi"),
                                           ("Ghaside", "qasida"), ("Mosammat5", "mosammat"),
                                           ("Unknown", "unknown"), ("Nonsense", "unknown"), (None, "unknown")])
def test_form_mapping(ganjoor, ours):
    assert poem_from_ganjoor(record(9, form=ganjoor)).form == ours


def test_malformed_lines_are_skipped_with_one_warning(tmp_path):
    bad = [
        b'{"Id": 10, "Poet": "hafez", "Verses": [',  # invalid JSON
        b'[1, 2, 3]',  # a JSON list
        json.dumps({k: v for k, v in GHAZAL.items() if k != "Id"}).encode(),  # no Id
        b'{"Id": 11, "Poet": "hafez", "Verses": [{"Position": "Right", "Text": "\xff\xfe bad"}]}',  # not UTF-8
        b"   ",  # blank: not counted
    ]
    path = write_jsonl(tmp_path / "mixed.jsonl", GOOD, bad)
    poems, caught = read_all(path)
    assert sorted(p.id for p in poems) == [1, 2, 4, 6]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 4 " in message and str(path) in message


def test_warning_is_a_user_warning(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [GHAZAL], [b"{oops"])
    with pytest.warns(CorpusWarning, match="skipped 1 "):
        assert [p.id for p in read_jsonl(path)] == [1]
    assert issubclass(CorpusWarning, UserWarning)


def test_gzip_reads_the_same(tmp_path):
    plain, _ = read_all(write_jsonl(tmp_path / "poems.jsonl", GOOD))
    gz, caught = read_all(write_jsonl(tmp_path / "poems.jsonl.gz", GOOD, [b"not json"]))
    assert gz == plain
    assert len(caught) == 1 and "skipped 1 " in str(caught[0].message)


def test_poet_filter(corpus):
    assert [p.id for p in read_all(corpus, ["saadi"])[0]] == [4]  # 3 is saadi's prose
    assert sorted(p.id for p in read_all(corpus, {"hafez", "khayyam"})[0]) == [1, 2, 6]
    assert read_all(corpus, [])[0] == []
    assert read_all(corpus, iter(["khayyam"]))[0][0].id == 2


def test_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        list(read_jsonl(tmp_path / "absent.jsonl"))
    with pytest.raises(FileNotFoundError):
        read_plain_text(tmp_path / "absent.txt")


def test_read_plain_text_keeps_lines_and_normalizes(tmp_path):
    path = tmp_path / "poems.txt"
    path.write_bytes("ﺑﻴﺎ  تا گل\n\n   \nعلي 12\n".encode("utf-8") + b"\xff\n")
    assert read_plain_text(path) == "بیا تا گل\nعلی ۱۲"


# --- splits -------------------------------------------------------------------------------------


def test_split_of_known_ids():
    # Worked by hand from the documented rule (sha256 of the decimal id, first 8 hex digits, mod 100;
    # 0 test, 1 val, else train): sha256("70") begins ff5a1ae0 = 4284095200, which is 0 mod 100;
    # sha256("48") begins 98010bd9 = 2550205401, 1 mod 100; sha256("7") begins 7902699b = 2030201243, 43.
    assert (split_of(70), split_of(48), split_of(7)) == ("test", "val", "train")
    # The first test and val ids, pinned: a poem must never move between splits across versions.
    assert [i for i in range(1, 500) if split_of(i) == "test"] == [70, 79, 303, 424, 483]
    assert [i for i in range(1, 350) if split_of(i) == "val"] == [48, 166, 176, 250, 344]
    assert split_of("70") == "test" and split_of("48") == "val"  # hashed by decimal text
    assert split_of("abc") == split_of(0) == split_of(1) == split_of(2) == split_of(123) == "train"  # 19, 78, 19, 54, 65
    assert Poem(id=70, poet="x").split == "test" and Poem(id=7, poet="x").split == "train"


def test_split_proportions():
    counts = Counter(split_of(i) for i in range(100_000))
    assert sum(counts.values()) == 100_000 and set(counts) == {"train", "val", "test"}
    # 1% each: binomial sd is sqrt(100000 * 0.01 * 0.99) ~ 31.5; allow four of them either way.
    for name in ("test", "val"):
        assert abs(counts[name] - 1000) <= 126, counts
    assert (counts["test"], counts["val"]) == (1016, 1018)  # the exact counts, pinned with the hash


def test_split_follows_its_documented_hash():
    # sha256 of the decimal id, first 8 hex digits, modulo 100: 0 test, 1 val, else train. Pinned
    # so that a poem never moves between splits across versions.
    for poem_id in range(3000):
        bucket = int(hashlib.sha256(str(poem_id).encode()).hexdigest()[:8], 16) % 100
        assert split_of(poem_id) == {0: "test", 1: "val"}.get(bucket, "train")
