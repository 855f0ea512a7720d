"""The cache of evaluate-generation's train text: a second read loads it without reading the corpus,
gives what a fresh build gives, and any change of input (the data file's bytes, the poets) or a
damaged cache file makes it build again."""

import json
import os
import warnings

import numpy as np
import pytest
from conftest import RUBAI, ganjoor_record, hafez_ghazals

import persian_poetry.judges.evaluate_generation as evaluation
from persian_poetry.data.corpus import CLASSICAL_POETS, split_of
from persian_poetry.judges.evaluate_generation import read_train_text, train_cache_path
from persian_poetry.text import normalize

RAMAL = (3, "فاعلاتن فاعلاتن فاعلاتن فاعلن (رمل مثمن محذوف)")
HAZAJ = (2, "مفاعیلن مفاعیلن مفاعیلن مفاعیلن (هزج مثمن سالم)")


def ids(split: str, count: int) -> list[int]:
    return [i for i in range(1, 10_000) if split_of(i) == split][:count]


def records() -> list[dict]:
    """Train ghazals and rubais of two classical poets, one poem of a poet who is not classical,
    and test-split ghazals for the reference."""
    ghazals = hafez_ghazals()
    train, test = ids("train", 12), ids("test", 2)
    out = [ganjoor_record(i, "hafez" if k % 2 else "saadi", ghazals[k], metre=HAZAJ if k % 3 else RAMAL)
           for k, i in enumerate(train[:8])]
    out += [ganjoor_record(i, "khayyam", ghazals[20 + k][:4], "Robaee", (24, RUBAI), None)
            for k, i in enumerate(train[8:11])]
    out.append(ganjoor_record(train[11], "not-a-classical-poet", ghazals[30]))
    out += [ganjoor_record(i, "hafez", ghazals[40 + k]) for k, i in enumerate(test)]
    return out


def write_corpus(path, recs):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in recs), encoding="utf-8")
    return path


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "poems.jsonl", records())


@pytest.fixture
def reads(monkeypatch):
    """How many times the corpus is read (read_jsonl called) by the evaluation module."""
    calls = []
    real = evaluation.read_jsonl

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "read_jsonl", counting)
    return calls


def assert_same(a, b):
    assert a.hemistichs == b.hemistichs and a.text == b.text
    assert a.hashes.dtype == b.hashes.dtype and np.array_equal(a.hashes, b.hashes)
    assert a.rhymes == b.rhymes and list(a.rhymes) == list(b.rhymes)  # order too: requests draw from it
    assert a.reference == b.reference


def test_the_second_read_uses_the_cache_and_equals_a_fresh_build(corpus, tmp_path, monkeypatch, capsys):
    cache = tmp_path / "cache"
    built = read_train_text(corpus, cache_dir=cache)
    assert "cached in" in capsys.readouterr().err
    assert [p.name for p in cache.iterdir()] == [train_cache_path(corpus, cache_dir=cache).name]

    def no_reading(*args, **kwargs):
        raise AssertionError("the corpus was read again")

    monkeypatch.setattr(evaluation, "read_jsonl", no_reading)
    cached = read_train_text(corpus, cache_dir=cache)
    assert "read from the cache" in capsys.readouterr().err
    monkeypatch.undo()
    fresh = read_train_text(corpus, cache=False)
    assert_same(cached, fresh)
    assert_same(built, fresh)
    # What was read: the classical poets' train poems; rhymes of the ghazals and rubais; the reference.
    assert fresh.text.count("\n") + 1 == sum(len(r["Verses"]) for r in records()[:11])
    assert {key for key in fresh.rhymes} == {("ghazal", 2), ("ghazal", 3), ("rubai", 24)}
    assert isinstance(next(iter(fresh.rhymes.values()))[0][1], tuple)  # the radif stays a tuple
    assert [p.id for p in fresh.reference] == ids("test", 2)
    # Quiet without progress.
    capsys.readouterr()
    read_train_text(corpus, cache_dir=cache, progress=False)
    assert capsys.readouterr().err == ""


def test_the_default_cache_is_under_the_project_cache_root(corpus, tmp_path, monkeypatch, reads):
    monkeypatch.setenv("PERSIAN_POETRY_CACHE", str(tmp_path / "root"))
    path = train_cache_path(corpus)
    assert path.parent == tmp_path / "root" / "train-text" and path.suffix == ".npz"
    read_train_text(corpus, progress=False)
    read_train_text(corpus, progress=False)
    assert path.exists() and len(reads) == 1


def test_a_changed_data_file_rebuilds(corpus, tmp_path, reads):
    cache = tmp_path / "cache"
    original = read_train_text(corpus, cache_dir=cache, progress=False)
    # Another poem in place of one of the same length, and the old mtime put back: only the bytes
    # tell the files apart.
    before = corpus.stat()
    changed = corpus.read_text(encoding="utf-8").replace("saadi", "jami ")
    corpus.write_text(changed, encoding="utf-8")
    os.utime(corpus, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert corpus.stat().st_size == before.st_size and corpus.stat().st_mtime_ns == before.st_mtime_ns
    # "jami " is not a poet: the saadi poems are no longer read.
    rebuilt = read_train_text(corpus, cache_dir=cache, progress=False)
    assert len(reads) == 2 and len(list(cache.iterdir())) == 2
    assert_same(rebuilt, read_train_text(corpus, cache=False))
    assert len(rebuilt.hemistichs) < len(original.hemistichs)
    # A poem more: rebuilt again, and it is there.
    extra = ganjoor_record(ids("train", 13)[12], "hafez", hafez_ghazals()[50])
    write_corpus(corpus, [*records(), extra])
    n = len(reads)
    grown = read_train_text(corpus, cache_dir=cache, progress=False)
    assert len(reads) == n + 1 and {normalize(h) for h in hafez_ghazals()[50]} <= grown.hemistichs


def test_a_changed_poets_list_rebuilds(corpus, tmp_path, reads):
    cache = tmp_path / "cache"
    classical = read_train_text(corpus, cache_dir=cache, progress=False)
    hafez = read_train_text(corpus, poets=["hafez"], cache_dir=cache, progress=False)
    everyone = read_train_text(corpus, poets=None, cache_dir=cache, progress=False)
    assert len(reads) == 3 and len(list(cache.iterdir())) == 3
    assert hafez.hemistichs < classical.hemistichs < everyone.hemistichs
    # The poets are a set: another order, or a name twice, is the same selection.
    read_train_text(corpus, poets=["hafez", "hafez"], cache_dir=cache, progress=False)
    read_train_text(corpus, poets=CLASSICAL_POETS[::-1], cache_dir=cache, progress=False)
    assert len(reads) == 3
    assert_same(hafez, read_train_text(corpus, poets=["hafez"], cache=False))
    assert_same(everyone, read_train_text(corpus, poets=None, cache=False))


def test_a_changed_derivation_rebuilds(corpus, tmp_path, reads, monkeypatch):
    cache = tmp_path / "cache"
    read_train_text(corpus, cache_dir=cache, progress=False)
    monkeypatch.setattr(evaluation, "TRAIN_CACHE_VERSION", evaluation.TRAIN_CACHE_VERSION + 1)
    read_train_text(corpus, cache_dir=cache, progress=False)
    monkeypatch.setattr(evaluation, "REFERENCE_POEMS", 1)
    assert len(read_train_text(corpus, cache_dir=cache, progress=False).reference) == 1
    assert len(reads) == 3 and len(list(cache.iterdir())) == 3


@pytest.mark.parametrize("damage", ["truncated", "flipped", "garbage", "empty", "other key"])
def test_a_damaged_cache_file_is_rebuilt(corpus, tmp_path, reads, capsys, damage):
    cache = tmp_path / "cache"
    first = read_train_text(corpus, cache_dir=cache, progress=False)
    path = train_cache_path(corpus, cache_dir=cache)
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[:len(data) // 2])
    elif damage == "flipped":  # a byte of the text, the same length: the member's CRC-32 no longer holds
        i = data.index(first.text.split("\n")[1].encode())
        path.write_bytes(data[:i] + bytes([data[i] ^ 0x01]) + data[i + 1:])
    elif damage == "garbage":
        path.write_bytes(b"not a cache file")
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # a whole, readable file, written for other inputs
        other = write_corpus(tmp_path / "other.jsonl", records()[:3])
        read_train_text(other, cache_dir=cache, progress=False)
        os.replace(train_cache_path(other, cache_dir=cache), path)
    capsys.readouterr()
    n = len(reads)
    rebuilt = read_train_text(corpus, cache_dir=cache)
    assert "damaged" in capsys.readouterr().err and len(reads) == n + 1
    read_train_text(corpus, cache_dir=cache, progress=False)  # the rebuilt file is whole again
    assert len(reads) == n + 1
    assert_same(rebuilt, first)


def test_a_cache_that_cannot_be_written_only_warns(corpus, tmp_path):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train = read_train_text(corpus, cache_dir=blocked / "cache", progress=False)
    assert any("could not cache" in str(w.message) for w in caught)
    assert_same(train, read_train_text(corpus, cache=False))


def test_a_missing_data_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        read_train_text(tmp_path / "nothing.jsonl", cache_dir=tmp_path / "cache")
