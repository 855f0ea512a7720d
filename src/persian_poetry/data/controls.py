"""The control header: how a poem's poet, form, metre and rhyme become tokens before its verse.

A poem in the token stream reads

    <|poem|> <|poet:hafez|> <|form:ghazal|> <|metre:8|> <|rhyme|> ا ر <|body|>
    hemistich <|hemi|> hemistich <|beyt|> hemistich <|hemi|> ... hemistich <|end|>

with `<|metre:unknown|>` and `<|rhyme:unknown|>` where Ganjoor has no label. Everything up to and
including `<|body|>` is the header; generation pins it at the start of the context window.
`poem_header` builds it, for training and for writing alike.
The rhyme letters are ordinary text tokens (there are thousands of distinct rhymes), capped at
`MAX_RHYME_CHARS`. The set of poets, forms and metres a model knows is its tokenizer's special
tokens, so a model directory needs nothing else to say which controls it accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

from .corpus import Poem

POEM, BODY, RHYME, HEMI, BEYT, END = "<|poem|>", "<|body|>", "<|rhyme|>", "<|hemi|>", "<|beyt|>", "<|end|>"
UNKNOWN = "unknown"
STRUCTURE_TOKENS = (POEM, BODY, RHYME, HEMI, BEYT, END)
MAX_RHYME_CHARS = 12
_CONTROL_RE = re.compile(r"<\|(poet|form|metre|rhyme):([^|]+)\|>")


def control_token(kind: str, value: object) -> str:
    return f"<|{kind}:{value}|>"


@dataclass(frozen=True)
class Controls:
    """The controls a model knows: poet slugs, form slugs and Ganjoor metre ids."""

    poets: tuple[str, ...]
    forms: tuple[str, ...]
    metres: tuple[int, ...]

    @classmethod
    def from_poems(cls, poems: Iterable[Poem]) -> "Controls":
        poets, forms, metres = set(), set(), set()
        for poem in poems:
            poets.add(poem.poet)
            forms.add(poem.form)
            if poem.metre is not None:
                metres.add(poem.metre)
        forms.discard(UNKNOWN)
        return cls(tuple(sorted(poets)), tuple(sorted(forms)), tuple(sorted(metres)))

    @classmethod
    def from_special_tokens(cls, tokens: Iterable[str]) -> "Controls":
        found: dict[str, list[str]] = {"poet": [], "form": [], "metre": []}
        for token in tokens:
            match = _CONTROL_RE.fullmatch(token)
            if match and match[1] in found and match[2] != UNKNOWN:
                found[match[1]].append(match[2])
        return cls(
            tuple(sorted(found["poet"])),
            tuple(sorted(found["form"])),
            tuple(sorted(int(m) for m in found["metre"])),
        )

    def special_tokens(self) -> list[str]:
        """Every special token, in a fixed order (structure first, then controls)."""
        tokens = list(STRUCTURE_TOKENS) + [control_token("rhyme", UNKNOWN)]
        tokens += [control_token("poet", p) for p in (*self.poets, UNKNOWN)]
        tokens += [control_token("form", f) for f in (*self.forms, UNKNOWN)]
        tokens += [control_token("metre", m) for m in (*self.metres, UNKNOWN)]
        return tokens


class Header(NamedTuple):
    """A poem's control header: special tokens, then the rhyme letters as plain text, then `<|body|>`.

    An open header (see `poem_header`) stops before a control the model is to choose itself."""

    specials: tuple[str, ...]  # <|poem|> <|poet:..|> <|form:..|> [<|metre:..|> [<|rhyme|> or <|rhyme:unknown|>]]
    rhyme: str = ""  # the rhyme letters after <|rhyme|>
    closed: bool = True  # ends with <|body|>

    def tokens(self) -> list[str]:
        """The header as strings: each special token, and the rhyme letters as one string."""
        return [*self.specials, *([self.rhyme] if self.rhyme else []), *([BODY] if self.closed else [])]

    def ids(self, tokenizer) -> list[int]:
        ids = [tokenizer.token_to_id(t) for t in self.specials]
        if self.rhyme:
            ids += tokenizer.encode(self.rhyme)
        return ids + ([tokenizer.token_to_id(BODY)] if self.closed else [])


def poem_header(controls: Controls, poet: str | None, form: str | None, metre: int | None = None,
                rhyme: str | None = None, *, open_at: str | None = None) -> Header:
    """The control header of a poem: the one definition that training (`dataset.encode_poem`) and
    writing (`generate`, `explain`) both use.

    Values the model does not know become `unknown` (a corpus can hold poets a model never saw),
    and so does a missing metre or rhyme; rhyme letters beyond MAX_RHYME_CHARS are cut from the
    front. `open_at` leaves the header for the model to go on: "metre" ends it after the form (the
    model chooses the metre, then the rhyme), "rhyme" after the metre (the model writes `<|rhyme|>`,
    the rhyme letters and `<|body|>`).
    """
    if open_at not in (None, "metre", "rhyme"):
        raise ValueError(f"open_at must be None, 'metre' or 'rhyme', not {open_at!r}")
    specials = [POEM, control_token("poet", poet if poet in controls.poets else UNKNOWN),
                control_token("form", form if form in controls.forms else UNKNOWN)]
    if open_at == "metre":
        return Header(tuple(specials), closed=False)
    specials.append(control_token("metre", metre if metre in controls.metres else UNKNOWN))
    if open_at == "rhyme":
        return Header(tuple(specials), closed=False)
    rhyme = (rhyme or "")[-MAX_RHYME_CHARS:]
    specials.append(RHYME if rhyme else control_token("rhyme", UNKNOWN))
    return Header(tuple(specials), rhyme)


def metre_token_ids(tokenizer, controls: Controls) -> dict[int, int]:
    """Each metre the model knows (Ganjoor id) -> the id of its `<|metre:..|>` token."""
    return {m: tokenizer.token_to_id(control_token("metre", m)) for m in controls.metres}
