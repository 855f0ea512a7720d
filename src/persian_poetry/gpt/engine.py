"""The sampling engine: token ids in, token ids out, one at a time, with a KV cache.

It knows nothing of poems. The caller gives a prompt, how many of its first tokens are pinned
(the control header), the sampling settings, a seeded generator, and optionally a function that
edits the logits before sampling (the poem layer uses it to keep the form).

The token limit. Prompt and output together never exceed the model's context length. When the
window is full, the engine keeps the pinned header, drops the oldest half of the rest, and
prefills the cache again with header + the most recent tokens: the poem goes on, always knowing
whose verse in which form and metre it writes, and remembering the last half-context of it.
Training shows the model exactly such windows (a header re-inserted before mid-poem text).

It runs on the numpy network (`inference.InferenceGPT`) with numpy's random generator: writing a
poem imports no PyTorch, and a seed gives the same tokens on every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .inference import InferenceGPT, KVCache
from .sampling import Sampling


def softmax(logits: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis (-inf logits get 0)."""
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def new_generator(seed: int) -> np.random.Generator:
    """The random generator a seed gives (numpy's PCG64): the same draws on every machine and run."""
    return np.random.default_rng(seed)


def filter_logits(logits: np.ndarray, sampling: Sampling) -> np.ndarray:
    """Temperature, then top-k, then top-p (nucleus) on a (vocab,) or (B, vocab) array."""
    logits = np.asarray(logits, dtype=np.float32) / np.float32(sampling.temperature)
    if sampling.top_k and sampling.top_k < logits.shape[-1]:
        kth = -np.partition(-logits, sampling.top_k - 1, axis=-1)[..., sampling.top_k - 1:sampling.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    if sampling.top_p < 1.0:
        order = np.argsort(-logits, axis=-1, kind="stable")
        probs = softmax(np.take_along_axis(logits, order, axis=-1))
        # Drop a token when the tokens ranked above it already cover top_p; always keep the first.
        drop_sorted = (np.cumsum(probs, axis=-1) - probs) >= sampling.top_p
        drop = np.zeros_like(drop_sorted)
        np.put_along_axis(drop, order, drop_sorted, axis=-1)
        logits = np.where(drop, -np.inf, logits)
    return logits


class Decoder:
    """One sequence being decoded: the tokens so far, their KV cache and the next-token logits.

    It can also step back (`rewind`), which constrained decoding needs: a word that breaks the
    metre is taken back and another is tried. Stepping back inside the cached window only shortens
    the cache and takes up the logits kept from when the history had that length (a third of a
    ghazal's decoding steps went into recomputing them); stepping back past a window slide re-reads
    the window from the token history.

    It also keeps the model's log-probability of each pushed token (`logprobs`, 0 for the prompt),
    so that a caller can compare continuations by how likely the model finds them.
    """

    def __init__(self, model: InferenceGPT, prompt: list[int], pinned: int):
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        self.model = model
        self.context = model.config.context_length
        if pinned >= self.context // 2:
            raise ValueError(f"a pinned header of {pinned} tokens leaves too little of the "
                             f"{self.context}-token context")
        self.pinned = pinned
        self.history = list(prompt)
        self.logprobs = [0.0] * len(prompt)  # of each history token, given the tokens before it
        self._refill(self.history[:pinned] + self.history[pinned:][-(self.context - pinned):])

    def _refill(self, window: list[int]) -> None:
        self.cache = KVCache(self.model.config, 1)
        out, _ = self.model.forward(np.array([window]), self.cache)
        self.logits = out[0, -1]
        # history length -> the logits after it, for this window only (a slide changes the context)
        self._logits_at = {len(self.history): self.logits}

    def push(self, token: int) -> None:
        """Append a token; the logits then predict the one after it."""
        top = float(self.logits.max())
        self.logprobs.append(float(self.logits[token]) - top - float(np.log(np.exp(self.logits - top).sum())))
        self.history.append(token)
        if self.cache.length == self.context:  # the window is full: slide it, header kept
            keep = (self.context - self.pinned) // 2
            self._refill(self.history[:self.pinned] + self.history[-keep:])
        else:
            self.logits = self.model.decode_step([token], self.cache)[0]
            self._logits_at[len(self.history)] = self.logits

    def rewind(self, length: int) -> None:
        """Go back to when the history held `length` tokens."""
        drop = len(self.history) - length
        if drop < 0 or length < max(self.pinned, 1):
            raise ValueError(f"cannot rewind {len(self.history)} tokens to {length}")
        if drop == 0:
            return
        del self.history[length:]
        del self.logprobs[length:]
        if self.cache.length - drop > self.pinned:  # the kept tokens are still in the cache, in order
            self.cache.length -= drop
            if length in self._logits_at:
                self.logits = self._logits_at[length]
            else:  # not seen in this window
                self.cache.length -= 1
                self.logits = self.model.decode_step([self.history[-1]], self.cache)[0]
            for stale in [n for n in self._logits_at if n > length]:
                del self._logits_at[stale]
        else:
            tail = self.history[self.pinned:][-((self.context - self.pinned) // 2):]
            self._refill(self.history[:self.pinned] + tail)


def sample_rows(logits: np.ndarray, sampling: Sampling, generator: np.random.Generator) -> np.ndarray:
    """One token per row of (B, vocab) logits, as a (B,) array: `filter_logits` then a draw, but
    looking only at each row's top-k (sorting and drawing over 50 candidates instead of the whole
    vocabulary). One uniform number per row is drawn and inverted through the row's cumulative
    probabilities, so a seed fixes every row. (Tokens tied with the k-th are not all kept, as
    filter_logits keeps them.)"""
    logits = np.asarray(logits, dtype=np.float32) / np.float32(sampling.temperature)
    vocab = logits.shape[-1]
    k = sampling.top_k if 0 < sampling.top_k < vocab else vocab
    if k < vocab:
        indices = np.argpartition(-logits, k - 1, axis=-1)[:, :k]
    else:
        indices = np.tile(np.arange(vocab), (len(logits), 1))
    rows = np.arange(len(logits))[:, None]  # indexing by rows, columns: take_along_axis's result, at a third of its cost
    values = logits[rows, indices]
    order = np.argsort(-values, axis=-1, kind="stable")  # highest first, ties by partition order
    values, indices = values[rows, order], indices[rows, order]
    if sampling.top_p < 1.0:
        probs = softmax(values)
        values = np.where((np.cumsum(probs, axis=-1) - probs) >= sampling.top_p, -np.inf, values)
    cumulative = np.cumsum(softmax(values.astype(np.float64)), axis=-1)
    u = generator.random(len(logits))[:, None] * cumulative[:, -1:]
    chosen = np.minimum((cumulative <= u).sum(axis=-1), k - 1)
    # a token of probability 0 (filtered out) is never chosen: it adds nothing to the cumulative sum
    return indices[np.arange(len(logits)), chosen]


def sample(logits: np.ndarray, sampling: Sampling, generator: np.random.Generator) -> int:
    """One token from a (vocab,) row of logits (see `sample_rows`)."""
    return int(sample_rows(np.asarray(logits)[None], sampling, generator)[0])


class Engine:
    def __init__(self, model: InferenceGPT):
        self.model = model
        self.context = model.config.context_length

    def decoder(self, prompt: list[int], pinned: int) -> Decoder:
        return Decoder(self.model, prompt, pinned)

    def stream(self, prompt: list[int], pinned: int, sampling: Sampling, generator: np.random.Generator,
               max_new_tokens: int, edit_logits: Callable[[np.ndarray], np.ndarray] | None = None,
               stop: Callable[[int], bool] | None = None) -> Iterator[int]:
        """Yield up to `max_new_tokens` sampled tokens after `prompt` (stop early when stop(token))."""
        decoder = self.decoder(prompt, pinned)
        for _ in range(max_new_tokens):
            logits = decoder.logits
            if edit_logits is not None:
                logits = edit_logits(logits)
            token = sample(logits, sampling, generator)
            yield token
            if stop is not None and stop(token):
                return
            decoder.push(token)

    def generate_batch(self, prompts: list[list[int]], sampling: Sampling, generator: np.random.Generator,
                       max_new_tokens: int) -> list[list[int]]:
        """Sample `max_new_tokens` tokens after each of several prompts at once: one KV cache with a
        row per prompt and one forward pass per step for all rows, so B poems cost far less than B
        times one (the weights are read once per step, not once per poem).

        The prompts must have equal lengths (several poems from the same control header, say):
        the rows then share positions and need no padding or attention mask. There is no window
        slide and no stop: prompt + output must fit the context, and every row gets exactly
        `max_new_tokens` tokens (cut each at its <|end|>). Greedy decoding (top_k=1) gives each row
        the batch-1 tokens; sampled rows draw from one generator, so a seed fixes the whole batch.
        """
        if not prompts or not prompts[0]:
            raise ValueError("give at least one prompt of at least one token")
        length = len(prompts[0])
        if any(len(p) != length for p in prompts):
            raise ValueError(f"generate_batch needs prompts of equal length, got {sorted({len(p) for p in prompts})}")
        if length + max_new_tokens > self.context:
            raise ValueError(f"{length} prompt + {max_new_tokens} new tokens exceed the context of {self.context}")
        cache = KVCache(self.model.config, len(prompts))
        out, _ = self.model.forward(np.array(prompts), cache)
        logits = out[:, -1]
        tokens = np.empty((len(prompts), max_new_tokens), dtype=np.int64)
        for step in range(max_new_tokens):
            tokens[:, step] = sample_rows(logits, sampling, generator)
            if step + 1 < max_new_tokens:  # the last token needs no forward pass
                logits = self.model.decode_step(tokens[:, step], cache)
        return tokens.tolist()
