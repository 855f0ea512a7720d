"""Poems in, poems out: reading the Ganjoor export (or any JSONL of its schema) and the notebook's
plain text, the deterministic train/val/test split, and the classical-poet list of the shipped model.

A poem is kept as its controls (poet, form, metre, rhyme letters) and its hemistichs in order;
how it is laid out as tokens is `controls.py`'s job.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import warnings
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CorpusError
from ..text import PERSIAN_LETTERS, normalize

log = logging.getLogger(__name__)

# Ganjoor's PoemFormat -> our form slug. Anything else (None, "Unknown", rare formats) is "unknown".
FORMS: dict[str, str] = {
    "Ghazal": "ghazal",
    "Robaee": "rubai",
    "Masnavi": "masnavi",
    "Ghete": "qete",
    "Ghaside": "qasida",
    "Dobeyti": "dobeyti",
    "TarjeeBand": "tarjiband",
    "TarkibBand": "tarkibband",
    "Mosammat": "mosammat",
    "Mosammat3": "mosammat",
    "Mosammat4": "mosammat",
    "Mosammat5": "mosammat",
    "Mosammat6": "mosammat",
    "Mosammat8": "mosammat",
    "MultiBand": "multiband",
    "Mostazad": "mostazad",
    "RobaeeMostazad": "mostazad",
    "Takbeyt": "takbeyt",
    "ChaharPare": "chaharpare",
    "Generic": "generic",
}

# Positions that carry verse. Right/Left are the two hemistichs of a couplet; the centred band
# verses of tarji/tarkib-band and mosammat pair up the same way. Paragraph (prose) and Comment
# are not verse and are left out.
FIRST_HEMISTICH = {"Right", "CenteredVerse1"}
SECOND_HEMISTICH = {"Left", "CenteredVerse2", "Single"}

# Poets of the shipped model: classical poets who died before 1900, all in the public domain.
# Modern poets of the export (Bahar, Iqbal, Parvin, Shahriar, Rahi, ...) and the prose authors
# (Meybodi, Beyhaghi, Ghazzali, Hojviri, ...) are left out on purpose.
CLASSICAL_POETS: tuple[str, ...] = (
    "hafez", "saadi", "moulavi", "ferdousi", "khayyam", "attar", "nezami", "sanaee", "jami",
    "saeb", "khajoo", "khosro", "khaghani", "anvari", "naserkhosro", "salman", "vahshi",
    "bidel", "eraghi", "ouhadi", "khojandi", "seyf", "orfi", "naziri", "kalim", "hatef",
    "ghaani", "manoochehri", "farrokhi", "onsori", "roodaki", "babataher", "abusaeed",
    "asadi", "ghatran", "masood", "mohtasham", "shahnematollah", "feyz", "obeyd",
    "shabestari", "amir", "kamal", "jamal", "zahir", "mahsati", "helali", "faghani",
    "ebneyamin", "valad", "asad", "hazin", "vaez", "ghodsi", "salim", "hamgar", "homam",
    "ahli", "forooghi", "neshat", "yaghma", "azar", "moshtagh", "bahaee", "maghrebi",
    "ghasem", "nasimi", "ghaleb", "saber", "soozani", "akhsikati", "beylaghani", "azraghi",
    "rooni", "mokhtari", "vatvat", "hasan", "emami", "falaki", "kesayee", "jahan", "nezari",
    "fayyaz", "toghra", "ghani", "jalal", "khiali", "ouhad", "sahab", "tabib", "razi",
)

# The ten poets offered to users (the first ten above): the poet classifier (`poet.py`) knows
# exactly these, and generated poems are checked against them.
OFFERED_POETS: tuple[str, ...] = ("hafez", "saadi", "moulavi", "ferdousi", "khayyam", "attar", "nezami", "sanaee",
                                  "jami", "saeb")

SPLITS = ("train", "val", "test")


def split_of(poem_id: int | str) -> str:
    """The split a poem belongs to, from a hash of its id: 1% test, 1% val, 98% train.

    sha256 of the decimal id, first 8 hex digits as an integer, modulo 100: 0 is test,
    1 is val, the rest train. Stable across machines, Python versions and corpus order,
    so a poem never moves between splits when the corpus grows.
    """
    bucket = int(hashlib.sha256(str(poem_id).encode()).hexdigest()[:8], 16) % 100
    return "test" if bucket == 0 else "val" if bucket == 1 else "train"


@dataclass
class Poem:
    """One poem: its controls and its hemistichs (normalized text), in reading order.

    `couplet_ends[i]` is True when hemistich i closes a couplet.
    """

    id: int | str
    poet: str
    form: str = "unknown"
    metre: int | None = None
    metre_name: str | None = None
    rhyme: str | None = None
    hemistichs: list[str] = field(default_factory=list)
    couplet_ends: list[bool] = field(default_factory=list)

    @property
    def split(self) -> str:
        return split_of(self.id)

    @property
    def couplets(self) -> list[tuple[str, ...]]:
        out, current = [], []
        for text, ends in zip(self.hemistichs, self.couplet_ends, strict=True):
            current.append(text)
            if ends:
                out.append(tuple(current))
                current = []
        if current:
            out.append(tuple(current))
        return out


class CorpusWarning(UserWarning):
    """Raised (as a warning) when input lines are skipped."""

# The longest poem of the Ganjoor export is about 0.5 MB of JSON; a line 16 times that is no poem,
# and reading it whole could exhaust memory.
MAX_LINE_BYTES = 8 << 20


def poem_from_ganjoor(record: dict) -> Poem | None:
    """A Poem from one Ganjoor JSON object, or None when it holds no verse (prose, empty)."""
    hemistichs, ends = [], []
    for verse in record.get("Verses") or []:
        position = verse.get("Position")
        if position not in FIRST_HEMISTICH and position not in SECOND_HEMISTICH:
            continue
        text = normalize(str(verse.get("Text") or ""))
        if not text:
            continue
        hemistichs.append(text)
        ends.append(position in SECOND_HEMISTICH)
    if not hemistichs:
        return None
    ends[-1] = True
    metre_record = record.get("Metre") or {}
    metre = metre_record.get("Id")
    rhyme = normalize(str(record.get("RhymeLetters") or "")).replace(" ", "").replace("\u200c", "")
    return Poem(
        id=record["Id"],
        poet=str(record["Poet"]),
        form=FORMS.get(record.get("PoemFormat") or "", "unknown"),
        metre=int(metre) if metre is not None else None,
        metre_name=str(metre_record["Rhythm"]) if metre is not None and metre_record.get("Rhythm") else None,
        rhyme=rhyme or None,
        hemistichs=hemistichs,
        couplet_ends=ends,
    )



def _lines(f) -> Iterator[bytes | None]:
    """The lines of a binary file, each at most MAX_LINE_BYTES: a longer line is read past in
    chunks and given as None, so memory stays bounded whatever the file holds."""
    while line := f.readline(MAX_LINE_BYTES + 1):
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while (rest := f.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield None
        else:
            yield line


def _open(path: Path):
    if not path.exists():
        raise FileNotFoundError(f"corpus file not found: {path}")
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as err:  # a directory, no permission
        raise CorpusError(f"cannot read {path}: {err}") from None


# A damaged .gz fails as it is read (BadGzipFile is an OSError; a cut-off one, EOFError).
UNREADABLE = (OSError, EOFError, zlib.error)


def read_jsonl(path: str | Path, poets: Iterable[str] | None = None) -> Iterator[Poem]:
    """Poems from a Ganjoor-schema JSONL file (plain or .gz), optionally only some poets.

    Lines that are not JSON objects of the schema, or longer than MAX_LINE_BYTES, are counted and
    skipped; one warning at the end says how many. Undecodable bytes skip the line they are on,
    not the file. A file that yields no poem at all (empty, another format, no verse, none by the
    poets asked for) is a CorpusError: reading on would only fail later, less clearly.
    """
    path = Path(path)
    wanted = set(poets) if poets is not None else None
    skipped = too_long = records = selected = found = 0
    raw = _open(path)
    try:
        with raw:
            for line_no, raw_line in enumerate(_lines(raw), 1):
                if raw_line is None:
                    too_long += 1
                    continue
                if not raw_line.strip():
                    continue
                try:
                    record = json.loads(raw_line.decode("utf-8"))
                    if not isinstance(record, dict) or "Id" not in record or not isinstance(record.get("Poet"), str) \
                            or not record["Poet"]:
                        raise ValueError("not a poem object")
                    records += 1
                    if wanted is not None and record["Poet"] not in wanted:
                        continue
                    selected += 1
                    poem = poem_from_ganjoor(record)
                except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
                    skipped += 1
                    log.debug("%s:%d skipped: %s", path, line_no, err)
                    continue
                if poem is not None:
                    found += 1
                    yield poem
    except UNREADABLE as err:
        raise CorpusError(f"cannot read {path}: {err}") from None
    bad = f"{skipped + too_long} malformed line(s)" + (f" ({too_long} longer than {MAX_LINE_BYTES >> 20} MiB)"
                                                       if too_long else "")
    if not found and not records:
        raise CorpusError(f"no poems in {path}: it holds {bad if skipped or too_long else 'nothing'}, not "
                          "Ganjoor-schema JSON objects (Id, Poet, Verses), one a line")
    if not found and selected:
        raise CorpusError(f"none of the {selected} poem(s) read from {path} has verse (Verses with a Position "
                          "of Right, Left, CenteredVerse1/2 or Single and some text)")
    if not found and wanted:
        names = ", ".join(sorted(map(str, wanted)))
        raise CorpusError(f"no poems by the selected poets in {path} ({names[:200]})")
    if skipped or too_long:
        warnings.warn(f"{path}: skipped {bad}", CorpusWarning, stacklevel=2)


def read_labelled(path: str | Path, split: str, limit: int | None = None) -> Iterator[Poem]:
    """Poems of `split` that carry a metre label, in file order. The split is decided on the raw
    Id before any text is normalized, so the other splits cost only a JSON parse."""
    n = 0
    f = _open(Path(path))
    try:
        with f:
            for line in _lines(f):
                try:
                    record = json.loads(line or b"")
                    if not record.get("Metre") or split_of(record["Id"]) != split:
                        continue
                    poem = poem_from_ganjoor(record)
                except (ValueError, TypeError, KeyError, AttributeError, RecursionError):
                    continue
                if poem is None or poem.metre is None:
                    continue
                yield poem
                n += 1
                if limit is not None and n >= limit:
                    return
    except UNREADABLE as err:
        raise CorpusError(f"cannot read {path}: {err}") from None


def read_plain_text(path: str | Path) -> str:
    """The whole of a plain text file, normalized line by line (lines kept). Lines longer than
    MAX_LINE_BYTES are skipped (with a warning); a file with no Persian text is a CorpusError."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"text file not found: {path}")
    lines, too_long = [], 0
    try:
        f = open(path, "rb")
    except OSError as err:  # a directory, no permission
        raise CorpusError(f"cannot read {path}: {err}") from None
    with f:
        for raw in _lines(f):
            if raw is None:
                too_long += 1
                continue
            text = raw.decode("utf-8", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
            lines += [line for line in map(normalize, text.split("\n")) if line]
    longer = f"{too_long} line(s) longer than {MAX_LINE_BYTES >> 20} MiB"
    if not any(ch in PERSIAN_LETTERS for line in lines for ch in line):
        raise CorpusError(f"no Persian text in {path}" + (f" (skipped {longer})" if too_long else ""))
    if too_long:
        warnings.warn(f"{path}: skipped {longer}", CorpusWarning, stacklevel=2)
    return "\n".join(lines)


def resolve_poets(poets: str) -> list[str] | None:
    """The poets a `--poets` option names: 'classical', 'all' (None: no filter), or slugs with commas."""
    if poets == "all":
        return None
    if poets == "classical":
        return list(CLASSICAL_POETS)
    return [p.strip() for p in poets.split(",") if p.strip()]
