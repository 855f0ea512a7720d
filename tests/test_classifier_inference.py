"""The numpy classifiers of `prosody/classifier_inference.py` against the PyTorch network they
reimplement, on the shipped weights; and `scan` and `classify_poet` without torch."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import FAMOUS_COUPLETS, hafez_ghazals

from persian_poetry.assets import METRE_CLASSIFIER_DIR, POET_CLASSIFIER_DIR
from persian_poetry.data.corpus import OFFERED_POETS
from persian_poetry.errors import ModelLoadError
from persian_poetry.prosody.classifier import load_torch_classifier
from persian_poetry.prosody.classifier_inference import (
    MAX_CHARS,
    Classifier,
    clean_hemistichs,
    encode_words,
    load_classifier,
)


def varied_hemistichs() -> list[str]:
    """Real hemistichs of many lengths, with one of a single letter, one longer than the classifier
    reads (a whole couplet on one line), one with vowel marks and punctuation, one repeated word."""
    ghazals = hafez_ghazals()
    texts = [h for ghazal in ghazals[:6] for h in ghazal[:6]]
    texts += ["و", " ".join(ghazals[0][:2]), "الا یا ایهَا السّاقی، ادر کاسا و ناولها!", "ساقی ساقی ساقی"]
    texts += [h for couplet in FAMOUS_COUPLETS for h in couplet.split("\n")]
    return texts


@pytest.mark.parametrize("directory", [METRE_CLASSIFIER_DIR, POET_CLASSIFIER_DIR], ids=["metre", "poet"])
def test_numpy_classifier_equals_the_torch_network(directory):
    texts = varied_hemistichs()
    lengths = [len(t) for t in clean_hemistichs(texts)]
    assert min(lengths) == 1 and max(lengths) > MAX_CHARS  # the batch pads most rows, and one is cut
    fast, network = load_classifier(directory), load_torch_classifier(directory)
    assert fast.config == network.config
    if directory == POET_CLASSIFIER_DIR:  # the poet classifier's bag of words is read too
        assert fast.config.words > 0 and (encode_words(texts, fast.config.words) > 0).sum(1).min() >= 1
    probs = fast.probabilities(texts)
    expected = network.probabilities(texts).numpy()
    assert probs.shape == expected.shape == (len(texts), len(fast.config.labels)) and probs.dtype == np.float32
    assert np.abs(probs - expected).max() <= 1e-5
    assert np.allclose(probs.sum(1), 1, atol=1e-5)
    assert len(set(probs.argmax(1).tolist())) > 1  # not one answer for everything
    # Each row's answer is its own, whatever the rows beside it: other batches pad each row differently.
    assert np.abs(fast.probabilities(texts, batch_size=5) - probs).max() <= 1e-6
    assert fast.probabilities([]).shape == (0, len(fast.config.labels))


def test_load_classifier_checks_what_it_reads(tmp_path):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((METRE_CLASSIFIER_DIR / name).read_bytes())
    assert isinstance(load_classifier(tmp_path), Classifier) and load_classifier(tmp_path).config.task == "metre"
    config = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))

    config["classifier"]["hidden"] = 64  # the config disagrees with the weights' shapes
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="do not match its config"):
        load_classifier(tmp_path)
    config["alphabet"] = config["alphabet"][:-1]
    (tmp_path / "config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="another alphabet"):
        load_classifier(tmp_path)
    (tmp_path / "config.json").write_text("{", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="cannot read classifier config"):
        load_classifier(tmp_path)


def test_scan_and_classify_poet_import_no_torch():
    """A fresh interpreter scans a couplet with the learned metre classifier and names its poet, with
    torch never imported."""
    couplet = FAMOUS_COUPLETS[0]
    code = ("import sys\n"
            "from persian_poetry import classify_poet, scan\n"
            f"result = scan({couplet!r})\n"
            "assert result.metre_id == 2 and result.hemistichs[0].classifier_metre is not None, result\n"
            "assert result.hemistichs[0].classifier_probability > 0\n"
            f"poet, probability, _ = classify_poet({couplet.split(chr(10))!r})\n"
            "print(poet, 0 < probability <= 1, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    poet, *rest = done.stdout.split()
    assert poet in OFFERED_POETS and rest == ["True", "False"]
