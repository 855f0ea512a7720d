"""Training: `TrainConfig` in, a model directory and a report out.

AdamW with warm-up and cosine decay (over steps, or over the time budget when that ends first),
gradient clipping, bf16 autocast on CUDA, validation bits/char at intervals, atomic checkpoints
with optimizer and RNG state for `--resume`, and DistributedDataParallel when started by
`torchrun` (gloo on CPU, NCCL on CUDA).

A run may be killed (`kill -9`) at any moment: the last checkpoint stays whole, and `--resume`
from it continues exactly (bit for bit on CPU) as the run would have, as long as the schedule is
by steps; a time budget makes the schedule depend on the clock. tests/test_crash_resume.py kills.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_model as load_weights
from tqdm import tqdm

from ..data.corpus import read_plain_text, resolve_poets
from ..data.dataset import (
    is_prepared_corpus,
    load_corpus_splits,
    read_prepared_corpus,
    same_tokenizer,
    split_plain_text,
)
from ..data.tokenizer import CharTokenizer, load_tokenizer
from ..errors import PoetryError
from ..files import sha256_of
from . import report as reporting
from .checkpoint import WEIGHTS, load_training_state, save_model_dir, save_training_state
from .config import TrainConfig
from .evaluate import evaluate_split
from .model import GPT, GPTConfig


def _phase(cfg: TrainConfig, decay_start: int | None) -> str:
    if cfg.schedule != "wsd":
        return cfg.schedule
    return "decay" if decay_start is not None else "stable"


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


SCHEDULES = ("cosine", "wsd")


def learning_rate(cfg: TrainConfig, step: int, elapsed: float, warm_from: int = 0,
                  decay_start: int | None = None) -> float:
    """The rate at `step`. `warm_from`: the step the warm-up began (later than 0 when a run resumed
    from model weights alone, with a fresh optimizer). `decay_start`: where a wsd run's decay leg began.

    wsd (warmup-stable-decay) keeps the peak rate as long as the run is extended, so a run can go on
    over many sessions, and anneals only in its last leg, by 1 - sqrt(progress) (Hägele et al. 2024)."""
    if step - warm_from < cfg.warmup_steps:
        return cfg.learning_rate * (step - warm_from + 1) / cfg.warmup_steps
    if cfg.schedule == "wsd":
        if decay_start is None or cfg.decay_steps <= 0:
            return cfg.learning_rate
        progress = min(1.0, (step - decay_start) / cfg.decay_steps)
        return cfg.min_learning_rate + (cfg.learning_rate - cfg.min_learning_rate) * (1 - math.sqrt(progress))
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    if cfg.time_budget:
        progress = max(progress, elapsed / cfg.time_budget)
    progress = min(1.0, progress)
    return cfg.min_learning_rate + 0.5 * (cfg.learning_rate - cfg.min_learning_rate) * (1 + math.cos(math.pi * progress))


def load_data(cfg: TrainConfig):
    """(tokenizer, splits, data sha256, metre names, poets used) for a config."""
    data = Path(cfg.data)
    if not data.exists():
        raise FileNotFoundError(f"training data not found: {data} (pass --data PATH)")
    if is_prepared_corpus(data):
        corpus = read_prepared_corpus(data)
        _check_prepared(corpus, cfg)
        return corpus.tokenizer, corpus.splits, corpus.data_hash, corpus.metres, corpus.poets or []
    if data.suffix == ".txt":
        tokenizer = CharTokenizer([]) if cfg.tokenizer == "char" else load_tokenizer(cfg.tokenizer)
        return tokenizer, split_plain_text(read_plain_text(data), tokenizer), sha256_of(data), {}, []
    poets = resolve_poets(cfg.poets)
    tokenizer = "char" if cfg.tokenizer == "char" else load_tokenizer(cfg.tokenizer)
    corpus = load_corpus_splits(data, tokenizer, poets, cfg.cache_dir, progress=cfg.progress)
    return corpus.tokenizer, corpus.splits, corpus.data_hash, corpus.metres, poets or []


def _rng_state(np_rng: np.random.Generator) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np_rng.bit_generator.state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict, np_rng: np.random.Generator) -> None:
    torch.set_rng_state(state["torch"])
    np_rng.bit_generator.state = state["numpy"]
    python = state.get("python")
    if python is not None:  # older checkpoints kept only the Mersenne Twister words
        random.setstate(tuple(python) if len(python) == 3 else (3, tuple(python), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _remove_stale_temp_files(out_dir: Path) -> None:
    """Temporary files of writes a crash cut short (`atomic_write` names them `.NAME.*.tmp`); the
    files they were to replace are intact, so these are only litter."""
    for stale in [*out_dir.glob(".checkpoint.pt.*.tmp"), *(out_dir / "model").glob(".*.tmp")]:
        stale.unlink(missing_ok=True)


def _resume(ckpt_path: Path, model: GPT, optimizer: torch.optim.Optimizer) -> dict:
    """Load `ckpt_path` into model and optimizer; the rest of its state is returned."""
    state = load_training_state(ckpt_path)
    missing = {"model", "optimizer", "step", "elapsed", "tokens_seen", "history", "rng"} - set(state)
    if missing:
        raise PoetryError(f"{ckpt_path} is not a training checkpoint: it has no {', '.join(sorted(missing))}")
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
    except (KeyError, RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PoetryError(f"{ckpt_path} does not fit this run (other model options or data?): {first_line}; "
                          "use the options it was trained with, or another --out-dir") from None
    return state


def _resume_from_weights(model_dir: Path, model: GPT) -> dict:
    """The weights of a finished (or exported) model directory, and what its report says of the run
    so far, for a run whose checkpoint is lost: the optimizer starts afresh and warms up again."""
    try:
        load_weights(model, model_dir / WEIGHTS, strict=True)
    except (SafetensorError, RuntimeError, OSError) as err:
        raise PoetryError(f"{model_dir / WEIGHTS} does not fit this run (other model options?): "
                          f"{' '.join(str(err).split())[:300]}") from None
    report_path = model_dir / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8")) if report_path.exists() else {}
    return {"step": report.get("steps", 0), "elapsed": report.get("train_seconds", 0.0),
            "tokens_seen": report.get("tokens_seen", 0), "history": report.get("history", []),
            "legs": report.get("legs", [])}


def _check_prepared(corpus, cfg: TrainConfig) -> None:
    """A prepared corpus brings its own poets and tokenizer: options that ask for others are errors."""
    poets = resolve_poets(cfg.poets)
    if (poets is None) != (corpus.poets is None) or sorted(poets or []) != sorted(corpus.poets or []):
        wanted = ("all" if corpus.poets is None else "classical" if corpus.poets == resolve_poets("classical")
                  else ",".join(corpus.poets))
        raise PoetryError(f"{cfg.data} holds other poets than --poets {cfg.poets!r}: pass --poets {wanted}")
    if cfg.tokenizer != "char" and not same_tokenizer(load_tokenizer(cfg.tokenizer), corpus.tokenizer):
        raise PoetryError(f"{cfg.data} was encoded with another tokenizer than {cfg.tokenizer}: leave out "
                          "--tokenizer (the prepared corpus holds its own)")


def train(cfg: TrainConfig, command_line: list[str] | None = None) -> dict:
    """Train a model as `cfg` says; returns the report (also written to cfg.out_dir)."""

    code_commit = reporting.git_commit()  # now: the checkout may change while a long run trains
    ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1
    rank, world = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])) if ddp else (0, 1)
    device = pick_device(cfg.device)
    if ddp:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    master = rank == 0
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(cfg.out_dir)
    ckpt_path = out_dir / "checkpoint.pt"
    if master:
        _remove_stale_temp_files(out_dir)

    if ddp and not master:
        dist.barrier()  # rank 0 encodes and caches the corpus first; the others then map it
    tokenizer, splits, data_hash, metre_names, poets = load_data(cfg)
    if ddp and master:
        dist.barrier()
    out_dir.mkdir(parents=True, exist_ok=True)  # only now: data that cannot be read leaves nothing behind
    train_split, val_split = splits["train"], splits["val"]
    model_cfg = GPTConfig(vocab_size=tokenizer.vocab_size, context_length=cfg.context_length, n_layer=cfg.n_layer,
                          n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout,
                          attention_dropout=cfg.attention_dropout, positional=cfg.positional, norm=cfg.norm,
                          mlp=cfg.mlp, qk_norm=cfg.qk_norm, tie_embeddings=not cfg.untied,
                          logit_softcap=cfg.logit_softcap)
    torch.manual_seed(cfg.seed)
    np_rng = np.random.default_rng(cfg.seed + rank)  # each rank its own batches
    model = GPT(model_cfg).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.learning_rate, betas=(0.9, 0.95))
    if cfg.schedule not in SCHEDULES:
        raise PoetryError(f"unknown schedule {cfg.schedule!r}; choose from: {', '.join(SCHEDULES)}")
    step, elapsed, tokens_seen, history, last_loss = 0, 0.0, 0, [], float("nan")
    legs: list[dict] = []  # one entry per invocation of `train`: each leg of a run extended by --resume
    warm_from, decay_start = 0, None
    if cfg.resume and ckpt_path.exists():
        state = _resume(ckpt_path, model, optimizer)
        step, elapsed, tokens_seen, history = state["step"], state["elapsed"], state["tokens_seen"], state["history"]
        last_loss = state.get("last_loss", last_loss)
        legs, warm_from, decay_start = state.get("legs", []), state.get("warm_from", 0), state.get("decay_start")
        _set_rng_state(state["rng"], np_rng)
        if ddp:
            np_rng = np.random.default_rng([cfg.seed + rank, step])
        if master:
            print(f"resumed from {ckpt_path} at step {step}")
    elif cfg.resume and (out_dir / "model" / WEIGHTS).exists():
        state = _resume_from_weights(out_dir / "model", model)
        step, elapsed, tokens_seen, history, legs = (state["step"], state["elapsed"], state["tokens_seen"],
                                                     state["history"], state["legs"])
        warm_from = step
        np_rng = np.random.default_rng([cfg.seed + rank, step])
        if master:
            print(f"no checkpoint in {out_dir}: resumed from the weights of {out_dir / 'model'} at step {step}, "
                  "with a fresh optimizer (warming up again)")
    if cfg.schedule == "wsd" and cfg.decay_steps > 0:
        decay_start = step if decay_start is None else decay_start
        end_of_decay = decay_start + cfg.decay_steps
    else:
        end_of_decay = None
    leg = {"leg": len(legs) + 1, "started": reporting.now(), "command_line": command_line or sys.argv,
           "git_commit": code_commit, "hardware": reporting.hardware(device, world), "start_step": step,
           "start_tokens": tokens_seen, "phase": _phase(cfg, decay_start)}
    legs.append(leg)
    train_model = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))

    def checkpoint():
        if master:
            leg.update(end_step=step, tokens=tokens_seen - leg["start_tokens"], wall_seconds=round(time.time() - leg_start, 1),
                       val_bits_per_char=history[-1]["val_bits_per_char"] if history else None)
            save_training_state(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "elapsed": elapsed, "tokens_seen": tokens_seen, "history": history, "last_loss": last_loss,
                "rng": _rng_state(np_rng), "config": asdict(cfg), "legs": legs, "warm_from": warm_from,
                "decay_start": decay_start})

    def validate(limit):
        result = evaluate_split(model, val_split, limit=limit)
        history.append({"step": step, "tokens": tokens_seen, "elapsed": round(elapsed, 1),
                        "train_loss": round(last_loss, 4), "val_bits_per_char": round(result.bits_per_char, 4)})
        return result

    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (master and cfg.progress), unit="step", mininterval=2,
               dynamic_ncols=True, desc="training")
    window_tokens, window_start = 0, time.time()
    run_start = time.time() - elapsed
    leg_start = time.time()
    interrupted = False
    try:
        while step < cfg.max_steps and (end_of_decay is None or step < end_of_decay):
            elapsed = time.time() - run_start
            stop = torch.tensor([elapsed, float(bool(cfg.time_budget) and elapsed >= cfg.time_budget)])
            if ddp:  # every rank follows rank 0's clock, so they stop and schedule alike
                dist.broadcast(stop, 0)
            if stop[1] > 0:
                break
            lr = learning_rate(cfg, step, float(stop[0]), warm_from, decay_start)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = train_split.sample_batch(np_rng, cfg.batch_size, cfg.context_length)
            x, y = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
            with autocast:
                _, loss, _ = train_model(x, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            step += 1
            last_loss = loss.item()
            tokens_seen += x.numel() * world
            window_tokens += x.numel() * world
            if step % 10 == 0:
                rate = window_tokens / max(1e-9, time.time() - window_start)
                bar.set_postfix(loss=f"{last_loss:.3f}", tok_s=f"{rate:,.0f}", lr=f"{lr:.1e}")
                window_tokens, window_start = 0, time.time()
            bar.update(1)
            if master and step % cfg.eval_interval == 0:
                result = validate(cfg.eval_poems)
                bar.write(f"step {step}: train loss {last_loss:.4f}, val {result.bits_per_char:.4f} bits/char "
                          f"({cfg.eval_poems} poems)")
            if step % cfg.checkpoint_interval == 0:
                elapsed = time.time() - run_start
                checkpoint()
    except KeyboardInterrupt:
        interrupted = True
        if master:
            bar.write("interrupted: writing a checkpoint; continue with --resume")
    bar.close()
    elapsed = time.time() - run_start
    checkpoint()
    report = None
    if master and not interrupted:
        final = validate(None)
        leg["val_bits_per_char"] = history[-1]["val_bits_per_char"]  # the leg ends on the whole val split's figure
        model_dir = out_dir / "model"
        report = reporting.build_report(cfg, command_line, model, final, history, tokens_seen, step, elapsed,
                                        data_hash, poets, device, world, commit=code_commit, legs=legs)
        save_model_dir(model_dir, model, tokenizer, metre_names, extra={"training": reporting.summary(report)})
        reporting.write_report(model_dir, report)
    if ddp:
        digest = reporting.weights_digest(model)
        digests = [None] * world
        dist.all_gather_object(digests, digest)
        if master and report is not None:
            report["rank_weight_sha256"] = digests
            reporting.write_report(out_dir / "model", report)
        dist.barrier()  # no rank tears down gloo while another still uses it
        dist.destroy_process_group()
    return report or {}
