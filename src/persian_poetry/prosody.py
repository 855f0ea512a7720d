"""Prosody, combined: the rule-based scanner and the learned classifier judge each hemistich
together, a poem's metre is the best fit over all its hemistichs, and its rhyme is analysed.

For a hemistich h and a metre m the combined score is

    score(h, m) = log P_classifier(m | h) - RULE_WEIGHT * cost_rule(h, m)

where cost_rule is the scanner's cheapest reading of h in m (MISS_COST when it has none). The
classifier knows what the script hides (unwritten vowels, ezafe) from Ganjoor's labels; the
scanner knows what the metre allows. A poem's metre maximizes the sum over its hemistichs.
The two weights were chosen on the val split (`python benchmarks/tune_prosody.py --data ...`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from .errors import PoetryError
from .metres import load_catalogue
from .rhyme import Rhyme, analyze_rhyme
from .scansion import Scansion, scan_hemistich, scan_poem
from .text import PERSIAN_LETTERS, normalize

RULE_WEIGHT = 0.5
MISS_COST = 6.0
# A long masnavi section runs to some 2,000 couplets, about 100,000 characters. Scanning costs time
# and memory in proportion (2.6 million characters: 13 s and 0.5 GB), so longer text is refused up front.
MAX_SCAN_CHARS = 100_000


@dataclass
class HemistichProsody:
    text: str
    metre_id: int | None
    confidence: float  # softmax of the combined scores
    rule: Scansion  # the scanner's reading in `metre_id` (syllables, weights, alignment)
    classifier_metre: int | None
    classifier_probability: float


@dataclass
class PoemProsody:
    metre_id: int | None
    name: str | None
    feet: tuple[str, ...]
    confidence: float
    hemistichs: list[HemistichProsody]
    rhyme: Rhyme | None = None
    candidates: list[tuple[int, float]] = field(default_factory=list)  # (metre id, confidence)

    def to_dict(self) -> dict:
        return {
            "metre_id": self.metre_id, "name": self.name, "feet": list(self.feet), "confidence": self.confidence,
            "candidates": [{"metre_id": m, "confidence": c} for m, c in self.candidates],
            "hemistichs": [{"text": h.text, "metre_id": h.metre_id, "confidence": h.confidence,
                            "weights": h.rule.weights, "pattern": h.rule.pattern,
                            "syllables": [{"letters": s.letters, "weight": s.weight, "note": s.note}
                                          for s in h.rule.syllables],
                            "classifier_metre": h.classifier_metre,
                            "classifier_probability": h.classifier_probability} for h in self.hemistichs],
            "rhyme": None if self.rhyme is None else {
                "qafiya": self.rhyme.qafiya, "radif": list(self.rhyme.radif),
                "rhyme_letters": self.rhyme.rhyme_letters, "positions": list(self.rhyme.positions),
                "broken": list(self.rhyme.broken)},
        }


@lru_cache(maxsize=1)
def _default_classifier():
    from .classifier import DEFAULT_CLASSIFIER_DIR, load_classifier

    return load_classifier(DEFAULT_CLASSIFIER_DIR) if DEFAULT_CLASSIFIER_DIR.exists() else None


def combined_scores(texts: list[str], classifier=None, rule_weight: float = RULE_WEIGHT,
                    miss_cost: float = MISS_COST, scans: list[Scansion] | None = None):
    """(metre ids, (N, M) combined scores, rule scans, classifier probabilities or None)."""
    import torch

    classifier = classifier if classifier is not None else _default_classifier()
    scans = scans if scans is not None else [scan_hemistich(t, top=1, align=False) for t in texts]
    if classifier is not None:
        ids = list(classifier.config.labels)
        probs = classifier.probabilities(texts)
        log_probs = probs.clamp(min=1e-9).log()
    else:
        ids = [m.id for m in load_catalogue()]
        probs, log_probs = None, torch.zeros(len(texts), len(ids))
    costs = torch.tensor([[scan.costs.get(m, miss_cost) for m in ids] for scan in scans])
    return ids, log_probs - rule_weight * costs, scans, probs


def scan(text: str | list[str], form: str | None = None, classifier=None) -> PoemProsody:
    """Scan a poem (a list of hemistichs, or a text with one hemistich a line; a single line is a
    one-hemistich poem): its metre, each hemistich's syllables under that metre, and its rhyme.
    Text without Persian verse gives an empty result; text over MAX_SCAN_CHARS is a PoetryError."""
    lines = text.split("\n") if isinstance(text, str) else list(text)
    size = sum(map(len, lines))
    if size > MAX_SCAN_CHARS:
        raise PoetryError(f"a text of {size:,} characters is too long to scan at once (at most "
                          f"{MAX_SCAN_CHARS:,}); scan it in parts")
    hemistichs = [normalize(h) for h in lines]
    hemistichs = [h for h in hemistichs if any(ch in PERSIAN_LETTERS for ch in h)]
    if not hemistichs:
        return PoemProsody(None, None, (), 0.0, [])
    ids, scores, scans, probs = combined_scores(hemistichs, classifier)
    if probs is None and not any(s.costs for s in scans):
        return PoemProsody(None, None, (), 0.0, [])  # nothing to judge by
    total = scores.sum(0)
    confidence = (total - total.max()).exp()
    confidence = confidence / confidence.sum()
    order = total.argsort(descending=True).tolist()
    best = ids[order[0]]
    catalogue = {m.id: m for m in load_catalogue()}
    per = []
    for i, h in enumerate(hemistichs):
        row = (scores[i] - scores[i].max()).exp()
        row = row / row.sum()
        reading = scan_hemistich(h, metre=best, top=1) if best in scans[i].costs else scans[i]
        clf_best = int(probs[i].argmax()) if probs is not None else None
        per.append(HemistichProsody(h, best, float(row[order[0]]), reading,
                                    ids[clf_best] if clf_best is not None else None,
                                    float(probs[i, clf_best]) if probs is not None else 0.0))
    metre = catalogue.get(best)
    rhyme = analyze_rhyme(hemistichs, form) if len(hemistichs) > 1 else None
    return PoemProsody(best, metre.name if metre else None, tuple(metre.feet) if metre else (),
                       float(confidence[order[0]]), per, rhyme,
                       [(ids[j], float(confidence[j])) for j in order[:5]])


def evaluate_prosody(data, split: str = "test", limit: int | None = None, poets=None, classifier=None,
                     rule_weight: float = RULE_WEIGHT, miss_cost: float = MISS_COST, confusion_png=None,
                     progress: bool = True) -> dict:
    """Metre accuracy of the scanner, the classifier and the combination against Ganjoor's labels,
    per hemistich (each hemistich vs its poem's label) and per poem, over all labelled poems of
    `split` and over the 20 most common metres."""
    from collections import Counter

    import torch
    from tqdm import tqdm

    from .classifier import labelled_hemistichs

    known = {m.id for m in load_catalogue()}
    texts, labels, poem_of = labelled_hemistichs(data, (split,), poets, known)[split]
    if limit is not None:
        keep = [i for i, p in enumerate(poem_of) if p < limit]
        texts, labels, poem_of = [texts[i] for i in keep], [labels[i] for i in keep], [poem_of[i] for i in keep]
    if not texts:
        raise ValueError(f"no labelled {split} poems in {data}")
    scans = [scan_hemistich(t, top=1, align=False) for t in tqdm(texts, desc="scanning", disable=not progress,
                                                                  mininterval=2)]
    classifier = classifier if classifier is not None else _default_classifier()
    ids, combined, _, probs = combined_scores(texts, classifier, rule_weight, miss_cost, scans)
    gold = torch.tensor(labels)
    poems = torch.tensor(poem_of)
    n_poems = int(poems.max()) + 1
    poem_gold = torch.zeros(n_poems, dtype=torch.long)
    poem_gold[poems] = gold
    id_tensor = torch.tensor(ids)

    def by_scores(scores):
        poem_scores = torch.zeros(n_poems, len(ids)).index_add_(0, poems, scores)
        return id_tensor[scores.argmax(1)], id_tensor[poem_scores.argmax(1)]

    # The scanner alone is judged by its own choices: its best reading per hemistich (with its
    # prior over metres), and its own fit of one metre to all hemistichs of a poem.
    by_poem: dict[int, list[str]] = {}
    for text, p in zip(texts, poem_of, strict=True):
        by_poem.setdefault(p, []).append(text)
    predictions = {
        "rule": (torch.tensor([s.metre_id if s.metre_id is not None else -1 for s in scans]),
                 torch.tensor([scan_poem(by_poem[p], top=1, align=False).metre_id or -1 for p in range(n_poems)])),
        "combined": by_scores(combined),
    }
    if probs is not None:
        predictions["classifier"] = by_scores(probs.clamp(min=1e-9).log())
    top20 = {m for m, _ in Counter(poem_gold.tolist()).most_common(20)}
    in20_h = torch.tensor([g in top20 for g in labels])
    in20_p = torch.tensor([g in top20 for g in poem_gold.tolist()])
    result = {"split": split, "poems": n_poems, "hemistichs": len(texts), "rule_weight": rule_weight,
              "miss_cost": miss_cost, "methods": {}}
    for name, (hemi_pred, poem_pred) in predictions.items():
        result["methods"][name] = {
            "hemistich_accuracy": (hemi_pred == gold).float().mean().item(),
            "poem_accuracy": (poem_pred == poem_gold).float().mean().item(),
            "hemistich_accuracy_top20": (hemi_pred == gold)[in20_h].float().mean().item(),
            "poem_accuracy_top20": (poem_pred == poem_gold)[in20_p].float().mean().item(),
        }
        if name == "combined" and confusion_png:
            _plot_confusion(poem_gold.tolist(), poem_pred.tolist(), sorted(top20), confusion_png)
    return result


def _plot_confusion(gold: list[int], pred: list[int], metres: list[int], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    index = {m: i for i, m in enumerate(metres)}
    other = len(metres)
    matrix = np.zeros((other + 1, other + 1))
    for g, p in zip(gold, pred, strict=True):
        matrix[index.get(g, other), index.get(p, other)] += 1
    fig, ax = plt.subplots(figsize=(8, 7))
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
    plt.close(fig)
