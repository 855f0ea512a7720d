
"""Poems as token ids: the encoded layout, training windows, and the corpus cache."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import persian_poetry.data.dataset as dataset
from persian_poetry.data.controls import BEYT, BODY, END, HEMI, POEM, RHYME, Controls
from persian_poetry.data.corpus import Poem, read_jsonl, split_of
from persian_poetry.data.dataset import (
    BODY_LEN,
    CHARS,
    HEADER,
    START,
    EncodedSplit,
    body_chars,
    encode_poems,
    load_corpus_splits,
    split_plain_text,
)
from persian_poetry.data.tokenizer import CharTokenizer
from persian_poetry.text import normalize

VERSES = [
    "بیا تا گل برافشانیم و می در ساغر اندازیم", "فلک را سقف بشکافیم و طرحی نو دراندازیم",
    "اگر غم لشکر انگیزد که خون عاشقان ریزد", "من و ساقی به هم تازیم و بنیادش براندازیم",
    "بنی آدم اعضای یک پیکرند", "که در آفرینش ز یک گوهرند", "چو عضوی به درد آورد روزگار",
    "دگر عضوها را نماند قرار", "این قافله عمر عجب می‌گذرد", "دریاب دمی که با طرب می‌گذرد",
    "ساقی غم فردای حریفان چه خوری", "پیش آر پیاله را که شب می‌گذرد", "بشنو این نی چون شکایت می‌کند",
    "از جدایی‌ها حکایت می‌کند", "یوسف گم گشته باز آید به کنعان غم مخور", "کلبهٔ احزان شود روزی گلستان غم مخور",
]


def make_poems() -> list[Poem]:
    """Poems with distinct headers (poet, form, metre, rhyme differ) and bodies of varied length."""
    spec = [
        ("hafez", "ghazal", 3, "ار", 8),
        ("khayyam", "rubai", 24, None, 4),
        ("saadi", "unknown", None, "ند", 7),  # odd number of hemistichs: the last closes alone
        ("moulavi", "masnavi", 5, "ایت", 12),
        ("hafez", "rubai", None, None, 2),
        ("saadi", "ghazal", 24, "ور", 16),
    ]
    poems = []
    for i, (poet, form, metre, rhyme, n) in enumerate(spec):
        hemistichs = [VERSES[(i * 3 + k) % len(VERSES)] for k in range(n)]
        ends = [k % 2 == 1 or k == n - 1 for k in range(n)]
        poems.append(Poem(id=100 + i, poet=poet, form=form, metre=metre, rhyme=rhyme,
                          hemistichs=hemistichs, couplet_ends=ends))
    return poems


@pytest.fixture(scope="module")
def poems():
    return make_poems()


@pytest.fixture(scope="module")
def tok(poems):
    return CharTokenizer(Controls.from_poems(poems).special_tokens())


@pytest.fixture(scope="module")
def split(poems, tok):
    return encode_poems(poems, tok, Controls.from_poems(poems))


def expected_header(poem: Poem, tok) -> list[int]:
    ids = [tok.token_to_id(POEM), tok.token_to_id(f"<|poet:{poem.poet}|>"), tok.token_to_id(f"<|form:{poem.form}|>"),
           tok.token_to_id(f"<|metre:{poem.metre if poem.metre is not None else 'unknown'}|>")]
    if poem.rhyme:
        ids += [tok.token_to_id(RHYME)] + tok.encode(poem.rhyme)
    else:
        ids += [tok.token_to_id("<|rhyme:unknown|>")]
    return ids + [tok.token_to_id(BODY)]


def expected_body(poem: Poem, tok) -> list[int]:
    ids = []
    for k, (text, closes) in enumerate(zip(poem.hemistichs, poem.couplet_ends)):
        sep = END if k == len(poem.hemistichs) - 1 else BEYT if closes else HEMI
        ids += tok.encode(text) + [tok.token_to_id(sep)]
    return ids


# --- the encoded layout -------------------------------------------------------------------------


def test_index_columns_are_consistent(split, poems):
    index = split.index
    assert index.shape == (len(poems), 4)
    assert index[0, START] == 0
    ends = index[:, START] + index[:, HEADER] + index[:, BODY_LEN]
    assert np.array_equal(index[1:, START], ends[:-1])  # poems are back to back
    assert ends[-1] == len(split.tokens)
    assert split.n_poems == len(poems)
    assert split.n_chars == sum(body_chars(p) for p in poems)
    for i, poem in enumerate(poems):
        assert index[i, CHARS] == body_chars(poem)


def test_body_chars_counts_text_and_separators(poems):
    for poem in poems:
        assert body_chars(poem) == sum(len(h) for h in poem.hemistichs) + len(poem.hemistichs)
    assert body_chars(Poem(id=1, poet="x", hemistichs=["ab", "cde"], couplet_ends=[False, True])) == 7


def test_header_and_body_tokens(split, poems, tok):
    for i, poem in enumerate(poems):
        header, body, chars = split.poem(i)
        assert list(header) == expected_header(poem, tok)
        assert list(body) == expected_body(poem, tok)
        assert chars == body_chars(poem)
        # With a char tokenizer every body token is one scored character.
        assert len(body) == chars
        assert body[-1] == tok.token_to_id(END)
        specials = [tok.id_to_token(int(t)) for t in body if tok.is_special(int(t))]
        expected_seps = [HEMI if not e else BEYT for e in poem.couplet_ends[:-1]] + [END]
        assert specials == expected_seps


def test_unknown_controls_become_unknown(tok, poems):
    stranger = Poem(id=1, poet="nobody", form="weird", metre=999, rhyme="ا" * 20, hemistichs=["گل"],
                    couplet_ends=[True])
    enc = encode_poems([stranger], tok, Controls.from_poems(poems))
    header, body, _ = enc.poem(0)
    decoded = tok.decode(header)
    assert decoded.startswith("<|poem|><|poet:unknown|><|form:unknown|><|metre:unknown|><|rhyme|>")
    assert decoded.endswith("ا" * 12 + "<|body|>")  # rhyme letters capped at 12
    assert tok.decode(body) == "گل<|end|>"


# --- training windows ---------------------------------------------------------------------------


def window_origin(split: EncodedSplit, tok, x_row, y_row):
    """(poem index, header length, body offset p) such that the row is header + tokens[p:...]."""
    body_id = tok.token_to_id(BODY)
    hl = int(np.flatnonzero(x_row == body_id)[0]) + 1
    T = len(x_row)
    for i in range(split.n_poems):
        start, header, body_len, _ = (int(v) for v in split.index[i])
        if header != hl or not np.array_equal(split.tokens[start:start + header], x_row[:hl]):
            continue
        for p in range(start + header, start + header + body_len):
            if (np.array_equal(split.tokens[p:p + T - hl], x_row[hl:])
                    and np.array_equal(split.tokens[p:p + T - hl + 1], y_row[hl - 1:])):
                return i, hl, p
    raise AssertionError("window is not a poem header followed by that poem's own continuation")


def test_windows_start_with_a_full_header(split, tok):
    context, batch = 48, 300
    x, y = split.sample_batch(np.random.default_rng(0), batch, context)
    assert x.shape == y.shape == (batch, context)
    assert x.dtype == y.dtype == np.int64
    poem_id = tok.token_to_id(POEM)
    reinserted = at_start = 0
    for b in range(batch):
        assert x[b, 0] == poem_id
        i, hl, p = window_origin(split, tok, x[b], y[b])
        start = int(split.index[i, START])
        # Shifted by one wherever scored; the last target is the true next token.
        scored = y[b, :-1] != -1
        assert np.array_equal(y[b, :-1][scored], x[b, 1:][scored])
        assert np.all(y[b, hl - 1:] != -1)
        if p > start + hl:
            # The window began inside the body: the header was put back and is not scored.
            reinserted += 1
            assert np.all(y[b, :hl - 1] == -1)
        else:
            at_start += 1
            assert np.all((y[b, :hl - 1] == -1) | (y[b, :hl - 1] == x[b, 1:hl]))
    assert reinserted > batch // 3 and at_start > 0  # both kinds were exercised


def test_windows_with_context_shorter_than_a_poem_still_pin_the_header(split, tok):
    x, y = split.sample_batch(np.random.default_rng(5), 100, 24)
    assert np.all(x[:, 0] == tok.token_to_id(POEM))
    for b in range(100):
        window_origin(split, tok, x[b], y[b])


def test_seeded_batches_are_identical(split):
    a = split.sample_batch(np.random.default_rng(42), 16, 32)
    b = split.sample_batch(np.random.default_rng(42), 16, 32)
    c = split.sample_batch(np.random.default_rng(43), 16, 32)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_too_short_split_raises(split):
    with pytest.raises(ValueError):
        split.sample_batch(np.random.default_rng(0), 2, len(split.tokens))


def test_plain_text_windows_are_plain_slices():
    tok = CharTokenizer([])
    text = "\n".join(VERSES * 3)
    splits = split_plain_text(text, tok)
    assert set(splits) == {"train", "val"}
    train = splits["train"]
    assert train.n_poems == 1 and train.index[0, HEADER] == 0 and train.n_chars == len(train.tokens)
    cut = int(len(text) * 0.9)
    for part, encoded in ((text[:cut], train), (text[cut:], splits["val"])):
        assert tok.decode(encoded.tokens) == "\n".join(filter(None, map(normalize, part.split("\n"))))
    x, y = train.sample_batch(np.random.default_rng(1), 20, 16)
    assert np.all(y != -1)
    assert np.array_equal(y[:, :-1], x[:, 1:])
    flat = train.tokens.astype(np.int64)
    for row in x:
        assert any(np.array_equal(flat[s:s + 16], row) for s in range(len(flat) - 16))


# --- the corpus cache ---------------------------------------------------------------------------


def ids_in(split_name: str, count: int) -> list[int]:
    return [i for i in range(100000) if split_of(i) == split_name][:count]


def ganjoor(poem: Poem, poem_id: int) -> dict:
    verses = [{"Position": "Right" if k % 2 == 0 else "Left", "CoupletIndex": k // 2, "Text": h}
              for k, h in enumerate(poem.hemistichs)]
    return {"Id": poem_id, "Poet": poem.poet, "PoetName": poem.poet, "PoemFormat": "Ghazal",
            "Metre": {"Id": poem.metre, "Rhythm": "x"} if poem.metre else None,
            "RhymeLetters": poem.rhyme, "Verses": verses}


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    base = make_poems()
    ids = ids_in("train", 8) + ids_in("val", 2) + ids_in("test", 2)
    path = tmp_path / "poems.jsonl"
    path.write_text("\n".join(json.dumps(ganjoor(base[k % len(base)], i), ensure_ascii=False)
                              for k, i in enumerate(ids)) + "\n", encoding="utf-8")
    return path


def corpus_tokenizer(path: Path) -> CharTokenizer:
    return CharTokenizer(Controls.from_poems(read_jsonl(path)).special_tokens())


def done_files(cache: Path) -> list[Path]:
    return sorted(cache.glob("*/done"))


def test_load_corpus_splits_encodes_each_split(corpus_file, tmp_path):
    tok = corpus_tokenizer(corpus_file)
    splits, data_hash, *_ = load_corpus_splits(corpus_file, tok, cache_dir=tmp_path / "cache", progress=False)
    assert data_hash == hashlib.sha256(corpus_file.read_bytes()).hexdigest()
    assert set(splits) == {"train", "val", "test"}
    poems = list(read_jsonl(corpus_file))
    controls = Controls.from_special_tokens(tok.special_tokens)
    for name, want_count in (("train", 8), ("val", 2), ("test", 2)):
        mine = [p for p in poems if p.split == name]
        assert splits[name].n_poems == want_count == len(mine)
        expected = encode_poems(mine, tok, controls)
        assert np.array_equal(splits[name].tokens, expected.tokens)
        assert np.array_equal(splits[name].index, expected.index)


def test_second_call_is_served_from_cache(corpus_file, tmp_path, monkeypatch):
    tok = corpus_tokenizer(corpus_file)
    cache = tmp_path / "cache"
    first, hash1, *_ = load_corpus_splits(corpus_file, tok, cache_dir=cache, progress=False)
    assert len(done_files(cache)) == 1
    assert done_files(cache)[0].read_text() == hash1

    def no_reading(*args, **kwargs):
        raise AssertionError("the corpus was read again instead of served from the cache")

    monkeypatch.setattr(dataset, "read_jsonl", no_reading)
    second, hash2, *_ = load_corpus_splits(corpus_file, tok, cache_dir=cache, progress=False)
    assert hash2 == hash1
    for name in ("train", "val", "test"):
        assert isinstance(second[name].tokens, np.memmap)
        assert np.array_equal(first[name].tokens, second[name].tokens)
        assert np.array_equal(first[name].index, second[name].index)
    assert len(done_files(cache)) == 1


def test_changed_inputs_change_the_key(corpus_file, tmp_path):
    cache = tmp_path / "cache"
    tok = corpus_tokenizer(corpus_file)
    load_corpus_splits(corpus_file, tok, cache_dir=cache, progress=False)
    assert len(done_files(cache)) == 1

    # Another tokenizer (one more special token): another key, another folder.
    other = CharTokenizer(tok.special_tokens + ["<|poet:ferdousi|>"])
    splits, *_ = load_corpus_splits(corpus_file, other, cache_dir=cache, progress=False)
    assert len(done_files(cache)) == 2
    assert splits["train"].n_poems == 8

    # A poet selection: another key, and only those poets.
    hafez, *_ = load_corpus_splits(corpus_file, tok, poets=["hafez"], cache_dir=cache, progress=False)
    assert len(done_files(cache)) == 3
    assert 0 < hafez["train"].n_poems < 8

    # A changed corpus file: another key.
    corpus_file.write_text(corpus_file.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    load_corpus_splits(corpus_file, tok, cache_dir=cache, progress=False)
    assert len(done_files(cache)) == 4


def test_poet_selection_as_any_iterable(corpus_file, tmp_path):
    tok = corpus_tokenizer(corpus_file)
    cache = tmp_path / "cache"
    as_list, *_ = load_corpus_splits(corpus_file, tok, poets=["hafez"], cache_dir=tmp_path / "a", progress=False)
    as_gen, *_ = load_corpus_splits(corpus_file, tok, poets=(p for p in ["hafez"]), cache_dir=cache, progress=False)
    assert as_gen["train"].n_poems == as_list["train"].n_poems > 0
    # An empty selection selects nothing, and must not share the cache of "no selection".
    everything, *_ = load_corpus_splits(corpus_file, tok, poets=None, cache_dir=cache, progress=False)
    nothing, *_ = load_corpus_splits(corpus_file, tok, poets=[], cache_dir=cache, progress=False)
    assert everything["train"].n_poems == 8
    assert all(nothing[s].n_poems == 0 for s in ("train", "val", "test"))


def test_missing_corpus_raises(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_corpus_splits(tmp_path / "absent.jsonl", CharTokenizer([]), cache_dir=tmp_path / "c", progress=False)
