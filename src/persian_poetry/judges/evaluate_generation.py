"""How well generated poems obey their requests, judged by our own prosody module.

`evaluate_generation` writes N poems with fixed seeds and scores them:

- Requests. Forms ghazal, rubai, masnavi and qasida in turn, metres spread over the ten most
  common metres of the model (a rubai always in the rubai metre), poets over the ten offered
  poets. Each request takes its rhyme (qafiya and radif) from a real train-split poem of that
  form and metre, as found by `rhyme.analyze_rhyme`, so that every request is one a poet made.
- Metre: the share of hemistichs the scanner reads in the requested metre at a reading cost (in
  guessed vowels and licences) of at most MAX_READING_COST, which 90% of Hafez's hemistichs meet
  (`MetreTracker.complete`); and, stricter, the share whose most likely metre (`scan_hemistich`)
  is the requested one. Both judges are also run on real test-split poems of the same forms and
  metres, as a reference for what they say of real verse.
- Rhyme: the share of the form's rhyming hemistichs that end on the requested qafiya and radif
  (`rhyme.rhymes_with`); in a masnavi, couplets after the first must rhyme within themselves
  (`analyze_rhyme(..., "masnavi")`).
- Form: the share of poems with exactly the requested couplets, each of two non-empty hemistichs.
- Novelty: the share of generated hemistichs found verbatim among the train split's hemistichs,
  and the longest run of characters shared with the train split's text.
- Diversity: distinct-2, distinct word pairs over all word pairs of all poems; and repetition,
  the share of hemistichs in which a word of three letters or more comes twice (also measured
  on the real test-split poems: real verse does it too, now and then).
- Poet: the share of poems the poet classifier attributes to the requested poet.
- Time per poem (mean, p95) and for the 7-couplet ghazals.

What novelty and the requests are measured against (`read_train_text`) takes minutes to derive
from the corpus, so it is cached under the project's cache folder, keyed by its inputs.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import random
import statistics
import sys
import time
import unicodedata
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .. import text as text_module
from ..data import corpus as corpus_module
from ..data.corpus import CLASSICAL_POETS, OFFERED_POETS, Poem, read_jsonl
from ..files import atomic_write, cache_root, sha256_of
from ..prosody import rhyme as rhyme_module
from ..prosody.lexicon import verse_words
from ..prosody.metres import load_catalogue
from ..prosody.rhyme import analyze_rhyme, rhyming_positions
from ..prosody.scan import default_classifier
from ..prosody.scansion import MetreTracker, scan_hemistich
from ..text import normalize
from ..writing.generate import write_poem
from ..writing.request import FORM_COUPLETS, PoemRequest
from ..writing.verse import MAX_READING_COST, RhymeSpec
from .poet import classify_poet, load_poet_classifier

FORMS = ("ghazal", "rubai", "masnavi", "qasida")
RUBAI_METRE = 24
REFERENCE_POEMS = 200  # real test-split poems the metre judges are also run on
WINDOW = 12  # characters per hashed window when looking for runs shared with the corpus


@dataclass
class TrainText:
    """What novelty is measured against: the train split's hemistichs and text, and real rhymes."""

    hemistichs: set[str]
    text: str
    hashes: np.ndarray  # sorted hashes of every WINDOW-character window of `text`
    rhymes: dict[tuple[str, int], list[tuple[str, tuple[str, ...]]]]  # (form, metre) -> (qafiya, radif)
    reference: list = field(default_factory=list)  # real test-split poems (corpus.Poem) with a metre label


def _window_hashes(text: str) -> np.ndarray:
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < WINDOW:
        return np.zeros(0, dtype=np.uint64)
    h = np.zeros(len(codes) - WINDOW + 1, dtype=np.uint64)
    for k in range(WINDOW):  # a polynomial hash, wrapping in uint64
        h = h * np.uint64(1_000_003) + codes[k:len(codes) - WINDOW + 1 + k]
    return h


def read_train_text(data: str | Path, poets=CLASSICAL_POETS, progress: bool = True,
                    cache_dir: str | Path | None = None, cache: bool = True) -> TrainText:
    """The train split's hemistichs, text, window hashes and rhymes, and the reference poems, of
    the poems of `poets` (None: all) in the Ganjoor-schema file `data`.

    Reading and normalizing the whole export takes minutes, so what is derived is cached, in one
    .npz per input under `cache_dir` (default `files.cache_root()`/train-text; see
    `train_cache_path` for the key); a second run loads it in seconds. A cache file that cannot
    be read back whole is rebuilt; one that cannot be written is only warned about."""
    poets = sorted(set(poets)) if poets is not None else None  # read_jsonl takes them as a set
    if not cache:
        return _build_train_text(data, poets, progress)
    if not Path(data).exists():
        raise FileNotFoundError(f"corpus file not found: {data}")
    path, material = _train_cache(data, poets, cache_dir)
    if path.exists():
        try:
            train = _load_train_text(path, material)
        except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
            _say(progress, f"the cached train split {path} is damaged ({type(err).__name__}: {err}); rebuilding it")
        else:
            _say(progress, f"train split read from the cache {path}")
            return train
    train = _build_train_text(data, poets, progress)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: _save_train_text(tmp, train, material))
    except OSError as err:
        warnings.warn(f"could not cache the train split in {path}: {err}", stacklevel=2)
    else:
        _say(progress, f"train split cached in {path}")
    return train


# What the cached train text depends on besides the data file and the poets: bump
# TRAIN_CACHE_VERSION when what `_build_train_text` keeps, or how, changes. The sources of the
# modules it reads through (normalization, the Ganjoor reader, the rhyme finder), of its own
# functions (building, storing, loading) and Unicode's version (NFKC) are part of the key too, so
# an edit there rebuilds the cache even if nobody bumps the number.
TRAIN_CACHE_VERSION = 1


def train_cache_path(data: str | Path, poets=CLASSICAL_POETS, cache_dir: str | Path | None = None) -> Path:
    """The cache file of `read_train_text(data, poets)`: <cache_dir>/<key>.npz, the key a hash of
    the data file's bytes (sha256, as the training cache has it), the poets (as a set), the
    derivation's version and code, WINDOW, REFERENCE_POEMS and FORMS."""
    return _train_cache(data, sorted(set(poets)) if poets is not None else None, cache_dir)[0]


def _train_cache(data, poets: list[str] | None, cache_dir) -> tuple[Path, str]:
    code = hashlib.sha256()
    for module in (text_module, corpus_module, rhyme_module):
        code.update(Path(module.__file__).read_bytes())
    for function in (_build_train_text, _sorted_unique, _window_hashes, _save_train_text, _load_train_text):
        try:
            code.update(inspect.getsource(function).encode())
        except (OSError, TypeError):  # no source shipped: the byte code stands in for it
            code.update(function.__code__.co_code)
    material = json.dumps({"version": TRAIN_CACHE_VERSION, "data": sha256_of(data), "poets": poets,
                           "window": WINDOW, "reference_poems": REFERENCE_POEMS, "forms": list(FORMS),
                           "code": code.hexdigest(), "unicode": unicodedata.unidata_version}, sort_keys=True)
    key = hashlib.sha256(material.encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "train-text"
    return folder / f"{key}.npz", material


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def _build_train_text(data: str | Path, poets: list[str] | None, progress: bool) -> TrainText:
    hemistichs: set[str] = set()
    parts: list[str] = []
    rhymes: dict[tuple[str, int], list[tuple[str, tuple[str, ...]]]] = {}
    reference = []
    for poem in tqdm(read_jsonl(data, poets), desc="reading the train split", unit=" poems",
                     disable=not progress, mininterval=2):
        if poem.split == "test" and poem.metre is not None and poem.form in FORMS and len(reference) < REFERENCE_POEMS:
            reference.append(poem)
        if poem.split != "train":
            continue
        hemistichs.update(poem.hemistichs)
        parts.append("\n".join(poem.hemistichs))
        if poem.metre is not None and poem.form in FORMS and len(poem.hemistichs) >= 4:
            found = analyze_rhyme(poem.hemistichs, poem.form)
            if found.found and not found.broken:
                rhymes.setdefault((poem.form, poem.metre), []).append((found.qafiya, found.radif))
    text = "\n".join(parts)
    return TrainText(hemistichs, text, _sorted_unique(_window_hashes(text)), rhymes, reference)


def _sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique(values), by a sort and a mask: numpy 2.4's np.unique took 210 s on the 52 M
    window hashes of the classical train split, where sorting takes seconds."""
    values = np.sort(values)
    keep = np.ones(len(values), dtype=bool)
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


# The cache file: an uncompressed .npz (a zip, whose CRC-32s catch a damaged member as it is read)
# of plain arrays, read back with allow_pickle=False: the text as UTF-8 bytes, the sorted window
# hashes, and the rhymes, the reference poems and the key's material as UTF-8 JSON. The
# hemistichs are not stored: they are the text's lines (a normalized hemistich holds no newline
# and is never empty).
def _utf8(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _json_bytes(value) -> np.ndarray:
    return _utf8(json.dumps(value, ensure_ascii=False))


def _save_train_text(tmp: str, train: TrainText, material: str) -> None:
    rhymes = [[form, metre, [[qafiya, list(radif)] for qafiya, radif in found]]
              for (form, metre), found in train.rhymes.items()]
    with open(tmp, "wb") as f:  # a file object: np.savez would add ".npz" to a name
        np.savez(f, key=_utf8(material), text=_utf8(train.text),
                 hashes=train.hashes, rhymes=_json_bytes(rhymes),
                 reference=_json_bytes([asdict(poem) for poem in train.reference]))


def _load_train_text(path: Path, material: str) -> TrainText:
    with np.load(path, allow_pickle=False) as stored:
        if bytes(stored["key"]).decode("utf-8") != material:
            raise ValueError("written for other inputs")
        hashes = stored["hashes"]
        if hashes.dtype != np.uint64 or hashes.ndim != 1:
            raise ValueError(f"hashes of dtype {hashes.dtype} and shape {hashes.shape}")
        text = bytes(stored["text"]).decode("utf-8")
        rhymes = {(form, int(metre)): [(qafiya, tuple(radif)) for qafiya, radif in found]
                  for form, metre, found in json.loads(bytes(stored["rhymes"]).decode("utf-8"))}
        reference = [Poem(**poem) for poem in json.loads(bytes(stored["reference"]).decode("utf-8"))]
    hemistichs = set(text.split("\n")) if text else set()
    return TrainText(hemistichs, text, hashes, rhymes, reference)


def longest_shared_run(hemistich: str, train: TrainText) -> int:
    """Length of the longest substring of `hemistich` found in the train text (0 when none of
    WINDOW characters or more is). Runs of consecutive shared windows bound the candidates; each
    is checked in the text itself and shrunk (binary search from either end) until it is there."""
    h = _window_hashes(hemistich)
    if len(h) == 0 or len(train.hashes) == 0:
        return 0
    idx = np.minimum(np.searchsorted(train.hashes, h), len(train.hashes) - 1)
    shared = train.hashes[idx] == h
    best, i = 0, 0
    while i < len(shared):
        if not shared[i]:
            i += 1
            continue
        j = i
        while j + 1 < len(shared) and shared[j + 1]:
            j += 1
        best = max(best, _longest_inside(hemistich[i:j + WINDOW], train.text))
        i = j + 1
    return best


def _longest_inside(span: str, text: str) -> int:
    if span in text:
        return len(span)
    out = 0
    for anchored in (span, span[::-1]):  # keep the start and cut the end; then the other way round
        lo, hi = 0, len(anchored)  # text holds anchored[:lo] (or its mirror), not anchored[:hi]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            piece = anchored[:mid] if anchored is span else anchored[:mid][::-1]
            lo, hi = (mid, hi) if piece in text else (lo, mid)
        out = max(out, lo)
    return out


def make_requests(n: int, metres: list[int], train: TrainText, seed: int = 0,
                  poets: tuple[str, ...] = OFFERED_POETS, first_seed: int = 1000) -> list[PoemRequest]:
    rng = random.Random(seed)
    others = [m for m in metres if m != RUBAI_METRE][:9]
    requests = []
    for i in range(n):
        form = FORMS[i % len(FORMS)]
        metre = RUBAI_METRE if form == "rubai" else others[(i // len(FORMS)) % len(others)]
        real = train.rhymes.get((form, metre)) or train.rhymes.get(("ghazal", metre)) or [("ار", ())]
        qafiya, radif = rng.choice(real)
        requests.append(PoemRequest(poet=poets[i % len(poets)], form=form, couplets=FORM_COUPLETS[form],
                                    metre=metre, rhyme=qafiya, radif=" ".join(radif) or None, seed=first_seed + i))
    return requests


@dataclass
class PoemScore:
    request: dict
    couplets: list[list[str]]
    seconds: float
    metre_ok: int = 0
    metre_top: int = 0
    metre_classifier: int = 0  # hemistichs whose metre the learned classifier alone names as requested
    hemistichs: int = 0
    rhyme_ok: int = 0
    rhyme_positions: int = 0
    form_ok: bool = False
    verbatim: int = 0
    repeats: int = 0  # hemistichs with a word of 3+ letters twice
    longest_run: int = 0
    poet_predicted: str | None = None
    constraints: dict = field(default_factory=dict)


def score_poem(request: PoemRequest, couplets: list[tuple[str, str]], seconds: float, train: TrainText | None,
               constraints: dict | None = None) -> PoemScore:
    hemistichs = [h for pair in couplets for h in pair]
    score = PoemScore(asdict(request), [list(c) for c in couplets], round(seconds, 3),
                      constraints=constraints or {})
    score.form_ok = len(couplets) == request.couplets and all(a and b for a, b in couplets)
    score.repeats = sum(map(repeats_a_word, hemistichs))
    tracker = MetreTracker(request.metre, max_cost=MAX_READING_COST)
    score.hemistichs = len(hemistichs)
    score.metre_ok = sum(tracker.complete(h) for h in hemistichs)
    score.metre_top = sum(scan_hemistich(h, align=False).metre_id == request.metre for h in hemistichs)
    score.metre_classifier = sum(m == request.metre for m in classifier_metres(hemistichs))
    spec = RhymeSpec(request.rhyme, tuple(verse_words(request.radif)) if request.radif else ())
    if request.form == "masnavi":
        positions = [0, 1] if len(hemistichs) >= 2 else []
        score.rhyme_ok = sum(spec.holds(hemistichs[i]) for i in positions)
        later = analyze_rhyme(hemistichs[2:], "masnavi") if len(hemistichs) > 2 else None
        score.rhyme_positions = len(positions) + (len(hemistichs) - 2 if later else 0)
        if later:
            score.rhyme_ok += len(hemistichs) - 2 - len(later.broken)
    else:
        positions = rhyming_positions(len(hemistichs), request.form)
        score.rhyme_positions = len(positions)
        score.rhyme_ok = sum(spec.holds(hemistichs[i]) for i in positions)
    if train is not None:
        score.verbatim = sum(normalize(h) in train.hemistichs for h in hemistichs)
        score.longest_run = max((longest_shared_run(h, train) for h in hemistichs), default=0)
    return score


def repeats_a_word(hemistich: str) -> bool:
    words = [w for w in verse_words(hemistich) if len(w) >= 3]
    return len(set(words)) < len(words)


def distinct_2(poems: list[list[list[str]]]) -> float:
    pairs = [(a, b) for poem in poems for couplet in poem for h in couplet
             for a, b in zip(verse_words(h), verse_words(h)[1:])]
    return len(set(pairs)) / len(pairs) if pairs else 0.0


def evaluate_generation(poetry, data: str | Path, n: int = 100, free: bool = False, seed: int = 0,
                        train: TrainText | None = None, progress: bool = True, poet_classifier=None,
                        judge_poets: bool = True, style: float | None = None, first_seed: int = 1000,
                        best_of: int | None = None) -> dict:
    """Write `n` poems and score them (see the module docstring); returns the report as a dict.
    `style` overrides the requests' poet-style strength (default: `style.DEFAULT_STRENGTH`);
    `best_of` their candidates a hemistich (constrained poems only; default: `DEFAULT_BEST_OF`);
    `first_seed` is the first poem's seed (tuning uses other seeds than the reported run)."""

    train = train or read_train_text(data, progress=progress)
    catalogue = {m.id: m for m in load_catalogue()}
    metres = sorted((m for m in poetry.controls.metres if m in catalogue), key=lambda m: -catalogue[m].poems)[:10]
    requests = make_requests(n, metres, train, seed, first_seed=first_seed)
    for request in requests:
        if style is not None:
            request.style = style
        if best_of is not None and not free:
            request.best_of = best_of
    classifier = (poet_classifier or load_poet_classifier()) if judge_poets else None
    scores = []
    for request in tqdm(requests, desc="writing poems", unit=" poems", disable=not progress):
        if free:
            request.free = True
        started = time.perf_counter()
        poem = write_poem(poetry, request)
        seconds = time.perf_counter() - started
        score = score_poem(request, poem.couplets, seconds, train, poem.constraints)
        if classifier is not None and request.poet in OFFERED_POETS:
            score.poet_predicted = classify_poet([h for c in poem.couplets for h in c], classifier)[0]
        scores.append(score)
    report = summarize(scores, free, metres)
    report["style"] = requests[0].style if requests else style
    report["best_of"] = requests[0].best_of if requests else best_of
    report["style_prior"] = poetry.style is not None
    report["real_poems_reference"] = judge_real_poems(train.reference)
    return report


def classifier_metres(hemistichs: list[str]) -> list[int | None]:
    """The learned metre classifier's top metre for each hemistich, alone: a judge the decoding never
    consults (it steers by the rule-based scanner), so salad that the scanner lets through is not
    praised by it for that reason. None for each where the package ships no classifier."""
    classifier = default_classifier()
    if classifier is None or not hemistichs:
        return [None] * len(hemistichs)
    labels = list(classifier.config.labels)
    return [labels[i] for i in np.asarray(classifier.probabilities(hemistichs)).argmax(axis=1)]


def judge_real_poems(poems: list) -> dict:
    """What the metre judges say of real test-split poems, under their Ganjoor metre label."""
    hemistichs = ok = top = learned = repeats = 0
    for poem in poems:
        tracker = MetreTracker(poem.metre, max_cost=MAX_READING_COST)
        hemistichs += len(poem.hemistichs)
        repeats += sum(map(repeats_a_word, poem.hemistichs))
        ok += sum(tracker.complete(h) for h in poem.hemistichs)
        top += sum(scan_hemistich(h, align=False).metre_id == poem.metre for h in poem.hemistichs)
        learned += sum(m == poem.metre for m in classifier_metres(poem.hemistichs))
    return {"poems": len(poems), "hemistichs": hemistichs,
            "metre_share": round(ok / max(1, hemistichs), 4), "metre_top_share": round(top / max(1, hemistichs), 4),
            "metre_classifier_share": round(learned / max(1, hemistichs), 4),
            "repeat_share": round(repeats / max(1, hemistichs), 4)}


def summarize(scores: list[PoemScore], free: bool, metres: list[int]) -> dict:
    hemistichs = sum(s.hemistichs for s in scores)
    times = [s.seconds for s in scores]
    ghazals = [s.seconds for s in scores if s.request["form"] == "ghazal" and s.request["couplets"] == 7]
    judged = [s for s in scores if s.poet_predicted is not None]
    return {
        "constraints": not free,
        "poems": len(scores),
        "metres": metres,
        "hemistichs": hemistichs,
        "metre_share": round(sum(s.metre_ok for s in scores) / hemistichs, 4),
        "metre_top_share": round(sum(s.metre_top for s in scores) / hemistichs, 4),
        "metre_classifier_share": round(sum(s.metre_classifier for s in scores) / hemistichs, 4),
        "rhyme_share": round(sum(s.rhyme_ok for s in scores) / max(1, sum(s.rhyme_positions for s in scores)), 4),
        "form_share": round(sum(s.form_ok for s in scores) / len(scores), 4),
        "verbatim_share": round(sum(s.verbatim for s in scores) / hemistichs, 4),
        "longest_shared_run": max(s.longest_run for s in scores),
        "distinct_2": round(distinct_2([s.couplets for s in scores]), 4),
        "repeat_share": round(sum(s.repeats for s in scores) / hemistichs, 4),
        "poet_share": round(sum(s.poet_predicted == s.request["poet"] for s in judged) / max(1, len(judged)), 4),
        "poet_share_by_poet": {poet: round(sum(s.poet_predicted == poet for s in ss) / len(ss), 4)
                               for poet in OFFERED_POETS
                               if (ss := [s for s in judged if s.request["poet"] == poet])},
        "seconds_mean": round(statistics.mean(times), 3),
        "seconds_p95": round(float(np.percentile(times, 95)), 3),
        "ghazal7_seconds_mean": round(statistics.mean(ghazals), 3) if ghazals else None,
        "relaxed_hemistichs": sum(len(s.constraints.get("relaxed", [])) for s in scores),
        "by_form": {form: {"poems": len(ss),
                           "metre_share": round(sum(s.metre_ok for s in ss) / max(1, sum(s.hemistichs for s in ss)), 4),
                           "rhyme_share": round(sum(s.rhyme_ok for s in ss) / max(1, sum(s.rhyme_positions for s in ss)), 4),
                           "seconds_mean": round(statistics.mean(s.seconds for s in ss), 3)}
                    for form in FORMS if (ss := [s for s in scores if s.request["form"] == form])},
        "poems_detail": [asdict(s) for s in scores],
    }
