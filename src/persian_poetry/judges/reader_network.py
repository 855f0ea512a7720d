"""The tell-apart judge's network: the metre classifier's reader of characters beside a reader of words.

The character BiGRU (`prosody.classifier.MetreClassifier`) hears a couplet's sounds (its metre, its
rhyme) but must learn every word from its letters; a second BiGRU reads the words themselves, in
order, each a hashed bucket with its own embedding (crc32: no vocabulary file, and an unseen word
still gets a bucket; the sizes are the judge's recipe, `tell_apart.WORD_*`). Both are pooled (mean
and max over their steps) and one linear layer reads the two together. Word order is what word salad gets wrong, and the word reader learns it
from a few hundred thousand couplets in CPU minutes (a couplet is about 15 words against 70 letters);
alone it told real couplets from their word shuffles about as well as the character reader (90% each,
BENCHMARKS.md), and the two together better than either.
"""

from __future__ import annotations

import torch
from torch import nn

from ..prosody.classifier import MetreClassifier, pooled_bigru
from ..prosody.classifier_inference import PAD, ClassifierConfig, encode_word_sequence


class ReaderNetwork(MetreClassifier):
    def __init__(self, config: ClassifierConfig, word_buckets: int, word_embedding: int, word_hidden: int):
        if config.words:
            raise ValueError("the reader network reads words in order; it takes no bag of words (words=0)")
        super().__init__(config)
        self.word_buckets = word_buckets
        self.word_embed = nn.Embedding(word_buckets + 1, word_embedding, padding_idx=PAD)
        self.word_rnn = nn.GRU(word_embedding, word_hidden, batch_first=True, bidirectional=True)
        self.head = nn.Linear(4 * config.hidden + 4 * word_hidden, len(config.labels))

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(char ids, word buckets in order) of these texts."""
        (ids,) = super().encode(texts)
        words = encode_word_sequence(texts, self.word_buckets, self.config.drop)
        return ids, torch.from_numpy(words)

    def forward(self, ids: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """(N, T) char ids and (N, W) word buckets -> (N, labels) logits."""
        return self.head(torch.cat([pooled_bigru(self.rnn, self.embed, ids),
                                    pooled_bigru(self.word_rnn, self.word_embed, words)], dim=-1))
