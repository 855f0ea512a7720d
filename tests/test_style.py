"""The poet style prior: its arithmetic, its build from a corpus, its loading, and that it steers."""

import shutil
from dataclasses import replace

import numpy as np
import pytest
from conftest import untrained_poetry
from safetensors.numpy import save_file

from persian_poetry.data.corpus import read_jsonl
from persian_poetry.errors import ModelLoadError, PoetryError
from persian_poetry.writing.bundle import load_model
from persian_poetry.writing.generate import PoemRequest, write_poem
from persian_poetry.writing.style import (
    MAX_BIAS,
    STYLE_FILE,
    StylePrior,
    build_style,
    poem_bias,
    style_bias,
    word_initial_tokens,
)


def test_the_bias_is_a_smoothed_clipped_log_ratio():
    counts = np.array([[900, 100, 0, 0, 0, 1],
                       [100, 900, 0, 1000, 0, 0]])
    bias = style_bias(counts, prior_tokens=10.0)
    assert bias.shape == (2, 6)
    assert bias[0, 0] > 0 > bias[0, 1]  # poet 0 prefers token 0, poet 1 token 1
    assert bias[1, 1] > 0 > bias[1, 0]
    assert bias[0, 4] == 0 and bias[1, 4] == 0  # no poet uses token 4: no opinion
    assert bias[0, 3] == -MAX_BIAS  # poet 1's favourite, never in poet 0: clipped, not -inf
    assert bias.dtype == np.float32
    assert bool(np.isfinite(bias).all()) and float(np.abs(bias).max()) <= MAX_BIAS
    # The prior pulls a poet towards the common distribution: the more pseudo-tokens, the less bias.
    assert np.abs(style_bias(counts, prior_tokens=1e6)).max() < 0.01 < np.abs(bias).max()


def test_only_word_initial_tokens_carry_a_bias(tiny_model_dir):
    counts = np.array([[900, 100, 5], [100, 900, 5]])
    bias = style_bias(counts, prior_tokens=10.0, word_initial=np.array([True, False, True]))
    assert bias[0, 0] > 0 and bias[1, 0] < 0 and bool((bias[:, 1] == 0).all())
    shipped = load_model().tokenizer
    initial = word_initial_tokens(shipped)
    (word,) = shipped.encode("ا حافظ")[len(shipped.encode("ا")):]  # " حافظ" after a word
    inner = shipped.encode("حافظ")[-1]  # the end of the word written without a space before it
    assert initial[word] and not initial[inner]
    assert not initial[shipped.token_to_id("<|hemi|>")]
    char = load_model(tiny_model_dir).tokenizer  # a character model: every token may begin a word
    assert bool(word_initial_tokens(char).all())


def test_a_used_token_keeps_only_its_negative_bias():
    bias = np.array([2.0, -1.0, 0.5, -3.0], dtype=np.float32)
    assert np.array_equal(poem_bias(bias, []), bias)
    assert np.array_equal(poem_bias(bias, [0, 1, 0]), np.array([0.0, -1.0, 0.5, -3.0], dtype=np.float32))
    assert np.array_equal(bias, np.array([2.0, -1.0, 0.5, -3.0], dtype=np.float32))  # the poet's row is not changed


def test_build_style_counts_the_train_split_and_load_model_reads_it(tiny_model_dir, corpus_path, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    assert load_model(model_dir).style is None  # none built yet
    path = build_style(corpus_path, model_dir, poets=("hafez", "saadi"), progress=False)
    assert path == model_dir / STYLE_FILE
    poetry = load_model(model_dir)
    assert poetry.style.poets == ("hafez", "saadi")
    assert poetry.style.bias.shape == (2, poetry.tokenizer.vocab_size)
    # A character model: one token per character of every train-split hemistich of the poet.
    from safetensors import safe_open
    with safe_open(path, "np") as f:
        counts = f.get_tensor("counts")
    for row, poet in zip(counts, ("hafez", "saadi")):
        chars = sum(len(h) for p in read_jsonl(corpus_path, [poet]) if p.split == "train" for h in p.hemistichs)
        assert int(row.sum()) == chars > 0


def test_a_style_file_that_does_not_fit_the_model_is_refused(tiny_model_dir, tmp_path):
    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    save_file({"bias": np.zeros((2, 7), dtype=np.float32)}, str(model_dir / STYLE_FILE), metadata={"poets": "hafez,saadi"})
    with pytest.raises(ModelLoadError, match="does not fit"):
        load_model(model_dir)
    (model_dir / STYLE_FILE).write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_model(model_dir)


def _share_of(poem, tokenizer, favoured: set[int]) -> float:
    ids = [t for a, b in poem.couplets for t in tokenizer.encode(a) + tokenizer.encode(b)]
    return sum(t in favoured for t in ids) / len(ids)


@pytest.fixture(scope="module")
def shipped_without_style():
    return replace(load_model(), style=None)


@pytest.mark.parametrize("free", [True, False])
def test_the_style_prior_steers_sampling_and_strength_zero_is_the_model_alone(shipped_without_style, free):
    poetry = shipped_without_style
    tok = poetry.tokenizer
    # Byte-level pieces: the letter ا is the bytes d8 a7, shown by the tokenizer as "Ø§".
    favoured = {t for t in range(tok.vocab_size) if not tok.is_special(t) and "ا" in tok.decode([t])}
    bias = np.zeros((2, tok.vocab_size), dtype=np.float32)
    bias[0, sorted(favoured)] = MAX_BIAS
    styled = replace(poetry, style=StylePrior(("hafez", "saadi"), bias))
    request = PoemRequest(poet="hafez", form="masnavi", couplets=2, seed=3, free=free, metre=None if free else 2,
                          rhyme=None if free else "ان")
    alone = write_poem(poetry, request)
    assert write_poem(styled, replace(request, style=0.0)).couplets == alone.couplets
    assert write_poem(styled, replace(request, poet="khayyam")).couplets == write_poem(
        poetry, replace(request, poet="khayyam")).couplets  # a poet without a row: untouched
    steered = write_poem(styled, replace(request, style=2.0))
    assert _share_of(steered, tok, favoured) > _share_of(alone, tok, favoured) + 0.1


def test_a_favoured_word_is_not_repeated_line_after_line(shipped_without_style):
    """The failure poem_bias exists for: one strongly favoured token would otherwise fill the poem."""
    poetry = shipped_without_style
    tok = poetry.tokenizer
    (word,) = tok.encode("ا حافظ")[len(tok.encode("ا")):]  # " حافظ", one token after a word
    bias = np.zeros((1, tok.vocab_size), dtype=np.float32)
    bias[0, word] = MAX_BIAS
    styled = replace(poetry, style=StylePrior(("hafez",), bias))
    poem = write_poem(styled, PoemRequest(poet="hafez", form="ghazal", couplets=4, seed=11, free=True, style=2.0))
    assert sum(h.split().count("حافظ") for pair in poem.couplets for h in pair) <= 2


@pytest.mark.parametrize("strength", [-0.5, 4.5, float("nan")])
def test_a_style_strength_out_of_range_is_a_clear_error(strength):
    with pytest.raises(PoetryError, match="style strength"):
        write_poem(untrained_poetry(), PoemRequest(style=strength, seed=1))
