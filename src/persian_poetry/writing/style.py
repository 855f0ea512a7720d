"""Poet style at sampling time: each poet's preference over the model's tokens.

The model reads the requested poet in its control header, but a small model trained for two CPU
hours learns the poet only faintly: its unconstrained poems were attributed to the requested
poet (by `poet.py`'s classifier) in 28 of 100 cases. A poet is known first by his words, and
those can be counted. So every offered poet gets a row over the vocabulary,

    bias[poet, t] = log p(t | poet) - log p(t | the offered poets together),

counted over the hemistich tokens of the train split, each poet's distribution smoothed towards
the common one (a Dirichlet prior of PRIOR_TOKENS pseudo-tokens, so that a token seen twice in
Khayyam's few quatrains does not look like his signature) and clipped to +-MAX_BIAS. Sampling
adds `strength * bias[poet]` to the logits: the model's next-token distribution multiplied by
the poet's token likelihood ratio, a product of experts in the manner of class-conditional
steering (GeDi, PPLM's bag of words) with the simplest possible class model. Strength 0 is the
model alone; the metre, rhyme and lexicon constraints apply on top, as before.

Only tokens that begin a word carry a bias (with a BPE tokenizer, the pieces that start with a
space; a character model's every token): the prior chooses words, the model spells them. Biasing
word-inner pieces too made the writer assemble words that are not words or break the metre, and
take them back (measured on Hafez ghazals: about 1.7 times the take-backs, 20% slower poems, for
a few points of poet share).

A token the poem already holds keeps only the negative part of its bias (`poem_bias`): a
poet's favourite word is welcome once, not in every line. Without that rule the prior fills a
poem with its strongest tokens (at strength 2, a Hafez ghazal of nothing but his pen name).

Built by `persian-poetry build-style --data ...` for a model directory (it depends on the
model's tokenizer) and saved there as style.safetensors; `load_model` picks it up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from ..assets import DEFAULT_MODEL_DIR
from ..data.corpus import OFFERED_POETS, read_jsonl
from ..data.tokenizer import CharTokenizer, load_tokenizer
from ..errors import PoetryError
from ..files import atomic_write
from .request import DEFAULT_STRENGTH

STYLE_FILE = "style.safetensors"
PRIOR_TOKENS = 2000.0
MAX_BIAS = 3.0


@dataclass(frozen=True)
class StylePrior:
    poets: tuple[str, ...]
    bias: np.ndarray  # (poets, vocab) float32

    def for_poet(self, poet: str, strength: float = DEFAULT_STRENGTH) -> np.ndarray | None:
        """The logit offset for `poet` at `strength`; None where there is nothing to add."""
        if strength == 0 or poet not in self.poets:
            return None
        return np.float32(strength) * self.bias[self.poets.index(poet)]


def poem_bias(bias: np.ndarray, used: list[int]) -> np.ndarray:
    """`bias` for the next token of a poem whose tokens so far are `used`: a token already used
    loses its positive part (see the module docstring)."""
    if not used:
        return bias
    index = np.fromiter(set(used), dtype=np.int64)
    out = bias.copy()
    out[index] = np.minimum(bias[index], 0.0)
    return out


def style_bias(counts: np.ndarray, prior_tokens: float = PRIOR_TOKENS, max_bias: float = MAX_BIAS,
               word_initial: np.ndarray | None = None) -> np.ndarray:
    """(poets, vocab) token counts -> the clipped log likelihood ratios described above. Tokens no
    poet uses (specials, unseen pieces) get 0, and so do tokens outside `word_initial` (a (vocab,)
    boolean mask; None: every token)."""
    counts = np.asarray(counts, dtype=np.float64)
    total = counts.sum(0)
    common = (total + 1e-3) / (total + 1e-3).sum()  # a whisper of add-k keeps every log finite
    own = (counts + prior_tokens * common) / (counts.sum(1, keepdims=True) + prior_tokens)
    bias = np.clip(np.log(own) - np.log(common), -max_bias, max_bias)
    bias[:, total == 0] = 0.0
    if word_initial is not None:
        bias[:, ~word_initial] = 0.0
    return bias.astype(np.float32)


def word_initial_tokens(tokenizer) -> np.ndarray:
    """(vocab,) mask of the tokens that begin a word: BPE pieces that start with a space; with a
    character tokenizer, every token."""

    if isinstance(tokenizer, CharTokenizer):
        return np.ones(tokenizer.vocab_size, dtype=bool)
    return np.array([not tokenizer.is_special(t) and tokenizer.decode([t]).startswith(" ")
                     for t in range(tokenizer.vocab_size)])


def count_poet_tokens(data: str | Path, tokenizer, poets: Iterable[str] = OFFERED_POETS,
                      progress: bool = True) -> np.ndarray:
    """(poets, vocab) counts of the tokens of each poet's train-split hemistichs, encoded as the
    model reads them in training (each hemistich alone, between separators)."""
    from tqdm import tqdm  # here, not at the top: every poem written imports this module, and tqdm costs 25 ms

    poets = tuple(poets)
    counts = np.zeros((len(poets), tokenizer.vocab_size), dtype=np.int64)
    batch: dict[str, list[str]] = {p: [] for p in poets}

    def flush(poet: str) -> None:
        texts = batch[poet]
        encoded = tokenizer.encode_batch(texts) if hasattr(tokenizer, "encode_batch") else map(tokenizer.encode, texts)
        ids = [t for hemistich in encoded for t in hemistich]
        if ids:
            counts[poets.index(poet)] += np.bincount(np.array(ids), minlength=tokenizer.vocab_size)
        texts.clear()

    for poem in tqdm(read_jsonl(data, poets), desc="counting poets' tokens", unit=" poems",
                     disable=not progress, mininterval=2):
        if poem.split == "train":
            batch[poem.poet].extend(poem.hemistichs)
            if len(batch[poem.poet]) >= 20_000:
                flush(poem.poet)
    for poet in poets:
        flush(poet)
    missing = [p for p, row in zip(poets, counts) if int(row.sum()) == 0]
    if missing:
        raise PoetryError(f"no train-split verse of {', '.join(missing)} in {data}")
    return counts


def build_style(data: str | Path, model_dir: str | Path | None = None, poets: Iterable[str] = OFFERED_POETS,
                progress: bool = True) -> Path:
    """Count, compute and save the style prior of the model in `model_dir` (default: the shipped
    one); return the file written."""
    directory = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
    tokenizer = load_tokenizer(directory / "tokenizer.json")
    poets = tuple(poets)
    counts = count_poet_tokens(data, tokenizer, poets, progress)
    tensors = {"bias": style_bias(counts, word_initial=word_initial_tokens(tokenizer)), "counts": counts}
    metadata = {"poets": ",".join(poets), "prior_tokens": str(PRIOR_TOKENS), "max_bias": str(MAX_BIAS),
                "data": Path(data).name}
    path = directory / STYLE_FILE
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return path


def load_style(directory: str | Path, vocab_size: int) -> StylePrior | None:
    """The style prior saved beside a model, or None when there is none. A file that does not fit
    the model is an error, not silently ignored."""
    path = Path(directory) / STYLE_FILE
    if not path.exists():
        return None
    try:
        with safe_open(path, "np") as f:
            poets = tuple(p for p in (f.metadata() or {}).get("poets", "").split(",") if p)
            bias = f.get_tensor("bias").astype(np.float32)
    except (SafetensorError, OSError) as err:
        raise PoetryError(f"cannot read {path}: {err}") from None
    if bias.ndim != 2 or bias.shape[0] != len(poets) or bias.shape[1] != vocab_size or not np.isfinite(bias).all():
        raise PoetryError(f"{path} does not fit the model: bias {tuple(bias.shape)} for {len(poets)} poets "
                          f"and a vocabulary of {vocab_size}")
    return StylePrior(poets, bias)
