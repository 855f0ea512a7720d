"""Batched generation: one KV cache with a row per prompt gives each row what batch 1 gives."""

import pytest

from persian_poetry.gpt.engine import Engine, Sampling, new_generator
from persian_poetry.writing.bundle import load_model

GREEDY = Sampling(temperature=1.0, top_k=1, top_p=1.0)


@pytest.fixture(scope="module")
def poetry():
    return load_model()


def header(poetry, poet: str, form: str = "ghazal") -> list[int]:
    tok = poetry.tokenizer
    return [tok.token_to_id(t) for t in ("<|poem|>", f"<|poet:{poet}|>", f"<|form:{form}|>")]


def test_every_row_of_a_greedy_batch_is_the_batch_1_decode(poetry):
    engine = Engine(poetry.model)
    prompts = [header(poetry, poet) for poet in ("hafez", "saadi", "attar", "anvari")]
    rows = engine.generate_batch(prompts, GREEDY, new_generator(0), 48)
    assert len(rows) == 4 and all(len(r) == 48 for r in rows)
    for prompt, row in zip(prompts, rows, strict=True):
        alone = list(engine.stream(prompt, 0, GREEDY, new_generator(0), 48))
        assert row == alone
    assert len({tuple(r) for r in rows}) > 1  # the poets' headers lead to different verse


def test_a_sampled_batch_is_fixed_by_its_seed_and_its_rows_differ(poetry):
    engine = Engine(poetry.model)
    prompts = [header(poetry, "hafez")] * 4
    first = engine.generate_batch(prompts, Sampling(), new_generator(7), 32)
    again = engine.generate_batch(prompts, Sampling(), new_generator(7), 32)
    assert first == again
    assert len({tuple(r) for r in first}) == 4  # same prompt, four different poems


def test_unequal_prompts_and_overlong_requests_are_refused(poetry):
    engine = Engine(poetry.model)
    g = new_generator(0)
    with pytest.raises(ValueError, match="equal length"):
        engine.generate_batch([[1, 2, 3], [1, 2]], GREEDY, g, 4)
    with pytest.raises(ValueError, match="exceed the context"):
        engine.generate_batch([[1, 2, 3]], GREEDY, g, poetry.config.context_length)
    with pytest.raises(ValueError, match="at least one prompt"):
        engine.generate_batch([], GREEDY, g, 4)
