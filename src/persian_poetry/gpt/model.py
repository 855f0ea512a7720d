"""The GPT: token embedding + positional encoding (or rotary positions on queries and keys),
pre-norm transformer blocks of masked multi-head self-attention and a feed-forward, a final norm
and an output layer that shares its weights with the token embedding.

The defaults are GPT-2's choices (LayerNorm, GELU, tied embeddings). The options that current small
models use instead (RMSNorm, ReLU² or SwiGLU, QK-norm, untied embeddings, logit soft-capping) are
here to be measured against them (BENCHMARKS.md, language modelling).

Shapes in comments: B batch, T time (tokens), C channels (n_embd), H heads, D head size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import positions as positions_module
from .config import MLP_KINDS, NORM_KINDS, POSITIONAL_KINDS, GPTConfig  # noqa: F401  (re-exported)


def sinusoidal_table(positions: int, dim: int) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)); (positions, dim)."""
    return torch.from_numpy(positions_module.sinusoidal_table(positions, dim))


def rotary_tables(positions: int, head_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin, each (positions, head_dim / 2), of the sinusoidal table's angles, used to turn
    each pair (x_i, x_{i + D/2}) of a query or key."""
    cos, sin = positions_module.rotary_tables(positions, head_dim)
    return torch.from_numpy(cos), torch.from_numpy(sin)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x (..., T, D) turned by the angles of its T positions (cos, sin: (T, D/2)). The dot product
    of a query at position m with a key at n then depends only on m - n."""
    half = x.size(-1) // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)  # bf16 under autocast: keep q, k and v one type
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class KVCache:
    """Keys and values of every layer for the tokens seen so far: a (B, H, T_max, D) tensor per layer each."""

    def __init__(self, config: GPTConfig, batch_size: int, device, dtype):
        head_dim = config.head_dim
        shape = (batch_size, config.n_head, config.context_length, head_dim)
        # One tensor per layer, not one (layers, ...) tensor: indexing a layer out of it on every
        # append was measurable at batch 1.
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0  # tokens already stored
        # decode_step's layout of the weights, looked up once per cache: keys and values made by
        # other weights would be stale anyway, so a cache never outlives the weights it was filled with.
        self.decode_weights = None

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this step's (B, H, T, D) keys/values for `layer`; return all keys/values so far."""
        t0, t1 = self.length, self.length + k.size(2)
        keys, values = self.k[layer], self.v[layer]
        keys.narrow(2, t0, t1 - t0).copy_(k)
        values.narrow(2, t0, t1 - t0).copy_(v)
        return keys.narrow(2, 0, t1), values.narrow(2, 0, t1)


def _dropout(p: float) -> nn.Module:
    # An identity where there is nothing to drop: a module call per layer per token less when decoding.
    return nn.Dropout(p) if p > 0 else nn.Identity()


def _make_norm(config: GPTConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return nn.RMSNorm(config.n_embd, eps=1e-5)
    return nn.LayerNorm(config.n_embd, bias=config.bias)


def _norm(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The module's own norm as one functional call (decode_step's way of calling it)."""
    if isinstance(module, nn.RMSNorm):
        return F.rms_norm(x, module.normalized_shape, module.weight, module.eps)
    return F.layer_norm(x, module.normalized_shape, module.weight, module.bias, module.eps)


def _qk_norm(q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return F.rms_norm(q, (q.size(-1),), eps=1e-5), F.rms_norm(k, (k.size(-1),), eps=1e-5)


def _activation(kind: str, h: torch.Tensor) -> torch.Tensor:
    """The feed-forward's non-linearity on the up projection's output."""
    if kind == "swiglu":
        gate, value = h.chunk(2, dim=-1)
        return F.silu(gate) * value
    if kind == "relu2":
        return F.relu(h).square()
    return F.gelu(h)


class _DecodeLinear:
    """y = x W^T + b for one decoding step, from a contiguous (in, out) copy of W.

    With a single row to multiply, MKL reads an (in, out) matrix much faster than nn.Linear's
    (out, in) one (measured on a 2-core AMD EPYC, one thread: the 25 products of a step 1.94 ms
    instead of 2.80 ms, the output layer alone 0.09 ms instead of 0.17; BENCHMARKS.md, speed).
    An int8 dynamic-quantized Linear keeps its own packed weights and forward."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.weight_t = module.weight.detach().t().contiguous() if type(module) is nn.Linear else None
        self.bias = module.bias.detach() if self.weight_t is not None and module.bias is not None else None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight_t is None:
            return self.module(x)
        if self.bias is None:
            return x @ self.weight_t
        return torch.addmm(self.bias, x, self.weight_t)


def _linears(model: GPT) -> list[nn.Module]:
    """The output layer, then each block's qkv, proj, up and down."""
    return [model.lm_head] + [m for b in model.blocks for m in (b.attn.qkv, b.attn.proj, b.ff.up, b.ff.down)]


class _DecodeWeights:
    """What decode_step reads besides the modules' own tensors: the linear layers as
    `_DecodeLinear`s and the position table already scaled; `source` identifies the weights
    they were made from."""

    def __init__(self, model: GPT, source: tuple):
        self.source = source
        linears = [_DecodeLinear(m) for m in _linears(model)]
        self.lm_head, per_block = linears[0], linears[1:]
        self.blocks = [tuple(per_block[i:i + 4]) for i in range(0, len(per_block), 4)]  # qkv, proj, up, down
        positions = model.positional_encoding(0, model.config.context_length)
        self.positions = positions.detach().clone() if positions is not None else None

    @staticmethod
    def key(model: GPT) -> tuple:
        modules = _linears(model)
        tensors = [t for m in modules if type(m) is nn.Linear for t in (m.weight, m.bias) if t is not None]
        if model.config.positional == "learned":
            tensors.append(model.position_embedding.weight)
        elif model.config.positional == "rotary":
            tensors += [model.rotary_cos, model.rotary_sin]
        else:
            tensors.append(model.position_table)
        return tuple(map(id, modules)) + tuple((t.data_ptr(), t._version) for t in tensors)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.qk_norm = config.qk_norm
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attention_dropout = config.attention_dropout

    def forward(self, x, layer: int, cache: KVCache | None = None, return_weights: bool = False,
                rotary: tuple[torch.Tensor, torch.Tensor] | None = None):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
        if rotary is not None:
            q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)  # the cache keeps turned keys
        if self.qk_norm:
            q, k = _qk_norm(q, k)
        past = 0
        if cache is not None:
            past = cache.length
            k, v = cache.append(layer, k, v)  # (B, H, past + T, D)
        weights = None
        if return_weights:
            # Spelled out so the weights can be returned; same numbers as the fused kernel.
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.size(-1))  # (B, H, T, past + T)
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = weights @ v
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.attention_dropout if self.training else 0.0)
        elif T == 1:
            # One new token (decoding) sees every cached token: no mask to build.
            y = F.scaled_dot_product_attention(q, k, v)
        else:
            # New tokens see all cached tokens and, among themselves, only earlier ones.
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y), weights


class FeedForward(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.mlp_hidden
        self.kind = config.mlp
        self.up = nn.Linear(config.n_embd, 2 * hidden if config.mlp == "swiglu" else hidden, bias=config.bias)
        self.down = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = _dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.down(_activation(self.kind, self.up(x))))


class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln1 = _make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln2 = _make_norm(config)
        self.ff = FeedForward(config)
        self.dropout = _dropout(config.dropout)

    def forward(self, x, layer: int, cache=None, return_weights=False, rotary=None):
        a, weights = self.attn(self.ln1(x), layer, cache, return_weights, rotary)
        x = x + self.dropout(a)
        x = x + self.ff(self.ln2(x))
        return x, weights


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        if config.positional == "learned":
            self.position_embedding = nn.Embedding(config.context_length, config.n_embd)
        elif config.positional == "rotary":
            cos, sin = rotary_tables(config.context_length, config.head_dim)
            self.register_buffer("rotary_cos", cos, persistent=False)
            self.register_buffer("rotary_sin", sin, persistent=False)
        else:
            # A buffer, not a parameter: the formula fixes it. Not saved with the weights.
            self.register_buffer("position_table", sinusoidal_table(config.context_length, config.n_embd),
                                 persistent=False)
        # The sinusoids have values near ±1 while token embeddings start near ±0.02: added as they
        # are, position drowns out the token and training crawls (measured: 0.36 bits/char worse
        # after 125 steps on the notebook's text). Scaling the table by 1/sqrt(d) restores the
        # token-to-position ratio of the original Transformer, which multiplies embeddings by sqrt(d).
        self.position_scale = 1.0 / math.sqrt(config.n_embd) if config.positional == "sinusoidal" else 1.0
        self.dropout = _dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = _make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.token_embedding.weight  # tied: one matrix reads and writes tokens
        self._decode_cache: _DecodeWeights | None = None  # decode_step's weight layout, built on first use
        self.apply(self._init_weights)
        # GPT-2's scaled init of the projections that write into the residual stream.
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("down.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def positional_encoding(self, start: int, length: int) -> torch.Tensor | None:
        """What is added to the token embeddings of positions start..start+length-1; None for
        rotary positions, which turn queries and keys instead."""
        if self.config.positional == "rotary":
            return None
        if self.config.positional == "learned":
            pos = torch.arange(start, start + length, device=self.token_embedding.weight.device)
            return self.position_embedding(pos)
        return self.position_table[start:start + length] * self.position_scale

    @torch.no_grad()
    def decode_step(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Logits (B, vocab) of the token after one new token per row (idx (B, 1)) that continues
        the cached ones: `forward` for T = 1 in eval mode, spelled out with functional calls.
        PyTorch's fastest decoding step: poems are written with the numpy runtime (`inference.py`),
        and this is what it is measured against (benchmarks/onnx_runtime.py, BENCHMARKS.md).

        At batch 1 this model's arithmetic is so small that calling ~160 modules per token cost a
        third of a decoding step (measured with cProfile on constrained generation), and the
        matrix-vector products run faster on (in, out) copies of the weights (see `_DecodeWeights`);
        the numbers are forward's (a test compares them)."""
        B, C = idx.size(0), self.config.n_embd
        H = self.config.n_head
        if cache.length + 1 > self.config.context_length:
            raise ValueError(f"{cache.length + 1} tokens exceed the context length {self.config.context_length}")
        if cache.decode_weights is None:
            cache.decode_weights = self._decode_weights()
        weights = cache.decode_weights
        x = F.embedding(idx.view(B), self.token_embedding.weight)  # (B, C)
        if weights.positions is not None:
            x = x + weights.positions[cache.length]
        rotary = self._rotary(cache.length, 1)
        for layer, block in enumerate(self.blocks):
            qkv, proj, up, down = weights.blocks[layer]
            h = _norm(block.ln1, x)
            q, k, v = qkv(h).view(B, 3, H, 1, C // H).unbind(1)  # each (B, H, 1, D)
            if rotary is not None:
                q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
            if block.attn.qk_norm:
                q, k = _qk_norm(q, k)
            k, v = cache.append(layer, k, v)
            x = x + proj(F.scaled_dot_product_attention(q, k, v).view(B, C))
            x = x + down(_activation(block.ff.kind, up(_norm(block.ln2, x))))
        cache.length += 1
        return self._softcap(weights.lm_head(_norm(self.ln_f, x)))

    def _softcap(self, logits: torch.Tensor) -> torch.Tensor:
        cap = self.config.logit_softcap
        return cap * torch.tanh(logits / cap) if cap > 0 else logits

    def _rotary(self, start: int, length: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        if self.config.positional != "rotary":
            return None
        return self.rotary_cos[start:start + length], self.rotary_sin[start:start + length]

    def _decode_weights(self) -> _DecodeWeights:
        # Rebuilt when a weight changed (an optimizer step, load_state_dict, .to(), quantization):
        # checked by module identity and each tensor's storage and in-place version counter.
        key = _DecodeWeights.key(self)
        if self._decode_cache is None or self._decode_cache.source != key:
            self._decode_cache = _DecodeWeights(self, key)
        return self._decode_cache

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None, cache: KVCache | None = None,
                return_weights: bool = False):
        """idx (B, T) token ids -> logits (B, T, vocab).

        With `targets` (B, T; -1 = ignore) also returns the mean cross-entropy; with a `cache`,
        idx continues the cached tokens; with `return_weights`, also a list over layers of the
        (B, H, T, T_total) attention weights. Returns (logits, loss, weights).
        """
        B, T = idx.shape
        start = cache.length if cache is not None else 0
        if start + T > self.config.context_length:
            raise ValueError(f"{start + T} tokens exceed the context length {self.config.context_length}")
        x = self.token_embedding(idx)  # (B, T, C)
        positions = self.positional_encoding(start, T)
        if positions is not None:
            x = x + positions
        x = self.dropout(x)
        rotary = self._rotary(start, T)
        all_weights = []
        for layer, block in enumerate(self.blocks):
            x, weights = block(x, layer, cache, return_weights, rotary)
            all_weights.append(weights)
        if cache is not None:
            cache.length += T
        logits = self._softcap(self.lm_head(self.ln_f(x)))
        if targets is None:
            return logits, None, all_weights if return_weights else None
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
        return logits, loss, all_weights if return_weights else None
