"""Bits per character on held-out poems: the one quality number every model here reports.

Definition. For each poem the header (poet, form, metre, rhyme) is given and not scored. Every
body token is scored: the hemistichs' text and the separator after each hemistich. The total
negative log-likelihood in bits is divided by the number of characters of the normalized
hemistich text plus one per separator. A char model and a BPE model score the same content and
divide by the same count, so their figures compare directly.

A poem longer than the context is scored in overlapping windows that keep its header pinned at
the start: each token is predicted with at least half a context of preceding text, as a reader
of the poem would have it. Plain text (the notebook's corpus) is one headerless "poem".

With a mixture (`evaluate_split(..., mix=)`, `persian-poetry evaluate --mix DIR`) each scored token's
probability is (1 - λ) p_model + λ p_ngram, p_ngram from an infini-gram over the train split
(`infinigram.py`) queried with the tokens of the same window before the target; everything else
(windows, tokens, characters) is the same, and λ = 0 gives the model's figure exactly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..assets import DEFAULT_MODEL_DIR
from ..data.controls import Controls
from ..data.corpus import read_jsonl, read_plain_text
from ..data.dataset import EncodedSplit, encode_poems, split_plain_text
from ..files import sha256_of
from .checkpoint import TOKENIZER, load_model_dir


@dataclass
class EvalResult:
    bits_per_char: float
    poems: int
    characters: int
    tokens: int

    @property
    def nats_per_char(self) -> float:
        return self.bits_per_char * math.log(2)

    def to_dict(self) -> dict:
        return {**asdict(self), "nats_per_char": self.nats_per_char}


def scoring_windows(header: np.ndarray, body: np.ndarray, context: int):
    """Yield (inputs, targets) for a header-pinned sliding evaluation, targets -1 where unscored.

    inputs = header + body[c0:e-1]; targets are the next tokens, and only body tokens not
    scored by an earlier window count, so every body token is scored exactly once.
    """
    hl, n = len(header), len(body)
    room = context - hl  # body tokens that fit after the header
    if room < 2:
        raise ValueError(f"header of {hl} tokens leaves no room in a context of {context}")
    stride = max(1, room // 2)
    seq = np.concatenate([header, body]).astype(np.int64)
    # Without a header the first token has nothing to be predicted from: it is given.
    first = 0 if hl else 1
    m = first  # next body token to score
    while m < n:
        # The first window takes as much as fits; later ones advance by half a context.
        e = min(n, (room + 1 if hl else context + 1) if m == first else m + stride)
        c0 = max(0, e - 1 - room) if hl else max(0, e - 1 - context)
        if hl:
            inputs = np.concatenate([seq[:hl], seq[hl + c0:hl + e - 1]]) if e - 1 > c0 else seq[:hl]
            targets = seq[hl + c0:hl + e]
            # inputs position hl-1 predicts body[c0]; scored targets are body[m:e]
            full_targets = np.full(len(inputs), -1, dtype=np.int64)
            full_targets[hl - 1:] = targets
            full_targets[hl - 1:hl - 1 + (m - c0)] = -1
        else:
            inputs = seq[c0:e - 1]
            full_targets = seq[c0 + 1:e].copy()
            full_targets[:m - c0 - 1] = -1
        yield inputs, full_targets
        m = e


@dataclass
class TargetScores:
    """Every scored body token of some poems: the model's log-probability of it (nats) and, when an
    infini-gram index was given, its n-gram statistics (match length, continuations, hits)."""

    model_logp: np.ndarray
    poems: int
    characters: int
    tokens: int
    ngram: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # (n, total, hits) per token

    def result(self, weights=None) -> EvalResult:
        """Bits/char of the model alone (`weights` None) or mixed with the n-gram by `weights` (MixWeights)."""
        if self.characters == 0:
            raise ValueError("nothing to evaluate: the split has no characters")
        if weights is None:
            logp = self.model_logp
        else:
            if self.ngram is None:
                raise ValueError("these scores were taken without an n-gram index")
            logp = weights.log_prob(self.model_logp, *self.ngram)
        total_nats = -float(np.sum(logp, dtype=np.float64))
        return EvalResult(total_nats / math.log(2) / self.characters, self.poems, self.characters, self.tokens)


def _windows(split: EncodedSplit, n_poems: int, context: int, index=None):
    """(inputs, targets, n-gram stats of the scored targets or None) of every scoring window.

    The n-gram sees what the model sees: the window's tokens before the target, as far back as
    they run contiguously in the poem (from the poem's start in its first window, from the first
    body token after the pinned header in a later one)."""
    for i in range(n_poems):
        header, body, _ = split.poem(i)
        for w, (inputs, targets) in enumerate(scoring_windows(np.asarray(header), np.asarray(body), context)):
            stats = None
            if index is not None:
                start = len(header) if (len(header) and w > 0) else 0
                last = targets[-1:] if targets[-1] != -1 else targets[:0]
                seq = np.concatenate([inputs[start:], last])  # the last target ends the run
                scored = np.flatnonzero(targets != -1)
                stats = tuple(a[scored + 1 - start] for a in index.scan(seq))
            yield inputs, targets, stats


@torch.no_grad()
def target_scores(model, split: EncodedSplit, limit: int | None = None, batch_size: int = 16,
                  progress: bool = False, index=None) -> TargetScores:
    """The model's log-probability of every scored body token of the first `limit` poems, and with
    `index` (an `infinigram.InfiniGram`) each token's n-gram statistics."""
    raw = getattr(model, "module", model)
    context = raw.config.context_length
    device = raw.token_embedding.weight.device
    was_training = raw.training
    raw.eval()
    n_poems = split.n_poems if limit is None else min(limit, split.n_poems)
    chars = sum(int(split.poem(i)[2]) for i in range(n_poems))
    tokens = sum(len(split.poem(i)[1]) for i in range(n_poems))
    windows = list(tqdm(_windows(split, n_poems, context, index), desc="windows", unit=" windows",
                        disable=not progress or index is None))
    windows.sort(key=lambda w: len(w[0]))  # similar lengths together: less padding
    logps, stats = [], []
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for b in tqdm(range(0, len(windows), batch_size), desc="evaluating", unit=" batches", disable=not progress):
        chunk = windows[b:b + batch_size]
        width = max(len(w[0]) for w in chunk)
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        y = torch.full((len(chunk), width), -1, dtype=torch.long)
        for row, (inputs, targets, _) in enumerate(chunk):
            x[row, :len(inputs)] = torch.from_numpy(inputs)
            y[row, :len(targets)] = torch.from_numpy(targets)
        x, y = x.to(device), y.to(device)
        with autocast:
            logits, _, _ = raw(x)
        logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        logps.append(logp[y != -1].double().cpu().numpy())  # row by row, positions in order
        stats.extend(w[2] for w in chunk)
    raw.train(was_training)
    ngram = None
    if index is not None:
        ngram = tuple(np.concatenate([s[k] for s in stats]) if stats else np.zeros(0, dtype=np.int64)
                      for k in range(3))
    model_logp = np.concatenate(logps) if logps else np.zeros(0)
    return TargetScores(model_logp, n_poems, chars, tokens, ngram)


def evaluate_split(model, split: EncodedSplit, limit: int | None = None, batch_size: int = 16,
                   progress: bool = False, mix=None) -> EvalResult:
    """Bits/char of `model` on the first `limit` poems of `split` (all when None); with `mix` (an
    `infinigram.Mixture`), of the model interpolated with the infini-gram, on the same windows."""
    scores = target_scores(model, split, limit, batch_size, progress, index=mix.index if mix is not None else None)
    return scores.result(mix.weights if mix is not None else None)


def evaluate_file(data, model_dir=None, split: str = "test", limit: int | None = None,
                  batch_size: int = 16, progress: bool = True, poets=None, quantize: str | None = None,
                  mix: str | Path | None = None) -> EvalResult:
    """Bits/char of a model directory (default: the shipped model) on a corpus file.

    A JSONL corpus is scored on the poems of `split` ("test", "val", "train" by the id hash of
    `corpus.split_of`, or "all"), optionally only `poets`; a .txt file (the notebook's corpus) on
    its last 10%. `mix`: an infini-gram index directory (tokens, suffix array, mix.json) to mix
    with the model.
    """
    data = Path(data)
    model_dir = Path(model_dir if model_dir is not None else DEFAULT_MODEL_DIR)
    loaded = load_model_dir(model_dir, quantize=quantize)
    mixture = None
    if mix is not None:
        from .infinigram import load_mixture

        mixture = load_mixture(mix, tokenizer_sha256=sha256_of(model_dir / TOKENIZER))
    if data.suffix == ".txt":
        encoded = split_plain_text(read_plain_text(data), loaded.tokenizer)["val"]
    else:
        poems = [p for p in read_jsonl(data, poets) if split == "all" or p.split == split]
        if limit is not None:
            poems = poems[:limit]
        if not poems:
            raise ValueError(f"no {split} poems in {data}")
        encoded = encode_poems(poems, loaded.tokenizer, Controls.from_special_tokens(loaded.tokenizer.special_tokens))
    return evaluate_split(loaded.model, encoded, limit=limit, batch_size=batch_size, progress=progress, mix=mixture)
