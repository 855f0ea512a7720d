"""The sampling engine: token ids in, token ids out, one at a time, with a KV cache.

It knows nothing of poems. The caller gives a prompt, how many of its first tokens are pinned
(the control header), the sampling settings, a seeded generator, and optionally a function that
edits the logits before sampling (the poem layer uses it to keep the form).

The token limit. Prompt and output together never exceed the model's context length. When the
window is full, the engine keeps the pinned header, drops the oldest half of the rest, and
prefills the cache again with header + the most recent tokens: the poem goes on, always knowing
whose verse in which form and metre it writes, and remembering the last half-context of it.
Training shows the model exactly such windows (a header re-inserted before mid-poem text).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from .model import GPT, KVCache


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_k: int = 50  # 0: no top-k filter
    top_p: float = 0.95  # 1.0: no nucleus filter

    def __post_init__(self):
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


def filter_logits(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) on a (vocab,) or (B, vocab) tensor."""
    logits = logits / sampling.temperature
    if sampling.top_k and sampling.top_k < logits.size(-1):
        kth = torch.topk(logits, sampling.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if sampling.top_p < 1.0:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens ranked above it already cover top_p; always keep the first.
        drop = (cumulative - sorted_logits.softmax(dim=-1)) >= sampling.top_p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class Engine:
    def __init__(self, model: GPT):
        self.model = model
        self.context = model.config.context_length

    @property
    def device(self) -> torch.device:
        return self.model.token_embedding.weight.device

    def _prefill(self, tokens: list[int]) -> tuple[KVCache, torch.Tensor]:
        cache = KVCache(self.model.config, 1, self.device, self.model.token_embedding.weight.dtype)
        logits, _, _ = self.model(torch.tensor([tokens], device=self.device), cache=cache)
        return cache, logits[0, -1]

    @torch.no_grad()
    def stream(self, prompt: list[int], pinned: int, sampling: Sampling, generator: torch.Generator,
               max_new_tokens: int, edit_logits: Callable[[torch.Tensor], torch.Tensor] | None = None,
               stop: Callable[[int], bool] | None = None) -> Iterator[int]:
        """Yield up to `max_new_tokens` sampled tokens after `prompt` (stop early when stop(token))."""
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        if pinned >= self.context // 2:
            raise ValueError(f"a pinned header of {pinned} tokens leaves too little of the "
                             f"{self.context}-token context")
        self.model.eval()
        history = list(prompt)
        window = history[:pinned] + history[pinned:][-(self.context - pinned):]
        cache, logits = self._prefill(window)
        for _ in range(max_new_tokens):
            if edit_logits is not None:
                logits = edit_logits(logits.float())
            probs = filter_logits(logits.float(), sampling).softmax(dim=-1)
            token = int(torch.multinomial(probs, 1, generator=generator))
            history.append(token)
            yield token
            if stop is not None and stop(token):
                return
            if cache.length == self.context:
                keep = (self.context - pinned) // 2
                cache, logits = self._prefill(history[:pinned] + history[-keep:])
            else:
                out, _, _ = self.model(torch.tensor([[token]], device=self.device), cache=cache)
                logits = out[0, -1]
