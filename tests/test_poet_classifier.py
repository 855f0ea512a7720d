import gzip
import json
import random

import numpy as np
import pytest
from conftest import ganjoor_record, hafez_ghazals

from persian_poetry.assets import METRE_CLASSIFIER_DIR, POET_CLASSIFIER_DIR
from persian_poetry.cli import main
from persian_poetry.data.corpus import OFFERED_POETS, split_of
from persian_poetry.errors import ModelLoadError, PoetryError
from persian_poetry.judges.poet import IGNORED, classify_poet, load_poet_classifier, poem_log_probs
from persian_poetry.prosody.classifier import load_torch_classifier
from persian_poetry.prosody.classifier_inference import load_classifier


def ids_in(split: str, count: int, taken: set[int]) -> list[int]:
    found, n = [], 1
    while len(found) < count:
        if split_of(n) == split and n not in taken:
            found.append(n)
        n += 1
    taken.update(found)
    return found


# Three offered poets whose made-up words use disjoint letters: separable, so a classifier that
# learns at all must tell them apart, held-out poems included.
TOY_POETS = {"hafez": "بپتثج", "saadi": "سشصضط", "khayyam": "فقکگل"}


def toy_vocabulary(letters: str, rng: random.Random) -> list[str]:
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 5))) for _ in range(12)]


def toy_poem(words: list[str], rng: random.Random, hemistichs: int = 4) -> list[str]:
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 6))) for _ in range(hemistichs)]


@pytest.fixture(scope="module")
def toy_poets():
    rng = random.Random(3)
    return {poet: toy_vocabulary(letters, rng) for poet, letters in TOY_POETS.items()}


@pytest.fixture(scope="module")
def toy_poets_corpus(toy_poets, tmp_path_factory):
    """Per toy poet: 20 train poems, 2 val and 4 test, of four hemistichs (ids chosen by split)."""
    rng, taken, records = random.Random(4), set(), []
    for split, per_poet in (("train", 20), ("val", 2), ("test", 4)):
        ids = iter(ids_in(split, per_poet * len(TOY_POETS), taken))
        for poet, words in toy_poets.items():
            records += [ganjoor_record(next(ids), poet, toy_poem(words, rng)) for _ in range(per_poet)]
    path = tmp_path_factory.mktemp("poets") / "poems.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return path



def test_poet_classifier_learns_separable_toy_poets_saves_loads_and_names_them(
        toy_poets, toy_poets_corpus, tmp_path, capsys, one_thread):
    out = tmp_path / "poet"
    assert main(["train-poet-classifier", "--data", str(toy_poets_corpus), "--out", str(out),
                 "--max-steps", "40", "--time-budget", "1e9", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 40 and report["balanced"] and report["train_poems"] == 60
    assert report["train_hemistichs"] == 60 * 4
    test = report["test"]
    assert (test["poems"], test["hemistichs"]) == (12, 48) and set(test["per_poet"]) == set(TOY_POETS)
    assert test["poem_accuracy"] >= 0.9 and test["hemistich_accuracy"] >= 0.9
    assert all(p["poem_accuracy"] >= 0.75 and p["poems"] == 4 for p in test["per_poet"].values())

    classifier = load_poet_classifier(out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["classifier"]["task"] == "poet" and config["classifier"]["drop"] == IGNORED
    assert config["classifier"]["labels"] == [p for p in OFFERED_POETS if p in TOY_POETS]
    assert config["training"]["test"]["poem_accuracy"] == test["poem_accuracy"]

    # New poems in each toy poet's words, never seen in training: named, and with confidence.
    rng = random.Random(77)
    for poet, words in toy_poets.items():
        for _ in range(3):
            named, prob, _ = classify_poet(toy_poem(words, rng), classifier)
            assert named == poet and prob > 0.5

    verse = hafez_ghazals()[-1]
    poet, prob, all_probs = classify_poet(verse, classifier)
    assert poet in TOY_POETS and list(all_probs) == config["classifier"]["labels"]
    assert prob == max(all_probs.values()) == all_probs[poet]
    assert sum(all_probs.values()) == pytest.approx(1.0, abs=1e-5)
    # Vowel marks and punctuation are not read: a marked, punctuated copy gets the same verdict.
    marked = [h.replace("ی ", "یِ ") + "،" for h in verse]
    assert marked != verse and classify_poet(marked, classifier)[2] == pytest.approx(all_probs, abs=1e-6)
    # One hemistich's verdict is its own distribution; the poem's is the renormalized mean of the logs.
    hemi_logs, poem = poem_log_probs(classifier, verse[:2], [0, 0])
    mean = hemi_logs.mean(0)
    assert np.allclose(poem[0], mean - np.log(np.exp(mean).sum()), atol=1e-6)
    # Training's evaluation judges with the PyTorch network; it gives the verdict of the numpy one.
    _, poem_torch = poem_log_probs(load_torch_classifier(out), verse[:2], [0, 0])
    assert np.allclose(poem_torch, poem, atol=1e-5)

    with pytest.raises(PoetryError, match="no Persian verse"):
        classify_poet(["hello", ""], classifier)


def test_poet_and_metre_classifiers_are_told_apart():
    assert load_classifier(METRE_CLASSIFIER_DIR).config.task == "metre"  # old config, no task field
    assert load_torch_classifier(METRE_CLASSIFIER_DIR).config.task == "metre"
    with pytest.raises(ModelLoadError, match="not a poet classifier"):
        load_poet_classifier(METRE_CLASSIFIER_DIR)


def test_training_needs_the_offered_poets(tmp_path):
    # A corpus without any of the ten offered poets is refused with a one-line error.
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(ganjoor_record(5, "bahar", ["بیا تا گل برافشانیم"] * 2)) + "\n",
                     encoding="utf-8")
    assert main(["train-poet-classifier", "--data", str(other), "--out", str(tmp_path / "x"),
                 "--time-budget", "1"]) == 2


def test_shipped_classifier_recognises_hafez():
    """20 ghazals of the hafez PyPI package's divan. Most of them are in our train split too (the
    shipped classifier's test-split figures are in BENCHMARKS.md); this guards the shipped weights."""
    classifier = load_poet_classifier()
    assert classifier.config.labels == list(OFFERED_POETS)
    assert json.loads((POET_CLASSIFIER_DIR / "config.json").read_text())["training"]["test"]["poems"] > 200
    verdicts = [classify_poet(ghazal, classifier)[0] for ghazal in hafez_ghazals()[:20]]
    assert verdicts.count("hafez") >= 18, verdicts  # measured: 20 of 20 (469 of all 495)
