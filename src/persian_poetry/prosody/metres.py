"""The metre catalogue: Ganjoor's metre labels parsed into patterns of long and short syllables.

A Ganjoor metre label reads "فعلاتن فعلاتن فعلاتن فعلن (رمل مثمن مخبون محذوف)": the feet
(ارکان) of one hemistich, then the traditional name of the metre. Each foot is a fixed sequence
of long (-) and short (U) syllables (`FEET`, the one hand-written table of this module); the
pattern of a metre is the concatenation of its feet, derived here by code.

Conventions of aruz (عروض) that the catalogue carries, with their names:

- The last syllable of a hemistich is free (anceps): the scanner lets any syllable fill it.
  Patterns are written with a long last syllable, as the feet are.
- An overlong syllable (CVCC, CVVC) counts as long + short; that is the scanner's business, not
  the catalogue's.
- Licences (اختیارات وزنی) that change the pattern itself become extra patterns of the same metre,
  each named in `Metre.licences` and paid for by the scanner with a small cost:
  * "فاعلاتن به جای فعلاتن": a first foot فعلاتن (U U - -) may open with a long syllable;
  * "تسکین": a last foot فعلن (U U -) may be فع لن (- -);
  * "دوری": in a metre made of two equal halves of two or more different feet, each half ending
    in a long syllable (مفتعلن فاعلن مفتعلن فاعلن), the middle is a
    caesura: an overlong syllable there counts as one long, and a short may stand for the long;
  * "قلب": in metres built of مفتعلن and مفاعلن only, any foot may be مفتعلن (- U U -) or
    مفاعلن (U - U -).
- The rubai metre (Ganjoor id 24) is the 24 traditional forms (شجرهٔ اخرب and شجرهٔ اخرم), generated
  by `rubai_forms` from the rule that chains their feet; they collapse to 12 distinct patterns
  because فاع and فع (فعول and فعل) differ only in the free last syllable.

`build_catalogue(corpus_path)` reads every distinct (Metre.Id, Rhythm) of a Ganjoor export and
parses it; the result ships as `assets/metres.json` (metadata only: ids, labels, feet,
patterns, poem counts), and `load_catalogue()` reads it back without the data.
`catalogue_markdown()` writes the table of `docs/metres.md`. `shares` (how often each pattern of a
metre occurs) is measured by the scanner on training poems (`scansion.estimate_shares`) and
turned into the scanner's cost of each pattern.

    python scripts/build_metre_catalogue.py ../shared/data/ganjoor/poems.jsonl.gz   # rewrites metres.json, docs/metres.md
"""

from __future__ import annotations

import gzip
import itertools
import json
import math
import re
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from ..assets import CATALOGUE_PATH
from ..errors import MetreError
from ..text import normalize

RUBAI_ID = 24
HEMISTICH_POSITIONS = {"Right", "Left", "CenteredVerse1", "CenteredVerse2", "Single"}

# The feet (ارکان) and their syllable weights: - long, U short. A foot that ends in an overlong
# syllable (فاع، فعول at the end of a rubai, ...ان) is written with that syllable as one long: it only
# ever closes a hemistich, where the last syllable is free anyway.
FEET: dict[str, str] = {
    "فاعلاتن": "-U--",
    "فاعلات": "-U-U",
    "فاعلان": "-U--",
    "فاعلن": "-U-",
    "فاعل": "-U",
    "فعلاتن": "UU--",
    "فعلات": "UU-U",
    "فعلان": "UU--",
    "فعلن": "UU-",
    "فعل": "U-",
    "فع": "-",
    "فاع": "-",
    "فعولن": "U--",
    "فعول": "U-U",
    "فعولان": "U--",
    "مفاعیلن": "U---",
    "مفاعیل": "U--U",
    "مفاعیلان": "U---",
    "مفاعلن": "U-U-",
    "مفاعلتن": "U-UU-",
    "مستفعلن": "--U-",
    "مستفعل": "--U",
    "مستفعلتن": "--UU-",
    "مفعولن": "---",
    "مفعول": "--U",
    "مفعولات": "---U",
    "مفتعلن": "-UU-",
    "متفاعلن": "UU-U-",
    "متفاعلتن": "UU-UU-",
    "متفاعلاتن": "UU-U--",
    "متفعلن": "U-U-",
}
# At the end of a hemistich these feet end in an overlong syllable that counts as one long.
FINAL_FEET: dict[str, str] = {"فعول": "U-", "فاع": "-"}

LICENCE_COST: dict[str, float] = {
    "": 0.0,
    "فاعلاتن به جای فعلاتن": 0.3,
    "تسکین": 0.3,
    "قلب": 0.8,
    "دوری": 0.8,
    "رباعی": 0.0,
}

@dataclass(frozen=True)
class Metre:
    """One metre of the catalogue.

    `patterns[0]` is the canonical pattern (the feet as written); the others are the forms the
    licences allow, `licences[i]` naming the licence of `patterns[i]` ("" for the canonical one).
    `forms` holds the feet sequences behind the patterns where they differ from `feet` (the 24
    rubai forms). `poems` is the number of poems of the export that carry the label, `quatrains`
    how many of them are four hemistichs long (the shape of a rubai or a dobeyti).
    """

    id: int
    name: str
    feet: tuple[str, ...]
    patterns: tuple[str, ...]
    licences: tuple[str, ...] = ()
    family: str = ""
    poems: int = 0
    forms: tuple[tuple[str, ...], ...] = field(default=())
    shares: tuple[float, ...] = ()
    quatrains: int = 0

    @property
    def pattern(self) -> str:
        return self.patterns[0]

    @property
    def short_name(self) -> str:
        """The traditional name (the part of the label in parentheses), or the feet."""
        match = re.search(r"\(([^)]*)\)", self.name)
        return match.group(1).strip() if match else " ".join(self.feet)

    def licence_cost(self, index: int) -> float:
        """What the scanner pays for reading a hemistich in `patterns[index]`: -ln of the
        pattern's share among the metre's hemistichs where that was measured (`shares`), else a
        fixed cost per licence."""
        if self.shares and len(self.shares) == len(self.patterns):
            return -math.log(self.shares[index])
        return LICENCE_COST.get(self.licences[index] if self.licences else "", 0.5)


def parse_feet(label: str) -> tuple[str, ...]:
    """The feet of a metre label, in order: the words before the parenthesis.

    >>> parse_feet("فعلاتن فعلاتن فعلاتن فعلن (رمل مثمن مخبون محذوف)")
    ('فعلاتن', 'فعلاتن', 'فعلاتن', 'فعلن')
    """
    text = normalize(label)
    text = re.sub(r"\(.*?\)", " ", text)
    text = re.sub(r"[^\u0600-\u06ff\s]", " ", text).replace("\u200c", "")
    words = [w for w in text.split() if w not in ("یا", "وزن")]
    if not words:
        raise MetreError(f"no feet in metre label {label!r}")
    unknown = [w for w in words if w not in FEET]
    if unknown:
        raise MetreError(f"unknown feet {unknown} in metre label {label!r}")
    return tuple(words)


def feet_pattern(feet: tuple[str, ...] | list[str]) -> str:
    """The weight string of a sequence of feet (the last foot in its hemistich-final form).

    >>> feet_pattern(("فعولن", "فعولن", "فعولن", "فعل"))
    'U--U--U--U-'
    """
    if not feet:
        raise MetreError("no feet")
    head = "".join(FEET[f] for f in feet[:-1])
    return head + FINAL_FEET.get(feet[-1], FEET[feet[-1]])


def rubai_forms() -> list[tuple[str, ...]]:
    """The 24 traditional forms of the rubai metre: 12 of the akhrab tree (opening مفعول) and 12 of
    the akhram tree (opening مفعولن).

    The tree: the second foot is مفاعلن، مفاعیل or مفاعیلن after مفعول (akhrab), مفعول، فاعلن (اشتر) or
    مفعولن after مفعولن (akhram); the third foot is مفعولن or مفعول after the all-long feet
    مفاعیلن and مفعولن, مفاعیلن or مفاعیل after the others; the last foot is فع or فاع after a
    third foot ending in a long syllable, فعل or فعول after one ending in a short. 2 x 3 x 2 x 2 = 24.
    """
    second = {"مفعول": ("مفاعلن", "مفاعیل", "مفاعیلن"), "مفعولن": ("مفعول", "فاعلن", "مفعولن")}
    # The third foot: a "long-opening" or a "short-opening" pair, each with a long and a short ending.
    opens_short = ("مفاعیلن", "مفاعیل")
    opens_long = ("مفعولن", "مفعول")
    forms = []
    for first in ("مفعول", "مفعولن"):
        for foot2 in second[first]:
            # Only the all-long feet (مفاعیلن، مفعولن) are followed by a long-opening third foot.
            thirds = opens_long if foot2 in ("مفاعیلن", "مفعولن") else opens_short
            for foot3 in thirds:
                lasts = ("فعل", "فعول") if FEET[foot3].endswith("U") else ("فع", "فاع")
                for last in lasts:
                    forms.append((first, foot2, foot3, last))
    return forms


def _licensed(feet: tuple[str, ...]) -> list[tuple[str, str]]:
    """(pattern, licence) for the canonical pattern and the licensed variants of a metre."""
    out = [(feet_pattern(feet), "")]
    base = out[0][0]
    if feet[0] == "فعلاتن":
        out.append(("-" + base[1:], "فاعلاتن به جای فعلاتن"))
    if feet[-1] == "فعلن":
        for pattern, licence in list(out):
            out.append((pattern[:-3] + "--", "تسکین" if not licence else licence + " + تسکین"))
    half = len(feet) // 2
    if (len(feet) % 2 == 0 and half >= 2 and feet[:half] == feet[half:] and len(set(feet)) > 1
            and FEET[feet[half - 1]].endswith("-")):
        # a doubled (دوری) metre: its middle is a caesura, where (as at the end of a hemistich)
        # an overlong syllable counts as one long and a short may stand for the long
        head = feet_pattern(feet[:half])
        out.append((head + "U" + head, "دوری"))
        out.append((head[:-1] + "U" + head, "دوری"))
    if len(feet) > 1 and set(feet) == {"مفتعلن", "مفاعلن"}:
        for choice in itertools.product(("مفتعلن", "مفاعلن"), repeat=len(feet)):
            out.append((feet_pattern(choice), "قلب"))
    seen, unique = set(), []
    for pattern, licence in out:
        if pattern not in seen:
            seen.add(pattern)
            unique.append((pattern, licence))
    return unique


def _family(label: str) -> str:
    match = re.search(r"\(([^)]*)\)", label)
    if not match:
        return ""
    words = match.group(1).split()
    return "رباعی" if "رباعی" in words else words[0] if words else ""


def parse_metre(metre_id: int, label: str, poems: int = 0) -> Metre:
    """A `Metre` from a Ganjoor (Id, Rhythm) pair."""
    name = normalize(label)
    feet = parse_feet(name)
    if metre_id == RUBAI_ID:
        forms = tuple(rubai_forms())
        patterns = tuple(dict.fromkeys(feet_pattern(f) for f in forms))
        canonical = feet_pattern(feet)
        patterns = (canonical,) + tuple(p for p in patterns if p != canonical)
        return Metre(metre_id, name, feet, patterns, ("",) + ("رباعی",) * (len(patterns) - 1),
                     "رباعی", poems, forms)
    variants = _licensed(feet)
    return Metre(metre_id, name, feet, tuple(p for p, _ in variants), tuple(l for _, l in variants),
                 _family(name), poems)


def build_catalogue(corpus_path: str | Path) -> list[Metre]:
    """Every distinct (Metre.Id, Rhythm) of a Ganjoor export, parsed, most common first."""
    counts: Counter[tuple[int, str]] = Counter()
    quatrains: Counter[int] = Counter()
    opener = gzip.open if str(corpus_path).endswith(".gz") else open
    with opener(corpus_path, "rb") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            metre = record.get("Metre") if isinstance(record, dict) else None
            if metre and metre.get("Id") is not None and metre.get("Rhythm"):
                counts[(int(metre["Id"]), str(metre["Rhythm"]))] += 1
                verses = [v for v in record.get("Verses") or [] if v.get("Position") in HEMISTICH_POSITIONS]
                quatrains[int(metre["Id"])] += len(verses) == 4
    by_id: dict[int, tuple[str, int]] = {}
    for (metre_id, label), n in counts.items():
        old = by_id.get(metre_id)
        by_id[metre_id] = (label if old is None or n > old[1] else old[0], n + (old[1] if old else 0))
    metres = [replace(parse_metre(i, label, n), quatrains=quatrains[i]) for i, (label, n) in by_id.items()]
    return sorted(metres, key=lambda m: (-m.poems, m.id))


def write_catalogue(metres: list[Metre], path: str | Path = CATALOGUE_PATH) -> None:
    rows = [asdict(m) for m in metres]
    Path(path).write_text(json.dumps({"metres": rows}, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[Metre, ...]:
    rows = json.loads(Path(path).read_text(encoding="utf-8"))["metres"]
    out = []
    for row in rows:
        row = dict(row)
        for key in ("feet", "patterns", "licences", "shares"):
            row[key] = tuple(row.get(key) or ())
        row["forms"] = tuple(tuple(f) for f in row.get("forms") or ())
        out.append(Metre(**row))
    return tuple(out)


def load_catalogue(path: str | Path | None = None) -> tuple[Metre, ...]:
    """The shipped catalogue (`assets/metres.json`), or another file of its format."""
    return _load(str(path or CATALOGUE_PATH))


def metre_by_id(metre_id: int) -> Metre | None:
    return {m.id: m for m in load_catalogue()}.get(metre_id)


def resolve_metre(value: int | str, allowed: set[int] | None = None) -> Metre:
    """A metre named by its Ganjoor id (7 or "7"), its label or traditional name
    ("رمل مثمن مخبون محذوف"), or its feet ("فعلاتن فعلاتن فعلاتن فعلن"); `allowed` limits the
    choice (the metres a model knows). Raises MetreError naming the choices when none or several fit."""

    metres = [m for m in load_catalogue() if allowed is None or m.id in allowed]
    text = normalize(str(value)).strip()
    if text.isdigit():
        found = [m for m in metres if m.id == int(text)]
    else:
        def squeeze(s: str) -> str:
            return " ".join(normalize(s).replace("(", " ").replace(")", " ").split())

        wanted = squeeze(text)
        exact = [m for m in metres if wanted in (squeeze(m.name), squeeze(m.short_name), " ".join(m.feet))]
        found = exact or [m for m in metres if wanted and wanted in squeeze(m.name)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise MetreError(f"unknown metre {value!r}; give a Ganjoor id, a name or feet "
                         "(`persian-poetry generate --list-metres` lists them)")
    raise MetreError(f"metre {value!r} is ambiguous: " + "; ".join(f"{m.id} {m.name}" for m in found[:6]))


def show_pattern(pattern: str) -> str:
    """A weight string with the prosody signs: − long, ∪ short, read left to right."""
    return pattern.replace("-", "−").replace("U", "∪")


def catalogue_markdown(metres: list[Metre] | tuple[Metre, ...] | None = None) -> str:
    """The table of docs/metres.md."""
    metres = list(metres if metres is not None else load_catalogue())
    total = sum(m.poems for m in metres)
    lines = [
        "# The metre catalogue",
        "",
        "Generated by `scripts/build_metre_catalogue.py` from `src/persian_poetry/assets/metres.json`,",
        "which `build_catalogue()` derives from the Ganjoor export's metre labels (Metre.Id, Rhythm).",
        "Patterns read left to right (first syllable first): − long, ∪ short; the last syllable of a",
        "hemistich is free. Extra patterns are the licences of the metre (see `prosody/metres.py`); the rubai",
        "metre lists its 12 distinct patterns (24 traditional forms).",
        "",
        f"{len(metres)} metres, {total} labelled poems in the export.",
        "",
        "| id | poems | label | feet | pattern | other patterns (licence) |",
        "| ---: | ---: | --- | --- | --- | --- |",
    ]
    for m in metres:
        others = "; ".join(f"{show_pattern(p)} ({l})" for p, l in zip(m.patterns[1:], m.licences[1:]))
        lines.append(f"| {m.id} | {m.poems} | {m.name} | {' '.join(m.feet)} | {show_pattern(m.pattern)} | {others} |")
    if any(m.forms for m in metres):
        rubai = next(m for m in metres if m.forms)
        lines += ["", f"## The 24 forms of the rubai metre (id {rubai.id})", "", "| # | feet | pattern |",
                  "| ---: | --- | --- |"]
        for i, form in enumerate(rubai.forms, 1):
            lines.append(f"| {i} | {' '.join(form)} | {show_pattern(feet_pattern(form))} |")
    return "\n".join(lines) + "\n"
