"""`Decoder.rewind`: stepping back and writing on gives the logits a model reading the result anew gives.

Constrained decoding (writing/verse.py) takes words back all the time; if a rewind left the cache or
the logits a step off, every poem would be written from the wrong distribution without any error.
Tiny random models, so the checks are exact to float rounding and cost no training. The decoder
runs on the numpy network (`gpt.inference`) with the weights of a PyTorch `GPT`, and its logits are
held to that PyTorch model's plain full forward pass."""

import random

import numpy as np
import pytest
import torch
from conftest import inference_of

from persian_poetry.gpt.engine import Decoder
from persian_poetry.gpt.inference import InferenceGPT
from persian_poetry.gpt.model import GPT, GPTConfig

VOCAB = 40
TIGHT = {"rtol": 0.0, "atol": 1e-6}  # rounding here is ~1e-7 on logits of ~0.3; a wrong context moves them far more


def tiny(context: int = 16, positional: str = "sinusoidal", seed: int = 0) -> tuple[GPT, InferenceGPT]:
    """A PyTorch GPT and the numpy network with its weights, which the decoder runs on."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=VOCAB, context_length=context, n_layer=1, n_head=2, n_embd=16,
                          positional=positional)).eval()
    return model, inference_of(model)


@torch.no_grad()
def forward_last(model: GPT, tokens: list[int]) -> np.ndarray:
    """The next-token logits of the PyTorch model's plain full forward pass over `tokens`, no cache."""
    logits, _, _ = model(torch.tensor([tokens]))
    return logits[0, -1].numpy()


def window(decoder: Decoder) -> list[int]:
    """The tokens the decoder's cache holds: the pinned header, then the end of the history."""
    tail = decoder.cache.length - decoder.pinned
    return decoder.history[:decoder.pinned] + decoder.history[len(decoder.history) - tail:]


def push_all(decoder: Decoder, tokens: list[int]) -> None:
    for token in tokens:
        decoder.push(token)


@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rotary"])
def test_rewinding_and_writing_on_equals_a_fresh_decoder_and_the_full_forward(positional):
    model, runtime = tiny(positional=positional)
    decoder = Decoder(runtime, [1, 2, 3], pinned=1)
    push_all(decoder, [4, 5, 6, 7, 8])
    decoder.rewind(5)  # [1, 2, 3, 4, 5]: 6, 7, 8 taken back
    assert decoder.history == [1, 2, 3, 4, 5]
    push_all(decoder, [9, 10, 11])
    final = [1, 2, 3, 4, 5, 9, 10, 11]
    assert decoder.history == final
    fresh = Decoder(runtime, final, pinned=1)
    assert np.allclose(decoder.logits, fresh.logits, **TIGHT)
    assert np.allclose(decoder.logits, forward_last(model, final), **TIGHT)
    # the rewound decoder and a fresh one go on alike
    decoder.push(12)
    fresh.push(12)
    assert np.allclose(decoder.logits, fresh.logits, **TIGHT)
    assert np.allclose(decoder.logits, forward_last(model, final + [12]), **TIGHT)


def test_rewinding_to_a_length_seen_gives_back_the_logits_from_then():
    model, runtime = tiny()
    decoder = Decoder(runtime, [1, 2, 3], pinned=1)
    seen = {3: decoder.logits.copy()}
    for token in [4, 5, 6, 7]:
        decoder.push(token)
        seen[len(decoder.history)] = decoder.logits.copy()
    for length in (6, 4, 3):  # step back more than once, without writing between
        decoder.rewind(length)
        assert decoder.history == [1, 2, 3, 4, 5, 6, 7][:length]
        assert np.allclose(decoder.logits, seen[length], **TIGHT)
        assert np.allclose(decoder.logits, forward_last(model, decoder.history), **TIGHT)


def test_rewinding_into_the_prompt_recomputes_logits_never_seen():
    """Only the prompt's last logits were ever computed one by one: stepping back inside the prompt
    must compute the logits there, not reuse others."""
    model, runtime = tiny()
    prompt = [1, 2, 3, 4, 5, 6]
    decoder = Decoder(runtime, prompt, pinned=1)
    push_all(decoder, [7, 8])
    decoder.rewind(4)
    assert decoder.history == [1, 2, 3, 4]
    assert np.allclose(decoder.logits, forward_last(model, [1, 2, 3, 4]), **TIGHT)
    push_all(decoder, [9, 10])
    assert np.allclose(decoder.logits, forward_last(model, [1, 2, 3, 4, 9, 10]), **TIGHT)
    assert np.allclose(decoder.logits, Decoder(runtime, [1, 2, 3, 4, 9, 10], pinned=1).logits, **TIGHT)


def test_rewinding_to_the_pinned_header_itself():
    model, runtime = tiny()
    decoder = Decoder(runtime, [1, 2, 3], pinned=3)
    push_all(decoder, [4, 5])
    decoder.rewind(3)  # nothing but the header left
    assert decoder.history == [1, 2, 3]
    assert np.allclose(decoder.logits, forward_last(model, [1, 2, 3]), **TIGHT)
    push_all(decoder, [6])
    assert np.allclose(decoder.logits, forward_last(model, [1, 2, 3, 6]), **TIGHT)


def test_rewinds_that_cannot_be_are_refused_and_change_nothing():
    model, runtime = tiny()
    decoder = Decoder(runtime, [1, 2, 3], pinned=2)
    push_all(decoder, [4, 5])
    history, logits = list(decoder.history), decoder.logits.copy()
    for length in (6, 100, 1, 0, -1):  # forward (no such tokens), or into the pinned header
        with pytest.raises(ValueError, match="cannot rewind"):
            decoder.rewind(length)
        assert decoder.history == history
        assert np.array_equal(decoder.logits, logits)
    decoder.rewind(5)  # to where it is: nothing to do
    assert decoder.history == history and np.array_equal(decoder.logits, logits)
    # With no header, one token must stay: the logits are those after some token.
    unpinned = Decoder(runtime, [1, 2], pinned=0)
    with pytest.raises(ValueError, match="cannot rewind"):
        unpinned.rewind(0)
    unpinned.rewind(1)
    assert np.allclose(unpinned.logits, forward_last(model, [1]), **TIGHT)


def test_the_window_slides_and_a_rewind_inside_it_keeps_to_that_window():
    """Past the context length the window slides (header kept). Stepping back inside the window
    now held gives the logits of a full forward over what is left of it: kept from when the
    history had that length, or computed, for a length from before the slide."""
    context, pinned = 16, 2
    keep = (context - pinned) // 2
    model, runtime = tiny(context=context)
    tokens = [random.Random(1).randrange(VOCAB) for _ in range(40)]
    decoder = Decoder(runtime, tokens[:3], pinned=pinned)
    seen, slides = {}, []
    for token in tokens[3:]:
        before = decoder.cache.length
        decoder.push(token)
        if decoder.cache.length <= before:
            slides.append(len(decoder.history))
        seen[len(decoder.history)] = (decoder.logits.copy(), window(decoder))
        assert decoder.cache.length <= context
        assert np.allclose(decoder.logits, forward_last(model, window(decoder)), **TIGHT)
    assert slides == [17, 25, 33]  # full at 16 tokens; after a slide 2 + 7 are held, full again 8 pushes on
    last = slides[-1]
    assert window(decoder) == tokens[:pinned] + tokens[last - keep:]  # the header stays
    decoder.rewind(last + 1)  # written since the slide: its logits were kept
    logits, then = seen[last + 1]
    assert decoder.history == tokens[:last + 1] and window(decoder) == then
    assert np.allclose(decoder.logits, logits, **TIGHT)
    decoder.rewind(last - 2)  # in the window, but written before the slide: no logits kept for it
    held = tokens[:pinned] + tokens[last - keep:last - 2]
    assert decoder.history == tokens[:last - 2] and window(decoder) == held
    assert np.allclose(decoder.logits, forward_last(model, held), **TIGHT)
    push_all(decoder, [7, 8, 9])  # write on after the rewind
    assert np.allclose(decoder.logits, forward_last(model, held + [7, 8, 9]), **TIGHT)


def test_a_rewind_past_a_slide_rereads_the_header_and_the_last_half_context():
    context, pinned = 16, 2
    keep = (context - pinned) // 2
    model, runtime = tiny(context=context)
    tokens = [random.Random(2).randrange(VOCAB) for _ in range(30)]
    decoder = Decoder(runtime, tokens[:pinned + 1], pinned=pinned)
    push_all(decoder, tokens[pinned + 1:])
    oldest_held = len(decoder.history) - (decoder.cache.length - pinned)
    decoder.rewind(oldest_held - 3)  # back past the window's first token: no longer in the cache
    kept = tokens[:oldest_held - 3]
    assert decoder.history == kept
    reread = kept[:pinned] + kept[pinned:][-keep:]
    assert window(decoder) == reread
    assert np.allclose(decoder.logits, forward_last(model, reread), **TIGHT)
    assert np.allclose(decoder.logits, Decoder(runtime, reread, pinned=pinned).logits, **TIGHT)
    push_all(decoder, [5, 6])
    assert np.allclose(decoder.logits, forward_last(model, reread + [5, 6]), **TIGHT)


@pytest.mark.parametrize("positional,pinned", [("sinusoidal", 3), ("rotary", 0), ("learned", 1)])
def test_any_mix_of_pushes_and_rewinds_keeps_the_logits_of_the_window_held(positional, pinned):
    """Random pushes and word-sized rewinds, sliding the window again and again: after each, the
    history is what was written and not taken back, and the logits are those of the full forward
    over the header and the end of that history which the cache holds."""
    context = 16
    model, runtime = tiny(context=context, positional=positional)
    rng = random.Random(pinned)
    written = [rng.randrange(VOCAB) for _ in range(pinned + 2)]
    decoder = Decoder(runtime, written, pinned=pinned)
    for _ in range(150):
        if rng.random() < 0.3 and len(written) > max(pinned, 1):
            written = written[:max(max(pinned, 1), len(written) - rng.randint(1, 10))]
            decoder.rewind(len(written))
        else:
            written.append(rng.randrange(VOCAB))
            decoder.push(written[-1])
        assert decoder.history == written
        held = window(decoder)
        assert decoder.cache.length <= context
        assert held[:pinned] == written[:pinned]
        assert len(held) > pinned or len(written) == pinned  # some verse is held unless none is left
        assert np.allclose(decoder.logits, forward_last(model, held), **TIGHT)


@pytest.mark.parametrize("pinned", [1, 3])
def test_each_pushed_token_keeps_its_log_probability_through_rewinds_and_slides(pinned):
    """`Decoder.logprobs` (what best-of-N ranks hemistichs by) is, for each token of the history,
    the log-softmax of the logits it was drawn from: the full forward over the window held then."""
    context = 16
    model, runtime = tiny(context=context)
    rng = random.Random(7 + pinned)
    written = [rng.randrange(VOCAB) for _ in range(pinned + 2)]
    decoder = Decoder(runtime, written, pinned=pinned)
    expected = [0.0] * len(written)
    for _ in range(80):
        if rng.random() < 0.3 and len(written) > max(pinned, 1):
            written = written[:max(max(pinned, 1), len(written) - rng.randint(1, 6))]
            expected = expected[:len(written)]
            decoder.rewind(len(written))
        else:
            token = rng.randrange(VOCAB)
            logits = forward_last(model, window(decoder)).astype(np.float64)
            expected.append(float(logits[token] - np.logaddexp.reduce(logits)))
            written.append(token)
            decoder.push(token)
        assert len(decoder.logprobs) == len(decoder.history)
        assert np.allclose(decoder.logprobs, expected, rtol=0.0, atol=1e-5)
