"""The derived-data cache: read back only for the same inputs, never stale, never an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from persian_poetry.files import cached_derivation


@pytest.fixture()
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("PERSIAN_POETRY_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "derived"


def counting(value):
    calls = []

    def derive():
        calls.append(1)
        return value
    return derive, calls


def test_a_second_call_reads_what_the_first_derived(tmp_path, cache):
    source = tmp_path / "data.txt"
    source.write_text("a")
    derive, calls = counting({"words": ["یار", "کار"]})
    assert cached_derivation("table", [source], derive) == {"words": ["یار", "کار"]}
    assert cached_derivation("table", [source], derive) == {"words": ["یار", "کار"]}
    assert len(calls) == 1
    assert len(list(cache.glob("table-*.json"))) == 1


def test_a_changed_input_is_derived_again(tmp_path, cache):
    source, code = tmp_path / "data.txt", tmp_path / "code.py"
    source.write_text("a")
    code.write_text("x = 1")
    derive, calls = counting(1)
    cached_derivation("table", [source, code], derive)
    code.write_text("x = 2")  # the code that derives it changed, the data did not
    cached_derivation("table", [source, code], derive)
    source.write_text("b")
    cached_derivation("table", [source, code], derive)
    assert len(calls) == 3
    assert len(list(cache.glob("table-*.json"))) == 1  # the stale entries are gone


def test_a_module_stands_for_its_source_file(tmp_path, cache):
    import persian_poetry.text as module
    derive, calls = counting(1)
    cached_derivation("table", [module], derive)
    cached_derivation("table", [module.__file__], derive)
    assert len(calls) == 1


def test_a_damaged_cache_file_is_derived_again_and_replaced(tmp_path, cache):
    source = tmp_path / "data.txt"
    source.write_text("a")
    derive, calls = counting([1, 2, 3])
    cached_derivation("table", [source], derive)
    (path,) = cache.glob("table-*.json")
    path.write_bytes(path.read_bytes()[:5])  # cut short, as by a full disk
    assert cached_derivation("table", [source], derive) == [1, 2, 3]
    assert cached_derivation("table", [source], derive) == [1, 2, 3]
    assert len(calls) == 2


def test_a_cache_folder_that_is_a_file_warns_and_still_answers(tmp_path, cache):
    source = tmp_path / "data.txt"
    source.write_text("a")
    cache.parent.mkdir(parents=True)
    cache.write_text("not a folder")
    derive, calls = counting("value")
    with pytest.warns(UserWarning, match="could not cache table"):
        assert cached_derivation("table", [source], derive) == "value"
    assert len(calls) == 1
