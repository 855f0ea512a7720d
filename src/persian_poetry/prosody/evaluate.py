"""Metre accuracy against Ganjoor's labels: the scanner, the classifier and their combination
(`persian-poetry evaluate-prosody`), per hemistich and per poem, with a confusion plot."""

from __future__ import annotations

from collections import Counter

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from tqdm import tqdm

from .classifier import labelled_hemistichs
from .metres import load_catalogue
from .scan import RULE_WEIGHT, combined_scores, default_classifier
from .scansion import MISS_COST, scan_hemistich, scan_poem


def evaluate_prosody(data, split: str = "test", limit: int | None = None, poets=None, classifier=None,
                     rule_weight: float = RULE_WEIGHT, miss_cost: float = MISS_COST, confusion_png=None,
                     progress: bool = True) -> dict:
    """Metre accuracy of the scanner, the classifier and the combination against Ganjoor's labels,
    per hemistich (each hemistich vs its poem's label) and per poem, over all labelled poems of
    `split` and over the 20 most common metres."""
    known = {m.id for m in load_catalogue()}
    texts, labels, poem_of = labelled_hemistichs(data, (split,), poets, known)[split]
    if limit is not None:
        keep = [i for i, p in enumerate(poem_of) if p < limit]
        texts, labels, poem_of = [texts[i] for i in keep], [labels[i] for i in keep], [poem_of[i] for i in keep]
    if not texts:
        raise ValueError(f"no labelled {split} poems in {data}")
    scans = [scan_hemistich(t, top=1, align=False) for t in tqdm(texts, desc="scanning", disable=not progress,
                                                                  mininterval=2)]
    classifier = classifier if classifier is not None else default_classifier()
    ids, combined, _, probs = combined_scores(texts, classifier, rule_weight, miss_cost, scans)
    gold = np.array(labels)
    poems = np.array(poem_of)
    n_poems = int(poems.max()) + 1
    poem_gold = np.zeros(n_poems, dtype=np.int64)
    poem_gold[poems] = gold
    id_array = np.array(ids)

    def by_scores(scores):
        poem_scores = np.zeros((n_poems, len(ids)))
        np.add.at(poem_scores, poems, scores)
        return id_array[scores.argmax(1)], id_array[poem_scores.argmax(1)]

    # The scanner alone is judged by its own choices: its best reading per hemistich (with its
    # prior over metres), and its own fit of one metre to all hemistichs of a poem.
    by_poem: dict[int, list[str]] = {}
    for text, p in zip(texts, poem_of, strict=True):
        by_poem.setdefault(p, []).append(text)
    predictions = {
        "rule": (np.array([s.metre_id if s.metre_id is not None else -1 for s in scans]),
                 np.array([scan_poem(by_poem[p], top=1, align=False).metre_id or -1 for p in range(n_poems)])),
        "combined": by_scores(combined),
    }
    if probs is not None:
        predictions["classifier"] = by_scores(np.log(np.maximum(probs, 1e-9)))
    top20 = {m for m, _ in Counter(poem_gold.tolist()).most_common(20)}
    in20_h = np.array([g in top20 for g in labels])
    in20_p = np.array([g in top20 for g in poem_gold.tolist()])
    result = {"split": split, "poems": n_poems, "hemistichs": len(texts), "rule_weight": rule_weight,
              "miss_cost": miss_cost, "methods": {}}
    for name, (hemi_pred, poem_pred) in predictions.items():
        result["methods"][name] = {
            "hemistich_accuracy": float((hemi_pred == gold).mean()),
            "poem_accuracy": float((poem_pred == poem_gold).mean()),
            "hemistich_accuracy_top20": float((hemi_pred == gold)[in20_h].mean()),
            "poem_accuracy_top20": float((poem_pred == poem_gold)[in20_p].mean()),
        }
        if name == "combined" and confusion_png:
            _plot_confusion(poem_gold.tolist(), poem_pred.tolist(), sorted(top20), confusion_png)
    return result


def _plot_confusion(gold: list[int], pred: list[int], metres: list[int], path) -> None:
    index = {m: i for i, m in enumerate(metres)}
    other = len(metres)
    matrix = np.zeros((other + 1, other + 1))
    for g, p in zip(gold, pred, strict=True):
        matrix[index.get(g, other), index.get(p, other)] += 1
    fig = Figure(figsize=(8, 7))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(np.log1p(matrix), cmap="Blues")
    labels = [str(m) for m in metres] + ["other"]
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("predicted metre (Ganjoor id)")
    ax.set_ylabel("Ganjoor's label")
    ax.set_title("Poem-level metre, combined scanner + classifier (counts, log colour)")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if matrix[i, j]:
                ax.text(j, i, int(matrix[i, j]), ha="center", va="center", fontsize=5)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
