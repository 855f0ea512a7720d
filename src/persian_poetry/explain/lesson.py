"""Explain mode: the lesson of how a GPT works, made runnable, and the shipped model opened up.

Each step of the lesson is a pure function that returns numbers (dataclasses with `.to_dict()`
giving JSON-ready dicts), so the command line prints them and the web page draws them:

1. `tokenize_text`: text -> normalized text -> tokens and ids, for the model's tokenizer and
   for the character tokenizer side by side, counted against the token limit.
2. `positional_table`, `positional_example`: the sinusoidal positional encodings, and the seed
   lesson's worked example ("The Cat Sat Mat", d = 4) recomputed from the formula, with every
   place where the seed's hand-rounded numbers differ from it.
3. `attention_example`: the seed's three-head attention example, unscaled as the seed computes
   it, scaled by 1/sqrt(d_k) as a transformer does, and with the causal mask a GPT adds.
4. `attention_trace`: the real model's attention weights for a text, every layer and head.
5. `generation_trace`: decoding one token at a time: the context against the limit, the top
   candidates after temperature, top-k and top-p, and the token drawn.

The trace of step 5 decodes with the engine's own `Decoder` (token history, KV cache, and the
window slide with the header pinned) and draws with its `sample`, so with the same seed it draws
the tokens `Engine.stream` draws (a test holds it to that), and shows the candidates'
probabilities after the engine's `filter_logits`. Each step's logits come from the model's
`forward` rather than its `decode_step` (the same numbers up to float rounding), as the trace
has always shown them. It shows the bare model and sampler: the poem writer (`generate.py`)
additionally masks tokens that would break the form before this filter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from ..data.tokenizer import CharTokenizer
from ..errors import PoetryError
from ..gpt.engine import Decoder, filter_logits, new_generator, sample, softmax
from ..gpt.positions import sinusoidal_table
from ..gpt.sampling import Sampling
from ..writing.bundle import PoetryModel
from ..writing.generate import header_ids, validate_request
from ..writing.request import PoemRequest


def _row(values, width: int = 7, digits: int = 3) -> str:
    return "".join("-inf".rjust(width) if v is None else f"{v:{width}.{digits}f}" for v in values)


def _shown(token: str) -> str:
    """A token for the terminal: a leading space as a middle dot, ZWNJ as a broken bar."""
    token = token.replace("\u200c", "\u00a6")
    return "\u00b7" + token[1:] if token.startswith(" ") else token


# ---------------------------------------------------------------------------------------------
# 1. Tokens


@dataclass
class TokenReport:
    normalized: str  # the text exactly as the model reads it
    tokens: list[str]  # each id of the model's tokenizer, decoded on its own
    ids: list[int]
    char_tokens: list[str]  # the same text through the character tokenizer
    context_length: int  # the token limit: prompt and output together never exceed it
    fits: bool
    overflow: int  # tokens beyond the limit (0 when it fits)

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        lines = [f"normalized: {self.normalized}",
                 (f"{len(self.ids)} tokens of the model's tokenizer ({len(self.char_tokens)} characters; "
                  "\u00b7 marks a leading space, \u00a6 a zero-width non-joiner):")]
        lines += [f"  {i:4d}  id {token_id:5d}  {_shown(token)}" for i, (token_id, token)
                  in enumerate(zip(self.ids, self.tokens, strict=True))]
        shown = " | ".join(map(_shown, self.char_tokens[:60])) + (" | ..." if len(self.char_tokens) > 60 else "")
        lines.append(f"character tokenizer, one token a character: {len(self.char_tokens)} tokens "
                     f"({len(self.char_tokens) / max(1, len(self.ids)):.1f} characters per token of the model): {shown}")
        if self.fits:
            lines.append(f"token limit (context length): {len(self.ids)} of {self.context_length} tokens; it fits.")
        else:
            lines.append(
                f"token limit (context length): {len(self.ids)} tokens, {self.overflow} over the limit of "
                f"{self.context_length}. The model cannot read them all at once: `explain attention` refuses "
                f"such a text, and when writing, the engine keeps the control header and drops the oldest "
                f"half of the rest, so the model sees only the most recent tokens.")
        return "\n".join(lines)


def tokenize_text(poetry: PoetryModel, text: str) -> TokenReport:
    """Normalize and tokenize `text` with the model's tokenizer, and count it against the limit."""
    tok = poetry.tokenizer
    ids = tok.encode(text)
    chars = CharTokenizer(tok.special_tokens)
    limit = poetry.config.context_length
    return TokenReport(normalized=tok.decode(ids), tokens=[tok.id_to_token(i) for i in ids], ids=ids,
                       char_tokens=[chars.id_to_token(i) for i in chars.encode(text)],
                       context_length=limit, fits=len(ids) <= limit, overflow=max(0, len(ids) - limit))


# ---------------------------------------------------------------------------------------------
# 2. Positional encoding

SEED_WORDS = ("The", "Cat", "Sat", "Mat")
# The seed's word embeddings, d = 4.
SEED_EMBEDDINGS = ((1.0, 0.0, 0.0, 1.0), (0.0, 1.0, 0.0, 0.0), (0.0, 0.0, 1.0, 0.0), (1.0, 0.0, 1.0, 0.0))
# Where the seed's printed encodings differ from the formula: {(position, dim): printed value}.
# It writes sin(p/100) as p/1000 and cos(p/100) as 1 - p/1000; the formula gives
# PE(p, 2) = sin(p / 10000^(2/4)) = sin(p/100) = 0.010, 0.020, 0.030 and PE(p, 3) = 1.000.
SEED_PRINTED_PE = {(1, 2): 0.001, (1, 3): 0.999, (2, 2): 0.002, (2, 3): 0.998, (3, 2): 0.003, (3, 3): 0.997}


def _check_size(name: str, value: int, limit: int) -> None:
    if not 1 <= value <= limit:
        raise PoetryError(f"{name} must be between 1 and {limit}, got {value}")


def positional_table(positions: int, dim: int) -> list[list[float]]:
    """The sinusoidal table PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(same angle),
    exactly `gpt.positions.sinusoidal_table`, before the 1/sqrt(d) scale the model applies when adding it.
    Each side is bounded (4,096) so that a request cannot ask for unbounded memory."""
    _check_size("positions", positions, 4096)
    _check_size("dim", dim, 4096)
    return sinusoidal_table(positions, dim).tolist()


@dataclass
class SeedCorrection:
    position: int
    dim: int
    seed: float  # what the seed prints
    formula: float  # what the formula gives


@dataclass
class PositionalExample:
    words: list[str]
    embeddings: list[list[float]]
    encodings: list[list[float]]  # PE of positions 0..3, d = 4, from the formula
    inputs: list[list[float]]  # embedding + encoding: what the first layer receives
    corrections: list[SeedCorrection]  # where the seed's numbers differ from the formula

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        lines = ["The seed's worked example, d = 4: word embedding + positional encoding = input."]
        for pos, word in enumerate(self.words):
            lines.append(f"  pos {pos} {word:4s} [{_row(self.embeddings[pos], 6, 0)} ] + "
                         f"[{_row(self.encodings[pos])} ] = [{_row(self.inputs[pos])} ]")
        if self.corrections:
            lines.append("Where the seed's hand-rounded numbers differ from the formula:")
            lines += [f"  PE({c.position},{c.dim}): the seed prints {c.seed:.3f}, the formula gives {c.formula:.4f}"
                      + (f" = sin({c.position}/100)" if c.dim % 2 == 0 else f" = cos({c.position}/100)")
                      for c in self.corrections]
        return "\n".join(lines)


def positional_example() -> PositionalExample:
    """The seed's worked example: word embeddings of "The Cat Sat Mat" plus the encodings of
    positions 0..3 with d = 4, recomputed, and the seed's numbers that the formula contradicts."""
    encodings = positional_table(len(SEED_WORDS), 4)
    inputs = [[e + p for e, p in zip(emb, pe, strict=True)] for emb, pe in zip(SEED_EMBEDDINGS, encodings, strict=True)]
    corrections = [SeedCorrection(pos, dim, seed, encodings[pos][dim])
                   for (pos, dim), seed in sorted(SEED_PRINTED_PE.items())
                   if round(encodings[pos][dim], 3) != seed]
    return PositionalExample(list(SEED_WORDS), [list(e) for e in SEED_EMBEDDINGS], encodings, inputs, corrections)


# ---------------------------------------------------------------------------------------------
# 3. The seed's attention example

# Query, key and value vectors of each word for each of the three heads (d_k = 4), as the seed's
# lesson gives them (tables, not projections of the embeddings). In head 1 the query of "The"
# meets the keys with raw scores 1, 1, 2, 0, the scores of its softmax example.
SEED_HEADS: tuple[dict[str, tuple[tuple[float, ...], ...]], ...] = (
    {"q": ((1, 0, 0, 1), (0, 1, 0, 0), (0, 0, 1, 0), (1, 0, 1, 0)),
     "k": ((1, 0, 1, 0), (0, 1, 0, 1), (1, 0, 0, 1), (0, 1, 1, 0)),
     "v": ((1, 0, 0, 1), (0, 2, 0, 0), (0, 0, 3, 0), (4, 0, 0, 0))},
    {"q": ((0, 1, 1, 0), (1, 0, 0, 1), (0, 1, 0, 0), (0, 0, 1, 1)),
     "k": ((0, 1, 0, 1), (1, 0, 1, 0), (0, 1, 1, 0), (1, 0, 0, 1)),
     "v": ((2, 1, 0, 0), (1, 0, 2, 0), (0, 3, 0, 1), (0, 0, 1, 2))},
    {"q": ((0, 0, 1, 1), (1, 1, 0, 0), (1, 0, 0, 1), (0, 1, 1, 0)),
     "k": ((1, 1, 0, 0), (0, 0, 1, 1), (1, 0, 1, 0), (0, 1, 0, 1)),
     "v": ((1, 0, 2, 1), (0, 1, 0, 2), (3, 0, 1, 0), (0, 2, 1, 0))},
)
# What the seed prints for "The"'s output in each head. Head 1 is its own (rounded) computation,
# [0.64, 0.48, 1.56, 0.24] where the formula gives [0.485, 0.393, 1.603, 0.197]; heads 2 and 3
# are values the seed only assumes ("assuming the calculated attention vectors ... are").
SEED_PRINTED_OUTPUTS = ((0.64, 0.48, 1.56, 0.24), (1.00, 0.50, 0.75, 0.25), (0.30, 0.70, 1.00, 0.90))
# What the seed prints for softmax(1, 1, 2, 0), "The"'s weights in head 1 (the formula: 0.197,
# 0.197, 0.534, 0.072).
SEED_PRINTED_SOFTMAX = (0.24, 0.24, 0.52, 0.10)


@dataclass
class HeadResult:
    head: int  # 1-based, as the lesson numbers them
    scores: list[list[float | None]]  # [query][key]: q.k (/ sqrt(d_k) when scaled); None where masked
    weights: list[list[float]]  # softmax of each row of scores: how much each query takes from each key
    outputs: list[list[float]]  # weights @ V: one vector per word


@dataclass
class AttentionExample:
    words: list[str]
    scaled: bool  # scores divided by sqrt(d_k)
    causal: bool  # a word attends only to itself and the words before it
    head_dim: int
    heads: list[HeadResult]
    concatenated: list[list[float]]  # each word's head outputs side by side (before the output projection)

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        how = (f"scores divided by sqrt(d_k) = sqrt({self.head_dim})" if self.scaled else "unscaled scores (the seed's)")
        how += ", causal mask: a word sees only itself and the words before it" if self.causal else ", no mask"
        lines = [f"== {how}"]
        header = " " * 12 + "".join(w.rjust(7) for w in self.words)
        for head in self.heads:
            lines.append(f"head {head.head}")
            for name, table in (("scores Q.K", head.scores), ("softmax", head.weights)):
                lines.append(f"  {name}" if name != "softmax" else "  weights = softmax of each row")
                lines.append(header)
                lines += [f"    {word:8s}{_row(row)}" for word, row in zip(self.words, table, strict=True)]
            lines.append("  output = weights @ V")
            lines += [f"    {word:8s}{_row(row)}" for word, row in zip(self.words, head.outputs, strict=True)]
        if not self.scaled and not self.causal:
            mine = ", ".join(f"{w:.3f}" for w in self.heads[0].weights[0])
            printed = ", ".join(f"{w:.2f}" for w in SEED_PRINTED_SOFTMAX)
            lines.append(f"  note: for \"{self.words[0]}\" in head 1, softmax(1, 1, 2, 0) = {mine}; the seed prints "
                         f"{printed}, which is not what the formula gives.")
            for head, seed in zip(self.heads, SEED_PRINTED_OUTPUTS, strict=True):
                ours = ", ".join(f"{x:.3f}" for x in head.outputs[0])
                theirs = ", ".join(f"{x:.2f}" for x in seed)
                why = "its rounded weights" if head.head == 1 else "a value it assumes, not computes"
                lines.append(f"  note: output of \"{self.words[0]}\" in head {head.head} = [{ours}]; the seed prints "
                             f"[{theirs}] ({why}).")
        lines.append(f"concatenation of the {len(self.heads)} heads ({len(self.concatenated[0])} numbers a word; "
                     "a transformer then multiplies it by an output matrix W_O):")
        lines += [f"    {word:8s}{_row(row, 6, 2)}" for word, row in zip(self.words, self.concatenated, strict=True)]
        return "\n".join(lines)


def attention_example(scaled: bool = False, causal: bool = False) -> AttentionExample:
    """The seed's three-head example. `scaled=False, causal=False` is the seed's own computation;
    a GPT does both: it divides by sqrt(d_k) so the softmax does not saturate as d_k grows, and it
    masks the future so that training on every position at once cannot peek at the answer."""
    n = len(SEED_WORDS)
    mask = np.tril(np.ones((n, n), dtype=bool)) if causal else np.ones((n, n), dtype=bool)
    heads, outputs = [], []
    for number, tables in enumerate(SEED_HEADS, start=1):
        q, k, v = (np.array(tables[name], dtype=np.float64) for name in ("q", "k", "v"))
        scores = q @ k.T
        if scaled:
            scores = scores / math.sqrt(q.shape[-1])
        weights = softmax(np.where(mask, scores, -np.inf))
        out = weights @ v
        outputs.append(out)
        shown = [[s if keep else None for s, keep in zip(row, keeps, strict=True)]
                 for row, keeps in zip(scores.tolist(), mask.tolist(), strict=True)]
        heads.append(HeadResult(number, shown, weights.tolist(), out.tolist()))
    return AttentionExample(list(SEED_WORDS), scaled, causal, len(SEED_HEADS[0]["q"][0]), heads,
                            np.concatenate(outputs, axis=-1).tolist())


def attention_lesson() -> list[AttentionExample]:
    """The seed's example three ways: as the seed computes it, scaled, then scaled and causal (a GPT)."""
    return [attention_example(False, False), attention_example(True, False), attention_example(True, True)]


# ---------------------------------------------------------------------------------------------
# 4. The real model's attention


@dataclass
class AttentionTrace:
    tokens: list[str]  # display strings, one per id
    ids: list[int]
    weights: list[list[list[list[float]]]]  # [layer][head][query][key]; zero above the diagonal

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, layers: list[int] | None = None, heads: list[int] | None = None) -> str:
        """The weights as tables, rows queries and columns keys (by token number); 1-based
        `layers`/`heads` pick some (default: all)."""
        for name, picked, count in (("layer", layers, len(self.weights)), ("head", heads, len(self.weights[0]))):
            for n in picked or []:
                _check_size(name, n, count)
        lines = ["tokens: " + "  ".join(f"{i}:{_shown(t)}" for i, t in enumerate(self.tokens))]
        header = " " * 14 + "".join(f"{k:5d}" for k in range(len(self.tokens)))
        for layer in layers or range(1, len(self.weights) + 1):
            for head in heads or range(1, len(self.weights[layer - 1]) + 1):
                lines += [f"layer {layer} head {head} (row: query token, column: key token)", header]
                lines += [f"  {q:3d} {_shown(self.tokens[q])[:8]:8s} " + _row(row[:q + 1], 5, 2)
                          for q, row in enumerate(self.weights[layer - 1][head - 1])]
        return "\n".join(lines)


def encode_within_limit(poetry: PoetryModel, text: str) -> list[int]:
    ids = poetry.tokenizer.encode(text)
    limit = poetry.config.context_length
    if not ids:
        raise PoetryError("the text is empty once normalized (Persian letters, digits and punctuation are kept)")
    if len(ids) > limit:
        raise PoetryError(f"the text is {len(ids)} tokens; the model sees at most {limit} "
                          f"(its context length), {len(ids) - limit} too many")
    return ids


def attention_trace(poetry: PoetryModel, text: str) -> AttentionTrace:
    """Run the model on `text` once and return the attention weights of every layer and head."""
    ids = encode_within_limit(poetry, text)
    _, weights = poetry.model.forward(np.array([ids]), return_weights=True)  # per layer: (1, H, T, T)
    stacked = np.stack([w[0] for w in weights])  # (layers, H, T, T)
    return AttentionTrace([poetry.tokenizer.id_to_token(i) for i in ids], ids, stacked.tolist())


# ---------------------------------------------------------------------------------------------
# 5. Decoding, one token at a time


@dataclass
class Candidate:
    id: int
    token: str
    probability: float  # after temperature, top-k and top-p: what the draw uses
    raw_probability: float  # the model's own softmax, before any of them


@dataclass
class DecodeStep:
    step: int  # 1-based
    context: int  # tokens the model reads to predict this one
    limit: int  # the context length
    window_shifted: bool  # the window was full: the header was kept, the oldest half of the rest dropped
    candidates: list[Candidate]  # the top candidates after filtering, most likely first
    chosen: Candidate  # the token drawn


@dataclass
class GenerationTrace:
    prompt: list[str]  # the control header the model starts from
    sampling: dict
    seed: int
    steps: list[DecodeStep] = field(default_factory=list)
    generated: str = ""  # the drawn tokens decoded together

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        s = self.sampling
        lines = [f"prompt: {''.join(self.prompt)}",
                 (f"sampling: temperature {s['temperature']}, top-k {s['top_k'] or 'off'}, top-p {s['top_p']}; "
                  f"seed {self.seed}. Probabilities are after these filters (the model's own in brackets).")]
        for st in self.steps:
            shift = "  (window full: header kept, oldest half dropped)" if st.window_shifted else ""
            lines.append(f"step {st.step:3d}  context {st.context:3d}/{st.limit}  chose {_shown(st.chosen.token)!r} "
                         f"p={st.chosen.probability:.3f}{shift}")
            lines += [f"      {c.probability:6.3f} ({c.raw_probability:5.3f})  {_shown(c.token)!r}" for c in st.candidates]
        lines.append(f"generated: {self.generated}")
        return "\n".join(lines)


def generation_trace(poetry: PoetryModel, poet: str = "hafez", form: str = "ghazal", steps: int = 20,
                     sampling: Sampling | None = None, seed: int = 0, top: int = 5) -> GenerationTrace:
    """Decode `steps` tokens after `<|poem|><|poet:..|><|form:..|>` and record every step.

    The engine's `Decoder` keeps the window: when the context is full, the header stays pinned
    and the oldest half of the rest is dropped (so `steps` may exceed the context length)."""
    sampling = sampling or Sampling()
    # The poem writer's own check of poet, form and sampling settings.
    request = PoemRequest(poet=poet, form=form, temperature=sampling.temperature, top_k=sampling.top_k,
                          top_p=sampling.top_p, seed=seed)
    validate_request(poetry, request)
    _check_size("steps", steps, 10_000)
    _check_size("top", top, 100)
    tok = poetry.tokenizer
    header = header_ids(poetry, request, open_at="metre")  # the model chooses the metre and the rest
    decoder = Decoder(poetry.model, header, len(header))
    generator = new_generator(seed)

    def candidate(i: int, probs: np.ndarray, raw: np.ndarray) -> Candidate:
        return Candidate(i, tok.id_to_token(i), float(probs[i]), float(raw[i]))

    trace = GenerationTrace([tok.id_to_token(i) for i in header], asdict(sampling), seed)
    shifted = False
    for step in range(1, steps + 1):
        logits = decoder.logits
        raw = softmax(logits)
        probs = softmax(filter_logits(logits, sampling))
        token = sample(logits, sampling, generator)
        best = np.argsort(-probs, kind="stable")[:top]
        candidates = [candidate(int(i), probs, raw) for i in best if probs[i] > 0]
        context = decoder.cache.length
        trace.steps.append(DecodeStep(step, context, decoder.context, shifted, candidates, candidate(token, probs, raw)))
        decoder.push(token)
        shifted = context == decoder.context  # the push slid the window
    trace.generated = tok.decode(decoder.history[len(header):])
    return trace
