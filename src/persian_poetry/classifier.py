"""A small learned metre classifier: hemistich characters -> metre, with a probability.

A character embedding, a bidirectional GRU and mean+max pooling feed a linear layer over the
metres of the catalogue. It learns what the rule-based scanner cannot see in the script (which
short vowels are unwritten, where ezafe falls) from Ganjoor's labelled hemistichs of the train
split. `prosody.scan` combines it with the scanner. Saved as safetensors + JSON like the GPT.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .text import ALPHABET, normalize

DEFAULT_CLASSIFIER_DIR = Path(__file__).parent / "metre_classifier"
CHARS = sorted(ALPHABET)
PAD, UNK = 0, 1
_STOI = {ch: i + 2 for i, ch in enumerate(CHARS)}
MAX_CHARS = 72


@dataclass
class ClassifierConfig:
    labels: list[int]  # Ganjoor metre ids, in output order
    embedding: int = 48
    hidden: int = 128
    max_chars: int = MAX_CHARS


def encode_hemistichs(texts: list[str], max_chars: int = MAX_CHARS) -> torch.Tensor:
    """(N, T) char ids of normalized hemistichs, right-padded with PAD; T = longest, capped."""
    rows = [[_STOI.get(ch, UNK) for ch in normalize(t)][:max_chars] or [UNK] for t in texts]
    width = max(len(r) for r in rows)
    out = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        out[i, :len(row)] = torch.tensor(row)
    return out


class MetreClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(len(CHARS) + 2, config.embedding, padding_idx=PAD)
        self.rnn = nn.GRU(config.embedding, config.hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(4 * config.hidden, len(config.labels))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(N, T) char ids -> (N, metres) logits."""
        mask = (ids != PAD).unsqueeze(-1)  # (N, T, 1)
        lengths = mask.sum(1).squeeze(-1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(ids), lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.size(1))  # (N, T, 2H)
        mean = (out * mask).sum(1) / mask.sum(1).clamp(min=1)
        peak = out.masked_fill(~mask, -1e4).max(1).values
        return self.head(torch.cat([mean, peak], dim=-1))

    @torch.no_grad()
    def probabilities(self, texts: list[str], batch_size: int = 512) -> torch.Tensor:
        """(N, metres) probabilities for hemistichs (labels in `config.labels` order)."""
        self.eval()
        parts = [F.softmax(self(encode_hemistichs(texts[i:i + batch_size], self.config.max_chars)), dim=-1)
                 for i in range(0, len(texts), batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, len(self.config.labels))


def save_classifier(model: MetreClassifier, directory: str | Path, report: dict | None = None) -> None:
    from safetensors.torch import save_file

    from .checkpoint import atomic_write, sha256_of

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write(directory / "model.safetensors", lambda tmp: save_file(model.state_dict(), tmp))
    config = {"classifier": asdict(model.config), "alphabet": CHARS,
              "weights_sha256": sha256_of(directory / "model.safetensors"), "training": report or {}}
    (directory / "config.json").write_text(json.dumps(config, ensure_ascii=False, indent=1), encoding="utf-8")


def load_classifier(directory: str | Path | None = None) -> MetreClassifier:
    from safetensors.torch import load_file

    from .checkpoint import ModelLoadError, sha256_of

    directory = Path(directory) if directory is not None else DEFAULT_CLASSIFIER_DIR
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"cannot read metre classifier config in {directory}: {err}") from None
    if config.get("alphabet") != CHARS:
        raise ModelLoadError(f"{directory}: the classifier was trained on another alphabet")
    weights = directory / "model.safetensors"
    if not weights.exists() or sha256_of(weights) != config.get("weights_sha256"):
        raise ModelLoadError(f"{weights} is missing or does not match the sha256 recorded in config.json")
    model = MetreClassifier(ClassifierConfig(**config["classifier"]))
    model.load_state_dict(load_file(weights))
    return model.eval()


def labelled_hemistichs(data: str | Path, splits: tuple[str, ...] = ("train", "val"), poets=None,
                        metres: set[int] | None = None) -> dict[str, tuple[list[str], list[int], list[int]]]:
    """{split: (hemistichs, metre ids, poem number)} of the labelled poems of a corpus, one pass."""
    from .corpus import read_jsonl

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
                     progress: bool = True, command_line: list[str] | None = None) -> dict:
    """Train the metre classifier on the train split's labelled hemistichs; pick the checkpoint
    with the best val accuracy; write it to out_dir with its report."""
    from tqdm import tqdm

    from .metres import load_catalogue

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    known = {m.id for m in load_catalogue()}
    data_by_split = labelled_hemistichs(data, ("train", "val"), poets, known)
    texts, labels, _ = data_by_split["train"]
    val_texts, val_labels, _ = data_by_split["val"]
    label_ids = sorted(set(labels))
    index = {m: i for i, m in enumerate(label_ids)}
    y = torch.tensor([index[m] for m in labels])
    val_keep = [i for i, m in enumerate(val_labels) if m in index]
    val_x = [val_texts[i] for i in val_keep][:20000]
    val_y = torch.tensor([index[val_labels[i]] for i in val_keep][:20000])
    model = MetreClassifier(ClassifierConfig(labels=label_ids))
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    start, step, best, history = time.time(), 0, (-1.0, None), []
    bar = tqdm(desc="metre classifier", unit="step", disable=not progress, mininterval=2)
    while time.time() - start < time_budget:
        progress_frac = min(1.0, (time.time() - start) / time_budget)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate * 0.5 * (1 + math.cos(math.pi * progress_frac))
        batch = rng.integers(0, len(texts), size=batch_size)
        model.train()
        logits = model(encode_hemistichs([texts[i] for i in batch]))
        loss = F.cross_entropy(logits, y[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
        if step % 500 == 0:
            accuracy = (model.probabilities(val_x).argmax(-1) == val_y).float().mean().item()
            history.append({"step": step, "seconds": round(time.time() - start), "val_hemistich_accuracy": accuracy})
            bar.write(f"step {step}: val hemistich accuracy {accuracy:.4f}")
            if accuracy > best[0]:
                best = (accuracy, {k: v.clone() for k, v in model.state_dict().items()})
    bar.close()
    accuracy = (model.probabilities(val_x).argmax(-1) == val_y).float().mean().item()
    if accuracy > best[0]:
        best = (accuracy, model.state_dict())
    model.load_state_dict(best[1])
    report = {"steps": step, "seconds": round(time.time() - start), "train_hemistichs": len(texts),
              "val_hemistichs": len(val_x), "best_val_hemistich_accuracy": best[0], "history": history,
              "seed": seed, "poets": list(poets) if poets else "all", "data": str(data),
              "command_line": command_line, "threads": torch.get_num_threads()}
    save_classifier(model, out_dir, report)
    return report
