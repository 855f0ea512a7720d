"""The lexicon of classical verse (prosody/lexicon.py), built from a corpus small enough to count by hand.

Every number below is counted from FIXTURE by eye, not computed by the code under test."""

import gzip
import json

import pytest

from persian_poetry.data.corpus import OFFERED_POETS, split_of
from persian_poetry.prosody.lexicon import build_lexicon, known_words, load_rhyme_lexicon, poet_words, verse_words

TRAIN_IDS = (1, 2, 3, 4)
TEST_ID, VAL_ID = 70, 48

# (id, poet, hemistichs). hafez and saadi are offered poets (bits 0 and 1 of the poets mask);
# vahshi is a classical poet who is not offered: his words count, but he has no bit.
FIXTURE = [
    (1, "hafez", ["دل یار من کار", "دل غم یار کار"]),
    (2, "hafez", ["دلِ من، کار به", "می‌رود دل یار!"]),  # the kasra and the punctuation are dropped
    (3, "saadi", ["دل و یار", "دل جان کار"]),
    (4, "vahshi", ["یار و به", "جان به"]),
    # Not the train split: these would make من and به words of Hafez, and یار one of Saadi.
    (TEST_ID, "hafez", ["به به به من", "من من به"]),
    (VAL_ID, "saadi", ["یار یار", "یار کار"]),
]
# By hand, over the eight train hemistichs (a word "ends" one when it is one of its last two words):
#   دل   in 1 2 3 4 5 6 -> 6, ends 4 -> 1;  hafez 4 (1-4), saadi 2 (5, 6)
#   یار  in 1 2 4 5 7   -> 5, ends 2 4 5 -> 3;  hafez 3, saadi 1
#   کار  in 1 2 3 6     -> 4, ends 1 2 3 6 -> 4;  hafez 3, saadi 1
#   به   in 3 7 8       -> 3, ends 3 7 8 -> 3;  hafez 1
#   من 2, و 2, جان 2, غم 1, می‌رود 1: fewer than MIN_COUNT = 3, left out
LINES = ["دل\t6\t1\t3", "یار\t5\t3\t1", "کار\t4\t4\t1", "به\t3\t3\t0"]  # word, count, ends, poets mask


def write_corpus(path, poems, paragraph: str = "") -> None:
    records = []
    for pid, poet, hemistichs in poems:
        verses = [{"Position": "Right" if i % 2 == 0 else "Left", "CoupletIndex": i // 2, "Text": text}
                  for i, text in enumerate(hemistichs)]
        if paragraph:  # prose in a poem: not verse, not counted
            verses.append({"Position": "Paragraph", "CoupletIndex": 1, "Text": paragraph})
        records.append({"Id": pid, "Poet": poet, "PoemFormat": "Ghazal", "Metre": None, "RhymeLetters": None,
                        "Verses": verses})
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


@pytest.fixture
def lexicon(tmp_path):
    data = tmp_path / "poems.jsonl.gz"
    write_corpus(data, FIXTURE, paragraph="کار کار کار")
    out = tmp_path / "lexicon.tsv.gz"
    assert build_lexicon(data, out=out, progress=False) == 4
    return out


def test_the_fixture_ids_fall_in_the_splits_it_needs():
    assert [split_of(i) for i in TRAIN_IDS] == ["train"] * 4
    assert split_of(TEST_ID) == "test" and split_of(VAL_ID) == "val"
    assert OFFERED_POETS[:2] == ("hafez", "saadi") and "vahshi" not in OFFERED_POETS


def test_the_file_holds_each_word_its_count_its_endings_and_its_poets(lexicon):
    assert gzip.decompress(lexicon.read_bytes()).decode("utf-8") == "".join(line + "\n" for line in LINES)


def test_known_words_are_the_train_words_used_at_least_three_times_commonest_first(lexicon):
    words = known_words(lexicon)
    assert list(words.items()) == [("دل", 6), ("یار", 5), ("کار", 4), ("به", 3)]
    assert "من" not in words  # 2 in train; the test poem's 5 more are not counted


def test_rhyme_words_end_hemistichs_at_least_three_times_most_often_first(lexicon):
    # کار ends 4 and comes first though یار is used more; یار and به both end 3 and keep the file's
    # order; دل, used most, ends only one hemistich and is no rhyme word.
    assert list(load_rhyme_lexicon(lexicon).items()) == [("کار", 4), ("یار", 3), ("به", 3)]


def test_a_poets_words_are_those_he_uses_twice_in_the_train_split(lexicon):
    assert poet_words("hafez", lexicon) == {"دل", "یار", "کار"}  # به once (the test poem's four uncounted)
    assert poet_words("saadi", lexicon) == {"دل"}  # یار once in train (the val poem's three uncounted)
    assert poet_words("vahshi", lexicon) == frozenset()  # counted in the totals, but not an offered poet
    assert poet_words("attar", lexicon) == frozenset()  # offered, but not in this corpus


def test_the_count_limits_and_the_poet_filter(tmp_path):
    data = tmp_path / "poems.jsonl.gz"
    write_corpus(data, FIXTURE)
    every = tmp_path / "every.tsv.gz"
    assert build_lexicon(data, out=every, min_count=2, progress=False) == 7  # + من, و, جان (2 each)
    assert set(known_words(every)) == {"دل", "یار", "کار", "به", "من", "و", "جان"}
    assert known_words(every)["من"] == 2
    assert list(load_rhyme_lexicon(every)) == ["کار", "یار", "به"]  # endings still need 3
    top = tmp_path / "top.tsv.gz"
    assert build_lexicon(data, out=top, max_words=2, progress=False) == 2
    assert list(known_words(top).items()) == [("دل", 6), ("یار", 5)]
    hafez = tmp_path / "hafez.tsv.gz"  # hemistichs 1-4 only: دل 4, یار 3, کار 3, من 2, ...
    assert build_lexicon(data, poets=["hafez"], out=hafez, progress=False) == 3
    assert list(known_words(hafez).items()) == [("دل", 4), ("یار", 3), ("کار", 3)]


@pytest.mark.parametrize("hemistich,words", [
    ("دل من به یار", ["دل", "من", "به", "یار"]),
    ("دلِ من، ای یار!", ["دل", "من", "ای", "یار"]),  # a mark and punctuation dropped
    ("می‌رود  خانهٔ  ما", ["می\u200cرود", "خانه", "ما"]),  # ZWNJ kept inside a word; hamza above dropped
    ("\u200cدل ۱۲ - یار", ["دل", "یار"]),  # digits and a dash are no words
    ("«\u200cدل» یار\u200c! غم\u200c۱۲", ["دل", "یار", "غم"]),  # a ZWNJ left at a word's edge once quotes,
    # punctuation or digits are dropped goes with them
    ("ديار كهن", ["دیار", "کهن"]),  # Arabic yeh and kaf read as the Persian letters
    ("", []),
])
def test_verse_words(hemistich, words):
    assert verse_words(hemistich) == words
