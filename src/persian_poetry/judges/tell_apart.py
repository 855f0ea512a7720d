"""The tell-apart judge: can a classifier tell real couplets from generated ones?

Every other judge (metre, rhyme, poet, novelty) is fooled by word salad made of the canon's words.
This one is trained afresh each time, with a fixed recipe, to tell real couplets from the couplets
the current generator writes; its accuracy on held-out couplets, equal numbers of each, is the
figure: 50% means the generated couplets cannot be told from real ones, 100% that every one can.

- The unit is a couplet, its two hemistichs joined with " / " (`couplet_text`). The network
  (`reader_network.ReaderNetwork`) is the metre classifier's (characters, a BiGRU, mean+max pooling)
  beside a BiGRU over the words, each hashed into a bucket, in their order; one linear layer reads
  both, with labels "real" and "generated"; the judge (not the reader below) also hears the metre: how
  clearly the shipped metre classifier hears one metre in the couplet (`reader_network.metre_evidence`;
  a judge the decoding never consults). It has no bag of words: it reads the text in order, so a
  bag of the canon's words in the wrong order does not pass. It ignores short-vowel
  marks and punctuation, as the poet classifier does (`poet.IGNORED`): in Ganjoor both are mostly the
  editors' choice, and generation writes no vowel marks by default, so the judge would otherwise
  only learn who added the vowels. The " / " is "/" outside `text.ALPHABET` (normalization drops
  it), so the network sees the two hemistichs joined by " - " (any "-" of the text is a space).
- The recipe is fixed (the constants below): the same network size, batch, learning rate and number
  of steps (steps, not seconds, so that the figure does not depend on the machine's speed), seed and
  one torch thread; the classes drawn equally often (`fit_classifier(balanced=True)`), VAL_SHARE of
  each class's training couplets held out to choose the checkpoint.
- Every judge starts from a reader (`pretrained_reader`): the same network trained once, on real
  verse only, to tell the train-split couplets of READER_POETS (at most PRETRAIN_COUPLETS) from the
  same couplets with their words shuffled (it hears no metre: the judge starts with the metre's weights
  at zero, `reader_network.with_metre_head`). A judge trained from scratch on a few thousand couplets a class learns little of
  word order (the character network alone told real verse from its shuffle in 76% of couplets at
  2,000 a class, 84% at 5,000); the reader has seen some 900,000, every classical poet's, and knows it before it meets a
  generator's verse. It owes nothing to any generator, so it is cached per corpus
  (tell-apart/reader-*.safetensors) and each judge is still trained afresh from it on the
  generator's own couplets.
- Real couplets: consecutive hemistich pairs of the offered poets' poems of the four generated forms,
  train split for training, test split for the score, sampled with a seed so that each form weighs
  what it weighs among the generated couplets (FORM_WEIGHTS) and a form's poets equally: a uniform
  draw would be two thirds masnavi (Ferdowsi, Rumi, Attar, Nezami), and the judge would learn the mix
  of forms (a masnavi couplet rhymes within itself) instead of what the generator gets wrong.
- Generated couplets: `write_poem` at its defaults over a fixed spread of requests (`spread_request`:
  the offered poets x the forms x the model's most common metres, the rhyme left to the writer), in
  a mode: "constrained" (default), "free" (`free=True`), "hot" (free at temperature 1.2) or
  "best-of-N" (constrained, each hemistich the likeliest of N). Poem k has seed first_seed + k:
  training poems from TRAIN_FIRST_SEED, held-out ones from TEST_FIRST_SEED (the reported figure,
  against the test split's real couplets) or, for tuning the decoding, from VAL_FIRST_SEED (against
  the val split's).
  They are cached in a JSONL file per (model, mode, first seed, spread, code), a poem a line,
  appended as each is written: an interrupted run resumes, a rerun with the same model writes nothing.
- Held-out couplets found among the training couplets (of either class) are dropped before the two
  classes are cut to equal numbers.

Two controls show what the figure measures: real couplets against the same couplets with their
words shuffled within each hemistich (`control_shuffled`: a judge of the text, not of its words,
should tell them apart, >= 95%), and real against real, two disjoint samples
(`control_real_vs_real`: about 50%). Both judges start from the reader, as every judge does.
Figures, and how far they are from those targets: BENCHMARKS.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import warnings
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.corpus import CLASSICAL_POETS, OFFERED_POETS, read_jsonl
from ..errors import PoetryError
from ..files import cache_root
from ..text import normalize
from .poet import IGNORED

# ---- the fixed recipe -------------------------------------------------------------------------
LABELS = ["real", "generated"]
EMBEDDING = 48  # the metre classifier's character embedding
HIDDEN = 64  # the poet classifier's GRU width: half the metre classifier's, twice the steps in the time
MAX_CHARS = 150  # a couplet: 99.9% of the offered poets' couplets are under 86 characters with " - "
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
# Steps, not seconds. 2,000 took 578 s on one thread of our busy 2-core machine at 5,000+5,000
# couplets (the shuffled control's val accuracy 0.754, 0.795, 0.802, 0.802 at steps 500-2,000:
# flat by then); at 2,000+2,000 the best val came at step 500 and more steps only memorize.
MAX_STEPS = 2000
SEED = 1337
THREADS = 1
# The reader the judge starts from: the same network trained once, on real verse only, to tell
# PRETRAIN_COUPLETS real train-split couplets from the same couplets with their words shuffled, for
# PRETRAIN_STEPS steps; cached per corpus (`pretrained_reader`). Every judge is then trained from it
# at FINE_TUNE_LEARNING_RATE, so it knows word order before it sees a generator's verse.
# Beside the characters, the network reads the words in order (`reader_network.ReaderNetwork`):
# each word hashed into one of WORD_BUCKETS, embedded, and read by its own BiGRU.
WORD_BUCKETS = 32768
WORD_EMBEDDING = 64
WORD_HIDDEN = 128
PRETRAIN_COUPLETS = 1_000_000  # more than the train split holds (about 920,000): all of them
READER_POETS = CLASSICAL_POETS  # whose verse the reader reads: every classical poet's, not only the offered ones
PRETRAIN_STEPS = 24_000
PRETRAIN_SEED = 7
PRETRAIN_VAL = 2500  # couplets of each class held out to choose the reader's checkpoint (VAL_SHARE would be 30,000)
FINE_TUNE_LEARNING_RATE = 1e-3
VAL_SHARE = 0.1  # of each class's training couplets, held out to choose the checkpoint
DROP = IGNORED.replace("-", "")  # vowel marks and punctuation, but the separator's "-" stays
COUPLET_SEPARATOR = " / "
MODEL_SEPARATOR = " - "

# ---- what is judged ---------------------------------------------------------------------------
FORMS = ("ghazal", "rubai", "masnavi", "qasida")
FORM_COUPLETS = {"ghazal": 7, "rubai": 2, "masnavi": 10, "qasida": 15}  # writing.request.FORM_COUPLETS
# Each form's share of the generated couplets (spread_request cycles the forms evenly by poem).
FORM_WEIGHTS = {form: n / sum(FORM_COUPLETS.values()) for form, n in FORM_COUPLETS.items()}
RUBAI_METRE = 24
SPREAD_METRES = 9  # the model's most common metres other than the rubai's, cycled over
MODES: dict[str, dict] = {"constrained": {}, "free": {"free": True}, "hot": {"free": True, "temperature": 1.2},
                          "best-of-2": {"best_of": 2}, "best-of-4": {"best_of": 4}}
TRAIN_FIRST_SEED = 1
TEST_FIRST_SEED = 1_000_000
VAL_FIRST_SEED = 2_000_000  # held-out poems for tuning the decoding, never the reported ones
HELD_OUT = {"test": TEST_FIRST_SEED, "val": VAL_FIRST_SEED}  # real couplets' split -> generated poems' first seed
DEFAULT_DATA = Path("../shared/data/ganjoor/poems.jsonl.gz")
# Bump when what a cached poem line holds, or how requests are made, changes. A change of the
# writing code is caught by rewriting the first cached poem of each form (`_still_written`).
CACHE_VERSION = 1
READER_VERSION = 3  # bump when what the reader learns from changes (2: the reader of words; 3: every classical poet)


def couplet_text(first: str, second: str) -> str:
    """A couplet as the judge takes it: both hemistichs normalized, joined with " / "."""
    return f"{normalize(first)}{COUPLET_SEPARATOR}{normalize(second)}"


def model_text(couplet: str) -> str:
    """What the network reads of a couplet: its hemistichs (any "-" in them a space) joined by " - "."""
    return MODEL_SEPARATOR.join(normalize(h).replace("-", " ") for h in couplet.split(COUPLET_SEPARATOR.strip()))


def recipe(pretrain_steps: int = PRETRAIN_STEPS, pretrain_couplets: int = PRETRAIN_COUPLETS) -> dict:
    """The fixed recipe, as reported with every result (pretrain_steps 0: no reader, a judge from scratch)."""
    return {"embedding": EMBEDDING, "hidden": HIDDEN, "max_chars": MAX_CHARS, "batch_size": BATCH_SIZE,
            "word_buckets": WORD_BUCKETS, "word_embedding": WORD_EMBEDDING, "word_hidden": WORD_HIDDEN,
            "learning_rate": FINE_TUNE_LEARNING_RATE if pretrain_steps else LEARNING_RATE, "max_steps": MAX_STEPS,
            "seed": SEED, "threads": THREADS, "val_share": VAL_SHARE, "words": 0, "balanced": True, "drop": DROP,
            "pretrain": {"couplets": pretrain_couplets, "steps": pretrain_steps, "seed": PRETRAIN_SEED,
                         "learning_rate": LEARNING_RATE} if pretrain_steps else None}


@dataclass
class TellApartResult:
    accuracy: float  # on the held-out couplets, equal numbers of each class
    real_accuracy: float  # the share of held-out real couplets called real
    generated_accuracy: float  # the share of held-out generated couplets called generated
    accuracy_ci95: tuple[float, float]  # Wilson interval of `accuracy`
    real_train: int
    generated_train: int
    val: int  # training couplets held out for the checkpoint choice (both classes)
    real_test: int
    generated_test: int
    dropped_as_seen: int  # held-out couplets dropped because they were among the training couplets
    steps: int
    seconds: float
    best_val_accuracy: float
    recipe: dict = field(default_factory=recipe)
    labels: dict = field(default_factory=lambda: dict(zip(LABELS, LABELS, strict=True)))  # what each class was

    def to_dict(self) -> dict:
        out = asdict(self)
        out["accuracy_ci95"] = list(self.accuracy_ci95)
        return out


def _wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (round(max(0.0, centre - half), 4), round(min(1.0, centre + half), 4))


@contextmanager
def _torch_threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _judge_config():
    from ..prosody.classifier_inference import ClassifierConfig

    return ClassifierConfig(labels=list(LABELS), embedding=EMBEDDING, hidden=HIDDEN, max_chars=MAX_CHARS,
                            task="tell-apart", drop=DROP, words=0)


def judge_network(config=None):
    """A fresh judge of the recipe (`reader_network.ReaderNetwork`, hearing metre); `fit_classifier`
    calls it with the config."""
    from .reader_network import ReaderNetwork

    return ReaderNetwork(config or _judge_config(), WORD_BUCKETS, WORD_EMBEDDING, WORD_HIDDEN,
                         metre_separator=MODEL_SEPARATOR)


def reader_network(config=None):
    """A fresh reader: the judge's network without the metre evidence (`pretrained_reader` trains it)."""
    from .reader_network import ReaderNetwork

    return ReaderNetwork(config or _judge_config(), WORD_BUCKETS, WORD_EMBEDDING, WORD_HIDDEN)


def metre_recipe() -> dict:
    """What the judge hears of metre, as reported with every result: the evidence's columns and the
    sha256 of the metre classifier's weights it comes from."""
    from ..assets import METRE_CLASSIFIER_DIR
    from .reader_network import METRE_EVIDENCE

    config = json.loads((METRE_CLASSIFIER_DIR / "config.json").read_text(encoding="utf-8"))
    return {"columns": METRE_EVIDENCE, "classifier_weights_sha256": config.get("weights_sha256")}


def _training_sets(real_train: list[str], fake_train: list[str], seed: int, max_val: int | None = None):
    """(texts, labels, val texts, val labels): VAL_SHARE of each class (at most `max_val`) held out for
    the checkpoint choice."""
    if min(len(real_train), len(fake_train)) < 2:
        raise PoetryError("tell-apart needs at least two training couplets of each class")
    rng = random.Random(seed)
    texts, ys, val_texts, val_ys = [], [], [], []
    for label, couplets in (("real", real_train), ("generated", fake_train)):
        order = list(couplets)
        rng.shuffle(order)
        n_val = min(max(1, round(VAL_SHARE * len(order))), max_val or len(order))
        val_texts += [model_text(c) for c in order[:n_val]]
        val_ys += [label] * n_val
        texts += [model_text(c) for c in order[n_val:]]
        ys += [label] * (len(order) - n_val)
    return texts, ys, val_texts, val_ys


def _fit(sets, seed: int, progress: bool, max_steps: int, batch_size: int, learning_rate: float,
         initial: dict | None = None, network=judge_network):
    from ..prosody.classifier import fit_classifier

    with _torch_threads(THREADS):
        return fit_classifier(_judge_config(), *sets, time_budget=math.inf, batch_size=batch_size,
                              learning_rate=learning_rate, seed=seed, progress=progress, balanced=True,
                              max_steps=max_steps, initial=initial, network=network)


def tell_apart(real_train: list[str], fake_train: list[str], real_test: list[str], fake_test: list[str],
               seed: int = SEED, progress: bool = True, max_steps: int = MAX_STEPS, batch_size: int = BATCH_SIZE,
               labels: tuple[str, str] = ("real", "generated"), reader: Reader | None = None) -> TellApartResult:
    """Train the judge on real_train (class "real") against fake_train (class "generated"), couplets
    as `couplet_text` gives them, and score it on real_test and fake_test, equal numbers of each
    (the longer cut to the shorter's length, after dropping held-out couplets that are among the
    training ones). It starts from `reader` (`pretrained_reader`'s weights) at
    FINE_TUNE_LEARNING_RATE, or without one from scratch at LEARNING_RATE. `max_steps` and
    `batch_size` are the recipe's; tests lower them. `labels` only names the classes in the result
    (the controls' second class is no generator)."""
    from .reader_network import with_metre_head

    sets = _training_sets(real_train, fake_train, seed)
    seen = set(sets[0]) | set(sets[2])
    real_held = [t for t in map(model_text, real_test) if t not in seen]
    fake_held = [t for t in map(model_text, fake_test) if t not in seen]
    dropped = len(real_test) + len(fake_test) - len(real_held) - len(fake_held)
    n = min(len(real_held), len(fake_held))
    if n == 0:
        raise PoetryError("tell-apart: no held-out couplets of one class (or all of them were seen in training)")
    real_held, fake_held = real_held[:n], fake_held[:n]

    learning_rate = FINE_TUNE_LEARNING_RATE if reader is not None else LEARNING_RATE
    model, report = _fit(sets, seed, progress, max_steps, batch_size, learning_rate,
                         with_metre_head(reader.weights) if reader is not None else None)
    with _torch_threads(THREADS):
        predicted = model.probabilities(real_held + fake_held).argmax(-1).numpy()
    real_hits = int((predicted[:n] == 0).sum())
    fake_hits = int((predicted[n:] == 1).sum())
    return TellApartResult(
        accuracy=round((real_hits + fake_hits) / (2 * n), 4), real_accuracy=round(real_hits / n, 4),
        generated_accuracy=round(fake_hits / n, 4), accuracy_ci95=_wilson(real_hits + fake_hits, 2 * n),
        real_train=len(real_train), generated_train=len(fake_train), val=len(sets[2]), real_test=n,
        generated_test=n, dropped_as_seen=dropped, steps=report["steps"], seconds=report["seconds"],
        best_val_accuracy=round(report["best_val_hemistich_accuracy"], 4),
        recipe=(recipe(reader.steps, reader.couplets) if reader is not None else recipe(0))
        | {"max_steps": max_steps, "batch_size": batch_size, "seed": seed, "metre": metre_recipe()},
        labels=dict(zip(LABELS, labels, strict=True)))


# ---- the reader -------------------------------------------------------------------------------
@dataclass
class Reader:
    weights: dict  # the judge network's state dict
    steps: int  # the pretraining steps it took
    couplets: int  # the real couplets it read (and as many shuffled), as asked: the pool may have held fewer
    val_accuracy: float  # real against shuffled, on its own held-out train-split couplets
    path: Path


def reader_cache_path(data: str | Path, steps: int = PRETRAIN_STEPS, couplets: int = PRETRAIN_COUPLETS,
                      cache_dir: str | Path | None = None) -> Path:
    """Where `pretrained_reader` keeps its weights: keyed by the corpus's bytes, the recipe and READER_VERSION."""
    from ..files import sha256_of

    material = {"version": READER_VERSION, "data": sha256_of(data), "recipe": recipe(steps, couplets), "couplets": couplets}
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "tell-apart"
    return folder / f"reader-{key}.safetensors"


def pretrained_reader(data: str | Path = DEFAULT_DATA, cache_dir: str | Path | None = None, progress: bool = True,
                      steps: int = PRETRAIN_STEPS, couplets: int = PRETRAIN_COUPLETS) -> Reader:
    """The reader every judge starts from: the judge's network trained on real train-split couplets
    of READER_POETS in `data` against the same couplets with their words shuffled, read from the
    cache when it was trained before. Real verse only: it owes nothing to any generator. `couplets`
    is cut to what the corpus holds (tests use tiny corpora)."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from ..files import atomic_write

    path = reader_cache_path(data, steps, couplets, cache_dir)
    if path.exists():
        weights = load_file(path)
        with safe_open(path, "pt") as f:
            accuracy = json.loads(f.metadata()["report"])["best_val_hemistich_accuracy"]
    else:
        pool = real_couplet_pools(data, ("train",), READER_POETS)["train"]
        n = min(couplets, sum(len(c) for c in pool.values()))
        real = sample_couplets(pool, n, PRETRAIN_SEED)
        sets = _training_sets(real, shuffle_words(real, PRETRAIN_SEED), PRETRAIN_SEED, PRETRAIN_VAL)
        model, report = _fit(sets, PRETRAIN_SEED, progress, steps, BATCH_SIZE, LEARNING_RATE, network=reader_network)
        weights = {k: v.contiguous() for k, v in model.state_dict().items()}
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: save_file(weights, tmp, metadata={
            "report": json.dumps({k: v for k, v in report.items() if k != "history"} | {"couplets": n})}))
        accuracy = report["best_val_hemistich_accuracy"]
    return Reader(weights, steps, couplets, round(accuracy, 4), path)


# ---- real couplets ----------------------------------------------------------------------------
Pool = dict[tuple[str, str], list[str]]  # (form, poet) -> distinct couplets, in corpus order


def real_couplet_pools(data: str | Path = DEFAULT_DATA, splits: tuple[str, ...] = ("train", "test"),
                       poets: tuple[str, ...] = OFFERED_POETS, forms: tuple[str, ...] = FORMS) -> dict[str, Pool]:
    """{split: {(form, poet): couplets}}: every couplet of two non-empty hemistichs of the poems of
    `poets` in `forms`, one pass over the corpus, each couplet once per split."""
    out: dict[str, Pool] = {s: {} for s in splits}
    seen: dict[str, set[str]] = {s: set() for s in splits}
    for poem in read_jsonl(data, set(poets)):
        if poem.split not in out or poem.form not in forms:
            continue
        cell = out[poem.split].setdefault((poem.form, poem.poet), [])
        for couplet in poem.couplets:
            if len(couplet) == 2 and all(couplet):
                text = couplet_text(*couplet)
                if text not in seen[poem.split]:
                    seen[poem.split].add(text)
                    cell.append(text)
    return out


def sample_couplets(pool: Pool, n: int, seed: int, weights: dict[str, float] = FORM_WEIGHTS) -> list[str]:
    """n couplets of a pool drawn without replacement, with a seed, so that each form takes its weight
    and a form's poets share it equally (a poet whose couplets run out leaves his share to the rest):
    weighted sampling by exponential keys (Efraimidis-Spirakis), in a random order."""
    cells = [(key, couplets) for key, couplets in sorted(pool.items()) if couplets and weights.get(key[0], 0) > 0]
    poets_of = {form: sum(1 for (f, _), _c in cells if f == form) for form in weights}
    texts, w = [], []
    for (form, _poet), couplets in cells:
        texts += couplets
        w += [weights[form] / poets_of[form] / len(couplets)] * len(couplets)
    if n > len(texts):
        raise PoetryError(f"asked for {n} real couplets, the pool holds {len(texts)}")
    rng = np.random.default_rng(seed)
    keys = np.log(rng.random(len(texts))) / np.asarray(w)  # the n largest keys are the sample
    chosen = np.argsort(-keys, kind="stable")[:n]
    return [texts[i] for i in rng.permutation(chosen)]


def real_couplets(data: str | Path = DEFAULT_DATA, split: str = "train", n: int = 1000, seed: int = SEED,
                  poets: tuple[str, ...] = OFFERED_POETS) -> list[str]:
    """n real couplets of `split` (see `sample_couplets`), as `couplet_text` gives them."""
    return sample_couplets(real_couplet_pools(data, (split,), poets)[split], n, seed)


def shuffle_words(couplets: list[str], seed: int = SEED) -> list[str]:
    """The couplets with the words of each hemistich in a new random order (the same words: a bag
    of words cannot tell them apart; a hemistich of two words or more always changes order, unless
    all its words are one word)."""
    rng = random.Random(seed)
    out = []
    for couplet in couplets:
        halves = []
        for hemistich in couplet.split(COUPLET_SEPARATOR):
            words = hemistich.split()
            shuffled = list(words)
            if len(set(words)) > 1:
                while shuffled == words:
                    rng.shuffle(shuffled)
            halves.append(" ".join(shuffled))
        out.append(COUPLET_SEPARATOR.join(halves))
    return out


def control_shuffled(real_train: list[str], real_test: list[str], seed: int = SEED, progress: bool = True,
                     max_steps: int = MAX_STEPS, batch_size: int = BATCH_SIZE,
                     reader: Reader | None = None) -> TellApartResult:
    """Control (a): real couplets against the same couplets with their words shuffled within each
    hemistich. A judge of the text, not of its words, tells them apart (>= 95%)."""
    return tell_apart(real_train, shuffle_words(real_train, seed), real_test, shuffle_words(real_test, seed + 1),
                      seed=seed, progress=progress, max_steps=max_steps, batch_size=batch_size,
                      labels=("real", "shuffled"), reader=reader)


def control_real_vs_real(real_a_train: list[str], real_b_train: list[str], real_a_test: list[str],
                         real_b_test: list[str], seed: int = SEED, progress: bool = True,
                         max_steps: int = MAX_STEPS, batch_size: int = BATCH_SIZE,
                         reader: Reader | None = None) -> TellApartResult:
    """Control (b): two disjoint samples of real couplets as two classes: nothing to learn but the
    samples themselves, so the held-out accuracy stays about 50%."""
    return tell_apart(real_a_train, real_b_train, real_a_test, real_b_test, seed=seed, progress=progress,
                      max_steps=max_steps, batch_size=batch_size, labels=("real", "real, second sample"),
                      reader=reader)


# ---- generated couplets -----------------------------------------------------------------------
def spread_metres(poetry) -> list[int]:
    """The model's SPREAD_METRES most common metres (by poems in the catalogue) other than the rubai's."""
    from ..prosody.metres import load_catalogue

    catalogue = {m.id: m for m in load_catalogue()}
    known = [m for m in poetry.controls.metres if m in catalogue and m != RUBAI_METRE]
    return sorted(known, key=lambda m: (-catalogue[m].poems, m))[:SPREAD_METRES]


def spread_poets(poetry) -> list[str]:
    return [p for p in OFFERED_POETS if p in set(poetry.controls.poets)]


def spread_request(k: int, poets: list[str], metres: list[int], mode: str, first_seed: int):
    """The k-th request of the spread: poet k mod P, form (k div P) mod 4 (ten poems of a form in
    turn), metre k mod M (a rubai in the rubai metre), the rhyme left to the writer, seed first_seed + k,
    and the mode's settings; all else at `PoemRequest`'s defaults."""
    from ..writing.request import PoemRequest

    form = FORMS[(k // len(poets)) % len(FORMS)]
    metre = RUBAI_METRE if form == "rubai" else metres[k % len(metres)]
    return PoemRequest(poet=poets[k % len(poets)], form=form, couplets=FORM_COUPLETS[form], metre=metre,
                       seed=first_seed + k, **MODES[mode])


def model_fingerprint(poetry) -> str:
    """sha256 of what the poems depend on in the model: its directory's config.json (which records
    the sha256 of the weights and the tokenizer) and style prior; for a model loaded without a
    directory, its weights and controls."""
    digest = hashlib.sha256()
    directory = getattr(poetry, "directory", None)
    if directory is not None:
        for name in ("config.json", "style.safetensors"):
            path = Path(directory) / name
            digest.update(name.encode() + (path.read_bytes() if path.exists() else b"-"))
        return digest.hexdigest()
    weights = getattr(poetry.model, "weights", None)
    if not weights:
        raise PoetryError("cannot key the generated couplets' cache: the model has no directory and no weights")
    for name in sorted(weights):
        digest.update(name.encode() + np.ascontiguousarray(weights[name]).tobytes())
    digest.update(json.dumps([list(poetry.controls.poets), list(poetry.controls.forms),
                              list(poetry.controls.metres), poetry.style is not None]).encode())
    return digest.hexdigest()


def generated_cache_path(poetry, mode: str, first_seed: int, cache_dir: str | Path | None = None) -> Path:
    """The JSONL file of generated poems for this model, mode, first seed, spread and CACHE_VERSION.
    The writing code is not part of the key (the team edits it daily, mostly without changing a
    poem); `generated_couplets` checks instead that the code still writes the cached poems."""
    material = {"version": CACHE_VERSION, "model": model_fingerprint(poetry), "mode": mode,
                "settings": MODES[mode], "first_seed": first_seed, "poets": spread_poets(poetry),
                "forms": list(FORMS), "couplets": FORM_COUPLETS, "metres": spread_metres(poetry)}
    key = hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "tell-apart"
    return folder / f"{mode}-{first_seed}-{key}.jsonl"


def _read_cached_poems(path: Path, first_seed: int) -> list[list[str]]:
    """The couplets of the poems cached in `path`, in seed order; a line that cannot be read (an
    interrupted write) and all after it are cut off the file."""
    poems: list[list[str]] = []
    if not path.exists():
        return poems
    good = 0
    with open(path, "rb") as f:
        for line in f:
            try:
                record = json.loads(line.decode("utf-8"))
                if not line.endswith(b"\n") or record["seed"] != first_seed + len(poems):
                    raise ValueError("incomplete or out of order")
                couplets = [COUPLET_SEPARATOR.join(c) for c in record["couplets"]]
            except (ValueError, KeyError, TypeError, UnicodeDecodeError):
                break
            poems.append(couplets)
            good += len(line)
    if good < path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good)
    return poems


def generated_couplets(poetry, mode: str = "constrained", n: int = 1000, first_seed: int = TRAIN_FIRST_SEED,
                       cache_dir: str | Path | None = None, progress: bool = True, check: bool = True) -> list[str]:
    """The first n couplets of the poems `write_poem` writes for the spread's requests from seed
    `first_seed` on (`spread_request`), as `couplet_text` gives them, in order. Poems come from the
    cache where they were written before; new ones are appended to it as they are written.

    With `check`, the first cached poem of each form is written again first: if one comes out
    otherwise, the writing code has changed since the cache was written, and it is set aside
    (renamed *.stale) and every poem written afresh."""
    return _generated(poetry, mode, n, first_seed, cache_dir, progress, check)[0]


def _generated(poetry, mode: str, n: int, first_seed: int, cache_dir, progress: bool,
               check: bool = True) -> tuple[list[str], int]:
    """`generated_couplets`, and how many poems its couplets come from."""
    from ..gpt.inference import one_blas_thread

    if mode not in MODES:
        raise PoetryError(f"unknown mode {mode!r}; choose from: {', '.join(MODES)}")
    poets, metres = spread_poets(poetry), spread_metres(poetry)
    if not poets or not metres:
        raise PoetryError("the model knows none of the offered poets, or no metre besides the rubai's")
    path = generated_cache_path(poetry, mode, first_seed, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    poems = _read_cached_poems(path, first_seed)
    if check and poems and not _still_written(poetry, poems, poets, metres, mode, first_seed):
        warnings.warn(f"the writing code no longer writes the poems cached in {path}: writing them afresh",
                      stacklevel=2)
        path.replace(path.with_suffix(".stale"))
        poems = []
    couplets = [c for poem in poems for c in poem]
    bar = tqdm(total=n, initial=min(n, len(couplets)), desc=f"writing {mode} couplets", unit=" couplets",
               disable=not progress, mininterval=2)
    with open(path, "a", encoding="utf-8") as out, one_blas_thread():
        while len(couplets) < n:
            k = len(poems)
            request = spread_request(k, poets, metres, mode, first_seed)
            written = _write(poetry, request)
            out.write(json.dumps({"seed": request.seed, "request": asdict(request),
                                  "couplets": [c.split(COUPLET_SEPARATOR) for c in written]},
                                 ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
            poems.append(written)
            couplets += written
            bar.update(min(n, len(couplets)) - bar.n)
    bar.close()
    used, total = 0, 0
    while total < n:
        total += len(poems[used])
        used += 1
    return couplets[:n], used


def _write(poetry, request) -> list[str]:
    from ..writing import generate

    return [couplet_text(a, b) for a, b in generate.write_poem(poetry, request).couplets if a and b]


def _still_written(poetry, poems: list[list[str]], poets: list[str], metres: list[int], mode: str,
                   first_seed: int) -> bool:
    """Whether the first cached poem of each form comes out the same when written again."""
    from ..gpt.inference import one_blas_thread

    firsts = {}
    for k in range(len(poems)):
        firsts.setdefault(spread_request(k, poets, metres, mode, first_seed).form, k)
    with one_blas_thread():
        return all(_write(poetry, spread_request(k, poets, metres, mode, first_seed)) == poems[k]
                   for k in sorted(firsts.values()))


# ---- the whole measurement --------------------------------------------------------------------
def evaluate_tell_apart(poetry, data: str | Path = DEFAULT_DATA, mode: str = "constrained", n_train: int = 5000,
                        n_test: int = 1000, seed: int = SEED, max_steps: int = MAX_STEPS,
                        cache_dir: str | Path | None = None, progress: bool = True,
                        pools: dict[str, Pool] | None = None, held_out: str = "test",
                        pretrain_steps: int = PRETRAIN_STEPS, reader: Reader | None = None) -> dict:
    """Train the judge, from the reader (`pretrained_reader`, trained first where it is not cached;
    pretrain_steps 0: from scratch), on n_train real train-split couplets against n_train generated
    ones (seeds from TRAIN_FIRST_SEED), score it on n_test real couplets of the `held_out` split
    ("test": the reported figure; "val": for tuning) and n_test generated ones (seeds from
    HELD_OUT[held_out]); the result's dict with the mode, the data and the model's key. A `reader`
    already loaded is used as it is (a run over several modes reads it once)."""
    if held_out not in HELD_OUT:
        raise PoetryError(f"held_out must be one of {', '.join(HELD_OUT)}, got {held_out!r}")
    first_held = HELD_OUT[held_out]
    pools = pools or real_couplet_pools(data, ("train", held_out))
    if reader is None and pretrain_steps:
        reader = pretrained_reader(data, cache_dir, progress, pretrain_steps)
    real_train = sample_couplets(pools["train"], n_train, seed)
    real_test = sample_couplets(pools[held_out], n_test, seed + 1)
    fake_train, train_poems = _generated(poetry, mode, n_train, TRAIN_FIRST_SEED, cache_dir, progress)
    fake_test, test_poems = _generated(poetry, mode, n_test, first_held, cache_dir, progress)
    if TRAIN_FIRST_SEED + train_poems > min(HELD_OUT.values()):
        raise PoetryError("too many training poems: their seeds reached the held-out ones'")
    result = tell_apart(real_train, fake_train, real_test, fake_test, seed=seed, progress=progress,
                        max_steps=max_steps, reader=reader)
    return {"judge": "tell-apart", "mode": mode, "settings": MODES[mode], "data": str(data), **_about(reader),
            "model": model_fingerprint(poetry)[:16],
            "model_directory": str(poetry.directory) if getattr(poetry, "directory", None) else None,
            "held_out": held_out, "train_seeds": [TRAIN_FIRST_SEED, TRAIN_FIRST_SEED + train_poems - 1],
            "test_seeds": [first_held, first_held + test_poems - 1],
            **result.to_dict()}


def evaluate_controls(data: str | Path = DEFAULT_DATA, n_train: int = 2000, n_test: int = 500, seed: int = SEED,
                      max_steps: int = MAX_STEPS, progress: bool = True, pools: dict[str, Pool] | None = None,
                      cache_dir: str | Path | None = None, pretrain_steps: int = PRETRAIN_STEPS,
                      reader: Reader | None = None) -> dict:
    """Both controls on real couplets of `data`, n_train training and n_test held-out couplets a
    class, each judge trained from the reader as `evaluate_tell_apart`'s: (a) real against the
    same couplets shuffled, (b) real against real (two disjoint samples)."""
    pools = pools or real_couplet_pools(data)
    if reader is None and pretrain_steps:
        reader = pretrained_reader(data, cache_dir, progress, pretrain_steps)
    train = sample_couplets(pools["train"], 2 * n_train, seed)
    test = sample_couplets(pools["test"], 2 * n_test, seed + 1)
    shuffled = control_shuffled(train[:n_train], test[:n_test], seed, progress, max_steps, reader=reader)
    same = control_real_vs_real(train[:n_train], train[n_train:], test[:n_test], test[n_test:], seed, progress,
                                max_steps, reader=reader)
    return {"data": str(data), **_about(reader), "shuffled": shuffled.to_dict(), "real_vs_real": same.to_dict()}


def _about(reader: Reader | None) -> dict:
    """What a result says of the reader its judge started from."""
    if reader is None:
        return {"reader": None}
    return {"reader": {"steps": reader.steps, "couplets": reader.couplets, "val_accuracy": reader.val_accuracy, "path": str(reader.path)}}

