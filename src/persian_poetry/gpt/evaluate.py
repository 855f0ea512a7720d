"""Bits per character on held-out poems: the one quality number every model here reports.

Definition. For each poem the header (poet, form, metre, rhyme) is given and not scored. Every
body token is scored: the hemistichs' text and the separator after each hemistich. The total
negative log-likelihood in bits is divided by the number of characters of the normalized
hemistich text plus one per separator. A char model and a BPE model score the same content and
divide by the same count, so their figures compare directly.

A poem longer than the context is scored in overlapping windows that keep its header pinned at
the start: each token is predicted with at least half a context of preceding text, as a reader
of the poem would have it. Plain text (the notebook's corpus) is one headerless "poem".
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..assets import DEFAULT_MODEL_DIR
from ..data.controls import Controls
from ..data.corpus import read_jsonl, read_plain_text
from ..data.dataset import EncodedSplit, encode_poems, split_plain_text
from .checkpoint import load_model_dir


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


@torch.no_grad()
def evaluate_split(model, split: EncodedSplit, limit: int | None = None, batch_size: int = 16,
                   progress: bool = False) -> EvalResult:
    """Bits/char of `model` on the first `limit` poems of `split` (all when None)."""
    raw = getattr(model, "module", model)
    context = raw.config.context_length
    device = raw.token_embedding.weight.device
    was_training = raw.training
    raw.eval()
    n_poems = split.n_poems if limit is None else min(limit, split.n_poems)
    windows, chars, tokens = [], 0, 0
    for i in range(n_poems):
        header, body, n_chars = split.poem(i)
        chars += n_chars
        tokens += len(body)
        windows.extend(scoring_windows(np.asarray(header), np.asarray(body), context))
    windows.sort(key=lambda w: len(w[0]))  # similar lengths together: less padding
    total_nats = 0.0
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    for b in tqdm(range(0, len(windows), batch_size), desc="evaluating", unit=" batches", disable=not progress):
        chunk = windows[b:b + batch_size]
        width = max(len(w[0]) for w in chunk)
        x = torch.zeros(len(chunk), width, dtype=torch.long)
        y = torch.full((len(chunk), width), -1, dtype=torch.long)
        for row, (inputs, targets) in enumerate(chunk):
            x[row, :len(inputs)] = torch.from_numpy(inputs)
            y[row, :len(targets)] = torch.from_numpy(targets)
        x, y = x.to(device), y.to(device)
        with autocast:
            logits, _, _ = raw(x)
        total_nats += F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1),
                                      ignore_index=-1, reduction="sum").item()
    raw.train(was_training)
    if chars == 0:
        raise ValueError("nothing to evaluate: the split has no characters")
    return EvalResult(total_nats / math.log(2) / chars, n_poems, chars, tokens)


def evaluate_file(data, model_dir=None, split: str = "test", limit: int | None = None,
                  batch_size: int = 16, progress: bool = True, poets=None, quantize: str | None = None) -> EvalResult:
    """Bits/char of a model directory (default: the shipped model) on a corpus file.

    A JSONL corpus is scored on the poems of `split` ("test", "val", "train" by the id hash of
    `corpus.split_of`, or "all"), optionally only `poets`; a .txt file (the notebook's corpus) on
    its last 10%.
    """
    data = Path(data)
    loaded = load_model_dir(model_dir if model_dir is not None else DEFAULT_MODEL_DIR, quantize=quantize)
    if data.suffix == ".txt":
        encoded = split_plain_text(read_plain_text(data), loaded.tokenizer)["val"]
    else:
        poems = [p for p in read_jsonl(data, poets) if split == "all" or p.split == split]
        if limit is not None:
            poems = poems[:limit]
        if not poems:
            raise ValueError(f"no {split} poems in {data}")
        encoded = encode_poems(poems, loaded.tokenizer, Controls.from_special_tokens(loaded.tokenizer.special_tokens))
    return evaluate_split(loaded.model, encoded, limit=limit, batch_size=batch_size, progress=progress)
