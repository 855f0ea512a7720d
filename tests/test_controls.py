"""The control header: its exact tokens, what an unknown control becomes, and that writing a poem
prompts the model with the very header training encoded for a poem with the same controls."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from persian_poetry.data.controls import Controls, metre_token_ids, poem_header
from persian_poetry.data.corpus import Poem
from persian_poetry.data.dataset import encode_poem
from persian_poetry.data.tokenizer import CharTokenizer
from persian_poetry.gpt.engine import Engine
from persian_poetry.writing import generate
from persian_poetry.writing.bundle import load_model
from persian_poetry.writing.request import PoemRequest

CONTROLS = Controls(("hafez", "saadi"), ("ghazal", "rubai"), (2, 24))
COUPLET = ["الا یا ایها الساقی ادر کاسا و ناولها", "که عشق آسان نمود اول ولی افتاد مشکل ها"]


def dataset_header(tokenizer, controls: Controls, poet, form, metre, rhyme) -> list[int]:
    """The header ids training encodes for a poem with these controls."""
    poem = Poem(id=1, poet=poet, form=form, metre=metre, rhyme=rhyme, hemistichs=COUPLET, couplet_ends=[False, True])
    return encode_poem(poem, tokenizer, controls)[0]


def test_header_of_known_controls():
    header = poem_header(CONTROLS, "hafez", "ghazal", 2, "ار")
    assert header.tokens() == ["<|poem|>", "<|poet:hafez|>", "<|form:ghazal|>", "<|metre:2|>", "<|rhyme|>", "ار",
                               "<|body|>"]
    assert poem_header(CONTROLS, "saadi", "rubai", 24, "ارما").tokens() == [
        "<|poem|>", "<|poet:saadi|>", "<|form:rubai|>", "<|metre:24|>", "<|rhyme|>", "ارما", "<|body|>"]


def test_open_headers_stop_before_what_the_model_chooses():
    assert poem_header(CONTROLS, "hafez", "ghazal", open_at="metre").tokens() == [
        "<|poem|>", "<|poet:hafez|>", "<|form:ghazal|>"]
    assert poem_header(CONTROLS, "hafez", "ghazal", 24, open_at="rhyme").tokens() == [
        "<|poem|>", "<|poet:hafez|>", "<|form:ghazal|>", "<|metre:24|>"]
    with pytest.raises(ValueError, match="open_at"):
        poem_header(CONTROLS, "hafez", "ghazal", open_at="body")


def test_unknown_controls_become_the_unknown_tokens():
    header = poem_header(CONTROLS, "ferdowsi", "masnavi", 99, None)
    assert header.tokens() == ["<|poem|>", "<|poet:unknown|>", "<|form:unknown|>", "<|metre:unknown|>",
                               "<|rhyme:unknown|>", "<|body|>"]
    assert poem_header(CONTROLS, None, None, None, "").tokens() == header.tokens()
    # Every token of such a header is in the vocabulary a model with these controls has.
    assert set(header.tokens()) <= set(CONTROLS.special_tokens())


def test_rhyme_letters_are_cut_to_the_last_twelve():
    header = poem_header(CONTROLS, "hafez", "ghazal", 2, "ابپتثجچحخدذرزژ")
    assert header.rhyme == "پتثجچحخدذرزژ"
    assert header.tokens()[-2:] == ["پتثجچحخدذرزژ", "<|body|>"]


def test_header_ids_encode_the_header_tokens():
    tok = CharTokenizer(CONTROLS.special_tokens())
    ids = poem_header(CONTROLS, "hafez", "ghazal", 2, "ار").ids(tok)
    names = ["<|poem|>", "<|poet:hafez|>", "<|form:ghazal|>", "<|metre:2|>", "<|rhyme|>"]
    assert ids == [tok.token_to_id(t) for t in names] + tok.encode("ار") + [tok.token_to_id("<|body|>")]
    assert metre_token_ids(tok, CONTROLS) == {2: tok.token_to_id("<|metre:2|>"), 24: tok.token_to_id("<|metre:24|>")}


@pytest.mark.parametrize("poet,form,metre,rhyme", [
    ("hafez", "ghazal", 2, "ار"), ("saadi", "rubai", 24, "ارما"), ("hafez", "rubai", 2, "ابپتثجچحخدذرزژ"),
])
def test_generation_and_training_build_the_same_header(poet, form, metre, rhyme):
    tok = CharTokenizer(CONTROLS.special_tokens())
    poetry = SimpleNamespace(controls=CONTROLS, tokenizer=tok)
    request = PoemRequest(poet=poet, form=form)
    assert generate.header_ids(poetry, request, metre, rhyme) == dataset_header(tok, CONTROLS, poet, form, metre,
                                                                                rhyme)


@pytest.fixture(scope="module")
def shipped():
    return load_model()


@pytest.mark.parametrize("request_kwargs", [
    {"metre": 2, "rhyme": "ار"},  # constrained, metre and rhyme given
    {},  # constrained, the model chooses the metre and the rhyme is drawn
    {"free": True, "metre": 2, "rhyme": "ار", "radif": "ما"},  # free writing with the whole header fixed
])
def test_written_poems_are_prompted_with_the_training_header(shipped, monkeypatch, request_kwargs):
    """The body of a written poem is decoded after exactly the header ids (then the <|beyt|> cue)
    that the dataset encodes for a poem of that poet, form, metre and rhyme."""
    prompts = []
    decoder = Engine.decoder

    def recording(self, prompt, pinned):
        prompts.append(list(prompt))
        return decoder(self, prompt, pinned)

    monkeypatch.setattr(Engine, "decoder", recording)
    poem = generate.write_poem(shipped, PoemRequest(poet="hafez", form="ghazal", couplets=1, seed=1,
                                                    **request_kwargs))
    tok = shipped.tokenizer
    expected = dataset_header(tok, shipped.controls, poem.poet, poem.form, poem.metre, poem.rhyme)
    assert prompts[-1] == expected + [tok.token_to_id("<|beyt|>")]
    assert poem.header == tok.decode(expected)
    if "metre" in request_kwargs:
        assert (poem.metre, poem.rhyme) == (2, "ار" + request_kwargs.get("radif", ""))
