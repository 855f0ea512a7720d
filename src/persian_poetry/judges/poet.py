"""Which of the ten offered poets wrote these verses: the metre classifier's network
(`classifier.py`: characters, a BiGRU, mean+max pooling, a linear layer) with poets as its labels,
and a bag of hashed words and word pairs beside the GRU (a poet is known by his words).

It learns from the hemistichs of the train split, class-balanced: Attar's, Moulavi's and
Ferdowsi's long masnavis would otherwise drown Khayyam's few hundred quatrains, and a poem
generated "as Khayyam" must be judged by a classifier that has no reason to prefer Attar. It
reads the text without short-vowel marks and punctuation: generated poems carry no vowel marks
by default, and in Ganjoor both are mostly the editors' choice, not the poet's.

A poem's verdict pools its hemistichs: the mean of their log-probabilities (each hemistich a
vote, a confident one louder), renormalized over the ten poets. Issue 5 uses it to check that a
generated poem reads like the poet who was asked for.

Judging (`load_poet_classifier`, `classify_poet`) runs the network in numpy
(`prosody/classifier_inference.py`) and imports no torch; training and its evaluation do.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..assets import POET_CLASSIFIER_DIR
from ..data.corpus import OFFERED_POETS, read_jsonl
from ..errors import ModelLoadError, PoetryError
from ..prosody.classifier_inference import Classifier, ClassifierConfig, load_classifier
from ..text import DIACRITICS, PERSIAN_LETTERS, PUNCTUATION, normalize

if TYPE_CHECKING:
    from ..prosody.classifier import MetreClassifier

# Ignored in the input: short vowels, tanvin, tashdid, sukun, dagger alef and punctuation. The
# hamza of the ezafe (U+0654) stays: it is part of the spelling, and generation keeps it too.
IGNORED = DIACRITICS.replace("\u0654", "") + PUNCTUATION

Split = tuple[list[str], list[str], list[int]]  # hemistichs, their poets, their poem's number


def poet_hemistichs(data: str | Path, splits: tuple[str, ...] = ("train", "val", "test"),
                    poets: tuple[str, ...] = OFFERED_POETS) -> dict[str, Split]:
    """{split: (hemistichs, poet of each, poem number of each)} for the poems of `poets`, one pass."""
    out: dict[str, Split] = {s: ([], [], []) for s in splits}
    poems_seen = dict.fromkeys(splits, 0)
    for poem in read_jsonl(data, poets):
        if poem.split not in out:
            continue
        texts, labels, poem_of = out[poem.split]
        texts.extend(poem.hemistichs)
        labels.extend([poem.poet] * len(poem.hemistichs))
        poem_of.extend([poems_seen[poem.split]] * len(poem.hemistichs))
        poems_seen[poem.split] += 1
    return out


def poem_log_probs(classifier: Classifier | MetreClassifier, texts: list[str],
                   poem_of: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """(hemistich log-probabilities (N, P), poem scores (poems, P)), as numpy arrays: each poem's
    mean hemistich log-probability, renormalized (a log-distribution over the poets). `classifier`:
    the numpy `Classifier` or the PyTorch `MetreClassifier` (training's evaluation)."""
    log_probs = np.log(np.maximum(np.asarray(classifier.probabilities(texts), dtype=np.float32), 1e-9))
    poems = np.asarray(poem_of, dtype=np.int64)
    n_poems = int(poems.max()) + 1 if len(poem_of) else 0
    sums = np.zeros((n_poems, log_probs.shape[1]), dtype=np.float32)
    np.add.at(sums, poems, log_probs)
    means = sums / np.maximum(np.bincount(poems, minlength=n_poems), 1)[:, None].astype(np.float32)
    shifted = means - means.max(1, keepdims=True)
    return log_probs, shifted - np.log(np.exp(shifted).sum(1, keepdims=True))


def evaluate_poet_classifier(classifier: MetreClassifier, texts: list[str], poets: list[str],
                             poem_of: list[int], split: str = "test") -> dict:
    """Poem- and hemistich-level accuracy against the true poets, overall, as the mean over poets,
    and per poet (with the poet most often predicted instead); plus two other poolings of a poem's
    hemistichs for comparison (the mean probability, a majority vote)."""
    import torch

    if not texts:
        raise PoetryError(f"no poems of the offered poets in the {split} split")
    labels = list(classifier.config.labels)
    index = {p: i for i, p in enumerate(labels)}
    gold = torch.tensor([index[p] for p in poets])
    log_probs, poem_scores = map(torch.from_numpy, poem_log_probs(classifier, texts, poem_of))
    poems = torch.tensor(poem_of)
    poem_gold = torch.zeros(poem_scores.size(0), dtype=torch.long)
    poem_gold[poems] = gold
    hemi_pred, poem_pred = log_probs.argmax(1), poem_scores.argmax(1)
    mean_prob = torch.zeros_like(poem_scores).index_add_(0, poems, log_probs.exp())
    votes = torch.zeros_like(poem_scores).index_add_(0, poems, torch.eye(len(labels))[hemi_pred])
    per_poet = {}
    for i, poet in enumerate(labels):
        mine, mine_h = poem_gold == i, gold == i
        if not mine.any():
            continue
        wrong = poem_pred[mine & (poem_pred != i)]
        per_poet[poet] = {"poems": int(mine.sum()), "poem_accuracy": (poem_pred[mine] == i).float().mean().item(),
                          "hemistichs": int(mine_h.sum()),
                          "hemistich_accuracy": (hemi_pred[mine_h] == i).float().mean().item(),
                          "mistaken_for": labels[int(wrong.mode().values)] if len(wrong) else None}
    return {
        "split": split, "poems": int(poem_gold.numel()), "hemistichs": len(texts),
        "poem_accuracy": (poem_pred == poem_gold).float().mean().item(),
        "hemistich_accuracy": (hemi_pred == gold).float().mean().item(),
        "poem_accuracy_mean_over_poets": sum(p["poem_accuracy"] for p in per_poet.values()) / len(per_poet),
        "hemistich_accuracy_mean_over_poets": sum(p["hemistich_accuracy"] for p in per_poet.values()) / len(per_poet),
        "poem_accuracy_by_pooling": {
            "mean_log_probability": (poem_pred == poem_gold).float().mean().item(),
            "mean_probability": (mean_prob.argmax(1) == poem_gold).float().mean().item(),
            "majority_vote": (votes.argmax(1) == poem_gold).float().mean().item()},
        "per_poet": per_poet,
    }


def train_poet_classifier(data: str | Path, out_dir: str | Path, time_budget: float = 720, batch_size: int = 64,
                          learning_rate: float = 3e-3, seed: int = 1337, progress: bool = True,
                          command_line: list[str] | None = None, hidden: int = 64, words: int = 1 << 16,
                          max_steps: int | None = None) -> dict:
    """Train on the train split (class-balanced), keep the checkpoint with the best val accuracy
    (mean over poets), score it on the val and test splits, and write it with that report to out_dir.

    The defaults were chosen on the val split in 200-second runs on one CPU thread: a GRU half the
    metre classifier's width and batches of 64 give more steps in the time, and the bag of words
    (zero-initialised, 10x the learning rate) lifted val poem accuracy from 53% to 79%."""
    from ..prosody.classifier import fit_classifier, save_classifier

    splits = poet_hemistichs(data)
    texts, poets, _ = splits["train"]
    present = [p for p in OFFERED_POETS if p in set(poets)]
    if not present or not splits["val"][0]:
        raise PoetryError(f"{data}: no train or no val poems of the offered poets ({', '.join(OFFERED_POETS)})")
    config = ClassifierConfig(labels=present, task="poet", drop=IGNORED, hidden=hidden, words=words)
    model, report = fit_classifier(config, texts, poets, *splits["val"][:2], time_budget, batch_size, learning_rate,
                                   seed, progress, balanced=True, max_steps=max_steps)
    report.update({"data": str(data), "command_line": command_line, "split": "corpus.split_of (train 98%, val 1%, "
                   "test 1% by poem id hash)", "train_poems": len(set(splits["train"][2])),
                   "val_metric": "hemistich accuracy, mean over poets", "pooling": "mean hemistich log-probability"})
    for split in ("val", "test"):
        if splits[split][0]:
            report[split] = evaluate_poet_classifier(model, *splits[split], split=split)
    save_classifier(model, out_dir, report)
    return report


def load_poet_classifier(directory: str | Path | None = None) -> Classifier:
    """The poet classifier in `directory` (default: the shipped one), for inference (numpy, no torch)."""

    model = load_classifier(directory if directory is not None else POET_CLASSIFIER_DIR)
    if model.config.task != "poet":
        raise ModelLoadError(f"{directory} holds a {model.config.task} classifier, not a poet classifier")
    return model


@lru_cache(maxsize=1)
def _default_poet_classifier() -> Classifier:
    return load_poet_classifier()


def classify_poet(hemistichs: list[str], classifier: Classifier | MetreClassifier | None = None
                  ) -> tuple[str, float, dict[str, float]]:
    """(poet, probability, {poet: probability}) for a poem given as its hemistichs: the poet whose
    mean hemistich log-probability is highest, and the renormalized distribution over all poets."""
    texts = [normalize(h) for h in hemistichs]
    texts = [t for t in texts if any(ch in PERSIAN_LETTERS for ch in t)]
    if not texts:
        raise PoetryError("no Persian verse to classify")
    classifier = classifier if classifier is not None else _default_poet_classifier()
    _, scores = poem_log_probs(classifier, texts, [0] * len(texts))
    probs = np.exp(scores[0]).tolist()
    all_probs = dict(zip(classifier.config.labels, probs, strict=True))
    best = max(all_probs, key=all_probs.get)
    return best, all_probs[best], all_probs
