import json
import math
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_config

from persian_poetry.cli import build_parser
from persian_poetry.gpt.checkpoint import load_training_state
from persian_poetry.gpt.config import TrainConfig, command_line_options, config_with_preset
from persian_poetry.gpt.train import learning_rate, train
from persian_poetry.writing.bundle import load_model


def test_trained_model_directory_and_report(tiny_model_dir):
    for name in ("model.safetensors", "config.json", "tokenizer.json", "report.json", "report.md", "loss.png"):
        assert (tiny_model_dir / name).exists(), name
    report = json.loads((tiny_model_dir / "report.json").read_text(encoding="utf-8"))
    assert report["seed"] == 7 and report["steps"] == 30
    assert report["tokens_seen"] == 30 * 8 * 64
    assert len(report["data"]["sha256"]) == 64
    assert report["hardware"]["torch"] == torch.__version__
    assert [h["step"] for h in report["history"]] == [10, 20, 30, 30]
    final = report["final_val"]
    assert final["poems"] > 0 and 1.0 < final["bits_per_char"] < 8.0
    # Training helps: the last validation beats the first.
    assert report["history"][-1]["val_bits_per_char"] < report["history"][0]["val_bits_per_char"]
    poetry = load_model(tiny_model_dir)
    assert "hafez" in poetry.controls.poets and 24 in poetry.controls.metres
    assert "رباعی" in poetry.metres[24]


def test_resume_continues_where_it_stopped(corpus_path, tmp_path):
    train(tiny_config(corpus_path, tmp_path, max_steps=10), command_line=["test"])
    state = load_training_state(tmp_path / "checkpoint.pt")
    assert state["step"] == 10 and set(state["rng"]) >= {"torch", "numpy"}
    report = train(tiny_config(corpus_path, tmp_path, max_steps=20, resume=True), command_line=["test"])
    assert report["steps"] == 20
    assert report["tokens_seen"] == 20 * 8 * 64
    assert load_training_state(tmp_path / "checkpoint.pt")["step"] == 20


def test_the_report_names_the_commit_the_run_started_from(corpus_path, tmp_path, monkeypatch):
    """A commit made while a long run trains must not be credited with the run."""
    from persian_poetry.gpt import report as reporting

    commits = iter(["started-here", "committed-later"])
    monkeypatch.setattr(reporting, "git_commit", lambda: next(commits))
    report = train(tiny_config(corpus_path, tmp_path, max_steps=2, eval_interval=2), command_line=["test"])
    assert report["git_commit"] == "started-here"
    assert json.loads((tmp_path / "model" / "report.json").read_text())["git_commit"] == "started-here"


def test_same_seed_same_weights(corpus_path, tmp_path):
    digests = []
    for run in ("a", "b"):
        train(tiny_config(corpus_path, tmp_path / run, max_steps=6, cache_dir=str(tmp_path / "cache")),
              command_line=["test"])
        digests.append((tmp_path / run / "model" / "config.json").read_text())
    weights = [json.loads(d)["sha256"]["model.safetensors"] for d in digests]
    assert weights[0] == weights[1]


TICK = 0.125  # seconds of the fake clock per training step (a power of two: exact in float32 too)


@pytest.fixture
def step_clock(monkeypatch):
    """train's clock made to advance TICK seconds a step (ticked where each step asks for its
    learning rate), whatever the machine's load: a time budget becomes a number of steps. Returns
    the (step, elapsed, rate) of every step."""
    from persian_poetry.gpt import train as train_module

    clock, rates = [1000.0], []

    def ticking(cfg, step, elapsed, *args, **kwargs):
        rate = learning_rate(cfg, step, elapsed, *args, **kwargs)
        rates.append((step, elapsed, rate))
        clock[0] += TICK
        return rate

    monkeypatch.setattr(train_module, "learning_rate", ticking)
    monkeypatch.setattr(train_module, "time", SimpleNamespace(time=lambda: clock[0]))
    return rates


def test_time_budget_stops_the_run_and_shapes_the_schedule(corpus_path, tmp_path, step_clock):
    report = train(tiny_config(corpus_path, tmp_path, max_steps=10_000, time_budget=2.5, eval_interval=10_000,
                               checkpoint_interval=10_000), command_line=["test"])
    # 2.5 s at 1/8 s a step: the run stops before step 20, far short of max_steps.
    assert report["steps"] == 20 and report["tokens_seen"] == 20 * 8 * 64
    assert [(step, elapsed) for step, elapsed, _ in step_clock] == [(k, k * TICK) for k in range(20)]
    # After the 5 warm-up steps the cosine runs over the budget's time, not over the 10,000 steps.
    for step, _, rate in step_clock:
        progress = step * TICK / 2.5
        expected = 3e-3 * (step + 1) / 5 if step < 5 else 3e-4 + 0.5 * (3e-3 - 3e-4) * (1 + math.cos(math.pi * progress))
        assert rate == pytest.approx(expected, rel=1e-9), step
    assert step_clock[10][2] == pytest.approx((3e-3 + 3e-4) / 2)  # half the budget: half way down
    cfg = TrainConfig(learning_rate=1.0, min_learning_rate=0.1, warmup_steps=10, max_steps=10**6, time_budget=100)
    assert learning_rate(cfg, 0, 0) == pytest.approx(0.1)
    assert learning_rate(cfg, 10, 0) == pytest.approx(1.0)
    assert learning_rate(cfg, 50, 50) == pytest.approx(0.55)
    assert learning_rate(cfg, 90, 100) == pytest.approx(0.1)


def test_presets_and_cli_options_name_real_config_fields():
    names = {f for f in TrainConfig.__dataclass_fields__}
    options = {name: kind for name, kind, _ in command_line_options()}
    assert set(options) == names - {"progress", "preset"}  # every field but two is an option
    assert (options["time_budget"], options["threads"], options["resume"]) == (float, int, bool)
    args = build_parser().parse_args(["train", "--n-layer", "3", "--time-budget", "60", "--resume"])
    assert (args.n_layer, args.time_budget, args.resume, args.dropout) == (3, 60.0, True, None)
    notebook = config_with_preset("notebook")
    assert (notebook.dropout, notebook.attention_dropout, notebook.positional) == (0.25, 0.0, "rotary")
    assert notebook.learning_rate == 4e-3
    assert config_with_preset("notebook", dropout=0.3).dropout == 0.3  # options override the preset
    with pytest.raises(ValueError, match="choose from"):
        config_with_preset("nope")


def test_notebook_style_plain_text_training(tmp_path):
    from conftest import hafez_ghazals

    text = "\n".join(h for g in hafez_ghazals()[:60] for h in g)
    path = tmp_path / "seed.txt"
    path.write_text(text, encoding="utf-8")
    report = train(tiny_config(path, tmp_path / "run", max_steps=10, eval_interval=5), command_line=["test"])
    final = report["final_val"]
    assert final["poems"] == 1
    # The val split is the last 10% of the characters, scored with sliding windows.
    assert abs(final["characters"] - len(text) // 10) < len(text) // 50


def test_ddp_two_processes_end_with_identical_weights(corpus_path, tmp_path):
    """torchrun with 2 gloo processes on CPU: DDP keeps the replicas equal."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "persian_poetry.cli", "train", "--data", str(corpus_path), "--out-dir", str(tmp_path),
               "--poets", "all", "--tokenizer", "char", "--n-layer", "1", "--n-head", "2", "--n-embd", "16",
               "--context-length", "32", "--batch-size", "4", "--max-steps", "8", "--eval-interval", "100",
               "--checkpoint-interval", "100", "--eval-poems", "2", "--cache-dir", str(tmp_path / "cache"),
               "--no-progress", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "model" / "report.json").read_text(encoding="utf-8"))
    digests = report["rank_weight_sha256"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert report["hardware"]["processes"] == 2
    assert report["tokens_seen"] == 8 * 4 * 32 * 2


def test_notebook_text_with_a_bpe_tokenizer_is_scored_per_character(tmp_path):
    """A BPE model on the notebook's text learns its merges from the train part only, and its
    val loss is divided by characters, not tokens, so char and BPE runs compare."""
    from conftest import hafez_ghazals

    from persian_poetry.data.corpus import read_plain_text
    from persian_poetry.data.dataset import split_plain_text
    from persian_poetry.data.tokenizer import train_tokenizer

    text = "\n".join(h for g in hafez_ghazals()[:60] for h in g) + "\nزززززز ققققققق"  # only in the val part
    path = tmp_path / "seed.txt"
    path.write_text(text, encoding="utf-8")
    tokenizer = train_tokenizer(path, "bpe", 400, progress=False)
    assert all("زززز" not in tokenizer.id_to_token(i) for i in range(tokenizer.vocab_size))
    normalized = read_plain_text(path)
    splits = split_plain_text(normalized, tokenizer)
    val_chars = len(normalized) - int(len(normalized) * 0.9)
    assert splits["val"].n_chars == val_chars and len(splits["val"].tokens) < val_chars
    tokenizer.save(tmp_path / "tok.json")
    config = tiny_config(path, tmp_path / "run", tokenizer=str(tmp_path / "tok.json"), max_steps=4, eval_interval=100)
    report = train(config, command_line=["test"])
    assert report["final_val"]["characters"] == val_chars


def test_wsd_schedule_holds_the_peak_until_the_decay_leg():
    cfg = TrainConfig(schedule="wsd", learning_rate=1.0, min_learning_rate=0.1, warmup_steps=10, decay_steps=100)
    assert learning_rate(cfg, 0, 0) == pytest.approx(0.1)  # warm-up
    assert learning_rate(cfg, 5000, 10**6) == pytest.approx(1.0)  # stable: neither steps nor time decay it
    assert learning_rate(cfg, 5000, 0, decay_start=5000) == pytest.approx(1.0)  # decay leg: 1 - sqrt(progress)
    assert learning_rate(cfg, 5025, 0, decay_start=5000) == pytest.approx(0.1 + 0.9 * 0.5)
    assert learning_rate(cfg, 5100, 0, decay_start=5000) == pytest.approx(0.1)
    assert learning_rate(cfg, 700, 0, warm_from=695) == pytest.approx(0.6)  # warming up again after step 695


def test_a_wsd_run_is_extended_leg_by_leg_then_decayed(corpus_path, tmp_path, step_clock):
    wsd = dict(schedule="wsd", max_steps=10**6, eval_interval=5, checkpoint_interval=5)
    train(tiny_config(corpus_path, tmp_path, **wsd, time_budget=1.0), command_line=["leg 1"])
    first = load_training_state(tmp_path / "checkpoint.pt")
    assert first["step"] == 8  # 1 s of the step clock
    assert first["decay_start"] is None and [leg["phase"] for leg in first["legs"]] == ["stable"]
    assert [rate for step, _, rate in step_clock if step >= 5] == [3e-3] * 3  # stable: the peak, time or not
    report = train(tiny_config(corpus_path, tmp_path, **wsd, resume=True, decay_steps=7), command_line=["leg 2"])
    assert report["steps"] == first["step"] + 7  # the decay leg begins where the run stood
    legs = report["legs"]
    assert [(leg["leg"], leg["phase"], leg["command_line"]) for leg in legs] == [(1, "stable", ["leg 1"]),
                                                                                (2, "decay", ["leg 2"])]
    assert legs[1]["start_step"] == legs[0]["end_step"] == first["step"] and legs[1]["end_step"] == report["steps"]
    assert legs[1]["tokens"] == 7 * 8 * 64 and legs[1]["val_bits_per_char"] == report["history"][-1]["val_bits_per_char"]
    assert "| 2 | decay |" in (tmp_path / "model" / "report.md").read_text()


def test_resume_from_model_weights_alone_when_the_checkpoint_is_lost(corpus_path, tmp_path):
    train(tiny_config(corpus_path, tmp_path, max_steps=10), command_line=["test"])
    (tmp_path / "checkpoint.pt").unlink()
    report = train(tiny_config(corpus_path, tmp_path, max_steps=14, resume=True, warmup_steps=3),
                   command_line=["test"])
    assert report["steps"] == 14 and report["tokens_seen"] == 14 * 8 * 64  # counted on from the report
    assert load_training_state(tmp_path / "checkpoint.pt")["warm_from"] == 10
    assert [(leg["start_step"], leg["end_step"]) for leg in report["legs"]] == [(0, 10), (10, 14)]  # from the report


def test_a_prepared_folder_trains_like_its_corpus_without_the_corpus(corpus_path, tmp_path, capsys):
    """prepare-data's folder is all train needs: the same weights as from the corpus file, with the file gone."""
    import shutil

    from persian_poetry.cli import main

    corpus = tmp_path / "poems.jsonl.gz"
    shutil.copy(corpus_path, corpus)
    folder = tmp_path / "prepared"
    assert main(["prepare-data", "--data", str(corpus), "--tokenizer", "char", "--poets", "all", "--out", str(folder),
                 "--no-progress"]) == 0
    assert "train" in capsys.readouterr().out
    from_file = train(tiny_config(corpus, tmp_path / "a", max_steps=4, eval_interval=4), command_line=["test"])
    corpus.unlink()
    from_folder = train(tiny_config(folder, tmp_path / "b", max_steps=4, eval_interval=4), command_line=["test"])
    assert from_folder["data"]["sha256"] == from_file["data"]["sha256"]
    weights = [json.loads((tmp_path / run / "model" / "config.json").read_text())["sha256"]["model.safetensors"]
               for run in ("a", "b")]
    assert weights[0] == weights[1]
    assert from_folder["final_val"] == from_file["final_val"]


def test_a_prepared_folder_refuses_other_poets_or_tokenizer(corpus_path, tmp_path):
    from persian_poetry.data.dataset import prepare_corpus
    from persian_poetry.data.tokenizer import CharTokenizer
    from persian_poetry.errors import PoetryError

    folder = tmp_path / "prepared"
    corpus = prepare_corpus(corpus_path, "char", ["hafez"], folder, progress=False)
    assert corpus.poets == ["hafez"] and corpus.splits["train"].n_poems > 0
    with pytest.raises(PoetryError, match="--poets hafez"):
        train(tiny_config(folder, tmp_path / "run", poets="all"), command_line=["test"])
    other = CharTokenizer(corpus.tokenizer.special_tokens + ["<|poet:nobody|>"])
    other.save(tmp_path / "other.json")
    with pytest.raises(PoetryError, match="another tokenizer"):
        train(tiny_config(folder, tmp_path / "run", poets="hafez", tokenizer=str(tmp_path / "other.json")),
              command_line=["test"])
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_a_copy_without_git_names_its_commit_from_the_environment(monkeypatch):
    from persian_poetry.gpt import report as reporting

    monkeypatch.setenv("PERSIAN_POETRY_COMMIT", "abc1234")
    monkeypatch.setattr(reporting.subprocess, "run", lambda *a, **k: SimpleNamespace(stdout=""))  # no repository
    assert reporting.git_commit() == "abc1234"
    monkeypatch.setattr(reporting.subprocess, "run", lambda *a, **k: SimpleNamespace(stdout="f00d\n"))
    assert reporting.git_commit() == "f00d-dirty"  # a real checkout wins over the variable
    monkeypatch.delenv("PERSIAN_POETRY_COMMIT")
    monkeypatch.setattr(reporting.subprocess, "run", lambda *a, **k: SimpleNamespace(stdout=""))
    assert reporting.git_commit() is None
