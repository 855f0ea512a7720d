import pytest

from persian_poetry.errors import ModelLoadError, PoetryError
from persian_poetry.text import ALPHABET
from persian_poetry.writing.bundle import load_model
from persian_poetry.writing.generate import VOWEL_MARKS, PoemRequest, write_poem


@pytest.fixture(scope="module")
def poetry(tiny_model_dir):
    return load_model(tiny_model_dir)


@pytest.mark.parametrize("form,couplets", [("ghazal", 1), ("ghazal", 5), ("rubai", None)])
def test_exact_number_of_couplets_each_with_two_hemistichs(poetry, form, couplets):
    poem = write_poem(poetry, PoemRequest(poet="hafez", form=form, couplets=couplets, seed=3, free=True))
    assert len(poem.couplets) == (couplets or 2)
    for first, second in poem.couplets:
        assert first and second
        assert set(first + second) <= ALPHABET
        assert not set(first + second) & set(VOWEL_MARKS)  # plain script unless vowel_marks=True
    assert poem.metre in poetry.controls.metres
    assert poem.header.startswith("<|poem|><|poet:hafez|><|form:" + form)


def test_same_seed_same_poem_and_another_seed_another(poetry):
    request = PoemRequest(poet="saadi", form="ghazal", couplets=3, seed=11, free=True)
    first = write_poem(poetry, request)
    assert write_poem(poetry, request).couplets == first.couplets
    other = PoemRequest(poet="saadi", form="ghazal", couplets=3, seed=12, free=True)
    assert write_poem(poetry, other).couplets != first.couplets


def test_stream_events_spell_the_poem(poetry):
    events = []
    poem = write_poem(poetry, PoemRequest(couplets=3, seed=5, free=True),
                      on_event=lambda kind, text: events.append((kind, text)))
    kinds = [k for k, _ in events if k != "text"]
    assert kinds == ["hemi", "beyt", "hemi", "beyt", "hemi", "end"]
    streamed, hemistichs = "", []
    for kind, text in events:
        if kind == "text":
            streamed += text
        else:
            hemistichs.append(streamed)
            streamed = ""
    from persian_poetry.text import normalize

    assert [normalize(h) for h in hemistichs] == [h for pair in poem.couplets for h in pair]


def test_a_poem_longer_than_the_context_keeps_going(poetry):
    # The tiny model has a 64-token context; 12 couplets are several times that.
    poem = write_poem(poetry, PoemRequest(couplets=12, seed=1, free=True))
    assert len(poem.couplets) == 12 and poem.tokens > poetry.config.context_length


def test_fixed_metre_and_rhyme_go_into_the_header(poetry):
    for free in (True, False):
        poem = write_poem(poetry, PoemRequest(metre=24, rhyme="ار", couplets=1, seed=2, free=free))
        assert poem.metre == 24 and poem.rhyme == "ار"
        assert "<|metre:24|><|rhyme|>ار<|body|>" in poem.header


def test_constraints_that_cannot_be_met_still_give_the_exact_form(poetry, monkeypatch):
    # No word fits the metre (the tracker is made to refuse every one): every hemistich ends with
    # the metre given up (reported), yet the poem has its couplets and its rhyme words.
    from persian_poetry.prosody.scansion import MetreTracker
    monkeypatch.setattr(MetreTracker, "viable", lambda self, words: False)
    poem = write_poem(poetry, PoemRequest(couplets=1, seed=3, rhyme="از", metre=3))
    assert len(poem.couplets) == 1 and all(poem.couplets[0])
    assert poem.constraints["relaxed"] == [0, 1]
    assert all(h.endswith("از") for h in poem.couplets[0])


@pytest.mark.parametrize("request_kwargs,message", [
    (dict(poet="shakespeare"), "unknown poet 'shakespeare'; choose from: hafez, saadi"),
    (dict(form="sonnet"), "unknown form 'sonnet'; choose from:"),
    (dict(couplets=0), "couplets must be between 1 and 40"),
    (dict(couplets=41), "couplets must be between 1 and 40"),
    (dict(temperature=0), "temperature must be > 0"),
    (dict(top_p=0), "top_p"),
    (dict(metre=999), "unknown metre 999"),
    (dict(metre=3, rhyme="abc"), "holds no Persian letters"),
    (dict(rhyme="ار", free=True), "only be fixed together with a metre"),
    (dict(radif="ما"), "a radif needs a rhyme"),
    (dict(form="rubai", metre=3), "a rubai is written in the rubai metre"),
    (dict(metre="no such metre"), "unknown metre 'no such metre'"),
    (dict(first=["x"] * 14), "first: give 1 to 13"),
    (dict(seed=-1), "seed must be between 0"),
    (dict(seed=2**64), "seed must be between 0"),
    (dict(rhyme="ار" * 100, metre=3), "at most 60"),
])
def test_bad_requests_are_clear_errors(poetry, request_kwargs, message):
    with pytest.raises(PoetryError, match=message.replace("(", r"\(")):
        write_poem(poetry, PoemRequest(**request_kwargs))


def test_damaged_or_missing_model_directories_are_refused(tiny_model_dir, tmp_path):
    import shutil

    with pytest.raises(ModelLoadError, match="not found"):
        load_model(tmp_path / "nothing")
    partial = tmp_path / "partial"
    shutil.copytree(tiny_model_dir, partial)
    (partial / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="missing tokenizer.json"):
        load_model(partial)
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_model_dir, damaged)
    weights = damaged / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        load_model(damaged)


def test_the_shipped_model_loads_offline_and_writes_a_ghazal():
    poetry = load_model()  # src/persian_poetry/default_model, no network, no ../shared
    assert {"hafez", "saadi", "moulavi", "ferdousi", "khayyam"} <= set(poetry.controls.poets)
    assert {"ghazal", "rubai", "masnavi", "qasida"} <= set(poetry.controls.forms)
    report = __import__("json").loads((poetry.directory / "report.json").read_text(encoding="utf-8"))
    assert report["command_line"][:2] == ["persian-poetry", "train"] and report["seed"] == 1337
    poem = write_poem(poetry, PoemRequest(poet="hafez", form="ghazal", couplets=2, seed=1, free=True))
    again = write_poem(poetry, PoemRequest(poet="hafez", form="ghazal", couplets=2, seed=1, free=True))
    assert len(poem.couplets) == 2 and poem.couplets == again.couplets
