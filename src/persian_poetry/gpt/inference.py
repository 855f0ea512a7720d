"""The GPT for writing: the same network as `model.GPT`, run with numpy alone.

Writing a poem needs only the forward pass, token by token with a KV cache, and PyTorch costs
about three seconds and 110 MB to import before the first token. This module reads the same
weights (a dict of arrays, as safetensors stores them) and computes the same numbers: a test
holds its logits to the PyTorch model's within 1e-4 for every architecture option (BENCHMARKS.md
compares its speed with the torch engine and with ONNX Runtime).

The matrices are kept transposed, (in, out) and contiguous: a decoding step multiplies one row
by each of them, and BLAS reads them fastest in that layout; they lie one after another in one
buffer (`_Arena`), which Linux backs with huge pages. Training stays in PyTorch
(`model.py`); nothing here imports it.

Shapes in comments: B batch, T time (tokens), C channels (n_embd), H heads, D head size.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager
from functools import cache

import numpy as np
from threadpoolctl import ThreadpoolController

from .config import GPTConfig
from .positions import rotary_tables, sinusoidal_table

NORM_EPS = 1e-5  # nn.LayerNorm's and nn.RMSNorm's (as model.py builds them) and the QK-norm's


@cache
def _blas() -> ThreadpoolController:
    return ThreadpoolController()


def one_blas_thread() -> AbstractContextManager:
    """A context in which BLAS (numpy's matrix products) runs on one thread.

    A decoding step multiplies one row by each weight matrix: too little work to share out, and
    threads that wait for each other lose most when the machine is busy (a Hafez ghazal on our
    2-core machine with a training run beside it: 2.35 s on one thread, 5.33 s on two). The
    limit is process-wide while it lasts; called without `with`, it stays (a server that decodes
    on several threads sets it so, once, in `serve.app`)."""
    return _blas().limit(limits=1, user_api="blas")


class KVCache:
    """Keys and values of every layer for the tokens seen so far: a (B, H, T_max, D) array per layer each.

    `length` is how many are stored; a decoder steps back by lowering it (what lies past it is
    overwritten by the next tokens)."""

    def __init__(self, config: GPTConfig, batch_size: int):
        shape = (batch_size, config.n_head, config.context_length, config.head_dim)
        self.k = [np.zeros(shape, dtype=np.float32) for _ in range(config.n_layer)]
        self.v = [np.zeros(shape, dtype=np.float32) for _ in range(config.n_layer)]
        self.length = 0

    def append(self, layer: int, k: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Store this step's (B, H, T, D) keys/values for `layer`; return all keys/values so far."""
        t0, t1 = self.length, self.length + k.shape[2]
        self.k[layer][:, :, t0:t1] = k
        self.v[layer][:, :, t0:t1] = v
        return self.k[layer][:, :, :t1], self.v[layer][:, :, :t1]


def _erf(x: np.ndarray) -> np.ndarray:
    """erf to within 1.5e-7 (Abramowitz and Stegun 7.1.26): numpy has none, and GELU needs it."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def _activation(kind: str, h: np.ndarray) -> np.ndarray:
    """The feed-forward's non-linearity, as model._activation."""
    if kind == "swiglu":
        gate, value = np.split(h, 2, axis=-1)
        return gate / (1.0 + np.exp(-gate)) * value
    if kind == "relu2":
        return np.square(np.maximum(h, 0.0))
    return (0.5 * h * (1.0 + _erf(h * (1.0 / math.sqrt(2.0))))).astype(np.float32)


def _mean_last(x: np.ndarray) -> np.ndarray:
    # sum * 1/n rather than np.mean: the same number, without np.mean's Python-level overhead,
    # which at 13 norms a decoding step was a tenth of the step
    return x.sum(axis=-1, keepdims=True) * np.float32(1.0 / x.shape[-1])


def _rms(x: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    y = x / np.sqrt(_mean_last(np.square(x)) + NORM_EPS)
    return y * weight if weight is not None else y


def _softmax(scores: np.ndarray) -> np.ndarray:
    e = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x (..., T, D) turned by the angles of its T positions (cos, sin: (T, D/2)), as model.apply_rotary."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate([x1 * cos + x2 * sin, x2 * cos - x1 * sin], axis=-1)


class _Norm:
    """LayerNorm or RMSNorm with the weights of one of model.py's norms."""

    def __init__(self, kind: str, weights: dict[str, np.ndarray], name: str):
        self.rms = kind == "rmsnorm"
        self.weight = weights[f"{name}.weight"]
        self.bias = weights.get(f"{name}.bias")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.rms:
            return _rms(x, self.weight)
        centred = x - _mean_last(x)
        y = centred / np.sqrt(_mean_last(np.square(centred)) + NORM_EPS) * self.weight
        return y + self.bias if self.bias is not None else y


class _Arena:
    """One allocation for all the (in, out) matrices, starting at a 2 MiB boundary.

    numpy asks Linux for huge pages (2 MiB) for arrays of 4 MiB or more, and a decoding step reads
    every matrix once: in 4 KiB pages the 23 MB of the shipped model are some 5,600 pages, each a
    page fault when copied in and a TLB miss at every step; in huge pages a dozen."""

    HUGE_PAGE = 2 << 20

    def __init__(self, sizes: list[int]):
        pad = self.HUGE_PAGE // 4
        self._buffer = np.empty(sum(sizes) + pad, dtype=np.float32)
        self._used = (-self._buffer.ctypes.data % self.HUGE_PAGE) // 4

    def transposed(self, matrix: np.ndarray) -> np.ndarray:
        rows, cols = matrix.shape
        out = self._buffer[self._used:self._used + matrix.size].reshape(cols, rows)
        self._used += matrix.size
        np.copyto(out, matrix.T)
        return out


class _Linear:
    """y = x W^T + b from a contiguous (in, out) copy of W, written into `arena`."""

    def __init__(self, weights: dict[str, np.ndarray], name: str, arena: _Arena):
        self.weight_t = arena.transposed(weights[f"{name}.weight"])
        self.bias = weights.get(f"{name}.bias")

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = x @ self.weight_t
        return y + self.bias if self.bias is not None else y


class _Block:
    def __init__(self, config: GPTConfig, weights: dict[str, np.ndarray], i: int, arena: _Arena):
        prefix = f"blocks.{i}"
        self.ln1 = _Norm(config.norm, weights, f"{prefix}.ln1")
        self.ln2 = _Norm(config.norm, weights, f"{prefix}.ln2")
        self.qkv = _Linear(weights, f"{prefix}.attn.qkv", arena)
        self.proj = _Linear(weights, f"{prefix}.attn.proj", arena)
        self.up = _Linear(weights, f"{prefix}.ff.up", arena)
        self.down = _Linear(weights, f"{prefix}.ff.down", arena)


class InferenceGPT:
    """`model.GPT`'s forward pass in numpy, from its weights (names as in its state dict; a tied
    output layer may be stored under either of its two names)."""

    def __init__(self, config: GPTConfig, weights: dict[str, np.ndarray]):
        self.config = config
        weights = {name: np.asarray(array, dtype=np.float32) for name, array in weights.items()}
        tied = ("token_embedding.weight", "lm_head.weight")
        for name, other in (tied, tied[::-1]):
            if name not in weights and other in weights and config.tie_embeddings:
                weights[name] = weights[other]
        expected = self.weight_names()
        missing = [name for name in expected if name not in weights]
        unexpected = sorted(set(weights) - set(expected))
        if missing or unexpected:  # as strictly as PyTorch's load_state_dict
            raise KeyError(f"the weights do not fit the config: missing {missing[:5]}, unexpected {unexpected[:5]}")
        self.weights = weights
        self.token_embedding = weights["token_embedding.weight"]
        self.positions: np.ndarray | None = None  # added to the embeddings (sinusoidal or learned)
        self.rotary: tuple[np.ndarray, np.ndarray] | None = None
        if config.positional == "learned":
            self.positions = weights["position_embedding.weight"]
        elif config.positional == "rotary":
            self.rotary = rotary_tables(config.context_length, config.head_dim)
        else:  # scaled as model.GPT scales it (see its position_scale)
            scale = np.float32(1.0 / math.sqrt(config.n_embd))
            self.positions = sinusoidal_table(config.context_length, config.n_embd) * scale
        arena = _Arena([weights[f"{name}.weight"].size for name in self.linear_names()])
        self.blocks = [_Block(config, weights, i, arena) for i in range(config.n_layer)]
        self.ln_f = _Norm(config.norm, weights, "ln_f")
        self.lm_head = _Linear(weights, "lm_head", arena)

    def weight_names(self) -> list[str]:
        """The names of the arrays this config reads, as model.GPT's state dict has them."""
        config = self.config
        names = ["token_embedding.weight", "lm_head.weight", "ln_f.weight"]
        if config.positional == "learned":
            names.append("position_embedding.weight")
        norms = ["ln_f"] + [f"blocks.{i}.{norm}" for i in range(config.n_layer) for norm in ("ln1", "ln2")]
        linears = self.linear_names()[:-1]  # the output layer's weight is named above, and has no bias
        names += [f"{name}.weight" for name in norms[1:] + linears]
        if config.bias:  # LayerNorm and Linear biases (an RMSNorm has none; the output layer never)
            names += [f"{name}.bias" for name in (norms if config.norm == "layernorm" else []) + linears]
        return names

    def linear_names(self) -> list[str]:
        """The matrices a decoding step multiplies by, in that order (the output layer last)."""
        parts = ("attn.qkv", "attn.proj", "ff.up", "ff.down")
        return [f"blocks.{i}.{part}" for i in range(self.config.n_layer) for part in parts] + ["lm_head"]

    def num_parameters(self) -> int:
        """As model.GPT counts them: every stored array once (a tied matrix once)."""
        return sum({a.__array_interface__["data"][0]: a.size for a in self.weights.values()}.values())

    def new_cache(self, batch_size: int = 1) -> KVCache:
        return KVCache(self.config, batch_size)

    def forward(self, ids, cache: KVCache | None = None,
                return_weights: bool = False) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """ids (B, T) -> (logits (B, T, vocab), attention weights or None).

        With a `cache`, ids continue the cached tokens; with `return_weights`, also a list over
        layers of the (B, H, T, T_total) attention weights."""
        ids = np.asarray(ids, dtype=np.int64)
        B, T = ids.shape
        config = self.config
        H, C = config.n_head, config.n_embd
        D = C // H
        start = cache.length if cache is not None else 0
        if start + T > config.context_length:
            raise ValueError(f"{start + T} tokens exceed the context length {config.context_length}")
        x = self.token_embedding[ids]  # (B, T, C)
        if self.positions is not None:
            x = x + self.positions[start:start + T]
        rotary = (self.rotary[0][start:start + T], self.rotary[1][start:start + T]) if self.rotary else None
        mask = None
        if T > 1:  # each new token sees the cached ones and, among the new ones, those before it
            mask = np.tril(np.ones((T, start + T), dtype=bool), k=start)
        scale = np.float32(1.0 / math.sqrt(D))
        all_weights = []
        for layer, block in enumerate(self.blocks):
            qkv = block.qkv(block.ln1(x)).reshape(B, T, 3, H, D).transpose(2, 0, 3, 1, 4)  # (3, B, H, T, D)
            # queries and keys are turned and normed together, (2, B, H, T, D): the same numbers
            # as one at a time, in half the numpy calls (a decoding step is mostly calls, not sums)
            qk, v = qkv[:2], qkv[2]
            if rotary is not None:  # the cache keeps turned keys
                qk = _rotate(qk, *rotary)
            if config.qk_norm:
                qk = _rms(qk)
            q, k = qk[0], qk[1]
            if cache is not None:
                k, v = cache.append(layer, k, v)  # (B, H, past + T, D)
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale  # (B, H, T, past + T)
            if mask is not None:
                scores = np.where(mask, scores, -np.inf)
            weights = _softmax(scores)
            if return_weights:
                all_weights.append(weights)
            y = (weights @ v).transpose(0, 2, 1, 3).reshape(B, T, C)
            x = x + block.proj(y)
            x = x + block.down(_activation(config.mlp, block.up(block.ln2(x))))
        if cache is not None:
            cache.length += T
        logits = self.lm_head(self.ln_f(x))
        cap = config.logit_softcap
        if cap > 0:
            logits = cap * np.tanh(logits / cap)
        return logits.astype(np.float32, copy=False), all_weights if return_weights else None

    def decode_step(self, ids, cache: KVCache) -> np.ndarray:
        """Logits (B, vocab) of the token after one new token per row (ids (B,)) that continues
        the cached ones."""
        logits, _ = self.forward(np.asarray(ids, dtype=np.int64).reshape(-1, 1), cache)
        return logits[:, -1]
