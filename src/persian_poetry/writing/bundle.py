"""The poetry bundle: what writing a poem needs, loaded together.

A model directory (`gpt.checkpoint`) holds the network, its tokenizer and the metre names; beside
them, writing reads the control tokens the tokenizer carries and the poets' style prior
(`style.safetensors`, where built). `load_model` loads all of it; everything that writes, explains
or serves takes the `PoetryModel` it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from ..assets import DEFAULT_MODEL_DIR
from ..data.controls import Controls
from ..errors import ModelLoadError, PoetryError
from ..gpt.checkpoint import ModelDirectory, load_model_dir
from ..gpt.model import GPTConfig
from .style import StylePrior, load_style


@dataclass
class PoetryModel(ModelDirectory):
    """A loaded model: the network, its tokenizer, its metre names and the poets' style prior."""

    style: StylePrior | None = None  # the poets' token preferences (style.py), where built

    @cached_property
    def controls(self) -> Controls:
        """The poets, forms and metres the model was trained with (its tokenizer's special tokens)."""
        return Controls.from_special_tokens(self.tokenizer.special_tokens)

    @property
    def config(self) -> GPTConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device


def load_model(directory: str | Path | None = None, device: str | torch.device = "cpu",
               quantize: str | None = None) -> PoetryModel:
    """Load a model directory (default: the model shipped in the package) with its style prior;
    `quantize="int8"` quantizes its linear layers for the CPU (see `gpt.checkpoint.quantize_int8`)."""
    loaded = load_model_dir(directory if directory is not None else DEFAULT_MODEL_DIR, device, quantize)
    try:
        style = load_style(loaded.directory, loaded.tokenizer.vocab_size)
    except PoetryError as err:
        raise ModelLoadError(str(err)) from None
    return PoetryModel(loaded.model, loaded.tokenizer, loaded.metres, loaded.directory, style)
