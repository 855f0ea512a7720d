"""What a user asks for and what they get: `PoemRequest` (with every default of writing a poem)
and `Poem`, and the limits of a request. No torch: the command line and the server build their
options from these."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..gpt.sampling import Sampling

# The poet style prior's weight (writing/style.py): 0 is the model alone.
DEFAULT_STRENGTH = 2.0
MAX_STRENGTH = 4.0
# Hemistichs written for each place, the one the model finds likeliest kept (constrained writing only).
DEFAULT_BEST_OF = 1
MAX_BEST_OF = 8


# Forms one can ask for, with their usual length in couplets.
FORM_COUPLETS: dict[str, int] = {"ghazal": 7, "rubai": 2, "dobeyti": 2, "masnavi": 10, "qasida": 15, "qete": 4}
MAX_COUPLETS = 40
MAX_HEMISTICH_CHARS = 80
MAX_RHYME_INPUT = 60  # characters of --rhyme or --radif
GAP = " " * 6  # between the two hemistichs of a couplet on one line


@dataclass
class PoemRequest:
    poet: str = "hafez"
    form: str = "ghazal"
    couplets: int | None = None  # None: the form's usual length
    metre: int | str | None = None  # Ganjoor id, name or feet; None: the model chooses
    rhyme: str | None = None  # qafiya letters, e.g. "ار"; None: chosen for you (by the model with free=True)
    radif: str | None = None  # refrain words after the qafiya, e.g. "ما"
    first: list[str] | None = None  # hemistichs to start the poem with (the model continues them)
    free: bool = False  # no metre or rhyme constraints while decoding: the model alone
    temperature: float = Sampling.temperature
    top_k: int = Sampling.top_k
    top_p: float = Sampling.top_p
    seed: int | None = None  # None: a random seed, reported in the result
    vowel_marks: bool = False  # allow short-vowel marks and tashdid (most verse is written without)
    style: float = DEFAULT_STRENGTH  # weight of the poet's token preferences (style.py); 0: the model alone
    best_of: int = DEFAULT_BEST_OF  # candidates for each hemistich; the model's likeliest per character is kept


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
    radif: str = ""
    constraints: dict = field(default_factory=dict)  # what constrained decoding did (tries, relaxed hemistichs)

    def text(self) -> str:
        """The poem laid out one couplet a line, first hemistichs padded to one width."""
        width = max((len(first) for first, _ in self.couplets), default=0)
        return "\n".join(f"{first.ljust(width)}{GAP}{second}" for first, second in self.couplets)

    def to_dict(self) -> dict:
        return asdict(self) | {"couplets": [list(c) for c in self.couplets]}
