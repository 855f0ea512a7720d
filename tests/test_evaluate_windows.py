"""Bits per character: `scoring_windows` (the header-pinned sliding evaluation) scores every body
token exactly once, and `evaluate_split` turns the scores into bits/char, checked against known
values: a uniform model, and a stub whose probabilities are written out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from persian_poetry.data.controls import Controls
from persian_poetry.data.corpus import Poem
from persian_poetry.data.dataset import EncodedSplit, encode_poems
from persian_poetry.data.tokenizer import CharTokenizer
from persian_poetry.gpt.evaluate import EvalResult, evaluate_split, scoring_windows
from persian_poetry.gpt.model import GPT, GPTConfig

BODY_BASE = 1000  # body token k has id BODY_BASE + k; header tokens are 0..hl-1: every id says its place


@st.composite
def cases(draw):
    context = draw(st.integers(12, 64))
    header_len = draw(st.integers(0, min(10, (context - 1) // 2)))  # header < context // 2
    body_len = draw(st.integers(1, 300))
    return header_len, body_len, context


def check(header_len: int, body_len: int, context: int) -> None:
    header = np.arange(header_len, dtype=np.uint16)
    body = np.arange(BODY_BASE, BODY_BASE + body_len, dtype=np.uint16)
    seq = np.concatenate([header, body]).astype(np.int64)
    scored = np.zeros(body_len, dtype=int)
    windows = list(scoring_windows(header, body, context))
    for inputs, targets in windows:
        assert inputs.dtype == np.int64 and targets.dtype == np.int64
        assert len(inputs) == len(targets)
        assert 1 <= len(inputs) <= context
        assert np.array_equal(inputs[:header_len], header)  # the header is pinned at the start
        # After the header, the inputs are one contiguous run of the body.
        rest = inputs[header_len:] - BODY_BASE
        assert np.all(rest >= 0)
        if len(rest):
            assert np.array_equal(rest, np.arange(rest[0], rest[0] + len(rest)))
        positions = np.flatnonzero(targets != -1)
        assert len(positions) > 0  # no window is wasted
        for j in positions:
            k = int(targets[j]) - BODY_BASE
            assert 0 <= k < body_len, "only body tokens are scored"
            scored[k] += 1
            # The input just before the target is the true preceding token of the poem.
            assert inputs[j] == seq[header_len + k - 1]
            # ...and so is everything between the header and it.
            assert np.array_equal(inputs[header_len:j + 1], seq[header_len + k - (j + 1 - header_len):header_len + k])
    expected = np.ones(body_len, dtype=int)
    if header_len == 0:
        expected[0] = 0  # nothing to predict the first token of a headerless text from
    assert np.array_equal(scored, expected), np.flatnonzero(scored != expected)


@settings(max_examples=400, deadline=None)
@given(cases())
@example((0, 1, 12))
@example((5, 1, 12))
@example((0, 13, 12))
@example((5, 300, 12))
@example((10, 300, 21))
@example((0, 300, 64))
def test_every_body_token_is_scored_once(case):
    check(*case)


@settings(max_examples=200, deadline=None)
@given(cases())
def test_each_scored_token_has_at_least_half_a_context_of_text(case):
    header_len, body_len, context = case
    header = np.arange(header_len)
    body = np.arange(BODY_BASE, BODY_BASE + body_len)
    room = context - header_len
    for inputs, targets in scoring_windows(header, body, context):
        for j in np.flatnonzero(targets != -1):
            k = int(targets[j]) - BODY_BASE
            seen = j + 1 - header_len  # body tokens before the target inside this window
            # As much of the poem as is there, up to about half the room after the header.
            assert seen >= min(k, room // 2)


def test_first_window_takes_as_much_as_fits():
    header, body = np.arange(4), np.arange(BODY_BASE, BODY_BASE + 100)
    inputs, targets = next(scoring_windows(header, body, 16))
    assert len(inputs) == 16
    assert np.array_equal(targets[3:], body[:13])
    assert np.all(targets[:3] == -1)


def test_header_that_leaves_no_room_raises():
    with pytest.raises(ValueError):
        list(scoring_windows(np.arange(11), np.arange(5), 12))


def test_headerless_single_token_has_nothing_to_score():
    assert list(scoring_windows(np.arange(0), np.arange(1), 16)) == []


# --- bits per character against known values ------------------------------------------------------


def split_of_poems(poems: list[tuple[list[int], list[int], int]]) -> EncodedSplit:
    """An EncodedSplit written out by hand: (header ids, body ids, body characters) per poem."""
    tokens, index = [], []
    for header, body, chars in poems:
        index.append((len(tokens), len(header), len(body), chars))
        tokens += header + body
    return EncodedSplit(np.asarray(tokens, dtype=np.uint16), np.asarray(index, dtype=np.int64).reshape(-1, 4))


def uniform_gpt(vocab_size: int, context: int) -> GPT:
    """A real GPT whose final norm is zeroed: every logit is 0, every next token has probability 1/V."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab_size, context_length=context, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        model.ln_f.weight.zero_()  # LayerNorm without bias: its output, hence the logits, are all 0
    return model


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_a_uniform_model_scores_log2_v_bits_per_token(batch_size):
    vocab, context = 37, 16
    rng = np.random.default_rng(0)
    # Bodies shorter than, as long as and much longer than the context (several windows each).
    poems = [([1, 2, 3], rng.integers(0, vocab, 5).tolist(), 7),
             ([4, 5], rng.integers(0, vocab, 14).tolist(), 9),
             ([6, 7, 8, 9], rng.integers(0, vocab, 101).tolist(), 150),
             ([10], [11], 2)]
    model = uniform_gpt(vocab, context)
    model.train()
    result = evaluate_split(model, split_of_poems(poems), batch_size=batch_size)
    tokens, chars = 5 + 14 + 101 + 1, 7 + 9 + 150 + 2
    assert (result.poems, result.tokens, result.characters) == (4, tokens, chars)
    # Every body token scored once at -log2(1/V) bits; header tokens not at all.
    assert result.bits_per_char == pytest.approx(math.log2(vocab) * tokens / chars, rel=1e-6)
    assert result.nats_per_char == pytest.approx(math.log(vocab) * tokens / chars, rel=1e-6)
    assert model.training  # put back as it was
    # `limit`: only the first poems count.
    first = evaluate_split(model, split_of_poems(poems), limit=2, batch_size=batch_size)
    assert (first.poems, first.tokens, first.characters) == (2, 19, 16)
    assert first.bits_per_char == pytest.approx(math.log2(vocab) * 19 / 16, rel=1e-6)


def test_a_uniform_char_model_scores_exactly_log2_v_bits_per_char():
    """With the character tokenizer each character of a hemistich is one token and each separator
    one token and one character: a uniform model's bits/char is log2(V), whatever the poems."""
    hemistichs = ["الا یا ایها الساقی ادر کاسا و ناولها", "که عشق آسان نمود اول ولی افتاد مشکل ها",
                  "به بوی نافه ای کاخر صبا زان طره بگشاید", "ز تاب جعد مشکینش چه خون افتاد در دل ها"]
    poems = [Poem(id=1, poet="hafez", form="ghazal", metre=2, rhyme="ها", hemistichs=hemistichs,
                  couplet_ends=[False, True, False, True]),
             Poem(id=2, poet="saadi", form="rubai", metre=24, hemistichs=hemistichs[:2], couplet_ends=[False, True])]
    controls = Controls.from_poems(poems)
    tokenizer = CharTokenizer(controls.special_tokens())
    split = encode_poems(poems, tokenizer, controls)
    result = evaluate_split(uniform_gpt(tokenizer.vocab_size, 48), split, batch_size=4)
    chars = sum(len(h) + 1 for h in hemistichs) + len(hemistichs[0]) + len(hemistichs[1]) + 2
    assert result.characters == result.tokens == chars
    assert result.bits_per_char == pytest.approx(math.log2(tokenizer.vocab_size), rel=1e-6)


class MarkovStub(torch.nn.Module):
    """A stand-in for the GPT over 4 tokens: after token t it gives t+1 (mod 4) probability 1/2
    and each other token 1/6, whatever came before."""

    def __init__(self, context: int):
        super().__init__()
        self.config = GPTConfig(vocab_size=4, context_length=context, n_layer=1, n_head=1, n_embd=4)
        self.token_embedding = torch.nn.Embedding(4, 1)  # only where evaluate_split looks for the device
        probs = torch.full((4, 4), 1 / 6)
        probs[torch.arange(4), (torch.arange(4) + 1) % 4] = 1 / 2
        self.register_buffer("log_probs", probs.log())

    def forward(self, idx):
        return self.log_probs[idx], None, None


def test_bits_per_char_of_a_hand_computed_case():
    # Header [0]; body 1 2 0 3: 0->1 and 1->2 are the likely steps (1 bit each), 2->0 and 0->3 are
    # not (log2 6 bits each). 5 characters: (2 + 2 log2 6) / 5 bits per character.
    result = evaluate_split(MarkovStub(context=8), split_of_poems([([0], [1, 2, 0, 3], 5)]))
    assert (result.tokens, result.characters) == (4, 5)
    assert result.bits_per_char == pytest.approx((2 + 2 * math.log2(6)) / 5, rel=1e-6)
    assert result.bits_per_char == pytest.approx(1.4339850002884624, rel=1e-6)
    # Without a header the first token is given, not scored: 1->2, 2->0, 0->3 remain.
    headerless = evaluate_split(MarkovStub(context=8), split_of_poems([([], [1, 2, 0, 3], 4)]))
    assert headerless.bits_per_char == pytest.approx((1 + 2 * math.log2(6)) / 4, rel=1e-6)
    assert isinstance(result, EvalResult) and result.to_dict()["nats_per_char"] == pytest.approx(
        result.bits_per_char * math.log(2))


@pytest.mark.parametrize("context", [4, 5, 8, 64])
def test_bits_per_char_of_long_poems_sum_each_transition_once(context):
    """The stub looks only at the previous token, so however a poem is cut into windows its score
    is the sum over its transitions (header's last token -> body[0], then body[i-1] -> body[i])."""
    rng = np.random.default_rng(context)
    poems = [([0, 3], rng.integers(0, 4, 40).tolist(), 50), ([2], rng.integers(0, 4, 9).tolist(), 11)]
    bits = 0.0
    for header, body, _ in poems:
        for previous, token in zip([header[-1]] + body[:-1], body, strict=True):
            bits += 1.0 if token == (previous + 1) % 4 else math.log2(6)
    result = evaluate_split(MarkovStub(context), split_of_poems(poems), batch_size=2)
    assert result.bits_per_char == pytest.approx(bits / 61, rel=1e-6)
