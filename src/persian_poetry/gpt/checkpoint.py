"""Saving model directories, and training checkpoints (PyTorch).

`save_model_dir` writes what `directory.read_model_dir` reads and checks (see there for the
layout); `load_model_dir` builds the PyTorch `GPT` from it for training, evaluation and export.
A training checkpoint (`checkpoint.pt`) adds optimizer, step and RNG state. Both are written to
a temporary file first and renamed into place, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import pickle
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_model

from ..errors import ModelLoadError
from ..files import atomic_write, sha256_of
from .directory import CONFIG, TOKENIZER, WEIGHTS, ModelDirectory, config_digest, read_model_dir
from .model import GPT


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


def load_model_dir(directory: str | Path, device: str | torch.device = "cpu",
                   quantize: str | None = None) -> ModelDirectory:
    """Load a model directory with its network as the PyTorch `GPT` (for training, evaluation and
    export; writing uses `directory.load_inference_model`); `quantize="int8"` quantizes its linear
    layers for the CPU (see `quantize_int8`)."""
    files = read_model_dir(directory)
    try:
        model = GPT(files.config)
        _load_state(model, {name: torch.from_numpy(array) for name, array in files.weights.items()})
    except RuntimeError as err:
        reason = " ".join(str(err).split())  # torch's message spans lines; the CLI prints one
        raise ModelLoadError(f"cannot load weights from {files.directory / WEIGHTS}: {reason[:400]}") from None
    model.to(device).eval()
    if quantize not in (None, "none", "int8"):
        raise ModelLoadError(f"unknown quantization {quantize!r}; choose from: none, int8")
    if quantize == "int8":
        quantize_int8(model)
    return ModelDirectory(model, files.tokenizer, files.metres, files.directory)


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
