import gzip
import json

import pytest
import torch
from conftest import ganjoor_record, hafez_ghazals

from persian_poetry.assets import METRE_CLASSIFIER_DIR, POET_CLASSIFIER_DIR
from persian_poetry.cli import main
from persian_poetry.data.corpus import OFFERED_POETS, split_of
from persian_poetry.errors import ModelLoadError, PoetryError
from persian_poetry.judges.poet import IGNORED, classify_poet, load_poet_classifier, poem_log_probs
from persian_poetry.prosody.classifier import load_classifier


def ids_in(split: str, count: int, taken: set[int]) -> list[int]:
    found, n = [], 1
    while len(found) < count:
        if split_of(n) == split and n not in taken:
            found.append(n)
        n += 1
    taken.update(found)
    return found


@pytest.fixture(scope="module")
def ten_poets_corpus(tmp_path_factory):
    """Hafez's ghazals dealt out to the ten offered poets: 6 train, 1 val and 1 test poem each."""
    ghazals, taken, records = iter(hafez_ghazals()), set(), []
    for split, per_poet in (("train", 6), ("val", 1), ("test", 1)):
        ids = iter(ids_in(split, per_poet * len(OFFERED_POETS), taken))
        for poet in OFFERED_POETS:
            records += [ganjoor_record(next(ids), poet, next(ghazals)[:6]) for _ in range(per_poet)]
    path = tmp_path_factory.mktemp("poets") / "poems.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    return path


def test_tiny_poet_classifier_trains_saves_loads_and_names_an_offered_poet(ten_poets_corpus, tmp_path, capsys):
    out = tmp_path / "poet"
    assert main(["train-poet-classifier", "--data", str(ten_poets_corpus), "--out", str(out),
                 "--time-budget", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] > 0 and report["balanced"] and report["train_poems"] == 60
    test = report["test"]
    assert test["poems"] == 10 and set(test["per_poet"]) == set(OFFERED_POETS)
    assert 0 <= test["poem_accuracy"] <= 1 and 0 <= test["hemistich_accuracy"] <= 1

    classifier = load_poet_classifier(out)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["classifier"]["task"] == "poet" and config["classifier"]["drop"] == IGNORED
    assert config["classifier"]["labels"] == list(OFFERED_POETS)
    assert config["training"]["test"]["poem_accuracy"] == test["poem_accuracy"]

    verse = hafez_ghazals()[-1]
    poet, prob, all_probs = classify_poet(verse, classifier)
    assert poet in OFFERED_POETS and list(all_probs) == list(OFFERED_POETS)
    assert prob == max(all_probs.values()) == all_probs[poet]
    assert sum(all_probs.values()) == pytest.approx(1.0, abs=1e-5)
    # Vowel marks and punctuation are not read: a marked, punctuated copy gets the same verdict.
    marked = [h.replace("ی ", "یِ ") + "،" for h in verse]
    assert marked != verse and classify_poet(marked, classifier)[2] == pytest.approx(all_probs, abs=1e-6)
    # One hemistich's verdict is its own distribution; the poem's is the renormalized mean of the logs.
    hemi_logs, poem = poem_log_probs(classifier, verse[:2], [0, 0])
    assert torch.allclose(poem[0], hemi_logs.mean(0).log_softmax(-1), atol=1e-6)

    with pytest.raises(PoetryError, match="no Persian verse"):
        classify_poet(["hello", ""], classifier)


def test_poet_and_metre_classifiers_are_told_apart():
    assert load_classifier(METRE_CLASSIFIER_DIR).config.task == "metre"  # old config, no task field
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
