"""The poetry bundle: what writing a poem needs, loaded together.

A model directory (`gpt.directory`) holds the network, its tokenizer and the metre names; beside
them, writing reads the control tokens the tokenizer carries and the poets' style prior
(`style.safetensors`, where built). `load_model` loads all of it; everything that writes, explains
or serves takes the `PoetryModel` it returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ..assets import DEFAULT_MODEL_DIR
from ..data.controls import Controls
from ..errors import ModelLoadError, PoetryError
from ..gpt.config import GPTConfig
from ..gpt.directory import ModelDirectory, load_inference_model
from .style import StylePrior, load_style


@dataclass
class PoetryModel(ModelDirectory):
    """A loaded model: the network (numpy, `gpt.inference.InferenceGPT`), its tokenizer, its metre
    names and the poets' style prior."""

    style: StylePrior | None = None  # the poets' token preferences (style.py), where built

    @cached_property
    def controls(self) -> Controls:
        """The poets, forms and metres the model was trained with (its tokenizer's special tokens)."""
        return Controls.from_special_tokens(self.tokenizer.special_tokens)

    @property
    def config(self) -> GPTConfig:
        return self.model.config


def load_model(directory: str | Path | None = None) -> PoetryModel:
    """Load a model directory (default: the model shipped in the package) with its style prior,
    for writing: the network runs on numpy, and nothing here imports PyTorch."""
    loaded = load_inference_model(directory if directory is not None else DEFAULT_MODEL_DIR)
    try:
        style = load_style(loaded.directory, loaded.tokenizer.vocab_size)
    except PoetryError as err:
        raise ModelLoadError(str(err)) from None
    return PoetryModel(loaded.model, loaded.tokenizer, loaded.metres, loaded.directory, style)
