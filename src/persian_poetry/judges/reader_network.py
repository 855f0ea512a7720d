"""The tell-apart judge's network: the metre classifier's reader of characters beside a reader of
words, and, for a judge, what the metre classifier hears of the couplet.

The character BiGRU (`prosody.classifier.MetreClassifier`) hears a couplet's sounds (its metre, its
rhyme) but must learn every word from its letters; a second BiGRU reads the words themselves, in
order, each a hashed bucket with its own embedding (crc32: no vocabulary file, and an unseen word
still gets a bucket; the sizes are the judge's recipe, `tell_apart.WORD_*`). Both are pooled (mean
and max over their steps) and one linear layer reads the two together. Word order is what word salad gets wrong, and the word reader learns it
from a few hundred thousand couplets in CPU minutes (a couplet is about 15 words against 70 letters);
alone it told real couplets from their word shuffles about as well as the character reader (90% each,
BENCHMARKS.md), and the two together better than either.

A judge (given `metre_separator`) also reads `metre_evidence`: how clearly the shipped metre classifier
hears one metre in the couplet. Without vowel marks, a 64-wide character reader hears little metre,
and metre is what a reshuffle of a line's words breaks most surely (a poet's order is the one that
scans). The metre classifier is a judge the decoding never consults (it steers by the rule-based
scanner), so the evidence is not the generator's own. The judge starts from the reader (trained
without it) with the evidence's weights at zero (`with_metre_head`): at step 0 it is the reader.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..prosody.classifier import MetreClassifier, pooled_bigru
from ..prosody.classifier_inference import PAD, ClassifierConfig, clean_hemistichs, encode_word_sequence

METRE_EVIDENCE = 6  # the columns of `metre_evidence`
_FLOOR = 1e-6  # probabilities are clipped here before their logarithm


def metre_evidence(texts: list[str], separator: str, drop: str) -> np.ndarray:
    """(N, METRE_EVIDENCE) float32 for couplets written "first{separator}second": what the shipped
    metre classifier hears in them, whichever metre it is: the log-probability of its top metre in the
    less and in the more certain hemistich, the entropy of the less certain one, whether both
    hemistichs get the same top metre, the log-probability that both are in one metre
    (log sum_m p1(m) p2(m)), and that of the first hemistich's top metre for the second. The
    characters in `drop` (vowel marks, punctuation) are taken out first, as the judge's readers
    take them out: in Ganjoor they are the editors', and generated verse has none."""
    from ..prosody.scan import default_classifier

    classifier = default_classifier()
    if classifier is None:
        raise RuntimeError("the package ships no metre classifier: a judge that hears metre needs it")
    halves = [(text.split(separator, 1) + [""])[:2] for text in texts]
    probs = np.asarray(classifier.probabilities(clean_hemistichs([h for pair in halves for h in pair], drop)),
                       dtype=np.float64).reshape(len(texts), 2, -1)
    top = np.log(np.maximum(probs.max(-1), _FLOOR))  # (N, 2)
    entropy = -(probs * np.log(np.maximum(probs, _FLOOR))).sum(-1)  # (N, 2)
    first_top = probs[:, 0].argmax(-1)
    second_on_first = np.log(np.maximum(probs[np.arange(len(texts)), 1, first_top], _FLOOR))
    joint = np.log(np.maximum((probs[:, 0] * probs[:, 1]).sum(-1), _FLOOR))
    agree = (first_top == probs[:, 1].argmax(-1)).astype(np.float64)
    return np.stack([top.min(1), top.max(1), entropy.max(1), agree, joint, second_on_first], 1).astype(np.float32)


class ReaderNetwork(MetreClassifier):
    def __init__(self, config: ClassifierConfig, word_buckets: int, word_embedding: int, word_hidden: int,
                 metre_separator: str | None = None):
        """`metre_separator`: what joins a text's two hemistichs, for a network that hears their metre
        (`metre_evidence`); None for one that does not (the reader)."""
        if config.words:
            raise ValueError("the reader network reads words in order; it takes no bag of words (words=0)")
        super().__init__(config)
        self.word_buckets = word_buckets
        self.metre_separator = metre_separator
        self._heard: dict[str, np.ndarray] = {}  # text -> its metre evidence (training reads each text many times)
        self.word_embed = nn.Embedding(word_buckets + 1, word_embedding, padding_idx=PAD)
        self.word_rnn = nn.GRU(word_embedding, word_hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(4 * config.hidden + 4 * word_hidden + (METRE_EVIDENCE if self.hears_metre else 0),
                              len(config.labels))

    @property
    def hears_metre(self) -> bool:
        return self.metre_separator is not None

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, ...]:
        """(char ids, word buckets in order[, metre evidence]) of these texts."""
        (ids,) = super().encode(texts)
        words = torch.from_numpy(encode_word_sequence(texts, self.word_buckets, self.config.drop))
        if not self.hears_metre:
            return ids, words
        new = [t for t in dict.fromkeys(texts) if t not in self._heard]
        if new:
            self._heard.update(zip(new, metre_evidence(new, self.metre_separator, self.config.drop), strict=True))
        return ids, words, torch.from_numpy(np.stack([self._heard[t] for t in texts]))

    def forward(self, ids: torch.Tensor, words: torch.Tensor, metre: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T) char ids, (N, W) word buckets[, (N, METRE_EVIDENCE) metre evidence] -> (N, labels) logits."""
        parts = [pooled_bigru(self.rnn, self.embed, ids), pooled_bigru(self.word_rnn, self.word_embed, words)]
        if self.hears_metre:
            if metre is None:
                raise ValueError("this network hears metre: pass the metre evidence that `encode` gives")
            parts.append(metre.to(parts[0].dtype))
        return self.head(torch.cat(parts, dim=-1))


def with_metre_head(reader_weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A reader's weights (a network that hears no metre) as a judge's start: the head's metre columns zero, so
    the judge reads at first exactly as the reader does and learns what the metre tells."""
    weights = dict(reader_weights)
    head = weights["head.weight"]
    weights["head.weight"] = torch.cat([head, head.new_zeros(head.shape[0], METRE_EVIDENCE)], dim=1)
    return weights
