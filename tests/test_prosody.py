import json
import subprocess
import sys

import pytest
import torch

from persian_poetry.cli import main
from persian_poetry.errors import ModelLoadError
from persian_poetry.prosody.classifier import (
    ClassifierConfig,
    MetreClassifier,
    encode_hemistichs,
    load_classifier,
    save_classifier,
    train_classifier,
)
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
    """The scanner and the combined-scan module load torch only when the classifier is used
    (`scan.default_classifier`): a fresh interpreter scans a couplet with torch never imported."""
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
    again = load_classifier(tmp_path)
    assert torch.allclose(again.probabilities(HAFEZ), probs[:4])
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(ModelLoadError, match="sha256"):
        load_classifier(tmp_path)


def test_classifier_training_and_prosody_evaluation_run_end_to_end(corpus_path, tmp_path):
    report = train_classifier(corpus_path, tmp_path / "clf", poets=None, time_budget=3, batch_size=32,
                              progress=False)
    assert report["steps"] > 0 and 0 <= report["best_val_hemistich_accuracy"] <= 1
    classifier = load_classifier(tmp_path / "clf")
    assert set(classifier.config.labels) <= {3, 24}
    png = tmp_path / "confusion.png"
    result = evaluate_prosody(corpus_path, split="train", limit=20, classifier=classifier, confusion_png=png,
                              progress=False)
    assert result["poems"] == 20 and png.stat().st_size > 1000
    assert set(result["methods"]) == {"rule", "classifier", "combined"}
    for scores in result["methods"].values():
        assert all(0 <= v <= 1 for v in scores.values())


def test_scan_command(capsys):
    assert main(["scan", "\n".join(HAFEZ[:2])]) == 0
    out = capsys.readouterr().out
    assert "هزج مثمن سالم" in out and "Ganjoor id 2" in out and "∪" in out and "−" in out
    assert main(["scan", "hello"]) == 2
