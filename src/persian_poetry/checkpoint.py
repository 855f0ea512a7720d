"""Model directories and training checkpoints.

A model directory holds everything `generate` and `evaluate` need, nothing pickled:

    model.safetensors   the weights (tied output weights stored once)
    config.json         GPTConfig, metre names, the weights' sha256
    tokenizer.json      char or BPE tokenizer, with the control tokens as special tokens
    report.json/.md, loss.png   how it was trained (written by `train`)

A training checkpoint (`checkpoint.pt`) adds optimizer, step and RNG state. Both are written to
a temporary file first and renamed into place, so a crash never leaves a half-written file.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .controls import Controls
from .dataset import file_sha256 as sha256_of
from .errors import PoetryError
from .model import GPT, GPTConfig
from .tokenizer import BPETokenizer, CharTokenizer, load_tokenizer

DEFAULT_MODEL_DIR = Path(__file__).parent / "default_model"
WEIGHTS, CONFIG, TOKENIZER = "model.safetensors", "config.json", "tokenizer.json"


class ModelLoadError(PoetryError):
    """A model directory that is missing, incomplete or damaged."""


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) then rename tmp_path onto path (same folder, so the rename is atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass
class PoetryModel:
    """A loaded model: the network, its tokenizer and the controls it was trained with."""

    model: GPT
    tokenizer: CharTokenizer | BPETokenizer
    controls: Controls
    metres: dict[int, str] = field(default_factory=dict)  # Ganjoor metre id -> its name
    directory: Path | None = None

    @property
    def config(self) -> GPTConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device


def save_model_dir(directory: str | Path, model: GPT, tokenizer, metres: dict[int, str] | None = None,
                   extra: dict | None = None) -> Path:
    from safetensors.torch import save_model

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    raw = model.module if hasattr(model, "module") else model
    raw = getattr(raw, "_orig_mod", raw)
    atomic_write(directory / WEIGHTS, lambda tmp: save_model(raw, tmp))
    atomic_write(directory / TOKENIZER, tokenizer.save)
    config = {
        "format_version": 1,
        "model": raw.config.to_dict(),
        "metres": {str(k): v for k, v in sorted((metres or {}).items())},
        "weights_sha256": sha256_of(directory / WEIGHTS),
        **(extra or {}),
    }
    atomic_write(directory / CONFIG,
                 lambda tmp: Path(tmp).write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8"))
    return directory


def load_model(directory: str | Path | None = None, device: str | torch.device = "cpu") -> PoetryModel:
    """Load a model directory (default: the model shipped in the package)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model as load_weights

    directory = Path(directory) if directory is not None else DEFAULT_MODEL_DIR
    if not directory.is_dir():
        raise ModelLoadError(f"model directory not found: {directory}")
    missing = [name for name in (WEIGHTS, CONFIG, TOKENIZER) if not (directory / name).exists()]
    if missing:
        raise ModelLoadError(f"model directory {directory} is incomplete: missing {', '.join(missing)}")
    try:
        config = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        gpt_config = GPTConfig.from_dict(config["model"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"{directory / CONFIG} is not a valid model config: {err}") from None
    expected = config.get("weights_sha256")
    if expected and sha256_of(directory / WEIGHTS) != expected:
        raise ModelLoadError(f"{directory / WEIGHTS} does not match the sha256 recorded in {CONFIG}: "
                             "the file is truncated or was modified")
    tokenizer = load_tokenizer(directory / TOKENIZER)
    model = GPT(gpt_config)
    try:
        load_weights(model, directory / WEIGHTS, strict=True, device=str(device))
    except (SafetensorError, RuntimeError, OSError) as err:
        raise ModelLoadError(f"cannot load weights from {directory / WEIGHTS}: {err}") from None
    model.to(device).eval()
    metres = {int(k): v for k, v in config.get("metres", {}).items()}
    return PoetryModel(model, tokenizer, Controls.from_special_tokens(tokenizer.special_tokens), metres, directory)


def save_training_state(path: str | Path, state: dict) -> None:
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_training_state(path: str | Path) -> dict:
    # weights_only: a checkpoint is data, never code.
    return torch.load(path, map_location="cpu", weights_only=True)
