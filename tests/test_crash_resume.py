"""Training survives `kill -9` at any moment.

A tiny training run (char tokenizer, 2 layers, 32 wide, dropout on so the RNG matters) is started
as a subprocess and SIGKILLed again and again, each time at a chosen point: while the corpus cache
is written, in the middle of a training step, half way through writing a checkpoint, after a
checkpoint is written but before it is renamed into place, just after the rename, during an
evaluation, and while the finished model directory is written. The kills are made by the run
itself (`KILL_HOOK` wraps the function it is in at that point and sends SIGKILL to its own
process), so where each lands does not depend on the machine's speed or load. After every kill the
last checkpoint must load and stand at the step the kill point implies; `--resume` then carries
on. The final weights must equal, bit for bit, those of the same run left alone. The schedule is
by steps (no time budget), so nothing depends on the wall clock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ganjoor_record, hafez_ghazals

from persian_poetry.errors import ModelLoadError
from persian_poetry.gpt.checkpoint import load_training_state, save_training_state
from persian_poetry.gpt.model import GPT, GPTConfig

MAX_STEPS = 30
CHECKPOINT_INTERVAL, EVAL_INTERVAL = 3, 10
TMP_GLOB = ".checkpoint.pt.*.tmp"

# Run as `python -c KILL_HOOK train ...` with KILL_AT="point:n": the run SIGKILLs itself the n-th
# time it reaches `point` (counted from its own start).
KILL_HOOK = r"""
import io, os, signal, sys
from pathlib import Path

import numpy as np
import torch

import persian_poetry.gpt.train as train_module
from persian_poetry.cli import main

point, nth = os.environ["KILL_AT"].split(":")
nth, seen = int(nth), 0


def due():
    global seen
    seen += 1
    return seen == nth


def die():
    os.kill(os.getpid(), signal.SIGKILL)


if point == "cache":  # the n-th array of the corpus cache: half written, then the kill
    real_np_save = np.save

    def np_save(file, array, *args, **kwargs):
        real_np_save(file, array, *args, **kwargs)
        if due():
            os.truncate(file, os.path.getsize(file) // 2)
            die()

    np.save = np_save
elif point == "step":  # the n-th training step, after its backward pass, before the optimizer step
    real_clip = torch.nn.utils.clip_grad_norm_

    def clip(*args, **kwargs):
        if due():
            die()
        return real_clip(*args, **kwargs)

    torch.nn.utils.clip_grad_norm_ = clip
elif point == "write":  # the n-th checkpoint: half of its bytes written, then the kill
    real_torch_save = torch.save

    def torch_save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "optimizer" in obj and due():  # a training checkpoint, wherever it goes
            buffer = io.BytesIO()
            real_torch_save(obj, buffer, *args, **kwargs)
            with open(f, "wb") as out:
                out.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
                out.flush()
                os.fsync(out.fileno())
            die()
        return real_torch_save(obj, f, *args, **kwargs)

    torch.save = torch_save
elif point in ("rename", "renamed", "final"):  # the n-th rename of a checkpoint (before or after it),
    real_replace = os.replace                  # or of a file of the model directory (before it)

    def replace(src, dst, *args, **kwargs):
        dst_path = Path(dst)
        if point == "final":
            if dst_path.parent.name == "model" and due():
                die()
        elif dst_path.name == "checkpoint.pt" and due():
            if point == "rename":
                die()
            real_replace(src, dst, *args, **kwargs)
            die()
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
elif point == "eval":  # the n-th evaluation on the val split
    real_evaluate = train_module.evaluate_split

    def evaluate(*args, **kwargs):
        if due():
            die()
        return real_evaluate(*args, **kwargs)

    train_module.evaluate_split = evaluate
else:
    raise SystemExit(f"unknown kill point {point}")
sys.exit(main(sys.argv[1:]))
"""

# (kill point, the checkpoint step left after it). Checkpoints come every 3 steps, evaluations
# every 10, and each run resumes from the last checkpoint:
KILLS = [
    ("cache:2", 0),  # no checkpoint yet; the cache is left without its "done" mark
    ("step:7", 6),  # steps 1-6 done, checkpoints at 3 and 6
    ("write:2", 9),  # from 6: step 9 written, the checkpoint of step 12 cut in half
    ("rename:2", 12),  # from 9: step 12 in place; step 15 written whole, never renamed
    ("renamed:1", 15),  # from 12: step 15 renamed into place, then the kill
    ("eval:1", 18),  # from 15: checkpoint 18, then killed evaluating at step 20
    ("final:2", MAX_STEPS),  # from 18 to the end; killed writing the model directory's second file
]


def write_corpus(path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, hemistichs in enumerate(hafez_ghazals()[:60]):
            f.write(json.dumps(ganjoor_record(i + 1, "hafez" if i % 2 else "saadi", hemistichs),
                               ensure_ascii=False) + "\n")
    return path


def train_args(data: Path, out: Path) -> list[str]:
    return ["train", "--data", str(data), "--out-dir", str(out),
            "--poets", "all", "--tokenizer", "char", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
            "--context-length", "32", "--batch-size", "4", "--dropout", "0.1", "--attention-dropout", "0.1",
            "--positional", "rotary",
            "--learning-rate", "3e-3", "--warmup-steps", "20", "--max-steps", str(MAX_STEPS),
            "--eval-interval", str(EVAL_INTERVAL), "--eval-poems", "2",
            "--checkpoint-interval", str(CHECKPOINT_INTERVAL), "--seed", "11", "--threads", "1", "--no-progress",
            "--cache-dir", str(out / "cache"), "--resume"]


def train_command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "persian_poetry.cli", *train_args(data, out)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def checkpoint_step(path: Path) -> int:
    """Step of a checkpoint file (0 when there is none yet); it must load, model and all."""
    if not path.exists():
        return 0
    state = load_training_state(path)
    config = state["config"]
    model = GPT(GPTConfig(vocab_size=state["model"]["token_embedding.weight"].shape[0],
                          context_length=config["context_length"], n_layer=config["n_layer"],
                          n_head=config["n_head"], n_embd=config["n_embd"], dropout=config["dropout"],
                          attention_dropout=config["attention_dropout"], positional=config["positional"]))
    model.load_state_dict(state["model"])
    assert 0 < state["step"] <= MAX_STEPS
    return state["step"]


def load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def test_training_survives_sigkill_and_resumes_bit_for_bit(tmp_path):
    data = write_corpus(tmp_path / "poems.jsonl")

    # The run left alone, beside the one that is killed (timing does not matter to either).
    reference, log = tmp_path / "reference", tmp_path / "stderr.log"
    with open(tmp_path / "reference.log", "wb") as reference_log:
        reference_proc = subprocess.Popen(train_command(data, reference), stdout=subprocess.DEVNULL,
                                          stderr=reference_log, env=ENV)

    # The same run, killed at each point in turn.
    out = tmp_path / "killed"
    steps = []
    for kill_at, expected_step in KILLS:
        with open(log, "wb") as stderr:
            done = subprocess.run([sys.executable, "-c", KILL_HOOK, *train_args(data, out)], stdout=subprocess.DEVNULL,
                                  stderr=stderr, env={**ENV, "KILL_AT": kill_at}, timeout=300, check=False)
        assert done.returncode == -signal.SIGKILL, (kill_at, done.returncode, log.read_text(errors="replace")[-2000:])
        steps.append(checkpoint_step(out / "checkpoint.pt"))  # the last checkpoint always loads
        assert steps[-1] == expected_step, f"after the {kill_at} kill: checkpoint steps {steps}"
        temp_files = list(out.glob(TMP_GLOB))
        point = kill_at.split(":")[0]
        if point == "cache":
            assert not list(out.glob("cache/*/done")) and list(out.glob("cache/*/*.tmp.npy"))
        elif point == "write":
            # Killed mid-write: half a checkpoint in the temporary file, which does not load.
            assert len(temp_files) == 1 and 0 < temp_files[0].stat().st_size < (out / "checkpoint.pt").stat().st_size
            with pytest.raises(ModelLoadError, match="truncated or damaged"):
                load_training_state(temp_files[0])
        elif point == "rename":
            # Killed between the write and the rename: the next checkpoint whole in the temporary file.
            assert len(temp_files) == 1 and checkpoint_step(temp_files[0]) == expected_step + CHECKPOINT_INTERVAL
        elif point == "final":
            assert (out / "model" / "model.safetensors").exists() and not (out / "model" / "config.json").exists()
        else:
            assert not temp_files, kill_at
    print(f"checkpoint step after each kill: {steps}")

    # Resume to the end, untouched.
    final = subprocess.run(train_command(data, out), capture_output=True, text=True, timeout=300, env=ENV, check=False)
    assert final.returncode == 0, final.stderr[-2000:]
    assert f"resumed from {out / 'checkpoint.pt'} at step {MAX_STEPS}" in final.stdout
    assert reference_proc.wait(timeout=300) == 0, (tmp_path / "reference.log").read_text(errors="replace")[-2000:]
    assert checkpoint_step(out / "checkpoint.pt") == MAX_STEPS
    assert not list(out.glob(TMP_GLOB)) and not list((out / "model").glob(".*.tmp")), "temp files left behind"

    expected, got = load_weights(reference / "model"), load_weights(out / "model")
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"weights differ after {len(steps)} kills (steps {steps}): {different}"
    report = json.loads((out / "model" / "report.json").read_text(encoding="utf-8"))
    reference_report = json.loads((reference / "model" / "report.json").read_text(encoding="utf-8"))
    assert report["steps"] == MAX_STEPS and report["tokens_seen"] == reference_report["tokens_seen"]
    assert report["final_val"] == reference_report["final_val"]
    loss = [(h["step"], h["train_loss"], h["val_bits_per_char"]) for h in report["history"]]
    assert loss == [(h["step"], h["train_loss"], h["val_bits_per_char"]) for h in reference_report["history"]]
    assert [h[0] for h in loss] == [10, 20, 30, 30]  # every 10 steps, and the whole val split at the end


def test_resume_from_a_damaged_or_foreign_checkpoint_is_a_one_line_error(tmp_path, capsys):
    from persian_poetry.cli import main

    data = write_corpus(tmp_path / "poems.jsonl")
    out = tmp_path / "run"
    out.mkdir()
    command = train_args(data, out)
    for damaged in (b"PK\x03\x04 half a zip", b""):
        (out / "checkpoint.pt").write_bytes(damaged)
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "checkpoint.pt" in err and "truncated or damaged" in err, err
        assert (out / "checkpoint.pt").read_bytes() == damaged  # left as it was, nothing trained over it
        assert not (out / "model").exists()
    # A sound checkpoint of another model (4 layers, not 2) is not loaded into this one.
    save_training_state(out / "checkpoint.pt", {"model": GPT(GPTConfig(n_layer=4, n_embd=32, n_head=2)).state_dict(),
                                                "optimizer": {}, "step": 3, "elapsed": 0.0, "tokens_seen": 0,
                                                "history": [], "rng": {}})
    assert main(command) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit this run" in err and "checkpoint.pt" in err, err


def test_a_run_killed_during_its_final_save_finishes_the_same(tmp_path):
    """Killed after the last step's checkpoint but before the model directory was written: the
    resumed run trains no further and writes the same model and history (last loss included)."""
    from conftest import tiny_config

    from persian_poetry.gpt.train import train

    data = write_corpus(tmp_path / "poems.jsonl")
    config = dict(max_steps=6, eval_interval=3, checkpoint_interval=3, dropout=0.1, context_length=32)
    first = train(tiny_config(data, tmp_path / "run", **config), command_line=["test"])
    weights = load_weights(tmp_path / "run" / "model")
    for name in os.listdir(tmp_path / "run" / "model"):
        (tmp_path / "run" / "model" / name).unlink()
    again = train(tiny_config(data, tmp_path / "run", resume=True, **config), command_line=["test"])
    def losses(report):
        return [(h["step"], h["train_loss"], h["val_bits_per_char"]) for h in report["history"]]

    assert again["steps"] == 6 and losses(again) == losses(first)  # the last loss too, not NaN
    resumed = load_weights(tmp_path / "run" / "model")
    assert all(torch.equal(weights[name], resumed[name]) for name in weights)
