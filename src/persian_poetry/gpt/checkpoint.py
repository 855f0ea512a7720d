"""Model directories and training checkpoints.

A model directory holds everything `generate` and `evaluate` need, nothing pickled:

    model.safetensors   the weights (tied output weights stored once)
    config.json         GPTConfig, metre names, and the sha256 of the weights, the tokenizer and
                        the config itself: a change to any of them is refused when loading
    tokenizer.json      char or BPE tokenizer, with the control tokens as special tokens
    report.json/.md, loss.png   how it was trained (written by `train`)

A training checkpoint (`checkpoint.pt`) adds optimizer, step and RNG state. Both are written to
a temporary file first and renamed into place, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_model

from ..data.tokenizer import BPETokenizer, CharTokenizer, parse_tokenizer
from ..errors import ModelLoadError
from ..files import atomic_write, sha256_bytes, sha256_of
from .model import GPT, GPTConfig

WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"

@dataclass
class ModelDirectory:
    """What a model directory holds, loaded: the network, its tokenizer and the metre names."""

    model: GPT
    tokenizer: CharTokenizer | BPETokenizer
    metres: dict[int, str] = field(default_factory=dict)  # Ganjoor metre id -> its name
    directory: Path | None = None


def save_model_dir(directory: str | Path, model: GPT, tokenizer, metres: dict[int, str] | None = None,
                   extra: dict | None = None) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw = model.module if hasattr(model, "module") else model
    raw = getattr(raw, "_orig_mod", raw)
    atomic_write(directory / WEIGHTS, lambda tmp: save_model(raw, tmp))
    atomic_write(directory / TOKENIZER, tokenizer.save)
    config = {
        "format_version": 2,
        "model": raw.config.to_dict(),
        "metres": {str(k): v for k, v in sorted((metres or {}).items())},
        **(extra or {}),
    }
    config["sha256"] = {"config": config_digest(config), WEIGHTS: sha256_of(directory / WEIGHTS),
                        TOKENIZER: sha256_of(directory / TOKENIZER)}
    atomic_write(directory / CONFIG,
                 lambda tmp: Path(tmp).write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8"))
    return directory


def config_digest(config: dict) -> str:
    """sha256 of what a model config says of the network and its controls (its `model` and
    `metres`, as canonical JSON): a changed n_head or positional kind would load and write garbage."""
    body = {"model": config.get("model"), "metres": config.get("metres", {})}
    return sha256_bytes(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def load_model_dir(directory: str | Path, device: str | torch.device = "cpu",
                   quantize: str | None = None) -> ModelDirectory:
    """Load a model directory; `quantize="int8"` quantizes its linear layers for the CPU (see
    `quantize_int8`)."""
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
        model = GPT(gpt_config)
        _load_state(model, state)
    except (SafetensorError, RuntimeError, OSError) as err:
        reason = " ".join(str(err).split())  # torch's message spans lines; the CLI prints one
        raise ModelLoadError(f"cannot load weights from {directory / WEIGHTS}: {reason[:400]}") from None
    model.to(device).eval()
    if quantize not in (None, "none", "int8"):
        raise ModelLoadError(f"unknown quantization {quantize!r}; choose from: none, int8")
    if quantize == "int8":
        quantize_int8(model)
    return ModelDirectory(model, tokenizer, metres, directory)


MAX_CONTEXT = 1 << 16  # tokens; far beyond any model here, small enough that its tables fit


def _load_state(model: GPT, state: dict[str, torch.Tensor]) -> None:
    """Every tensor of the model from `state`; the tied embedding and output layer are one matrix,
    stored once under either name (safetensors keeps one)."""
    tied = ("token_embedding.weight", "lm_head.weight")
    if model.config.tie_embeddings:
        for name, other in (tied, tied[::-1]):
            if name not in state and other in state:
                state = {**state, name: state[other]}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"the weights do not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}")


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


def quantize_int8(model: GPT) -> GPT:
    """Dynamic int8 quantization of every nn.Linear, in place, for CPU inference.

    Batch-1 decoding of a small model reads all its weights for every token: it is bound by memory
    traffic, not arithmetic, and int8 weights are a quarter of the bytes (measured in BENCHMARKS.md:
    speed and the bits/char it costs). Weights are quantized once per tensor, activations on the fly.
    The output layer gets its own int8 copy; the token embedding it is tied to stays float."""
    if model.token_embedding.weight.device.type != "cpu":
        raise ModelLoadError("int8 quantization runs on the CPU only; load the model with device='cpu'")
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao
        warnings.simplefilter("ignore")
        torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    return model


def save_training_state(path: str | Path, state: dict) -> None:
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict:
    """A training checkpoint as plain data (tensors, numbers, strings, lists, dicts).

    weights_only: a checkpoint is data, never code. A file a copy cut short, or that holds
    anything but plain data, is refused with its name rather than with torch's traceback."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as err:
        reason = str(err).strip().split(". ")[0].splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise ModelLoadError(f"training checkpoint {path} is truncated or damaged, or holds more than plain data "
                             f"({reason}); resume from a good copy or start a new --out-dir") from None
    if not isinstance(state, dict):
        raise ModelLoadError(f"training checkpoint {path} is truncated or damaged: it holds no state dictionary")
    return state
