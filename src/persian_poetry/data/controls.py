"""The control header: how a poem's poet, form, metre and rhyme become tokens before its verse.

A poem in the token stream reads

    <|poem|> <|poet:hafez|> <|form:ghazal|> <|metre:8|> <|rhyme|> ا ر <|body|>
    hemistich <|hemi|> hemistich <|beyt|> hemistich <|hemi|> ... hemistich <|end|>

with `<|metre:unknown|>` and `<|rhyme:unknown|>` where Ganjoor has no label. Everything up to and
including `<|body|>` is the header; generation pins it at the start of the context window.
The rhyme letters are ordinary text tokens (there are thousands of distinct rhymes), capped at
`MAX_RHYME_CHARS`. The set of poets, forms and metres a model knows is its tokenizer's special
tokens, so a model directory needs nothing else to say which controls it accepts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

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


def header_tokens(poet: str | None, form: str | None, metre: int | None, rhyme: str | None,
                  controls: Controls) -> tuple[list[str], str]:
    """The header of a poem as special-token strings plus the rhyme text between them.

    Returns (specials_before_rhyme_text, rhyme_text); the caller appends `<|body|>`.
    Values the model does not know become `unknown` (a corpus can hold poets a model never saw).
    """
    poet = poet if poet in controls.poets else UNKNOWN
    form = form if form in controls.forms else UNKNOWN
    metre_value = metre if metre in controls.metres else UNKNOWN
    specials = [POEM, control_token("poet", poet), control_token("form", form), control_token("metre", metre_value)]
    rhyme = (rhyme or "")[-MAX_RHYME_CHARS:]
    specials.append(RHYME if rhyme else control_token("rhyme", UNKNOWN))
    return specials, rhyme
