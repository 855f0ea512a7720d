"""Model directories, read and checked, without PyTorch.

A model directory holds everything `generate` and `evaluate` need, nothing pickled:

    model.safetensors   the weights (tied output weights stored once)
    config.json         GPTConfig, metre names, and the sha256 of the weights, the tokenizer and
                        the config itself: a change to any of them is refused when loading
    tokenizer.json      char or BPE tokenizer, with the control tokens as special tokens
    report.json/.md, loss.png   how it was trained (written by `train`)

`read_model_dir` checks a directory and returns its parts as plain arrays; `load_inference_model`
builds the numpy network that writing runs on (`inference.py`). The PyTorch model that training
and evaluation use is built from the same reading (`checkpoint.load_model_dir`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors

from ..data.tokenizer import BPETokenizer, CharTokenizer, parse_tokenizer
from ..errors import ModelLoadError
from ..files import sha256_bytes
from .config import GPTConfig
from .inference import InferenceGPT

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"


@dataclass
class ModelDirectory:
    """What a model directory holds, loaded: the network, its tokenizer and the metre names."""

    model: Any  # a gpt.inference.InferenceGPT for writing, a gpt.model.GPT for training and evaluation
    tokenizer: CharTokenizer | BPETokenizer
    metres: dict[int, str] = field(default_factory=dict)  # Ganjoor metre id -> its name
    directory: Path | None = None


@dataclass
class ModelFiles:
    """A model directory's contents, checked: the config, the weights as arrays, the tokenizer and the metre names."""

    config: GPTConfig
    weights: dict[str, np.ndarray]
    tokenizer: CharTokenizer | BPETokenizer
    metres: dict[int, str]
    directory: Path


def config_digest(config: dict) -> str:
    """sha256 of what a model config says of the network and its controls (its `model` and
    `metres`, as canonical JSON): a changed n_head or positional kind would load and write garbage."""
    body = {"model": config.get("model"), "metres": config.get("metres", {})}
    return sha256_bytes(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def read_model_dir(directory: str | Path) -> ModelFiles:
    """Read and check a model directory: every file present, the config valid, each file matching
    the sha256 the config records, the weights' shapes matching the config (ModelLoadError, one
    line naming the file, otherwise)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ModelLoadError(f"model directory not found: {directory}")
    missing = [name for name in (WEIGHTS, CONFIG, TOKENIZER) if not (directory / name).exists()]
    if missing:
        raise ModelLoadError(f"model directory {directory} is incomplete: missing {', '.join(missing)}")
    try:
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        gpt_config = GPTConfig.from_dict(config["model"])
        metres = {int(k): str(v) for k, v in config.get("metres", {}).items()}
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError,
            ZeroDivisionError) as err:
        raise ModelLoadError(f"{directory / CONFIG} is not a valid model config "
                             f"({type(err).__name__}: {err})") from None
    recorded = config.get("sha256")
    if not (isinstance(recorded, dict) and all(isinstance(recorded.get(k), str) for k in ("config", WEIGHTS, TOKENIZER))):
        raise ModelLoadError(f"{directory / CONFIG} records no sha256 of the config, {WEIGHTS} and {TOKENIZER}, so "
                             "they cannot be checked (a directory from an older version: save it again)")
    if config_digest(config) != recorded["config"]:
        raise ModelLoadError(f"{directory / CONFIG} does not match the sha256 it records: its model or metres "
                             "were changed after it was saved")
    # Each file is read once: what is checked is what is loaded.
    weights, tokenizer_file = (directory / WEIGHTS).read_bytes(), (directory / TOKENIZER).read_bytes()
    for name, content in ((WEIGHTS, weights), (TOKENIZER, tokenizer_file)):
        if sha256_bytes(content) != recorded[name]:
            raise ModelLoadError(f"{directory / name} does not match the sha256 recorded in {CONFIG}: "
                                 "the file is truncated or was modified")
    tokenizer = parse_tokenizer(tokenizer_file, directory / TOKENIZER)
    try:
        state = load_safetensors(weights)
        _check_sizes(gpt_config, {name: list(t.shape) for name, t in state.items()}, directory)
        if tokenizer.vocab_size > gpt_config.vocab_size:  # its ids would index past the embedding
            raise ModelLoadError(f"{directory / TOKENIZER} has {tokenizer.vocab_size} tokens, more than the "
                                 f"model's {gpt_config.vocab_size}: it belongs to another model")
    except SafetensorError as err:
        reason = " ".join(str(err).split())[:400]
        raise ModelLoadError(f"cannot load weights from {directory / WEIGHTS}: {reason}") from None
    return ModelFiles(gpt_config, state, tokenizer, metres, directory)


def load_inference_model(directory: str | Path) -> ModelDirectory:
    """A model directory with its network as the numpy `InferenceGPT` (no PyTorch)."""
    files = read_model_dir(directory)
    try:
        model = InferenceGPT(files.config, files.weights)
    except KeyError as err:
        raise ModelLoadError(f"cannot load weights from {files.directory / WEIGHTS}: {err.args[0]}") from None
    return ModelDirectory(model, files.tokenizer, files.metres, files.directory)


MAX_CONTEXT = 1 << 16  # tokens; far beyond any model here, small enough that its tables fit


def _check_sizes(config: GPTConfig, shapes: dict[str, list[int]], directory: Path) -> None:
    """Before a model of the config's sizes is built (a billion layers would never finish), they
    must agree with the shapes of the weights (a config whose hash was forged too gets this far)."""
    where = directory / CONFIG
    for name in ("vocab_size", "context_length", "n_layer", "n_head", "n_embd"):
        value = getattr(config, name)
        if type(value) is not int or value < 1:
            raise ModelLoadError(f"{where}: {name} must be a positive integer, not {value!r}")
    if not (config.n_head <= config.n_embd and config.context_length <= MAX_CONTEXT
            and all(isinstance(rate, (int, float)) and 0 <= rate < 1
                    for rate in (config.dropout, config.attention_dropout))):
        raise ModelLoadError(f"{where}: impossible sizes n_head {config.n_head}, n_embd {config.n_embd}, "
                             f"context_length {config.context_length} (at most {MAX_CONTEXT}), "
                             f"dropout {config.dropout}, attention_dropout {config.attention_dropout}")
    embedding = shapes.get("lm_head.weight") or shapes.get("token_embedding.weight") or [None, None]
    found = {"vocab_size": embedding[0], "n_embd": embedding[-1],
             "n_layer": len({name.split(".")[1] for name in shapes if name.startswith("blocks.")})}
    if config.positional == "learned":
        found["context_length"] = shapes.get("position_embedding.weight", [None])[0]
    for name, value in found.items():
        if getattr(config, name) != value:
            raise ModelLoadError(f"{where} says {name} {getattr(config, name)} but {directory / WEIGHTS} holds {value}")
