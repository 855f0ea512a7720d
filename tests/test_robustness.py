"""Hostile input gets a clear error and changes nothing.

Corpus files with broken lines, other formats, a damaged gzip or one 50 MB line; arbitrary Unicode
through the normalizer, both tokenizers and the scanner; unknown controls and empty prompts at the
command line. Every failure is the documented error type (`PoetryError`, or `FileNotFoundError`
for a path that is not there), and the CLI says it in one line with exit status 2.
"""

from __future__ import annotations

import gzip
import json
import re
import tempfile
import tracemalloc
import warnings
from pathlib import Path

import pytest
from conftest import ganjoor_record, hafez_ghazals
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from persian_poetry.cli import main
from persian_poetry.data import corpus as corpus_module
from persian_poetry.data.corpus import MAX_LINE_BYTES, CorpusWarning, read_jsonl, read_plain_text
from persian_poetry.data.tokenizer import CharTokenizer
from persian_poetry.errors import CorpusError, PoetryError
from persian_poetry.prosody.rhyme import analyze_rhyme, rhyme_key
from persian_poetry.prosody.scan import scan
from persian_poetry.prosody.scansion import Scansion, scan_hemistich, scan_poem
from persian_poetry.text import ALPHABET, normalize

GHAZALS = hafez_ghazals()[:3]
GOOD = [json.dumps(ganjoor_record(i + 1, "hafez", h), ensure_ascii=False).encode() for i, h in enumerate(GHAZALS)]
# Any character at all: lone surrogates, controls, private use, unassigned code points.
ANY_CHAR = st.characters(blacklist_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=200)
# Text that reaches the scanner's and tokenizers' real work: Persian letters, marks and joiners among anything.
PERSIANISH = st.text(st.one_of(st.sampled_from(sorted(ALPHABET) + ["\n", "\r", "\t", "\u200d", "ي", "ك", "ۀ", "ـ"]),
                               ANY_CHAR), max_size=120)
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def read_all(path, poets=None):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        poems = list(read_jsonl(path, poets))
    return poems, [str(w.message) for w in caught if issubclass(w.category, CorpusWarning)]


def one_line_error(capsys, argv: list[str], *fragments: str) -> str:
    """The CLI exits with status 2 and one line on stderr holding every fragment; nothing on stdout."""
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    assert err.count("\n") == 1 and err.startswith("persian-poetry ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


# --- corpus files -------------------------------------------------------------------------------

def test_broken_lines_are_skipped_counted_and_the_rest_is_read(tmp_path):
    bad = [b"{not json", b"\xff\xfe\x00 not utf-8", b"[1, 2, 3]", b'"a string"', b"null", b'{"Id": 5}',
           b"[" * 100_000 + b"]" * 100_000,  # nested past the recursion limit
           b'{"Id": 6, "Poet": "hafez", "Verses": "not a list"}',
           b'{"Id": 7, "Poet": "hafez", "Verses": [1, 2]}',
           json.dumps(ganjoor_record(8, ["a", "list"], ["بیا", "برو"])).encode(),  # a poet is a slug
           json.dumps(ganjoor_record(9, "hafez", ["بیا", "برو"], metre=("eight", "?"))).encode(),
           b"", b"   \t"]  # blank lines: not counted
    empty_poem = json.dumps(ganjoor_record(10, "hafez", ["   ", "abc", ""])).encode()  # no Persian verse
    path = tmp_path / "mixed.jsonl"
    data = b"\n".join([GOOD[0], *bad, empty_poem, GOOD[1]]) + b"\n"
    path.write_bytes(data)
    poems, caught = read_all(path)
    assert [p.id for p in poems] == [1, 2]
    assert len(caught) == 1 and f"{path}: skipped 11 malformed line(s)" in caught[0]
    assert path.read_bytes() == data  # reading changes nothing


@pytest.mark.parametrize("content, message", [
    (b"", "it holds nothing"),
    (b"\n\n  \n", "it holds nothing"),
    (b"{oops\n\xff\n[1]\n", "it holds 3 malformed line(s)"),
    (b"id,poet,text\n1,hafez,\xd8\xa8\n", "it holds 2 malformed line(s)"),  # a CSV
    (json.dumps(ganjoor_record(1, "hafez", ["abc", "  "])).encode(), "has verse"),
])
def test_a_file_without_poems_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "poems.jsonl"
    path.write_bytes(content)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the error says it all: no warning besides
        with pytest.raises(CorpusError, match=re.escape(message)) as info:
            list(read_jsonl(path))
    assert str(path) in str(info.value)


def test_poets_that_are_not_there_are_a_clear_error(tmp_path):
    path = tmp_path / "poems.jsonl"
    path.write_bytes(b"\n".join(GOOD))
    with pytest.raises(CorpusError, match="no poems by the selected poets .*nobody"):
        list(read_jsonl(path, ["nobody"]))
    assert read_all(path, [])[0] == []  # an empty selection is an empty answer


def test_a_damaged_gzip_is_a_clear_error(tmp_path):
    whole = gzip.compress(b"\n".join(GOOD * 20))
    for name, content in (("not-gzip.jsonl.gz", b"\n".join(GOOD)), ("cut.jsonl.gz", whole[:len(whole) // 2]),
                          ("garbled.jsonl.gz", whole[:30] + bytes(200) + whole[230:])):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(CorpusError, match=re.escape(f"cannot read {path}")):
            list(read_jsonl(path))
    with pytest.raises(CorpusError, match="cannot read"):
        list(read_jsonl(tmp_path))  # a directory
    with pytest.raises(FileNotFoundError, match="absent.jsonl"):
        list(read_jsonl(tmp_path / "absent.jsonl"))


class CountingFile:
    """A binary file that counts its readline calls and the bytes they return."""

    def __init__(self, f, log: dict):
        self.f, self.log = f, log

    def readline(self, size=-1):
        line = self.f.readline(size)
        self.log["calls"] += 1
        self.log["bytes"] += len(line)
        return line

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def counting_open(monkeypatch) -> dict:
    """Make the corpus reader's `open` count what it reads (work done, not seconds on a busy machine)."""
    log = {"calls": 0, "bytes": 0}
    monkeypatch.setattr(corpus_module, "open", lambda path, mode="r": CountingFile(open(path, mode), log),  # noqa: SIM115
                        raising=False)
    return log


def test_a_50_mb_line_is_skipped_in_bounded_memory_and_work(tmp_path, monkeypatch):
    """A 50 MB line (here a poem object with one endless hemistich) is read past once, in chunks of
    1 MiB after the first MAX_LINE_BYTES, and never decoded or parsed."""
    path = tmp_path / "huge.jsonl"
    hemistich = "ب" * (25 * 2**20)  # 50 MB of UTF-8
    with open(path, "wb") as f:
        f.write(GOOD[0] + b"\n")
        f.write(json.dumps(ganjoor_record(99, "hafez", [hemistich, "x"]), ensure_ascii=False).encode() + b"\n")
        f.write(GOOD[1] + b"\n")
    del hemistich
    size = path.stat().st_size
    assert size > 50 * 10**6
    log = counting_open(monkeypatch)
    parsed = []
    loads = json.loads
    monkeypatch.setattr(json, "loads", lambda text, *a, **k: parsed.append(len(text)) or loads(text, *a, **k))
    tracemalloc.start()
    poems, caught = read_all(path)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert [p.id for p in poems] == [1, 2]
    assert caught == [f"{path}: skipped 1 malformed line(s) (1 longer than {MAX_LINE_BYTES >> 20} MiB)"]
    assert peak < 3 * MAX_LINE_BYTES, f"peak {peak / 2**20:.0f} MiB"
    # Every byte read once, none twice. One read per short line; the long line (with its newline)
    # in MAX_LINE_BYTES + 1 bytes, then the rest 1 MiB at a time; one read finds the end.
    assert log["bytes"] == size
    long_line = size - len(GOOD[0]) - len(GOOD[1]) - 2 + 1
    rest = long_line - (MAX_LINE_BYTES + 1)
    assert log["calls"] == 2 + 1 + -(-rest // 2**20) + 1, log
    assert parsed == [len(GOOD[0].decode()) + 1, len(GOOD[1].decode()) + 1]  # only the two short lines are parsed

    text = tmp_path / "huge.txt"
    text.write_bytes("بیا تا گل\n".encode() + b"x" * (50 * 10**6) + "\nبرافشانیم".encode())
    log.update(calls=0, bytes=0)
    with pytest.warns(CorpusWarning, match="skipped 1 line"):
        assert read_plain_text(text) == "بیا تا گل\nبرافشانیم"
    assert log["bytes"] == text.stat().st_size and log["calls"] <= 3 + 1 + 50 * 10**6 // 2**20 + 1, log


def test_plain_text_without_persian_is_a_clear_error(tmp_path):
    for content in (b"", b"hello world\n\n12 ???\n", b"\xff\xfe\xfd\n"):
        path = tmp_path / "seed.txt"
        path.write_bytes(content)
        with pytest.raises(CorpusError, match=re.escape(f"no Persian text in {path}")):
            read_plain_text(path)


# JSON of any shape, and Ganjoor-like records whose every field may be of the wrong kind.
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(ANY_CHAR, max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=10)
TEXT = st.sampled_from(GHAZALS[0]) | PERSIANISH | st.integers() | st.none()
VERSE = st.fixed_dictionaries({"Position": st.sampled_from(["Right", "Left", "Single", "Paragraph", 3]),
                               "Text": TEXT}) | JSON_VALUE
METRE = st.none() | st.integers() | st.fixed_dictionaries({"Id": st.integers() | st.text(max_size=3)},
                                                          optional={"Rhythm": st.text(max_size=5)})
POEM_RECORD = st.fixed_dictionaries(
    {"Id": st.integers() | st.text(max_size=4),
     "Poet": st.sampled_from(["hafez", "saadi"]) | st.text(max_size=6) | st.integers(),
     "Verses": st.lists(VERSE, min_size=1, max_size=4) | JSON_VALUE},
    optional={"Metre": METRE, "PoemFormat": st.text(max_size=8) | st.none(), "RhymeLetters": TEXT})


@settings(max_examples=150, deadline=None)
@given(st.lists(JSON_VALUE | POEM_RECORD, min_size=1, max_size=5))
def test_any_json_lines_give_poems_or_a_corpus_error(records):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "poems.jsonl"
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
        try:
            poems, _ = read_all(path)
        except CorpusError:
            return
        assert poems and all(p.hemistichs and all(p.hemistichs) for p in poems)


# --- arbitrary Unicode: normalizer, tokenizers, scanner --------------------------------------------

@pytest.fixture(scope="module")
def tokenizers():
    from persian_poetry.assets import DEFAULT_MODEL_DIR
    from persian_poetry.data.controls import Controls
    from persian_poetry.data.tokenizer import load_tokenizer

    return [CharTokenizer(Controls(("hafez",), ("ghazal",), (3,)).special_tokens()),
            load_tokenizer(DEFAULT_MODEL_DIR / "tokenizer.json")]  # the shipped BPE


@FAST
@given(ANY_TEXT)
def test_normalize_takes_any_string(text):
    out = normalize(text)
    assert set(out) <= ALPHABET and normalize(out) == out
    out.encode("utf-8")  # no lone surrogate survives (it would raise)
    with pytest.raises(TypeError):
        normalize(text.encode("utf-8", "surrogatepass"))


@FAST
@given(st.one_of(ANY_TEXT, PERSIANISH))
def test_both_tokenizers_round_trip_any_text_line_by_line(tokenizers, text):
    expected = "\n".join(line for line in map(normalize, text.split("\n")) if line)
    for tok in tokenizers:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size and not tok.is_special(i) for i in ids)
        assert tok.decode(ids) == expected


@FAST
@given(st.one_of(ANY_TEXT, PERSIANISH))
def test_the_scanner_reads_any_hemistich_without_raising(text):
    result = scan_hemistich(text)
    assert isinstance(result, Scansion) and (result.metre_id is None or result.candidates)
    assert scan_poem([text, text[::-1]]).metre_id is None or any(ch in text for ch in "ابتدرسلمنوهی")


@settings(max_examples=80, deadline=None)
@given(st.one_of(PERSIANISH, st.lists(PERSIANISH, max_size=4)),
       st.one_of(st.none(), st.sampled_from(["ghazal", "rubai", "masnavi", "qasida", "unknown"]), st.text(max_size=8)))
def test_prosody_scan_and_rhyme_take_any_text(text, form):
    result = scan(text, form=form)
    json.dumps(result.to_dict(), ensure_ascii=False)  # everything it says can be sent as JSON
    assert (result.metre_id is None) == (not result.hemistichs)
    assert all(set(h.text) <= ALPHABET for h in result.hemistichs)
    lines = text.split("\n") if isinstance(text, str) else text
    rhyme = analyze_rhyme([normalize(line) for line in lines], form)
    assert all(0 <= i < len(lines) for i in rhyme.broken)
    assert set(rhyme_key(text if isinstance(text, str) else " ".join(text))) <= ALPHABET


def test_scanning_a_huge_text_is_refused_before_any_work(monkeypatch):
    """Over MAX_SCAN_CHARS characters (newlines not counted) a text is refused before one hemistich
    is normalized or scanned; at MAX_SCAN_CHARS exactly it goes on to the work."""
    from persian_poetry.prosody import scan as scan_module

    class Worked(Exception):
        pass

    def work(*args, **kwargs):
        raise Worked

    monkeypatch.setattr(scan_module, "normalize", work)
    monkeypatch.setattr(scan_module, "combined_scores", work)
    limit = scan_module.MAX_SCAN_CHARS
    for text in ("الا یا ایها الساقی " * 3_000_000, ["ب" * 10**6] * 60, "ب" * (limit + 1),
                 "ب" * (limit // 2) + "\n" + "ب" * (limit - limit // 2 + 1), ["ب" * limit, "ب"]):
        with pytest.raises(PoetryError, match="too long to scan"):
            scan(text)
    for text in ("ب" * limit, "ب" * (limit // 2) + "\n" + "ب" * (limit - limit // 2), ["ب" * limit, ""]):
        with pytest.raises(Worked):
            scan(text)
    monkeypatch.undo()
    assert scan("الا یا ایها الساقی ادر کاسا و ناولها").metre_id is not None  # verse still scans


# --- the command line -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    paths = {"junk": folder / "junk.jsonl", "latin": folder / "latin.txt", "nonutf": folder / "nonutf.txt",
             "notgz": folder / "poems.jsonl.gz", "good": folder / "good.jsonl", "partial": folder / "partial"}
    paths["junk"].write_bytes(b"{oops\n\xff\xfe\n")
    paths["latin"].write_text("hello world\n", encoding="utf-8")
    paths["nonutf"].write_bytes(b"\xff\xfe\xfa\n")
    paths["notgz"].write_bytes(b"\n".join(GOOD))
    paths["good"].write_bytes(b"\n".join(GOOD))
    paths["partial"].mkdir()
    (paths["partial"] / "config.json").write_text("{}", encoding="utf-8")
    return paths


def test_training_on_bad_data_is_one_line_and_leaves_nothing(files, tmp_path, capsys):
    out, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--out-dir", str(out), "--cache-dir", str(cache), "--no-progress", "--max-steps", "2"]
    one_line_error(capsys, ["train", "--data", str(files["junk"]), "--poets", "all", *common],
                   "no poems in", str(files["junk"]), "2 malformed line(s)")
    one_line_error(capsys, ["train", "--data", str(files["good"]), "--poets", "nobody", *common],
                   "no poems by the selected poets", "nobody")
    one_line_error(capsys, ["train", "--data", str(files["latin"]), *common], "no Persian text in")
    one_line_error(capsys, ["train", "--data", str(files["notgz"]), "--poets", "all", *common], "cannot read")
    one_line_error(capsys, ["train", "--data", str(tmp_path / "absent.jsonl"), *common], "absent.jsonl")
    assert not out.exists() and not cache.exists()
    one_line_error(capsys, ["train-tokenizer", "--data", str(files["notgz"]), "--poets", "all", "--out",
                            str(tmp_path / "tok.json")], "cannot read")
    one_line_error(capsys, ["train-tokenizer", "--data", str(files["good"]), "--poets", "all", "--vocab-size", "300",
                            "--out", str(tmp_path / "no" / "such" / "dir" / "tok.json")], "tok.json")
    one_line_error(capsys, ["evaluate", "--data", str(files["junk"])], "no poems in")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_scan_with_nothing_to_scan_is_one_line(files, tmp_path, capsys):
    for argv in (["scan"], ["scan", ""]):
        one_line_error(capsys, argv, "give the verse")
    for text in ("   ", "hello world", "\n\n", "123 ؟!"):
        one_line_error(capsys, ["scan", text], "no Persian verse")
    one_line_error(capsys, ["scan", "--file", str(files["nonutf"])], "utf-8")
    one_line_error(capsys, ["scan", "--file", str(tmp_path / "absent.txt")], "absent.txt")
    one_line_error(capsys, ["scan", "--file", str(tmp_path)], str(tmp_path))  # a directory
    assert main(["scan", "hello", "--json"]) == 0  # JSON callers get an empty result, not an error
    assert json.loads(capsys.readouterr().out)["metre_id"] is None


@pytest.mark.parametrize("argv, fragments", [
    (["--poet", "nobody"], ["unknown poet 'nobody'; choose from:", "hafez"]),
    (["--poet", ""], ["unknown poet ''"]),
    (["--form", "sonnet"], ["unknown form 'sonnet'; choose from:", "ghazal"]),
    (["--couplets", "0"], ["couplets must be between 1 and"]),
    (["--couplets", "100000"], ["couplets must be between 1 and"]),
    (["--temperature", "nan"], ["temperature"]),
    (["--temperature", "-1"], ["temperature"]),
    (["--top-p", "0"], ["top_p"]),
    (["--top-k", "-3"], ["top_k"]),
])
def test_generate_with_unknown_controls_is_one_line(argv, fragments, capsys):
    one_line_error(capsys, ["generate", "--seed", "1", "--no-stream", *argv], *fragments)


def test_generate_with_a_missing_or_partial_model_is_one_line(files, tmp_path, capsys):
    one_line_error(capsys, ["generate", "--model", str(tmp_path / "nowhere")], "model directory not found")
    one_line_error(capsys, ["generate", "--model", str(files["partial"])],
                   "incomplete: missing model.safetensors, tokenizer.json")
    one_line_error(capsys, ["generate", "--model", str(files["good"])], "model directory not found")  # a file

