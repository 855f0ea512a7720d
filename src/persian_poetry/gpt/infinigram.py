"""An unbounded n-gram over the training tokens (infini-gram, Liu et al. 2024), and its mixture with the model.

The index is a suffix array over one token stream (a split's `tokens`: every poem's header and body,
one poem after another). For a context it finds the longest suffix of the context that occurs in
the stream (its match length n) and the occurrences' next tokens: the n-gram's estimate of the next
token is count(suffix + token) / count(suffix followed by anything). Nothing else is stored: no
n-gram table, no limit on n.

A context never holds a poem's `<|end|>` (it is the last token scored), and a `<|poem|>` only at its
start, so a match never spans two poems of the stream: a context that begins with a header matches
a training poem's header and body, and a match inside a body extends at most back to the start of
its poem.

`scan` walks a token sequence once and gives, for each position, the longest match of what came
before it and the counts of the token there, extending the match one token at a time (a narrowing
of its suffix-array interval) and shortening it from the left only when it no longer occurs; the
shortenings never outnumber the extensions, so a sequence costs O(length) searches.

`MixWeights` is the interpolation p = (1 - λ) p_model + λ p_ngram, with λ looked up in a table by the
match length n and the count of the matched context, each cut into buckets; `MixWeights.fit`
chooses the table by EM (each cell's λ maximises the likelihood of the positions in it), on poems
other than those it is reported on.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import PoetryError
from ..files import atomic_write

TOKENS_FILE, SA_FILE, META_FILE, MIX_FILE = "tokens.npy", "suffix_array.npy", "infinigram.json", "mix.json"
FORMAT_VERSION = 1


def suffix_array(tokens: np.ndarray) -> np.ndarray:
    """The suffix array of `tokens` by prefix doubling in numpy: the start of each suffix, in order.

    A suffix that is a prefix of another sorts first. int32 when it fits. O(n log n) per round and
    log2(longest repeat) rounds: about a minute for 21 M tokens.
    """
    t = np.asarray(tokens)
    n = len(t)
    if n == 0:
        return np.zeros(0, dtype=np.int32)
    # Ranks start at 1; 0 stands for "past the end", so a shorter suffix sorts before its extensions.
    _, rank = np.unique(t, return_inverse=True)
    rank = rank.astype(np.int64).reshape(-1) + 1
    k = 1
    while True:
        second = np.zeros(n, dtype=np.int64)
        if k < n:
            second[:n - k] = rank[k:]
        key = rank * (n + 1) + second  # (rank of the first k tokens, rank of the next k)
        del second
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        del key
        new = np.empty(n, dtype=np.int64)
        new[0] = 1
        np.cumsum(sorted_key[1:] != sorted_key[:-1], out=new[1:])
        new[1:] += 1
        del sorted_key
        rank = np.empty(n, dtype=np.int64)
        rank[order] = new
        if new[-1] == n or k >= n:  # every suffix has its own rank: sorted
            return order.astype(np.int32 if n < 2**31 else np.int64)
        del order, new
        k *= 2


class InfiniGram:
    """A suffix array over a token stream, and the queries an unbounded n-gram needs."""

    def __init__(self, tokens: np.ndarray, sa: np.ndarray | None = None):
        self.tokens = np.asarray(tokens)
        self.sa = suffix_array(self.tokens) if sa is None else np.asarray(sa)
        if len(self.sa) != len(self.tokens):
            raise PoetryError(f"suffix array of {len(self.sa)} entries for {len(self.tokens)} tokens")
        self.n_tokens = len(self.tokens)

    @classmethod
    def from_split(cls, split) -> InfiniGram:
        """The index of an `EncodedSplit`'s token stream (headers and bodies, poem after poem)."""
        return cls(np.ascontiguousarray(split.tokens))

    # --- files ---------------------------------------------------------------------------------

    def save(self, directory: str | Path, **meta) -> Path:
        """Write tokens.npy, suffix_array.npy and infinigram.json (`meta` added to it) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(directory / TOKENS_FILE, lambda tmp: _save_npy(tmp, self.tokens))
        atomic_write(directory / SA_FILE, lambda tmp: _save_npy(tmp, self.sa))
        record = {"format_version": FORMAT_VERSION, "n_tokens": self.n_tokens,
                  "tokens_sha256": tokens_digest(self.tokens), **meta}
        atomic_write(directory / META_FILE, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
        return directory

    @classmethod
    def load(cls, directory: str | Path, mmap: bool = True) -> InfiniGram:
        directory = Path(directory)
        missing = [f for f in (TOKENS_FILE, SA_FILE, META_FILE) if not (directory / f).exists()]
        if missing:
            raise PoetryError(f"{directory} is not an infini-gram index: missing {', '.join(missing)}")
        mode = "r" if mmap else None
        return cls(np.load(directory / TOKENS_FILE, mmap_mode=mode), np.load(directory / SA_FILE, mmap_mode=mode))

    @staticmethod
    def meta(directory: str | Path) -> dict:
        return json.loads((Path(directory) / META_FILE).read_text())

    # --- queries -------------------------------------------------------------------------------

    def _at(self, i: int, depth: int) -> int:
        """The token `depth` places into the i-th suffix in order, -1 past the end of the stream."""
        p = int(self.sa[i]) + depth
        return int(self.tokens[p]) if p < self.n_tokens else -1

    def narrow(self, lo: int, hi: int, depth: int, token: int) -> tuple[int, int]:
        """Within [lo, hi), suffixes sharing their first `depth` tokens, those whose next token is `token`."""
        a, b = lo, hi
        while a < b:  # first suffix whose token at `depth` is >= token
            mid = (a + b) // 2
            if self._at(mid, depth) < token:
                a = mid + 1
            else:
                b = mid
        first = a
        b = hi
        while a < b:  # first suffix whose token at `depth` is > token
            mid = (a + b) // 2
            if self._at(mid, depth) <= token:
                a = mid + 1
            else:
                b = mid
        return first, a

    def interval(self, pattern) -> tuple[int, int]:
        """[lo, hi): the suffixes that begin with `pattern` (empty when it does not occur)."""
        pattern = [int(x) for x in pattern]
        lo, hi = 0, self.n_tokens
        for depth, token in enumerate(pattern):
            if hi - lo == 1:  # one candidate left: compare the rest at once
                start = int(self.sa[lo]) + depth
                rest = pattern[depth:]
                ok = start + len(rest) <= self.n_tokens and np.array_equal(
                    self.tokens[start:start + len(rest)], np.asarray(rest))
                return (lo, hi) if ok else (lo, lo)
            lo, hi = self.narrow(lo, hi, depth, token)
            if lo == hi:
                break
        return lo, hi

    def count(self, pattern) -> int:
        lo, hi = self.interval(pattern)
        return hi - lo

    def longest_suffix(self, context) -> tuple[int, int, int]:
        """(n, lo, hi): the longest suffix of `context` that occurs (n tokens) and its interval."""
        context = [int(x) for x in context]
        best = (0, 0, self.n_tokens)
        a, b = 1, len(context)  # occurring is monotone in the suffix length: bisect on it
        while a <= b:
            mid = (a + b) // 2
            lo, hi = self.interval(context[len(context) - mid:])
            if hi > lo:
                best, a = (mid, lo, hi), mid + 1
            else:
                b = mid - 1
        return best

    def next_token_counts(self, context) -> tuple[int, dict[int, int]]:
        """(n, {token: count}): the longest matching suffix of `context` and what follows its occurrences."""
        n, lo, hi = self.longest_suffix(context)
        positions = np.asarray(self.sa[lo:hi], dtype=np.int64) + n
        following = np.asarray(self.tokens)[positions[positions < self.n_tokens]]
        values, counts = np.unique(following, return_counts=True)
        return n, {int(v): int(c) for v, c in zip(values, counts, strict=True)}

    def scan(self, seq) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each position i of `seq`, predicting seq[i] from seq[:i]: (n, total, hits) arrays.

        n is the length of the longest suffix of seq[:i] that occurs in the stream, total the number
        of its occurrences followed by a token, hits those followed by seq[i]; the n-gram's
        probability of seq[i] is hits / total (undefined when total is 0: no estimate).
        """
        seq = [int(x) for x in seq]
        size = len(seq)
        ns, totals, hits = (np.zeros(size, dtype=np.int64) for _ in range(3))
        n, lo, hi = 0, 0, self.n_tokens
        for i, token in enumerate(seq):
            # An occurrence that ends the stream has no next token: it is the first of the interval.
            total = hi - lo - (1 if n and hi > lo and int(self.sa[lo]) + n == self.n_tokens else 0)
            a, b = self.narrow(lo, hi, n, token)
            ns[i], totals[i], hits[i] = n, total, b - a
            if b > a:
                n, lo, hi = n + 1, a, b
                continue
            # seq[i-n:i+1] does not occur: the longest suffix of seq[:i+1] that does is shorter.
            n, lo, hi = 0, 0, self.n_tokens
            for length in range(int(ns[i]), 0, -1):  # seq[i+1-length:i+1], longest first
                a, b = self.interval(seq[i + 1 - length:i + 1])
                if b > a:
                    n, lo, hi = length, a, b
                    break
        return ns, totals, hits


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, np.ascontiguousarray(array))


def tokens_digest(tokens: np.ndarray) -> str:
    digest = hashlib.sha256()
    array = np.ascontiguousarray(tokens)
    step = 1 << 22
    for start in range(0, len(array), step):
        digest.update(array[start:start + step].tobytes())
    return digest.hexdigest()


# --- the mixture ---------------------------------------------------------------------------------

LENGTH_EDGES = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 16, 24, 32, 64)
COUNT_EDGES = (1, 2, 3, 5, 9, 17, 33, 65, 129, 1025)


@dataclass
class MixWeights:
    """λ by (match length, count) bucket: row b holds n in [length_edges[b], length_edges[b+1]),
    column c holds totals in [count_edges[c], count_edges[c+1]); the last of each is open. A
    position whose matched context has no continuation (total 0) gets λ = 0."""

    lambdas: np.ndarray
    length_edges: tuple[int, ...] = LENGTH_EDGES
    count_edges: tuple[int, ...] = COUNT_EDGES

    def __post_init__(self):
        self.lambdas = np.asarray(self.lambdas, dtype=np.float64).reshape(len(self.length_edges),
                                                                          len(self.count_edges))
        if not np.all((self.lambdas >= 0) & (self.lambdas < 1)):
            raise PoetryError("every mixture weight λ must be in [0, 1)")

    @classmethod
    def constant(cls, lam: float) -> MixWeights:
        return cls(np.full((1, 1), lam), (0,), (1,))

    def cells(self, n: np.ndarray, total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.searchsorted(np.asarray(self.length_edges), np.asarray(n), side="right") - 1
        cols = np.searchsorted(np.asarray(self.count_edges), np.asarray(total), side="right") - 1
        return np.clip(rows, 0, None), np.clip(cols, 0, None)

    def weights(self, n: np.ndarray, total: np.ndarray) -> np.ndarray:
        rows, cols = self.cells(n, total)
        return np.where(np.asarray(total) > 0, self.lambdas[rows, cols], 0.0)

    def log_prob(self, model_logp: np.ndarray, n: np.ndarray, total: np.ndarray, hits: np.ndarray) -> np.ndarray:
        """log((1 - λ) p_model + λ hits/total) in nats; exactly `model_logp` where λ is 0."""
        lam = self.weights(n, total)
        model_logp = np.asarray(model_logp, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ngram = np.where(lam > 0, np.log(lam) + np.log(np.asarray(hits, dtype=np.float64))
                             - np.log(np.maximum(np.asarray(total, dtype=np.float64), 1)), -np.inf)
            mixed = np.logaddexp(np.log1p(-lam) + model_logp, ngram)
        return np.where(lam > 0, mixed, model_logp)

    @classmethod
    def fit(cls, model_logp, n, total, hits, length_edges=LENGTH_EDGES, count_edges=COUNT_EDGES,
            iterations: int = 50, prior: float = 2.0) -> MixWeights:
        """λ per cell by EM on these positions: each step sets a cell's λ to the mean posterior share
        of the n-gram among its positions, with `prior` pseudo-positions at λ = 0 (an empty or
        nearly empty cell falls back to the model alone)."""
        weights = cls(np.full((len(length_edges), len(count_edges)), 0.1), tuple(length_edges), tuple(count_edges))
        total = np.asarray(total)
        keep = total > 0
        p_model = np.exp(np.asarray(model_logp, dtype=np.float64))[keep]
        p_ngram = (np.asarray(hits, dtype=np.float64)[keep] / total[keep])
        rows, cols = weights.cells(np.asarray(n)[keep], total[keep])
        flat = rows * len(count_edges) + cols
        cells = weights.lambdas.size
        size = np.bincount(flat, minlength=cells)
        for _ in range(iterations):
            lam = weights.lambdas.reshape(-1)[flat]
            share = lam * p_ngram / np.maximum(lam * p_ngram + (1 - lam) * p_model, 1e-300)
            new = np.bincount(flat, weights=share, minlength=cells) / (size + prior)
            weights.lambdas = np.clip(new, 0.0, 0.999).reshape(weights.lambdas.shape)
        return weights

    def to_dict(self) -> dict:
        return {"length_edges": list(self.length_edges), "count_edges": list(self.count_edges),
                "lambdas": [[round(float(x), 6) for x in row] for row in self.lambdas]}

    @classmethod
    def from_dict(cls, data: dict) -> MixWeights:
        try:
            return cls(np.asarray(data["lambdas"], dtype=np.float64), tuple(int(x) for x in data["length_edges"]),
                       tuple(int(x) for x in data["count_edges"]))
        except (KeyError, TypeError, ValueError) as err:
            raise PoetryError(f"not a mixture-weight table ({type(err).__name__}: {err})") from None


@dataclass
class Mixture:
    """The model mixed with an infini-gram: what `evaluate_split(..., mix=)` scores."""

    index: InfiniGram
    weights: MixWeights


def save_mix_weights(directory: str | Path, weights: MixWeights, **meta) -> Path:
    path = Path(directory) / MIX_FILE
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps({**weights.to_dict(), **meta}, indent=1)))
    return path


def load_mixture(directory: str | Path, tokenizer_sha256: str | None = None) -> Mixture:
    """The index in `directory` with the λ table of its mix.json; checks that the index was built
    with the model's tokenizer when `tokenizer_sha256` is given."""
    directory = Path(directory)
    if not (directory / MIX_FILE).exists():
        raise PoetryError(f"{directory} holds no {MIX_FILE} (the mixture weights): build it with "
                          "benchmarks/infinigram_mix.py --out DIR")
    index = InfiniGram.load(directory)
    meta = InfiniGram.meta(directory)
    recorded = meta.get("tokenizer_sha256")
    if tokenizer_sha256 is not None and recorded is not None and recorded != tokenizer_sha256:
        raise PoetryError(f"the infini-gram index in {directory} was built with another tokenizer than the model's")
    weights = MixWeights.from_dict(json.loads((directory / MIX_FILE).read_text()))
    return Mixture(index, weights)
