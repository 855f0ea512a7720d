"""int8 dynamic quantization of the PyTorch model's linear layers, for `evaluate --quantize int8`
(writing runs on the numpy runtime, which is float32: BENCHMARKS.md, runtime)."""

import json

import pytest
import torch

from persian_poetry.assets import DEFAULT_MODEL_DIR
from persian_poetry.cli import main
from persian_poetry.errors import ModelLoadError
from persian_poetry.gpt.checkpoint import load_model_dir
from persian_poetry.gpt.evaluate import evaluate_file


def test_int8_replaces_every_linear_layer_and_keeps_the_embedding_float():
    model = load_model_dir(DEFAULT_MODEL_DIR, quantize="int8").model
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    quantized = [m for m in model.modules() if type(m).__name__ == "Linear"]
    assert len(quantized) == 4 * model.config.n_layer + 1  # qkv, proj, up, down per block; the output layer
    assert model.token_embedding.weight.dtype == torch.float32
    assert load_model_dir(DEFAULT_MODEL_DIR, quantize="none").model.blocks[0].attn.qkv.weight.dtype == torch.float32


def test_int8_costs_under_0_02_bits_per_char_on_real_verse(corpus_path):
    # Hafez's ghazals from the test extra's divan: poets and metres the shipped model knows.
    torch.set_num_threads(1)
    kwargs = {"split": "all", "limit": 24, "progress": False}
    exact = evaluate_file(corpus_path, **kwargs)
    int8 = evaluate_file(corpus_path, quantize="int8", **kwargs)
    assert exact.characters == int8.characters > 10_000
    assert abs(int8.bits_per_char - exact.bits_per_char) < 0.02
    assert int8.bits_per_char != exact.bits_per_char  # it did score the quantized model


def test_unknown_quantization_is_refused():
    with pytest.raises(ModelLoadError, match="unknown quantization 'int4'"):
        load_model_dir(DEFAULT_MODEL_DIR, quantize="int4")


def test_evaluate_takes_quantize_int8(corpus_path, capsys):
    assert main(["evaluate", "--data", str(corpus_path), "--split", "all", "--limit", "3", "--quantize", "int8",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["poems"] == 3 and 0 < result["bits_per_char"] < 8
