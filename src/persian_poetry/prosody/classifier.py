"""A small learned metre classifier: hemistich characters -> metre, with a probability.

A character embedding, a bidirectional GRU and mean+max pooling feed a linear layer over the
metres of the catalogue. It learns what the rule-based scanner cannot see in the script (which
short vowels are unwritten, where ezafe falls) from Ganjoor's labelled hemistichs of the train
split. `prosody.scan` combines it with the scanner. Saved as safetensors + JSON like the GPT.

The same network with poet slugs as labels (`task="poet"`) is the poet classifier of `poet.py`;
`fit_classifier` is the training loop both share. A poet shows in the words he chooses more than
in their sounds, and a character GRU needs long training to learn words, so the poet classifier
adds a bag of hashed words and word pairs (`words` buckets) beside the GRU: fastText's trick,
cheap on a CPU. The metre classifier has none (`words=0`).

This module is the PyTorch network and its training. Inference needs no torch: `classifier_inference.py`
computes the same network in numpy from the same files and holds what both share (the config, the
text encoding, the checked reading of a saved classifier); `scan` and `classify_poet` use it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ..assets import METRE_CLASSIFIER_DIR
from ..data.corpus import read_jsonl
from ..files import atomic_write, sha256_of
from .classifier_inference import (
    CHARS,
    PAD,
    ClassifierConfig,
    checked_classifier_files,
    clean_hemistichs,
    encode_hemistichs,
    encode_words,
)
from .metres import load_catalogue


class MetreClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(len(CHARS) + 2, config.embedding, padding_idx=PAD)
        self.rnn = nn.GRU(config.embedding, config.hidden, batch_first=True, bidirectional=True)
        if config.words:
            self.bag = nn.EmbeddingBag(config.words + 1, config.embedding, mode="mean", padding_idx=PAD)
            nn.init.zeros_(self.bag.weight)  # a word means nothing until it is seen: no random vectors to unlearn
        self.head = nn.Linear(4 * config.hidden + (config.embedding if config.words else 0), len(config.labels))

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, ...]:
        """The inputs of `forward` for these hemistichs: (char ids,) or (char ids, word buckets)."""
        texts = clean_hemistichs(texts, self.config.drop)
        ids = torch.from_numpy(encode_hemistichs(texts, self.config.max_chars))
        return (ids, torch.from_numpy(encode_words(texts, self.config.words))) if self.config.words else (ids,)

    def forward(self, ids: torch.Tensor, words: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T) char ids [and (N, W) word buckets] -> (N, labels) logits."""
        features = [pooled_bigru(self.rnn, self.embed, ids)] + ([self.bag(words)] if self.config.words else [])
        return self.head(torch.cat(features, dim=-1))

    @torch.no_grad()
    def probabilities(self, texts: list[str], batch_size: int = 512) -> torch.Tensor:
        """(N, labels) probabilities for hemistichs (labels in `config.labels` order)."""
        self.eval()
        parts = [F.softmax(self(*self.encode(texts[i:i + batch_size])), dim=-1)
                 for i in range(0, len(texts), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, len(self.config.labels))


def pooled_bigru(rnn: nn.GRU, embed: nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """(N, T) ids (PAD after each sequence's end) -> (N, 4H): the mean and the max over each
    sequence's steps of a bidirectional GRU's outputs, the padding left out of both."""
    mask = (ids != PAD).unsqueeze(-1)  # (N, T, 1)
    lengths = mask.sum(1).squeeze(-1).clamp(min=1).cpu()
    packed = nn.utils.rnn.pack_padded_sequence(embed(ids), lengths, batch_first=True, enforce_sorted=False)
    out, _ = rnn(packed)
    out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.size(1))  # (N, T, 2H)
    mean = (out * mask).sum(1) / mask.sum(1).clamp(min=1)
    peak = out.masked_fill(~mask, -1e4).max(1).values
    return torch.cat([mean, peak], dim=-1)


def save_classifier(model: MetreClassifier, directory: str | Path, report: dict | None = None) -> None:
    """Weights as safetensors and config.json (the config, the alphabet, the weights' sha256, the
    training report): what `load_torch_classifier` and `classifier_inference.load_classifier` read."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "model.safetensors", lambda tmp: save_file(model.state_dict(), tmp))
    config = {"classifier": asdict(model.config), "alphabet": CHARS,
              "weights_sha256": sha256_of(directory / "model.safetensors"), "training": report or {}}
    (directory / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")


def load_torch_classifier(directory: str | Path | None = None) -> MetreClassifier:
    """The classifier saved in `directory` (default: the shipped metre classifier) as the PyTorch
    network, for training and evaluation; inference needs no torch: `classifier_inference.load_classifier`."""
    config, weights = checked_classifier_files(directory if directory is not None else METRE_CLASSIFIER_DIR)
    model = MetreClassifier(config)
    model.load_state_dict(load_file(weights))
    return model.eval()


def labelled_hemistichs(data: str | Path, splits: tuple[str, ...] = ("train", "val"), poets=None,
                        metres: set[int] | None = None) -> dict[str, tuple[list[str], list[int], list[int]]]:
    """{split: (hemistichs, metre ids, poem number)} of the labelled poems of a corpus, one pass."""

    out: dict[str, tuple[list[str], list[int], list[int]]] = {s: ([], [], []) for s in splits}
    poems_seen = dict.fromkeys(splits, 0)
    for poem in read_jsonl(data, poets):
        split = poem.split
        if split not in out or poem.metre is None or (metres is not None and poem.metre not in metres):
            continue
        texts, labels, poem_of = out[split]
        texts.extend(poem.hemistichs)
        labels.extend([poem.metre] * len(poem.hemistichs))
        poem_of.extend([poems_seen[split]] * len(poem.hemistichs))
        poems_seen[split] += 1
    return out


def train_classifier(data: str | Path, out_dir: str | Path, poets=None, time_budget: float = 900,
                     batch_size: int = 256, learning_rate: float = 3e-3, seed: int = 1337,
                     progress: bool = True, command_line: list[str] | None = None,
                     max_steps: int | None = None) -> dict:
    """Train the metre classifier on the train split's labelled hemistichs; pick the checkpoint
    with the best val accuracy; write it to out_dir with its report."""

    known = {m.id for m in load_catalogue()}
    data_by_split = labelled_hemistichs(data, ("train", "val"), poets, known)
    texts, labels, _ = data_by_split["train"]
    val_texts, val_labels, _ = data_by_split["val"]
    model, report = fit_classifier(ClassifierConfig(labels=sorted(set(labels))), texts, labels, val_texts, val_labels,
                                   time_budget, batch_size, learning_rate, seed, progress, max_steps=max_steps)
    report.update({"poets": list(poets) if poets else "all", "data": str(data), "command_line": command_line})
    save_classifier(model, out_dir, report)
    return report


def fit_classifier(config: ClassifierConfig, texts: list[str], labels: list, val_texts: list[str], val_labels: list,
                   time_budget: float = 900, batch_size: int = 256, learning_rate: float = 3e-3, seed: int = 1337,
                   progress: bool = True, balanced: bool = False, bag_lr_scale: float = 10.0,
                   max_steps: int | None = None, initial: dict | None = None,
                   network: Callable[[ClassifierConfig], MetreClassifier] = MetreClassifier,
                   ) -> tuple[MetreClassifier, dict]:
    """The training loop of both classifiers (and of the tell-apart judge, whose `network` adds a
    reader of words to this one and which starts from `initial` weights: a state dict of that network): AdamW on a cosine schedule that spans the time
    budget (or `max_steps`, whichever ends first), val accuracy every 500 steps, and the best
    checkpoint kept.

    Batches are drawn uniformly over hemistichs, or with `balanced` uniformly over labels first
    and then over that label's hemistichs, so that a label with few examples (Khayyam's quatrains
    beside Attar's masnavis) weighs as much as any other; val accuracy is then the mean of the
    per-label accuracies, for the same reason. The bag of words (if any) learns `bag_lr_scale` times
    faster: each of its rows moves only on the steps whose batch holds its word.
    """

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    index = {m: i for i, m in enumerate(config.labels)}
    y = torch.tensor([index[m] for m in labels])
    pools = [np.flatnonzero(y.numpy() == i) for i in range(len(config.labels))] if balanced else []
    pools = [pool for pool in pools if len(pool)]
    val_keep = [i for i, m in enumerate(val_labels) if m in index]
    val_x = [val_texts[i] for i in val_keep][:20000]
    val_y = torch.tensor([index[val_labels[i]] for i in val_keep][:20000])

    def val_accuracy() -> float:
        hit = (model.probabilities(val_x).argmax(-1) == val_y).float()
        if not balanced:
            return hit.mean().item()
        return torch.stack([hit[val_y == i].mean() for i in val_y.unique()]).mean().item()

    def draw() -> np.ndarray:
        if not balanced:
            return rng.integers(0, len(texts), size=batch_size)
        return np.array([pools[i][rng.integers(len(pools[i]))] for i in rng.integers(0, len(pools), size=batch_size)])

    model = network(config)
    if initial is not None:
        model.load_state_dict(initial)
    bag = [p for name, p in model.named_parameters() if name.startswith("bag.")]
    rest = [p for name, p in model.named_parameters() if not name.startswith("bag.")]
    optimizer = torch.optim.AdamW([{"params": rest, "scale": 1.0}, {"params": bag, "scale": bag_lr_scale}],
                                  lr=learning_rate, weight_decay=0.01)
    start, step, best, history = time.time(), 0, (-1.0, None), []
    bar = tqdm(desc=f"{config.task} classifier", unit="step", disable=not progress, mininterval=2)
    while time.time() - start < time_budget and (max_steps is None or step < max_steps):
        progress_frac = min(1.0, max((time.time() - start) / time_budget, step / (max_steps or math.inf)))
        for group in optimizer.param_groups:
            group["lr"] = group["scale"] * learning_rate * 0.5 * (1 + math.cos(math.pi * progress_frac))
        batch = draw()
        model.train()
        logits = model(*model.encode([texts[i] for i in batch]))
        loss = F.cross_entropy(logits, y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if step % 500 == 0:
            accuracy = val_accuracy()
            history.append({"step": step, "seconds": round(time.time() - start), "val_hemistich_accuracy": accuracy})
            bar.write(f"step {step}: val hemistich accuracy {accuracy:.4f}")
            if accuracy > best[0]:
                best = (accuracy, {k: v.clone() for k, v in model.state_dict().items()})
    bar.close()
    accuracy = val_accuracy()
    if best[1] is None or accuracy > best[0]:
        best = (accuracy, model.state_dict())
    model.load_state_dict(best[1])
    report = {"steps": step, "seconds": round(time.time() - start), "train_hemistichs": len(texts),
              "val_hemistichs": len(val_x), "best_val_hemistich_accuracy": best[0], "history": history,
              "seed": seed, "threads": torch.get_num_threads(), "batch_size": batch_size,
              "learning_rate": learning_rate, "balanced": balanced}
    return model.eval(), report
