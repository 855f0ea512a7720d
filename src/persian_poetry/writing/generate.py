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
from dataclasses import replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ..data.controls import BEYT, BODY, END, HEMI, MAX_RHYME_CHARS, RHYME, metre_token_ids, poem_header
from ..errors import MetreError, PoetryError
from ..gpt.engine import Engine, new_generator
from ..gpt.inference import one_blas_thread
from ..gpt.sampling import Sampling
from ..prosody.lexicon import verse_words
from ..prosody.metres import RUBAI_ID, resolve_metre
from ..prosody.rhyme import rhyme_key, rhyming_positions
from ..prosody.scansion import scan_hemistich
from ..text import DIACRITICS, normalize
from .bundle import PoetryModel
from .request import (
    FORM_COUPLETS,
    MAX_BEST_OF,
    MAX_COUPLETS,
    MAX_HEMISTICH_CHARS,
    MAX_RHYME_INPUT,
    MAX_STRENGTH,
    Poem,
    PoemRequest,
)
from .style import poem_bias
from .verse import RhymeSpec, VerseWriter, choose_qafiya, qafiya_of

SHADDA = "\u0651"
VOWEL_MARKS = DIACRITICS.replace("\u0654", "")

# The body is prompted as header + <|beyt|>: training windows that start inside a poem put the
# header right before mid-hemistich text, so after <|body|> alone the model expects the middle of
# a line; after a couplet break it begins a hemistich. The cue is pinned with the header and is
# not part of the poem.
VERSE_START = BEYT


def _choices(values) -> str:
    return ", ".join(str(v) for v in values)


def resolved_request(poetry: PoetryModel, request: PoemRequest) -> PoemRequest:
    """The request with its metre as a Ganjoor id (from a name or feet) and its first
    hemistichs normalized; raises PoetryError for a metre the model does not know."""
    metre = request.metre
    if metre is not None:
        try:
            metre = resolve_metre(metre, set(poetry.controls.metres)).id
        except MetreError as err:
            raise PoetryError(str(err)) from None
    first = [normalize(h) for h in request.first] if request.first is not None else None
    return replace(request, metre=metre, first=first)


def validate_request(poetry: PoetryModel, request: PoemRequest) -> tuple[int, int]:
    """Check a request against what the model knows; return (couplets, seed)."""
    _, couplets, seed = _checked_request(poetry, request)
    return couplets, seed


def _checked_request(poetry: PoetryModel, request: PoemRequest) -> tuple[PoemRequest, int, int]:
    """`validate_request`, also returning the request as `resolved_request` gives it."""
    controls = poetry.controls
    if request.poet not in controls.poets:
        raise PoetryError(f"unknown poet {request.poet!r}; choose from: {_choices(controls.poets)}")
    forms = [f for f in controls.forms if f in FORM_COUPLETS]
    if request.form not in forms:
        raise PoetryError(f"unknown form {request.form!r}; choose from: {_choices(forms)}")
    request = resolved_request(poetry, request)
    if request.form in ("rubai",) and request.metre not in (None, RUBAI_ID):
        raise PoetryError(f"a rubai is written in the rubai metre (id {RUBAI_ID}), not metre {request.metre}")
    couplets = request.couplets if request.couplets is not None else FORM_COUPLETS[request.form]
    if not 1 <= couplets <= MAX_COUPLETS:
        raise PoetryError(f"couplets must be between 1 and {MAX_COUPLETS}, got {couplets}")
    if request.seed is not None and not 0 <= request.seed < 2**63:
        raise PoetryError(f"seed must be between 0 and 2**63 - 1, got {request.seed}")
    for name in ("rhyme", "radif"):
        value = getattr(request, name)
        if value is not None and len(value) > MAX_RHYME_INPUT:
            raise PoetryError(f"{name} is {len(value)} characters long; at most {MAX_RHYME_INPUT}")
        if value is not None and not rhyme_key(value):
            raise PoetryError(f"{name} {value!r} holds no Persian letters")
    if request.free and request.rhyme is not None and request.metre is None:
        raise PoetryError("with --free a rhyme can only be fixed together with a metre (the header gives the metre first)")
    if request.radif is not None and request.rhyme is None:
        raise PoetryError("a radif needs a rhyme (qafiya) before it: give --rhyme too")
    if request.first is not None:
        if not 1 <= len(request.first) < 2 * couplets or not all(request.first):
            raise PoetryError(f"first: give 1 to {2 * couplets - 1} non-empty hemistichs to continue")
    if not 0 <= request.style <= MAX_STRENGTH:
        raise PoetryError(f"style strength must be between 0 and {MAX_STRENGTH}, got {request.style}")
    if not 1 <= request.best_of <= MAX_BEST_OF:
        raise PoetryError(f"best-of must be between 1 and {MAX_BEST_OF}, got {request.best_of}")
    if request.free and request.best_of > 1:
        raise PoetryError("best-of chooses among constrained hemistichs; it does not apply with --free")
    try:
        Sampling(request.temperature, request.top_k, request.top_p)
    except ValueError as err:
        raise PoetryError(str(err)) from None
    seed = request.seed if request.seed is not None else int.from_bytes(os.urandom(4), "little")
    return request, couplets, seed


class _TokenClasses(NamedTuple):
    """Boolean masks over the vocabulary: what kind of text each token is (read-only, shared)."""

    special: np.ndarray
    bad_text: np.ndarray  # text tokens that can never appear in verse (line breaks)
    has_space: np.ndarray
    leading_space: np.ndarray
    leading_mark: np.ndarray
    vowel_marks: np.ndarray  # vowel marks other than the ezafe hamza (هٔ), which classical verse is written without


@lru_cache(maxsize=4)
def _token_classes(tok) -> _TokenClasses:
    """The masks of a tokenizer, read from its pieces once, not for every poem."""
    special = np.zeros(tok.vocab_size, dtype=bool)
    special[[tok.token_to_id(t) for t in tok.special_tokens]] = True
    pieces = tok.pieces
    return _TokenClasses(
        special=special,
        bad_text=np.array(["\n" in p for p in pieces]) & ~special,
        has_space=np.array([" " in p or "\u200c" in p for p in pieces]),
        leading_space=np.array([p.startswith((" ", "\u200c")) for p in pieces]),
        leading_mark=np.array([bool(p) and p[0] in DIACRITICS for p in pieces]) & ~special,
        vowel_marks=np.array([any(ch in VOWEL_MARKS for ch in p) for p in pieces]) & ~special)


class _PoemState:
    """Where the writing stands (header or body, which hemistich) and which tokens may come next."""

    def __init__(self, poetry: PoetryModel, couplets: int, phase: str, vowel_marks: bool = False):
        tok = poetry.tokenizer
        self.tok = tok
        self.ids = {name: tok.token_to_id(name) for name in (BODY, RHYME, HEMI, BEYT, END)}
        (self.special, self.bad_text, self.has_space, self.leading_space, self.leading_mark,
         self.vowel_marks) = _token_classes(tok)
        self.allow_marks = vowel_marks
        self.metre_ids = np.array(list(metre_token_ids(tok, poetry.controls).values()))
        self.couplets = couplets
        self.phase = phase  # "metre", "after_metre", "rhyme" or "body"
        self.rhyme_ids: list[int] = []
        self.couplet = 0  # couplets finished
        self.second = False  # writing the second hemistich of the couplet
        self.hemistich_ids: list[int] = []

    def allowed(self) -> np.ndarray:
        """Boolean mask over the vocabulary of the tokens that may come next."""
        if self.phase == "metre":
            mask = np.zeros_like(self.special)
            mask[self.metre_ids] = True
        elif self.phase == "after_metre":
            mask = np.zeros_like(self.special)
            mask[self.ids[RHYME]] = True
        elif self.phase == "rhyme":
            mask = ~self.special & ~self.bad_text & ~self.has_space  # rhyme letters are written solid
            if self.rhyme_ids:
                mask[self.ids[BODY]] = True
            if len(self.tok.decode(self.rhyme_ids)) >= MAX_RHYME_CHARS:
                mask = np.zeros_like(self.special)
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


    def mask_for(self, hemistich_ids: list[int]) -> np.ndarray:
        """`allowed()` for a hemistich that so far holds these tokens (constrained decoding
        writes and takes back tokens itself, then asks)."""
        self.hemistich_ids = list(hemistich_ids)
        return self.allowed()

    def edit_logits(self, logits: np.ndarray) -> np.ndarray:
        return np.where(self.allowed(), logits, -np.inf)


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
    characters of the current hemistich, then "hemi", "beyt" or "end" at each separator.

    By default the metre and the rhyme are kept by constrained decoding (`verse.py`); each
    hemistich is then passed on once it is accepted. `request.free` leaves the model alone and
    streams token by token."""
    request, couplets, seed = _checked_request(poetry, request)
    generator = new_generator(seed)
    sampling = Sampling(request.temperature, request.top_k, request.top_p)
    started = time.perf_counter()
    write = _write_free if request.free else _write_constrained
    with one_blas_thread():
        return write(poetry, request, couplets, seed, sampling, generator, on_event, started)


def header_ids(poetry: PoetryModel, request: PoemRequest, metre: int | None = None, rhyme: str | None = None, *,
               open_at: str | None = None) -> list[int]:
    """The control header for `request` (in `metre`, rhyming on `rhyme` letters), as training
    encodes it: `controls.poem_header`, left open at "metre" or "rhyme" for the model to choose."""
    return poem_header(poetry.controls, request.poet, request.form, metre, rhyme, open_at=open_at).ids(poetry.tokenizer)


def _write_free(poetry, request, couplets, seed, sampling, generator, on_event, started) -> Poem:
    tok = poetry.tokenizer
    engine = Engine(poetry.model)
    # 1. The header: what the request fixes, then the model's own choice of metre and rhyme.
    if request.rhyme is not None:  # (validated: with a metre)
        header = header_ids(poetry, request, request.metre, rhyme_key(request.rhyme) + rhyme_key(request.radif or ""))
    else:
        header = header_ids(poetry, request, request.metre, open_at="metre" if request.metre is None else "rhyme")
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
    prompt = header + [tok.token_to_id(VERSE_START)]
    for k, hemistich in enumerate(request.first or []):  # given hemistichs: read, not written
        separator = _separator_for(poetry, k, couplets)
        for token in tok.encode(hemistich) + [separator]:
            prompt.append(token)
            streamer.push(token, state.advance(token))
    body: list[int] = prompt[len(header) + 1:]
    budget = couplets * 2 * (MAX_HEMISTICH_CHARS + 2)
    bias = _style_bias(poetry, request)

    def edit_body(logits: np.ndarray) -> np.ndarray:
        return state.edit_logits(logits if bias is None else logits + poem_bias(bias, body))

    for token in engine.stream(prompt, len(header) + 1, sampling, generator, budget, edit_body,
                               stop=lambda t: t == end_id):
        body.append(token)
        streamer.push(token, state.advance(token))
    return _assemble(poetry, request, header, body, seed, started)


def _style_bias(poetry: PoetryModel, request: PoemRequest) -> np.ndarray | None:
    """The logit offset of the requested poet's style (None without a style prior or at strength 0)."""
    if poetry.style is None:
        return None
    return poetry.style.for_poet(request.poet, request.style)


def _separator_for(poetry: PoetryModel, index: int, couplets: int) -> int:
    """The token after hemistich `index` (0-based) of a poem of `couplets` couplets."""
    name = HEMI if index % 2 == 0 else END if index == 2 * couplets - 1 else BEYT
    return poetry.tokenizer.token_to_id(name)


def _write_constrained(poetry, request, couplets, seed, sampling, generator, on_event, started) -> Poem:

    tok = poetry.tokenizer
    engine = Engine(poetry.model)
    header = header_ids(poetry, request, open_at="metre")
    metre_ids = metre_token_ids(tok, poetry.controls)
    metre = request.metre
    if metre is None and request.form == "rubai":
        metre = RUBAI_ID
    if metre is None and request.first:  # the metre the given hemistich is written in
        metre = scan_hemistich(request.first[0], align=False).metre_id
    if metre is None or metre not in poetry.controls.metres:  # the model's own choice, as in free writing
        state = _PoemState(poetry, couplets, "metre")
        token = next(engine.stream(header, 0, sampling, generator, 1, state.edit_logits))
        metre = next(m for m, token_id in metre_ids.items() if token_id == token)
    first = request.first or []
    if request.rhyme is not None:
        rhyme = RhymeSpec(request.rhyme, tuple(verse_words(request.radif)) if request.radif else ())
    elif first and verse_words(first[0]):
        rhyme = RhymeSpec(qafiya_of(verse_words(first[0])[-1]))
    else:
        rhyme = RhymeSpec(choose_qafiya(seed))
    header = header_ids(poetry, request, metre, rhyme.letters)

    prompt = header + [tok.token_to_id(VERSE_START)]
    decoder = engine.decoder(prompt, len(prompt))
    state = _PoemState(poetry, couplets, "body", request.vowel_marks)
    writer = VerseWriter(poetry, decoder, sampling, generator, metre, state.mask_for, poet=request.poet,
                         style_bias=_style_bias(poetry, request))
    rhyming = set(rhyming_positions(2 * couplets, request.form))
    hemistichs: list[str] = []
    report = {"metre": metre, "qafiya": rhyme.qafiya, "radif": " ".join(rhyme.radif), "tries": 0, "restarts": 0,
              "relaxed": []}
    for i in range(2 * couplets):
        separator = _separator_for(poetry, i, couplets)
        if request.form == "masnavi" and i >= 2:  # each couplet rhymes in itself
            own = verse_words(hemistichs[i - 1]) if i % 2 else []
            target = RhymeSpec(qafiya_of(own[-1])) if own else None
        else:
            target = rhyme if i in rhyming else None
        if i < len(first):
            for token in tok.encode(first[i]) + [separator]:
                decoder.push(token)
            text = first[i]
        else:
            result = writer.write_best(separator, target, request.best_of)
            text = result.text
            report["tries"] += result.tries
            report["restarts"] += result.restarts
            if result.relaxed:
                report["relaxed"].append(i)
        hemistichs.append(text)
        event = state.advance(separator)
        if on_event is not None:
            on_event("text", text)
            on_event(event, "")
    poem = _assemble(poetry, request, header, decoder.history[len(prompt):], seed, started)
    poem.radif, poem.constraints = report["radif"], report
    return poem


def _assemble(poetry: PoetryModel, request: PoemRequest, header: list[int], body: list[int], seed: int,
              started: float) -> Poem:
    tok = poetry.tokenizer
    metre = next((m for m, token_id in metre_token_ids(tok, poetry.controls).items() if token_id in header), None)
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
