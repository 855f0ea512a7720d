"""The learned classifiers at inference time, in numpy: no torch to import (a second or more, and a
few hundred MB), so that `scan` and `classify_poet` start fast and run where torch is absent.

This module holds what inference and training share: the configuration, the text encoding and the
checked reading of a saved classifier. `classifier.py` holds the PyTorch network (`MetreClassifier`)
and its training; `Classifier` here computes the same function from the same safetensors weights:

    char embedding -> bidirectional GRU over each row's real characters -> mean and max pooling
    over those characters [+ the mean of the hashed word buckets' embeddings] -> linear -> softmax

The GRU follows PyTorch's definition (gates r, z, n stacked in that order in weight_ih_l0 and
weight_hh_l0, and in their *_reverse twins for the backward direction):

    r = σ(W_ir x + b_ir + W_hr h + b_hr)        z = σ(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))      h' = (1 − z) ⊙ n + z ⊙ h

from h = 0, and like PyTorch's packed sequences each direction reads only a row's real characters:
the backward one starts at the row's last character, not at the padding after it. Rows are
computed together, a loop over time steps only. tests/test_classifier_inference.py holds it to the
PyTorch module within 1e-5 on the shipped classifiers.
"""

from __future__ import annotations

import itertools
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from ..assets import METRE_CLASSIFIER_DIR
from ..errors import ModelLoadError
from ..files import sha256_of
from ..text import ALPHABET, normalize

CHARS = sorted(ALPHABET)
PAD, UNK = 0, 1
_STOI = {ch: i + 2 for i, ch in enumerate(CHARS)}
MAX_CHARS = 72


@dataclass
class ClassifierConfig:
    labels: list[int] | list[str]  # in output order: Ganjoor metre ids (task "metre") or poet slugs ("poet")
    embedding: int = 48
    hidden: int = 128
    max_chars: int = MAX_CHARS
    task: str = "metre"
    drop: str = ""  # characters ignored in the input (the poet task ignores vowel marks and punctuation)
    words: int = 0  # hash buckets of the bag of words and word pairs beside the GRU; 0: no bag


def clean_hemistichs(texts: list[str], drop: str = "") -> list[str]:
    """Normalized hemistichs less the characters in `drop` (single spaces kept)."""
    table = str.maketrans("", "", drop)
    return [" ".join(normalize(t).translate(table).split()) for t in texts]


def _padded(rows: list[list[int]]) -> np.ndarray:
    out = np.zeros((len(rows), max((len(r) for r in rows), default=0)), dtype=np.int64)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def encode_hemistichs(texts: list[str], max_chars: int = MAX_CHARS, drop: str = "") -> np.ndarray:
    """(N, T) int64 char ids of normalized hemistichs (less the characters in `drop`), right-padded
    with PAD; T = longest, capped at max_chars. A row without known characters is one UNK."""
    return _padded([[_STOI.get(ch, UNK) for ch in t][:max_chars] or [UNK] for t in clean_hemistichs(texts, drop)])


def encode_words(texts: list[str], buckets: int, drop: str = "") -> np.ndarray:
    """(N, W) int64 hash buckets (1..buckets; 0 pads) of each hemistich's words and adjacent word
    pairs. crc32, not Python's hash(), which changes from one process to the next."""
    rows = []
    for text in clean_hemistichs(texts, drop):
        words = text.split()
        features = words + [f"{a} {b}" for a, b in itertools.pairwise(words)]
        rows.append([_bucket(f, buckets) for f in features] or [PAD])
    return _padded(rows)


def encode_word_sequence(texts: list[str], buckets: int, drop: str = "") -> np.ndarray:
    """(N, W) int64 hash buckets (1..buckets; 0 pads) of each text's words, in their order."""
    return _padded([[_bucket(w, buckets) for w in text.split()] or [PAD] for text in clean_hemistichs(texts, drop)])


def _bucket(feature: str, buckets: int) -> int:
    return zlib.crc32(feature.encode()) % buckets + 1


def weight_shapes(config: ClassifierConfig) -> dict[str, tuple[int, ...]]:
    """The names and shapes of a classifier's weights (those of `MetreClassifier.state_dict()`)."""
    e, h = config.embedding, config.hidden
    shapes = {"embed.weight": (len(CHARS) + 2, e)}
    for suffix in ("l0", "l0_reverse"):
        shapes |= {f"rnn.weight_ih_{suffix}": (3 * h, e), f"rnn.weight_hh_{suffix}": (3 * h, h),
                   f"rnn.bias_ih_{suffix}": (3 * h,), f"rnn.bias_hh_{suffix}": (3 * h,)}
    if config.words:
        shapes["bag.weight"] = (config.words + 1, e)
    shapes |= {"head.weight": (len(config.labels), 4 * h + (e if config.words else 0)),
               "head.bias": (len(config.labels),)}
    return shapes


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # = 1 / (1 + exp(-x)), without overflow for large |x|


class Classifier:
    """A saved metre or poet classifier, evaluated in numpy (float32)."""

    def __init__(self, config: ClassifierConfig, weights: dict[str, np.ndarray]):
        expected = weight_shapes(config)
        found = {name: tuple(w.shape) for name, w in weights.items()}
        if found != expected:
            raise ModelLoadError(f"the classifier's weights {found} do not match its config {expected}")
        self.config = config
        self.weights = {name: np.ascontiguousarray(w, dtype=np.float32) for name, w in weights.items()}
        # Per GRU direction (forward, backward): W_ih and W_hh transposed, contiguous so that each product is one
        # plain GEMM, and the biases.
        self._directions = [(self._transposed(f"rnn.weight_ih_{d}"), self.weights[f"rnn.bias_ih_{d}"],
                             self._transposed(f"rnn.weight_hh_{d}"), self.weights[f"rnn.bias_hh_{d}"])
                            for d in ("l0", "l0_reverse")]

    def _transposed(self, name: str) -> np.ndarray:
        return np.ascontiguousarray(self.weights[name].T)

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(char ids (N, T), word buckets (N, W) or None without a bag of words) of these hemistichs."""
        texts = clean_hemistichs(texts, self.config.drop)
        ids = encode_hemistichs(texts, self.config.max_chars)
        return ids, encode_words(texts, self.config.words) if self.config.words else None

    def _gru(self, x: np.ndarray, lengths: np.ndarray, reverse: bool) -> np.ndarray:
        """(N, T, H) outputs of one GRU direction over (N, T, E) inputs; 0 past each row's length."""
        w_ih_t, b_ih, w_hh_t, b_hh = self._directions[reverse]
        n_rows, steps, width = x.shape
        hidden = self.config.hidden
        # The input's part of the gates at every step at once, as one 2-D product.
        gates_x = (x.reshape(-1, width) @ w_ih_t + b_ih).reshape(n_rows, steps, 3 * hidden)
        h = np.zeros((n_rows, hidden), dtype=np.float32)
        out = np.zeros((n_rows, steps, hidden), dtype=np.float32)
        for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
            gx, gh = gates_x[:, t], h @ w_hh_t + b_hh
            r = _sigmoid(gx[:, :hidden] + gh[:, :hidden])
            z = _sigmoid(gx[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
            n = np.tanh(gx[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
            live = (t < lengths)[:, None]
            # A row past its end keeps h: 0 for the backward direction until its last character.
            h = np.where(live, (1 - z) * n + z * h, h)
            out[:, t] = np.where(live, h, 0)
        return out

    def logits(self, ids: np.ndarray, words: np.ndarray | None = None) -> np.ndarray:
        """(N, T) char ids [and (N, W) word buckets] -> (N, labels) logits: `MetreClassifier.forward`."""
        w = self.weights
        mask = ids != PAD  # (N, T)
        lengths = mask.sum(1)
        x = w["embed.weight"][ids]  # (N, T, E)
        out = np.concatenate([self._gru(x, lengths, reverse=False), self._gru(x, lengths, reverse=True)],
                             axis=-1)  # (N, T, 2H)
        mean = out.sum(1) / np.maximum(lengths, 1)[:, None].astype(np.float32)  # out is 0 past each row's end
        peak = np.where(mask[..., None], out, np.float32(-1e4)).max(1)
        features = [mean, peak]
        if self.config.words:
            # EmbeddingBag(mode="mean", padding_idx=PAD): the mean over a row's real buckets, 0 for none.
            real = (words != PAD)[..., None]
            total = (w["bag.weight"][words] * real).sum(1)
            features.append(total / np.maximum(real.sum(1), 1).astype(np.float32))
        return np.concatenate(features, axis=-1) @ w["head.weight"].T + w["head.bias"]

    def probabilities(self, texts: list[str], batch_size: int = 512) -> np.ndarray:
        """(N, labels) float32 probabilities for hemistichs (labels in `config.labels` order)."""
        parts = []
        for i in range(0, len(texts), batch_size):
            logits = self.logits(*self.encode(texts[i:i + batch_size]))
            exp = np.exp(logits - logits.max(-1, keepdims=True))
            parts.append(exp / exp.sum(-1, keepdims=True))
        return np.concatenate(parts) if parts else np.zeros((0, len(self.config.labels)), dtype=np.float32)


def checked_classifier_files(directory: str | Path) -> tuple[ClassifierConfig, Path]:
    """(config, weights path) of a saved classifier, after checking that it was trained on this
    alphabet and that its weights are those its config.json records (sha256); else ModelLoadError."""
    directory = Path(directory)
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"cannot read classifier config in {directory}: {err}") from None
    if config.get("alphabet") != CHARS:
        raise ModelLoadError(f"{directory}: the classifier was trained on another alphabet")
    weights = directory / "model.safetensors"
    if not weights.exists() or sha256_of(weights) != config.get("weights_sha256"):
        raise ModelLoadError(f"{weights} is missing or does not match the sha256 recorded in config.json")
    return ClassifierConfig(**config["classifier"]), weights


def load_classifier(directory: str | Path | None = None) -> Classifier:
    """The classifier saved in `directory` (default: the shipped metre classifier), for inference."""
    config, weights = checked_classifier_files(directory if directory is not None else METRE_CLASSIFIER_DIR)
    return Classifier(config, load_file(weights))
