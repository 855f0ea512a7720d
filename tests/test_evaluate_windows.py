"""scoring_windows: the header-pinned sliding evaluation scores every body token exactly once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from persian_poetry.gpt.evaluate import scoring_windows

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
