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

import numpy as np

from ..assets import METRE_CLASSIFIER_DIR
from ..errors import PoetryError
from ..text import PERSIAN_LETTERS, normalize
from .classifier_inference import load_classifier
from .metres import load_catalogue
from .rhyme import Rhyme, analyze_rhyme
from .scansion import MISS_COST, Scansion, scan_hemistich

RULE_WEIGHT = 0.5
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
def default_classifier():
    """The shipped metre classifier, for inference in numpy: `scan` imports no torch (a second or more
    to import); tests/test_classifier_inference.py checks it. None where the package ships none."""
    return load_classifier(METRE_CLASSIFIER_DIR) if METRE_CLASSIFIER_DIR.exists() else None


def combined_scores(texts: list[str], classifier=None, rule_weight: float = RULE_WEIGHT,
                    miss_cost: float = MISS_COST, scans: list[Scansion] | None = None):
    """(metre ids, (N, M) combined scores, rule scans, (N, M) classifier probabilities or None).
    `classifier`: anything with `.config.labels` and `.probabilities(texts)` (default: the shipped one)."""
    classifier = classifier if classifier is not None else default_classifier()
    scans = scans if scans is not None else [scan_hemistich(t, top=1, align=False) for t in texts]
    if classifier is not None:
        ids = list(classifier.config.labels)
        probs = np.asarray(classifier.probabilities(texts))  # numpy's Classifier, or torch's MetreClassifier
        log_probs = np.log(np.maximum(probs, 1e-9))
    else:
        ids = [m.id for m in load_catalogue()]
        probs, log_probs = None, np.zeros((len(texts), len(ids)))
    costs = np.array([[scan.costs.get(m, miss_cost) for m in ids] for scan in scans], dtype=np.float64).reshape(len(scans), len(ids))
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
    confidence = np.exp(total - total.max())
    confidence = confidence / confidence.sum()
    order = np.argsort(-total, kind="stable").tolist()
    best = ids[order[0]]
    catalogue = {m.id: m for m in load_catalogue()}
    per = []
    for i, h in enumerate(hemistichs):
        row = np.exp(scores[i] - scores[i].max())
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
