"""Training survives `kill -9` at any moment.

A tiny training run (char tokenizer, 2 layers, 32 wide, dropout on so the RNG matters) is started
as a subprocess and SIGKILLed again and again: at random moments, and right while a checkpoint is
being written (the moment its temporary file appears). After every kill the last checkpoint must
load and its step may only have moved forward; `--resume` then carries on. The final weights must
equal, bit for bit, those of the same run left alone. The schedule is by steps (no time budget),
so nothing depends on the wall clock.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import ganjoor_record, hafez_ghazals

from persian_poetry.gpt.checkpoint import load_training_state, save_training_state
from persian_poetry.gpt.model import GPT, GPTConfig

MAX_STEPS = 400  # room for every kind of kill even when the startup kill lands late
TMP_GLOB = ".checkpoint.pt.*.tmp"


def write_corpus(path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i, hemistichs in enumerate(hafez_ghazals()[:60]):
            f.write(json.dumps(ganjoor_record(i + 1, "hafez" if i % 2 else "saadi", hemistichs),
                               ensure_ascii=False) + "\n")
    return path


def train_command(data: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "persian_poetry.cli", "train", "--data", str(data), "--out-dir", str(out),
            "--poets", "all", "--tokenizer", "char", "--n-layer", "2", "--n-head", "2", "--n-embd", "32",
            "--context-length", "32", "--batch-size", "4", "--dropout", "0.1", "--attention-dropout", "0.1",
            "--positional", "rotary",
            "--learning-rate", "3e-3", "--warmup-steps", "20", "--max-steps", str(MAX_STEPS),
            "--eval-interval", "25", "--eval-poems", "2",
            "--checkpoint-interval", "3", "--seed", "11", "--threads", "1", "--no-progress",
            "--cache-dir", str(out / "cache"), "--resume"]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def checkpoint_step(out: Path) -> int:
    """Step of the run's checkpoint (0 when there is none yet); it must load, model and all."""
    path = out / "checkpoint.pt"
    if not path.exists():
        return 0
    state = load_training_state(path)
    config = state["config"]
    model = GPT(GPTConfig(vocab_size=state["model"]["token_embedding.weight"].shape[0],
                          context_length=config["context_length"], n_layer=config["n_layer"],
                          n_head=config["n_head"], n_embd=config["n_embd"], dropout=config["dropout"],
                          attention_dropout=config["attention_dropout"]))
    model.load_state_dict(state["model"])
    assert 0 < state["step"] <= MAX_STEPS
    return state["step"]


def checkpoint_version(out: Path) -> tuple[int, int] | None:
    """Changes each time a new checkpoint is renamed into place."""
    try:
        stat = (out / "checkpoint.pt").stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def wait_for_new_checkpoint(proc: subprocess.Popen, out: Path, deadline: float) -> None:
    before = checkpoint_version(out)
    while proc.poll() is None and checkpoint_version(out) == before and time.monotonic() < deadline:
        time.sleep(0.002)


def kill(proc: subprocess.Popen, mode: str, out: Path, rng: random.Random, deadline: float) -> None:
    """SIGKILL the run: "startup" at a random moment from launch (imports, corpus caching, first
    steps); "between" at a random moment after it wrote a checkpoint (a step, an evaluation, a
    checkpoint, the final save); "write" the moment a checkpoint's temp file appears."""
    if mode == "startup":
        try:
            proc.wait(timeout=rng.uniform(0.5, 6.0))
        except subprocess.TimeoutExpired:
            pass
    elif mode == "between":
        wait_for_new_checkpoint(proc, out, deadline)
        time.sleep(rng.uniform(0.0, 0.4))
    else:
        wait_for_new_checkpoint(proc, out, deadline)
        stale = set(out.glob(TMP_GLOB))
        while proc.poll() is None and not set(out.glob(TMP_GLOB)) - stale and time.monotonic() < deadline:
            time.sleep(0.0002)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_dir / "model.safetensors")


def test_training_survives_sigkill_and_resumes_bit_for_bit(tmp_path):
    data = write_corpus(tmp_path / "poems.jsonl")
    rng = random.Random(20240609)

    # The run left alone, beside the one that is killed (timing does not matter to either).
    reference, log = tmp_path / "reference", tmp_path / "stderr.log"
    with open(tmp_path / "reference.log", "wb") as reference_log:
        reference_proc = subprocess.Popen(train_command(data, reference), stdout=subprocess.DEVNULL,
                                          stderr=reference_log, env=ENV)

    # The same run, killed again and again.
    out = tmp_path / "killed"
    steps, mid_write, modes = [0], 0, ["startup", "write", "between", "write", "between"]
    deadline = time.monotonic() + 240  # only against a hang; a kill loop takes ~1 min on a busy machine
    while modes:
        mode = modes.pop(0)
        with open(log, "wb") as stderr:
            proc = subprocess.Popen(train_command(data, out), stdout=subprocess.DEVNULL, stderr=stderr, env=ENV)
            kill(proc, mode, out, rng, deadline)
        assert proc.returncode in (0, -signal.SIGKILL), log.read_text(errors="replace")[-2000:]
        if proc.returncode == 0:
            break  # it finished before the kill
        left_temp_file = bool(list(out.glob(TMP_GLOB)))
        steps.append(checkpoint_step(out))  # the last checkpoint always loads
        assert steps[-1] >= steps[-2], f"step went back: {steps}"
        if mode == "write":
            if left_temp_file:
                mid_write += 1
            elif len(steps) < 16:
                modes.append("write")  # the write finished before the signal landed: try again
        if mode != "startup" and steps[-2] < MAX_STEPS:  # at MAX_STEPS only the final save is left to do
            assert steps[-1] > steps[-2], f"no progress before a {mode} kill: {steps}"
    assert mid_write >= 2, f"fewer than two kills landed while a checkpoint was written (steps {steps})"
    assert len(steps) >= 6 and steps[-1] < MAX_STEPS, f"the run ended before five kills: {steps}"
    print(f"checkpoint step after each kill: {steps[1:]}; {mid_write} kills landed mid-write")

    # Resume to the end, untouched.
    final = subprocess.run(train_command(data, out), capture_output=True, text=True, timeout=120, env=ENV)
    assert final.returncode == 0, final.stderr[-2000:]
    assert f"resumed from {out / 'checkpoint.pt'} at step {steps[-1]}" in final.stdout
    assert reference_proc.wait(timeout=120) == 0, (tmp_path / "reference.log").read_text(errors="replace")[-2000:]
    assert checkpoint_step(out) == MAX_STEPS
    assert not list(out.glob(TMP_GLOB)) and not list((out / "model").glob(".*.tmp")), "temp files left behind"

    expected, got = load_weights(reference / "model"), load_weights(out / "model")
    assert expected.keys() == got.keys()
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"weights differ after {len(steps) - 1} kills (steps {steps}): {different}"
    report = json.loads((out / "model" / "report.json").read_text(encoding="utf-8"))
    reference_report = json.loads((reference / "model" / "report.json").read_text(encoding="utf-8"))
    assert report["steps"] == MAX_STEPS and report["tokens_seen"] == reference_report["tokens_seen"]
    assert report["final_val"] == reference_report["final_val"]
    loss = [(h["step"], h["train_loss"], h["val_bits_per_char"]) for h in report["history"]]
    assert loss == [(h["step"], h["train_loss"], h["val_bits_per_char"]) for h in reference_report["history"]]


def test_resume_from_a_damaged_or_foreign_checkpoint_is_a_one_line_error(tmp_path, capsys):
    from persian_poetry.cli import main

    data = write_corpus(tmp_path / "poems.jsonl")
    out = tmp_path / "run"
    out.mkdir()
    command = train_command(data, out)[3:]  # from "train" on
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
