"""Loading trusts nothing: weights only from safetensors with the sha256 recorded beside them,
checkpoints only as plain data, and every damaged, tampered or missing file refused by name.

The model directories here are built in a blink (an untrained 2-layer GPT and a char tokenizer
through `save_model_dir`, as `train` writes them), then broken one way at a time.
"""

from __future__ import annotations

import ast
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from persian_poetry.cli import main
from persian_poetry.data.controls import Controls
from persian_poetry.data.tokenizer import CharTokenizer
from persian_poetry.errors import ModelLoadError, PoetryError
from persian_poetry.gpt.checkpoint import (
    CONFIG,
    TOKENIZER,
    WEIGHTS,
    config_digest,
    load_training_state,
    save_model_dir,
    save_training_state,
)
from persian_poetry.gpt.model import GPT, GPTConfig
from persian_poetry.writing.bundle import load_model

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "persian_poetry"


@pytest.fixture(scope="module")
def good_dir(tmp_path_factory) -> Path:
    tokenizer = CharTokenizer(Controls(("hafez",), ("ghazal",), (3,)).special_tokens())
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, context_length=32, n_layer=2, n_head=2, n_embd=16))
    return save_model_dir(tmp_path_factory.mktemp("model") / "good", model, tokenizer, {3: "رمل"})


@pytest.fixture
def copy(good_dir, tmp_path):
    def make() -> Path:
        return Path(shutil.copytree(good_dir, tmp_path / "copy", dirs_exist_ok=True))
    return make


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edit_config(directory: Path, change) -> None:
    config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    change(config)
    (directory / CONFIG).write_text(json.dumps(config), encoding="utf-8")


def refused(directory: Path, *fragments: str) -> str:
    """load_model refuses `directory` with a ModelLoadError naming the bad file; the CLI says the
    same in one line with exit status 2 and no traceback."""
    with pytest.raises(ModelLoadError) as info:
        load_model(directory)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_sound_directory_loads_and_gives_the_same_logits(good_dir):
    poetry = load_model(good_dir)
    assert poetry.controls.poets == ("hafez",) and poetry.metres == {3: "رمل"}
    again = load_model(good_dir)
    idx = np.array([[0, 5, 9, 12]])
    np.testing.assert_array_equal(poetry.model.forward(idx)[0], again.model.forward(idx)[0])


def test_truncated_weights_are_refused_by_name(copy):
    directory = copy()
    data = (directory / WEIGHTS).read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 8, 0):
        (directory / WEIGHTS).write_bytes(data[:cut])
        refused(directory, str(directory / WEIGHTS), "truncated or was modified")


def test_a_flipped_byte_anywhere_is_refused(copy):
    directory = copy()
    data = bytearray((directory / WEIGHTS).read_bytes())
    for position in (3, 40, len(data) // 2, len(data) - 1):  # header length, header JSON, tensor data
        tampered = bytearray(data)
        tampered[position] ^= 0x01
        (directory / WEIGHTS).write_bytes(bytes(tampered))
        refused(directory, str(directory / WEIGHTS), "does not match the sha256")


def test_a_forged_hash_does_not_let_a_pickle_or_a_broken_file_in(copy, tmp_path):
    """Someone who also rewrites the recorded hash still cannot get code run or a broken file loaded:
    the weights are read by safetensors, which has no code path, and checked against the config."""
    directory = copy()
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    for content in (pickle.dumps({"token_embedding.weight": Payload()}), b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}"):
        (directory / WEIGHTS).write_bytes(content)
        edit_config(directory, lambda c: c["sha256"].update({WEIGHTS: sha256(directory / WEIGHTS)}))
        refused(directory, str(directory / WEIGHTS), "cannot load weights")
    assert not marker.exists()


def test_each_missing_file_is_named(copy, tmp_path):
    for name in (WEIGHTS, CONFIG, TOKENIZER):
        directory = copy()
        (directory / name).unlink()
        refused(directory, f"missing {name}", str(directory))
    refused(tmp_path / "nowhere", "model directory not found", "nowhere")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    refused(a_file, "model directory not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    refused(empty, f"missing {WEIGHTS}, {CONFIG}, {TOKENIZER}")


@pytest.mark.parametrize("content", [b"", b"{", b"[1, 2]", b"\xff\xfe\x00garbage", b'{"format_version": 1}',
                                     b'{"model": "six layers"}', b'{"model": {"n_head": 0}}',
                                     b'{"model": {"positional": "alibi"}}', b'{"model": {"n_embd": "wide"}}'])
def test_a_bad_config_is_refused_by_name(copy, content):
    directory = copy()
    (directory / CONFIG).write_bytes(content)
    refused(directory, str(directory / CONFIG))


def test_a_config_directory_instead_of_a_file(copy):
    directory = copy()
    (directory / CONFIG).unlink()
    (directory / CONFIG).mkdir()
    refused(directory, str(directory / CONFIG))


def test_a_config_that_disagrees_with_the_weights_is_refused_before_building_the_model(copy):
    """Even with its hash forged to match, a config's invented sizes (a billion layers, a vocabulary
    that does not fit the tokenizer) are caught against the weights' own shapes, at once."""
    for change, fragment in ((lambda m: m.update(n_layer=10**9), "n_layer"),
                             (lambda m: m.update(n_embd=2**20, n_head=1), "n_embd"),
                             (lambda m: m.update(vocab_size=3), "vocab_size"),
                             (lambda m: m.update(context_length=10**12), "context_length"),
                             (lambda m: m.update(n_layer=-1), "n_layer"),
                             (lambda m: m.update(bias=True), "cannot load weights")):
        directory = copy()
        edit_config(directory, lambda c: (change(c["model"]), c["sha256"].update(config=config_digest(c))))
        refused(directory, str(directory), fragment)


def test_files_without_a_recorded_hash_are_not_trusted(copy):
    directory = copy()
    edit_config(directory, lambda c: c.pop("sha256"))
    refused(directory, "records no sha256", str(directory / CONFIG))
    directory = copy()
    edit_config(directory, lambda c: c["sha256"].pop(TOKENIZER))
    refused(directory, "records no sha256", str(directory / CONFIG))


@pytest.mark.parametrize("change", [lambda m: m.update(n_head=4), lambda m: m.update(positional="rotary"),
                                    lambda m: m.update(norm="rmsnorm")])
def test_a_changed_config_is_refused_by_its_checksum(copy, change):
    """A config edited after saving (another head count, rotary for sinusoidal) would load silently
    and write garbage: the sha256 the directory records of its config refuses it first."""
    directory = copy()
    edit_config(directory, lambda c: change(c["model"]))
    refused(directory, str(directory / CONFIG), "does not match the sha256 it records")


def test_a_changed_tokenizer_is_refused_by_its_checksum(copy):
    directory = copy()
    data = json.loads((directory / TOKENIZER).read_text(encoding="utf-8"))
    data["special_tokens"] = data["special_tokens"][::-1]  # still a valid tokenizer, with ids swapped
    (directory / TOKENIZER).write_text(json.dumps(data), encoding="utf-8")
    refused(directory, str(directory / TOKENIZER), "does not match the sha256")


def test_saved_files_get_ordinary_permissions_and_the_folder_is_synced(tmp_path, monkeypatch):
    import os
    import stat

    from persian_poetry import files

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(files.os, "fsync", lambda fd: (synced.append(stat.S_ISDIR(os.fstat(fd).st_mode)),
                                                       real_fsync(fd)))
    old_mask = os.umask(0o022)
    try:
        files.atomic_write(tmp_path / "a.txt", lambda tmp: Path(tmp).write_text("x"))
    finally:
        os.umask(old_mask)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
    assert synced == [False, True]  # the file's bytes, then the folder that holds its new name


def test_a_damaged_or_mismatched_tokenizer_is_refused(copy):
    """Past its checksum (forged here, as one who rewrites config.json too would), a tokenizer file
    is still checked for what it is."""
    def forge(directory: Path) -> None:
        edit_config(directory, lambda c: c["sha256"].update({TOKENIZER: sha256(directory / TOKENIZER)}))

    directory = copy()
    (directory / TOKENIZER).write_text('{"type": "char", "special_tokens": 5}', encoding="utf-8")
    forge(directory)
    with pytest.raises(PoetryError, match="tokenizer.json"):
        load_model(directory)
    (directory / TOKENIZER).write_bytes(b"\xff not json")
    forge(directory)
    with pytest.raises(PoetryError, match="tokenizer.json"):
        load_model(directory)
    # Letters reordered: every id would decode to another letter.
    directory = copy()
    data = json.loads((directory / TOKENIZER).read_text(encoding="utf-8"))
    data["chars"] = data["chars"][::-1]
    (directory / TOKENIZER).write_text(json.dumps(data), encoding="utf-8")
    forge(directory)
    with pytest.raises(PoetryError, match="tokenizer.json was made for another alphabet"):
        load_model(directory)
    # A tokenizer with more tokens than the model has rows would index past the embedding.
    bigger = CharTokenizer(Controls(("hafez", "saadi", "attar"), ("ghazal",), (3, 4)).special_tokens())
    bigger.save(directory / TOKENIZER)
    forge(directory)
    refused(directory, str(directory / TOKENIZER), "tokens")


def test_the_cli_reports_a_damaged_model_in_one_line(copy, capsys):
    directory = copy()
    (directory / WEIGHTS).write_bytes((directory / WEIGHTS).read_bytes()[:-10])
    for command in (["generate", "--model", str(directory), "--seed", "1"],
                    ["evaluate", "--data", str(directory / CONFIG), "--model", str(directory)]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert str(directory / WEIGHTS) in err and "sha256" in err


def test_a_truncated_training_checkpoint_is_refused_by_name(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_training_state(path, {"model": {"w": torch.ones(1000)}, "step": 3, "history": [{"step": 3}]})
    assert load_training_state(path)["step"] == 3
    data = path.read_bytes()
    for damaged in (data[:len(data) // 2], data[:-40], data[:100], b"", b"not a checkpoint"):
        path.write_bytes(damaged)
        with pytest.raises(ModelLoadError, match=r"checkpoint\.pt is truncated or damaged") as info:
            load_training_state(path)
        assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_training_state(tmp_path / "missing.pt")


def test_a_checkpoint_that_holds_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "checkpoint.pt"
    torch.save({"step": 3, "extra": Payload()}, path)
    with pytest.raises(ModelLoadError, match="checkpoint.pt .*plain data"):
        load_training_state(path)
    assert not marker.exists()


def test_no_unsafe_deserialization_anywhere_in_the_package():
    """Every torch.load passes weights_only=True; no pickle.load(s), no numpy allow_pickle=True."""
    torch_loads = 0
    for source in PACKAGE.rglob("*.py"):
        tree = ast.parse(source.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = ast.unparse(node.func)
            keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
            where = f"{source.name}:{node.lineno}"
            if name == "torch.load":
                torch_loads += 1
                assert keywords.get("weights_only") == "True", f"{where}: torch.load without weights_only=True"
            assert name not in ("pickle.load", "pickle.loads", "torch.jit.load", "marshal.loads"), where
            assert keywords.get("allow_pickle") in (None, "False"), f"{where}: allow_pickle"
    assert torch_loads >= 1  # the checkpoint loader is seen, so the scan looks where it should
