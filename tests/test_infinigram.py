"""The infini-gram (gpt/infinigram.py) and its mixture with the model in `evaluate`: suffix arrays
against sorting, longest matches and next-token counts worked out by hand, a mixture's bits/char
against a hand computation, and λ = 0 giving exactly the model's figure."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_evaluate_windows import MarkovStub, split_of_poems

from persian_poetry.errors import PoetryError
from persian_poetry.gpt.evaluate import _windows, evaluate_split, target_scores
from persian_poetry.gpt.infinigram import (
    InfiniGram,
    Mixture,
    MixWeights,
    load_mixture,
    save_mix_weights,
    suffix_array,
)
from persian_poetry.gpt.model import GPT, GPTConfig

STREAM = [1, 2, 3, 1, 2, 4, 1, 2, 3, 5]  # positions 0..9



# --- the suffix array ----------------------------------------------------------------------------


def test_suffix_array_sorts_the_suffixes():
    assert suffix_array(np.asarray(STREAM, dtype=np.uint16)).tolist() == [0, 6, 3, 1, 7, 4, 2, 8, 5, 9]
    assert suffix_array(np.zeros(0, dtype=np.uint16)).tolist() == []
    assert suffix_array(np.asarray([7], dtype=np.uint16)).tolist() == [0]
    assert suffix_array(np.full(9, 3, dtype=np.uint16)).tolist() == list(range(8, -1, -1))  # shorter first
    rng = np.random.default_rng(0)
    for _ in range(300):
        t = rng.integers(0, rng.integers(1, 5), rng.integers(1, 80)).astype(np.uint16)
        sa = suffix_array(t)
        assert sa.dtype == np.int32
        assert sa.tolist() == sorted(range(len(t)), key=lambda i: t[i:].tolist())


# --- queries, by hand ----------------------------------------------------------------------------


def test_counts_longest_match_and_next_tokens_by_hand():
    ig = InfiniGram(np.asarray(STREAM, dtype=np.uint16))
    assert ig.count([1, 2]) == 3 and ig.count([1, 2, 3]) == 2 and ig.count([2, 4, 1, 2]) == 1
    assert ig.count([3, 2]) == 0 and ig.count([3, 5, 1]) == 0 and ig.count([]) == 10
    # [7, 1, 2]: 7 never occurs, [1, 2] at 0, 3, 6, followed by 3, 4, 3.
    assert ig.next_token_counts([7, 1, 2]) == (2, {3: 2, 4: 1})
    # [9, 2, 3]: [2, 3] at 1 and 7, followed by 1 and 5.
    assert ig.next_token_counts([9, 2, 3]) == (2, {1: 1, 5: 1})
    # The whole of [4, 1, 2, 3] occurs (at 5), then 5; [2, 4] once, then 1.
    assert ig.next_token_counts([4, 1, 2, 3]) == (4, {5: 1})
    assert ig.next_token_counts([6, 2, 4]) == (2, {1: 1})
    # Nothing matches: the unigram counts of the stream.
    assert ig.next_token_counts([9]) == (0, {1: 3, 2: 3, 3: 2, 4: 1, 5: 1})
    assert ig.next_token_counts([]) == (0, {1: 3, 2: 3, 3: 2, 4: 1, 5: 1})
    # [3, 5] ends the stream: it occurs, and nothing follows it.
    assert ig.next_token_counts([1, 2, 3, 5]) == (4, {})


def test_scan_extends_and_shortens_the_match():
    ig = InfiniGram(np.asarray(STREAM, dtype=np.uint16))
    # Predicting seq[i] from seq[:i]: the match grows along 1 2 4 1 2 3 (positions 3..8 of the
    # stream, whose 1 2 4 ... and 1 2 ... occur more than once early on), is followed there by 5,
    # not 1; the longest suffix of 1 2 4 1 2 3 1 that occurs is 1 2 3 1 (at 0), followed by 2, not 9.
    seq = [1, 2, 4, 1, 2, 3, 1, 9]
    n, total, hits = ig.scan(seq)
    assert n.tolist() == [0, 1, 2, 3, 4, 5, 6, 4]
    assert total.tolist() == [10, 3, 3, 1, 1, 1, 1, 1]
    assert hits.tolist() == [3, 3, 1, 1, 1, 1, 0, 0]
    # A match that ends the stream (1 2 at its end) has no next token: no estimate (total 0).
    n, total, hits = InfiniGram(np.asarray([5, 1, 2], dtype=np.uint16)).scan([1, 2, 7])
    assert (n.tolist(), total.tolist(), hits.tolist()) == ([0, 1, 2], [3, 1, 0], [1, 1, 0])


def test_scan_agrees_with_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(100):
        vocab = int(rng.integers(1, 4))
        stream = rng.integers(0, vocab, int(rng.integers(1, 50))).tolist()
        ig = InfiniGram(np.asarray(stream, dtype=np.uint16))
        seq = rng.integers(0, vocab + 1, 25).tolist()
        n, total, hits = ig.scan(seq)
        for i in range(len(seq)):
            context = seq[:i]
            best = max(length for length in range(len(context) + 1)
                       if length == 0 or any(stream[p:p + length] == context[i - length:]
                                             for p in range(len(stream) - length + 1)))
            after = [stream[p + best] for p in range(len(stream) - best)
                     if stream[p:p + best] == context[i - best:]]
            assert (n[i], total[i], hits[i]) == (best, len(after), after.count(seq[i]))


def test_index_saves_and_loads(tmp_path):
    ig = InfiniGram(np.asarray(STREAM, dtype=np.uint16))
    ig.save(tmp_path / "ix", tokenizer_sha256="abc")
    again = InfiniGram.load(tmp_path / "ix")
    assert np.array_equal(again.sa, ig.sa) and np.array_equal(again.tokens, ig.tokens)
    assert InfiniGram.meta(tmp_path / "ix")["tokenizer_sha256"] == "abc"
    with pytest.raises(PoetryError, match="not an infini-gram index"):
        InfiniGram.load(tmp_path)
    with pytest.raises(PoetryError, match="mix.json"):
        load_mixture(tmp_path / "ix")
    save_mix_weights(tmp_path / "ix", MixWeights.constant(0.25))
    mixture = load_mixture(tmp_path / "ix", tokenizer_sha256="abc")
    assert mixture.weights.lambdas.tolist() == [[0.25]]
    with pytest.raises(PoetryError, match="another tokenizer"):
        load_mixture(tmp_path / "ix", tokenizer_sha256="def")


# --- the mixture in evaluate ----------------------------------------------------------------------



def test_bits_per_char_of_a_mixture_by_hand():
    # Train stream 0 1 2 3 0 1 3; a poem, header [0] and body 1 2 0 3, 5 characters.
    #   target 1 after (0):        n-gram (0) -> 1, 1: 2/2;      model 1/2
    #   target 2 after (0 1):      (0 1) -> 2, 3: 1/2;           model 1/2
    #   target 0 after (0 1 2):    (0 1 2) -> 3: 0/1;            model 1/6
    #   target 3 after (0 1 2 0):  only (0) matches -> 1, 1: 0/2; model 1/6
    index = InfiniGram(np.asarray([0, 1, 2, 3, 0, 1, 3], dtype=np.uint16))
    split = split_of_poems([([0], [1, 2, 0, 3], 5)])
    model = MarkovStub(context=8)
    scores = target_scores(model, split, index=index)
    assert [a.tolist() for a in scores.ngram] == [[1, 2, 3, 1], [2, 2, 1, 2], [2, 1, 0, 0]]
    half = evaluate_split(model, split, mix=Mixture(index, MixWeights.constant(0.5)))
    p = [0.5 * 1 / 2 + 0.5 * 1, 0.5 * 1 / 2 + 0.5 * 1 / 2, 0.5 * 1 / 6, 0.5 * 1 / 6]
    assert half.bits_per_char == pytest.approx(-sum(math.log2(x) for x in p) / 5, rel=1e-6)
    assert half.bits_per_char == pytest.approx((math.log2(4 / 3) + 1 + 2 * math.log2(12)) / 5, rel=1e-6)
    # λ by cell: n 0-1 / 2+ by total 1 / 2+.
    table = MixWeights(np.array([[0.9, 0.5], [0.0, 0.25]]), (0, 2), (1, 2))
    mixed = evaluate_split(model, split, mix=Mixture(index, table))
    p = [0.5 * 1 / 2 + 0.5 * 1, 0.75 * 1 / 2 + 0.25 * 1 / 2, 1 / 6, 0.5 * 1 / 6]
    assert mixed.bits_per_char == pytest.approx(-sum(math.log2(x) for x in p) / 5, rel=1e-6)
    alone = evaluate_split(model, split)
    assert alone.bits_per_char == pytest.approx((2 + 2 * math.log2(6)) / 5, rel=1e-6)
    assert (mixed.poems, mixed.characters, mixed.tokens) == (alone.poems, alone.characters, alone.tokens)


def test_lambda_zero_gives_exactly_the_models_figure():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=11, context_length=16, n_layer=1, n_head=2, n_embd=16))
    rng = np.random.default_rng(3)
    poems = [([0, 1], rng.integers(2, 11, 40).tolist(), 50), ([0], rng.integers(2, 11, 7).tolist(), 9),
             ([], rng.integers(2, 11, 30).tolist(), 30)]
    split = split_of_poems(poems)
    index = InfiniGram(np.asarray(rng.integers(0, 11, 500), dtype=np.uint16))
    alone = evaluate_split(model, split, batch_size=3)
    for weights in (MixWeights.constant(0.0), MixWeights(np.zeros((15, 10)))):
        assert evaluate_split(model, split, batch_size=3, mix=Mixture(index, weights)).bits_per_char == alone.bits_per_char
    assert evaluate_split(model, split, batch_size=3, mix=Mixture(index, MixWeights.constant(0.3))).bits_per_char \
        != alone.bits_per_char


def test_the_ngram_sees_what_the_model_sees():
    """With the poem itself as the stream every context occurs, so the match is as long as the
    window lets it be: the whole poem so far in the first window, and in a later one only the
    body run after the pinned header (never the header joined to a body it does not precede)."""
    header, body = [300, 301, 302], list(range(200))
    split = split_of_poems([(header, body, 200)])
    index = InfiniGram(np.asarray(header + body, dtype=np.uint16))
    windows = list(_windows(split, 1, 24, index))
    assert len(windows) > 3
    for w, (inputs, targets, (n, total, hits)) in enumerate(windows):
        scored = np.flatnonzero(targets != -1)
        start = 0 if w == 0 else len(header)
        assert n.tolist() == (scored + 1 - start).tolist()
        assert total.tolist() == hits.tolist() == [1] * len(scored)  # each context once, then the target


def test_fit_finds_the_best_lambda():
    # 30 tokens the n-gram gets wrong (p_model 0.4, p_ngram 0) and 10 only it gets right (p_model
    # 1e-30, p_ngram 1): the likelihood 30 log((1 - λ) 0.4) + 10 log λ peaks at λ = 10 / 40.
    logp = np.log(np.r_[np.full(30, 0.4), np.full(10, 1e-30)])
    n, total, hits = np.full(40, 3), np.full(40, 4), np.r_[np.zeros(30), np.full(10, 4)]
    fitted = MixWeights.fit(logp, n, total, hits, length_edges=(0,), count_edges=(1,), prior=0.0)
    assert fitted.lambdas[0, 0] == pytest.approx(0.25)
    # By length: the short matches are always wrong (λ 0), the long ones always right (p_model 1/4):
    # with 2 pseudo-tokens at λ = 0 the fixed point is 12 λ = 10 λ / (λ + (1 - λ) / 4), λ = 7/9.
    n = np.r_[np.full(30, 1), np.full(10, 9)]
    logp = np.log(np.full(40, 0.25))
    fitted = MixWeights.fit(logp, n, total, hits, length_edges=(0, 8), count_edges=(1,), prior=2.0, iterations=200)
    assert fitted.lambdas[0, 0] == 0 and fitted.lambdas[1, 0] == pytest.approx(7 / 9, abs=1e-4)
    again = MixWeights.from_dict(json.loads(json.dumps(fitted.to_dict())))
    assert again.length_edges == (0, 8) and np.allclose(again.lambdas, fitted.lambdas, atol=1e-6)
    with pytest.raises(PoetryError):
        MixWeights.constant(1.0)


def test_evaluate_command_with_a_mixture(tiny_model_dir, corpus_path, tmp_path, capsys):
    from persian_poetry.cli import main
    from persian_poetry.data.dataset import load_corpus_splits
    from persian_poetry.data.tokenizer import load_tokenizer
    from persian_poetry.files import sha256_of

    tokenizer = load_tokenizer(tiny_model_dir / "tokenizer.json")
    train = load_corpus_splits(corpus_path, tokenizer, None, cache_dir=tmp_path / "cache", progress=False)
    directory = tmp_path / "ix"
    InfiniGram.from_split(train.splits["train"]).save(directory,
                                                      tokenizer_sha256=sha256_of(tiny_model_dir / "tokenizer.json"))
    args = ["evaluate", "--data", str(corpus_path), "--model", str(tiny_model_dir), "--split", "all", "--limit", "10",
            "--json"]
    assert main(args) == 0
    alone = json.loads(capsys.readouterr().out)
    save_mix_weights(directory, MixWeights.constant(0.0))
    assert main([*args, "--mix", str(directory)]) == 0
    assert json.loads(capsys.readouterr().out) == alone
    save_mix_weights(directory, MixWeights.constant(0.3))
    assert main([*args, "--mix", str(directory)]) == 0
    mixed = json.loads(capsys.readouterr().out)
    assert mixed["tokens"] == alone["tokens"] and mixed["bits_per_char"] != alone["bits_per_char"]
    assert main([*args, "--mix", str(tmp_path / "nothing")]) == 2
    assert "mix.json" in capsys.readouterr().err
