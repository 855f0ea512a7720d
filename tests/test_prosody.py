import json
import random
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import ganjoor_record

from persian_poetry.cli import main
from persian_poetry.data.corpus import split_of
from persian_poetry.errors import ModelLoadError
from persian_poetry.prosody.classifier import (
    ClassifierConfig,
    MetreClassifier,
    encode_hemistichs,
    load_torch_classifier,
    save_classifier,
    train_classifier,
)
from persian_poetry.prosody.classifier_inference import load_classifier
from persian_poetry.prosody.evaluate import evaluate_prosody
from persian_poetry.prosody.scan import scan

HAFEZ = ["الا یا ایها الساقی ادر کاسا و ناولها", "که عشق آسان نمود اول ولی افتاد مشکل ها",
         "به بوی نافه ای کاخر صبا زان طره بگشاید", "ز تاب جعد مشکینش چه خون افتاد در دل ها"]


def test_scan_names_the_metre_aligns_syllables_and_finds_the_rhyme():
    result = scan(HAFEZ, form="ghazal")
    assert result.metre_id == 2  # هزج مثمن سالم: مفاعیلن ×4
    assert result.feet == ("مفاعیلن",) * 4
    first = result.hemistichs[0].rule
    assert first.pattern.replace("-", "−").count("U") == 4
    assert all(s.weight in ("-", "U", "-U") for s in first.syllables)
    assert result.rhyme is not None and result.rhyme.found and result.rhyme.rhyme_letters.endswith("ها")
    assert json.loads(json.dumps(result.to_dict(), ensure_ascii=False))["metre_id"] == 2


def test_scan_of_nothing_is_empty():
    assert scan("hello 123").metre_id is None


def test_rule_based_scanning_imports_no_torch():
    """The scanner and the combined-scan module import no torch (nor does the classifier `scan` uses:
    tests/test_classifier_inference.py): a fresh interpreter scans a couplet with torch never imported."""
    code = ("import sys; from persian_poetry.prosody.scansion import scan_poem; "
            "from persian_poetry.prosody import scan as s; "
            f"r = scan_poem({HAFEZ[:2]!r}); print(r.metre_id); print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["2", "False"]


def test_classifier_probabilities_and_safe_save_load(tmp_path):
    torch.manual_seed(0)
    model = MetreClassifier(ClassifierConfig(labels=[2, 3, 24]))
    probs = model.probabilities(HAFEZ + ["", "x"])
    assert probs.shape == (6, 3) and torch.allclose(probs.sum(1), torch.ones(6), atol=1e-5)
    assert encode_hemistichs(["ab"]).tolist() == [[1]]  # nothing Persian: one unknown token
    save_classifier(model, tmp_path)
    again = load_torch_classifier(tmp_path)
    assert torch.allclose(again.probabilities(HAFEZ), probs[:4])
    assert np.allclose(load_classifier(tmp_path).probabilities(HAFEZ + ["", "x"]), probs.numpy(), atol=1e-5)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    for loader in (load_torch_classifier, load_classifier):
        with pytest.raises(ModelLoadError, match="sha256"):
            loader(tmp_path)


# Three made-up "metres" whose hemistichs are written with disjoint letters: separable, so a classifier
# that learns at all must get them right. Ganjoor ids of real metres, so that training keeps them.
TOY_METRES = {2: "بپتثج", 3: "سشصضط", 24: "فقکگل"}


def toy_hemistichs(letters: str, rng: random.Random, n: int) -> list[str]:
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 5))) for _ in range(12)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 6))) for _ in range(n)]


def ids_in(split: str, count: int, taken: set[int]) -> list[int]:
    found = [i for i in range(1, 100_000) if split_of(i) == split and i not in taken][:count]
    taken.update(found)
    return found


@pytest.fixture(scope="module")
def toy_metre_corpus(tmp_path_factory):
    """Per toy metre: 20 train poems, 2 val and 3 test, four hemistichs each (ids chosen by split)."""
    rng, taken, records = random.Random(5), set(), []
    for split, per_metre in (("train", 20), ("val", 2), ("test", 3)):
        ids = iter(ids_in(split, per_metre * len(TOY_METRES), taken))
        for metre, letters in TOY_METRES.items():
            records += [ganjoor_record(next(ids), "hafez", toy_hemistichs(letters, rng, 4), metre=(metre, f"metre {metre}"))
                        for _ in range(per_metre)]
    path = tmp_path_factory.mktemp("metres") / "poems.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path



def test_metre_classifier_learns_a_separable_toy_set_and_scores_it(toy_metre_corpus, tmp_path, one_thread):
    report = train_classifier(toy_metre_corpus, tmp_path / "clf", poets=None, time_budget=10**9, max_steps=40, batch_size=32,
                              progress=False)
    assert report["steps"] == 40 and report["train_hemistichs"] == 3 * 20 * 4 and report["val_hemistichs"] == 3 * 2 * 4
    assert report["best_val_hemistich_accuracy"] >= 0.9
    classifier = load_classifier(tmp_path / "clf")
    assert classifier.config.labels == [2, 3, 24]
    # Held-out hemistichs, new ones drawn from each metre's letters: the classifier names their metre.
    rng = random.Random(99)
    for metre, letters in TOY_METRES.items():
        probs = classifier.probabilities(toy_hemistichs(letters, rng, 10))
        assert (probs.argmax(1) == classifier.config.labels.index(metre)).mean() >= 0.9, metre

    png = tmp_path / "confusion.png"
    result = evaluate_prosody(toy_metre_corpus, split="test", classifier=classifier, confusion_png=png,
                              progress=False)
    assert (result["poems"], result["hemistichs"]) == (9, 36) and png.stat().st_size > 1000
    assert set(result["methods"]) == {"rule", "classifier", "combined"}
    learned = result["methods"]["classifier"]
    assert learned["hemistich_accuracy"] >= 0.9 and learned["poem_accuracy"] >= 0.9
    for scores in result["methods"].values():  # the scanner reads no metre in made-up words: no more to say
        assert all(0 <= v <= 1 for v in scores.values())


def test_scan_command(capsys):
    assert main(["scan", "\n".join(HAFEZ[:2])]) == 0
    out = capsys.readouterr().out
    assert "هزج مثمن سالم" in out and "Ganjoor id 2" in out and "∪" in out and "−" in out
    assert main(["scan", "hello"]) == 2


def test_scan_reads_standard_input_given_a_dash(capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(HAFEZ[:2]) + "\n"))
    assert main(["scan", "--file", "-"]) == 0
    assert "هزج مثمن سالم" in capsys.readouterr().out
