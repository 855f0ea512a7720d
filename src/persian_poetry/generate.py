"""Poems from a model: the control header, the couplet structure, streaming and layout.

`write_poem(model, PoemRequest(poet="hafez", form="ghazal", couplets=7, seed=1))` returns a
`Poem`. The model is prompted with `<|poem|><|poet:..|><|form:..|>` and chooses the metre and the
rhyme letters itself (unless the request fixes them), then writes the body. The structure is
kept by masking logits, not by hoping: a hemistich separator only after some text, `<|hemi|>`
between the two hemistichs of a couplet, `<|beyt|>` between couplets and `<|end|>` exactly after
the requested number of couplets.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from .checkpoint import PoetryModel
from .controls import BEYT, BODY, END, HEMI, MAX_RHYME_CHARS, POEM, RHYME, control_token
from .engine import Engine, Sampling
from .errors import PoetryError
from .text import DIACRITICS, normalize

SHADDA = "\u0651"
VOWEL_MARKS = DIACRITICS.replace("\u0654", "")

# Forms one can ask for, with their usual length in couplets.
FORM_COUPLETS: dict[str, int] = {"ghazal": 7, "rubai": 2, "dobeyti": 2, "masnavi": 10, "qasida": 15, "qete": 4}
MAX_COUPLETS = 40
MAX_HEMISTICH_CHARS = 80
GAP = " " * 6  # between the two hemistichs of a couplet on one line


@dataclass
class PoemRequest:
    poet: str = "hafez"
    form: str = "ghazal"
    couplets: int | None = None  # None: the form's usual length
    metre: int | None = None  # Ganjoor metre id; None: the model chooses
    rhyme: str | None = None  # rhyme letters; None: the model chooses
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.95
    seed: int | None = None  # None: a random seed, reported in the result
    vowel_marks: bool = False  # allow short-vowel marks and tashdid (most verse is written without)


@dataclass
class Poem:
    poet: str
    form: str
    metre: int | None
    metre_name: str | None
    rhyme: str
    couplets: list[tuple[str, str]]
    seed: int
    tokens: int
    seconds: float
    header: str = field(default="", repr=False)

    def text(self) -> str:
        """The poem laid out one couplet a line, first hemistichs padded to one width."""
        width = max((len(first) for first, _ in self.couplets), default=0)
        return "\n".join(f"{first.ljust(width)}{GAP}{second}" for first, second in self.couplets)

    def to_dict(self) -> dict:
        return asdict(self) | {"couplets": [list(c) for c in self.couplets]}


def _choices(values) -> str:
    return ", ".join(str(v) for v in values)


def validate_request(poetry: PoetryModel, request: PoemRequest) -> tuple[int, int]:
    """Check a request against what the model knows; return (couplets, seed)."""
    controls = poetry.controls
    if request.poet not in controls.poets:
        raise PoetryError(f"unknown poet {request.poet!r}; choose from: {_choices(controls.poets)}")
    forms = [f for f in controls.forms if f in FORM_COUPLETS]
    if request.form not in forms:
        raise PoetryError(f"unknown form {request.form!r}; choose from: {_choices(forms)}")
    if request.metre is not None and request.metre not in controls.metres:
        raise PoetryError(f"unknown metre {request.metre!r}; choose from Ganjoor ids: {_choices(controls.metres)}")
    couplets = request.couplets if request.couplets is not None else FORM_COUPLETS[request.form]
    if not 1 <= couplets <= MAX_COUPLETS:
        raise PoetryError(f"couplets must be between 1 and {MAX_COUPLETS}, got {couplets}")
    if request.rhyme is not None and not normalize(request.rhyme):
        raise PoetryError(f"rhyme {request.rhyme!r} holds no Persian letters")
    if request.rhyme is not None and request.metre is None:
        raise PoetryError("a rhyme can only be fixed together with a metre (the header gives the metre first)")
    try:
        Sampling(request.temperature, request.top_k, request.top_p)
    except ValueError as err:
        raise PoetryError(str(err)) from None
    seed = request.seed if request.seed is not None else int.from_bytes(os.urandom(4), "little")
    return couplets, seed


class _PoemState:
    """Where the writing stands (header or body, which hemistich) and which tokens may come next."""

    def __init__(self, poetry: PoetryModel, couplets: int, phase: str, vowel_marks: bool = False):
        tok = poetry.tokenizer
        self.tok = tok
        self.ids = {name: tok.token_to_id(name) for name in (BODY, RHYME, HEMI, BEYT, END)}
        vocab = tok.vocab_size
        self.special = torch.zeros(vocab, dtype=torch.bool)
        self.special[[tok.token_to_id(t) for t in tok.special_tokens]] = True
        # Text tokens that can never appear in verse (line breaks).
        pieces = [tok.id_to_token(i) for i in range(vocab)]
        self.bad_text = torch.tensor(["\n" in p for p in pieces]) & ~self.special
        self.has_space = torch.tensor([" " in p or "\u200c" in p for p in pieces])
        self.leading_space = torch.tensor([p.startswith((" ", "\u200c")) for p in pieces])
        self.leading_mark = torch.tensor([bool(p) and p[0] in DIACRITICS for p in pieces]) & ~self.special
        # Vowel marks other than the ezafe hamza (هٔ), which classical verse is usually written without.
        self.vowel_marks = torch.tensor([any(ch in VOWEL_MARKS for ch in p) for p in pieces]) & ~self.special
        self.allow_marks = vowel_marks
        self.metre_ids = torch.tensor([tok.token_to_id(control_token("metre", m)) for m in poetry.controls.metres])
        self.couplets = couplets
        self.phase = phase  # "metre", "after_metre", "rhyme" or "body"
        self.rhyme_ids: list[int] = []
        self.couplet = 0  # couplets finished
        self.second = False  # writing the second hemistich of the couplet
        self.hemistich_ids: list[int] = []

    def allowed(self) -> torch.Tensor:
        """Boolean mask over the vocabulary of the tokens that may come next."""
        if self.phase == "metre":
            mask = torch.zeros_like(self.special)
            mask[self.metre_ids] = True
        elif self.phase == "after_metre":
            mask = torch.zeros_like(self.special)
            mask[self.ids[RHYME]] = True
        elif self.phase == "rhyme":
            mask = ~self.special & ~self.bad_text & ~self.has_space  # rhyme letters are written solid
            if self.rhyme_ids:
                mask[self.ids[BODY]] = True
            if len(self.tok.decode(self.rhyme_ids)) >= MAX_RHYME_CHARS:
                mask = torch.zeros_like(self.special)
                mask[self.ids[BODY]] = True
        else:
            text = self.tok.decode(self.hemistich_ids)
            text_len = len(text.strip())
            separator = (END if self.couplet == self.couplets - 1 else BEYT) if self.second else HEMI
            mask = ~self.special & ~self.bad_text
            if text_len == 0 or text.endswith(" "):
                mask &= ~self.leading_space  # verse is written with single spaces
            if text_len == 0 or (text[-1] in DIACRITICS and text[-1] != SHADDA):
                # A letter carries one vowel mark (tashdid may take one more); stacked marks are
                # not Persian orthography, and an undertrained model can spiral into them.
                mask &= ~self.leading_mark
            if not self.allow_marks:
                mask &= ~self.vowel_marks
            if text_len >= MAX_HEMISTICH_CHARS:
                mask[:] = False
            if text_len > 0:
                mask[self.ids[separator]] = True
        return mask

    def advance(self, token: int) -> str:
        """Take a sampled token; return the event it makes (text, hemi, beyt, end, header)."""
        if self.phase == "metre":
            self.phase = "after_metre"
            return "header"
        if self.phase == "after_metre":
            self.phase = "rhyme"
            return "header"
        if self.phase == "rhyme":
            if token == self.ids[BODY]:
                self.phase = "body"
            else:
                self.rhyme_ids.append(token)
            return "header"
        if token == self.ids[HEMI]:
            self.second, self.hemistich_ids = True, []
            return "hemi"
        if token in (self.ids[BEYT], self.ids[END]):
            self.couplet += 1
            self.second, self.hemistich_ids = False, []
            return "end" if token == self.ids[END] else "beyt"
        self.hemistich_ids.append(token)
        return "text"


    def edit_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.masked_fill(~self.allowed().to(logits.device), float("-inf"))


class _Streamer:
    """Passes the poem to `on_event` as it is written. Byte-level BPE can split a letter over two
    tokens, so a hemistich's text is only passed on once it decodes whole."""

    def __init__(self, tokenizer, on_event: Callable[[str, str], None] | None):
        self.tok, self.on_event = tokenizer, on_event
        self.hemistich: list[int] = []
        self.emitted = ""

    def push(self, token: int, event: str) -> None:
        if self.on_event is None:
            return
        if event != "text":
            self.hemistich, self.emitted = [], ""
            self.on_event(event, "")
            return
        self.hemistich.append(token)
        text = self.tok.decode(self.hemistich)
        if not text.endswith("\ufffd") and len(text) > len(self.emitted):
            self.on_event("text", text[len(self.emitted):])
            self.emitted = text


def write_poem(poetry: PoetryModel, request: PoemRequest,
               on_event: Callable[[str, str], None] | None = None) -> Poem:
    """Write one poem. `on_event(kind, text)` is called as it is written: kind "text" with new
    characters of the current hemistich, then "hemi", "beyt" or "end" at each separator."""
    couplets, seed = validate_request(poetry, request)
    tok = poetry.tokenizer
    generator = torch.Generator(device=poetry.device).manual_seed(seed)
    sampling = Sampling(request.temperature, request.top_k, request.top_p)
    engine = Engine(poetry.model)
    started = time.perf_counter()

    # 1. The header: what the request fixes, then the model's own choice of metre and rhyme.
    header = [tok.token_to_id(t) for t in (POEM, control_token("poet", request.poet),
                                           control_token("form", request.form))]
    if request.metre is not None:
        header.append(tok.token_to_id(control_token("metre", request.metre)))
    if request.rhyme is not None:
        rhyme = normalize(request.rhyme).replace(" ", "").replace("\u200c", "")[-MAX_RHYME_CHARS:]
        header += [tok.token_to_id(RHYME)] + tok.encode(rhyme) + [tok.token_to_id(BODY)]
    body_id, end_id = tok.token_to_id(BODY), tok.token_to_id(END)
    if header[-1] != body_id:
        state = _PoemState(poetry, couplets, "after_metre" if request.metre is not None else "metre")
        for token in engine.stream(header, 0, sampling, generator, MAX_RHYME_CHARS + 4, state.edit_logits,
                                   stop=lambda t: t == body_id):
            header.append(token)
            state.advance(token)

    # 2. The body, with the header pinned at the start of the context window.
    state = _PoemState(poetry, couplets, "body", request.vowel_marks)
    streamer = _Streamer(tok, on_event)
    body: list[int] = []
    budget = couplets * 2 * (MAX_HEMISTICH_CHARS + 2)
    for token in engine.stream(header, len(header), sampling, generator, budget, state.edit_logits,
                               stop=lambda t: t == end_id):
        body.append(token)
        streamer.push(token, state.advance(token))
    return _assemble(poetry, request, header, body, seed, started)


def _assemble(poetry: PoetryModel, request: PoemRequest, header: list[int], body: list[int], seed: int,
              started: float) -> Poem:
    tok = poetry.tokenizer
    metre = next((m for m in poetry.controls.metres if tok.token_to_id(control_token("metre", m)) in header), None)
    rhyme_id = tok.token_to_id(RHYME)
    rhyme = tok.decode(header[header.index(rhyme_id) + 1:-1]) if rhyme_id in header else ""
    separators = {tok.token_to_id(t) for t in (HEMI, BEYT, END)}
    hemistichs, current = [], []
    for token in body:
        if token in separators:
            hemistichs.append(normalize(tok.decode(current)))
            current = []
        else:
            current.append(token)
    pairs = [(hemistichs[i], hemistichs[i + 1] if i + 1 < len(hemistichs) else "")
             for i in range(0, len(hemistichs), 2)]
    return Poem(poet=request.poet, form=request.form, metre=metre,
                metre_name=poetry.metres.get(metre) if metre is not None else None, rhyme=rhyme, couplets=pairs,
                seed=seed, tokens=len(body), seconds=round(time.perf_counter() - started, 3),
                header=tok.decode(header))
