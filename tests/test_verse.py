"""Constrained decoding: metre and rhyme kept word by word, with the shipped model and by hand."""

import gzip
import json

import numpy as np
import pytest
import torch
from conftest import inference_of

from persian_poetry.errors import MetreError, PoetryError
from persian_poetry.gpt.engine import Engine
from persian_poetry.prosody.lexicon import build_lexicon, known_words, load_rhyme_lexicon, poet_words, verse_words
from persian_poetry.prosody.metres import resolve_metre
from persian_poetry.prosody.rhyme import rhyme_key, rhyming_positions
from persian_poetry.prosody.scansion import MetreTracker, scan_hemistich, syllable_counts
from persian_poetry.writing import verse
from persian_poetry.writing.bundle import load_model
from persian_poetry.writing.generate import PoemRequest, write_poem
from persian_poetry.writing.verse import (
    MAX_FUNCTION_RUN,
    MAX_READING_COST,
    MIN_POET_VOCABULARY,
    WRITING_MAX_COST,
    HemistichResult,
    RhymeSpec,
    VerseWriter,
    qafiya_of,
    repeats,
)

HAFEZ = "که عشق آسان نمود اول ولی افتاد مشکل‌ها"  # هزج مثمن سالم, Ganjoor metre 2


@pytest.fixture(scope="module")
def shipped():
    return load_model()


def test_the_tracker_follows_a_real_hemistich_word_by_word():
    tracker = MetreTracker(2, max_cost=MAX_READING_COST)  # the judges' cap
    words = HAFEZ.split()
    assert all(tracker.viable(words[:k]) for k in range(1, len(words) + 1))
    assert tracker.complete(HAFEZ)
    assert not tracker.complete(" ".join(words[:-1]))  # a word short of the metre
    assert not tracker.viable(words + ["دل"])  # a syllable too many
    assert not MetreTracker(2).viable(words + ["دل", "جان", "کار"])  # too many even with every licence
    assert not MetreTracker(24).complete(HAFEZ)  # not a rubai line
    assert scan_hemistich(HAFEZ).metre_id == 2


def test_tracker_endings_and_syllable_counts():
    tracker = MetreTracker(2, max_cost=3.0)
    prefix = "که عشق آسان نمود اول ولی افتاد".split()
    fits = tracker.endings(prefix, ["مشکل‌ها", "یار", "دلهای ما", "کار"])
    assert fits == ["مشکل‌ها"]
    assert syllable_counts("ما") == {1} and 3 in syllable_counts("مشکل‌ها")
    assert all(tracker.room(n) >= 1 for n in tracker.nodes(prefix))


@pytest.mark.parametrize("value,metre_id", [(7, 7), ("7", 7), ("رمل مثمن مخبون محذوف", 7),
                                            ("فعلاتن فعلاتن فعلاتن فعلن", 7), ("هزج مثمن سالم", 2)])
def test_metres_by_id_name_or_feet(value, metre_id):
    assert resolve_metre(value).id == metre_id


def test_unknown_and_ambiguous_metres_are_clear_errors():
    with pytest.raises(MetreError, match="ambiguous"):
        resolve_metre("رمل")
    with pytest.raises(MetreError, match="unknown metre"):
        resolve_metre("ثثث")


def test_rhyme_spec_and_qafiya():
    spec = RhymeSpec("ار", ("ما",))
    assert spec.letters == "ارما"
    assert spec.holds("به دست تو سپردم دل بی‌قرار ما")
    assert not spec.holds("به دست تو سپردم دل بی‌قرار")
    assert not spec.holds("به دست تو سپردم دل ما")
    assert qafiya_of("یار") == "ار" and qafiya_of("جان") == "ان"


def test_the_rhyme_tables_come_back_from_the_cache_as_derived_from_the_lexicon(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSIAN_POETRY_CACHE", str(tmp_path))
    try:
        verse._rhyme_tables.cache_clear()
        derived = verse._rhyme_tables()  # derived, and written to the cache
        verse._rhyme_tables.cache_clear()
        assert list((tmp_path / "derived").glob("rhyme-tables-*.json"))
        assert verse._rhyme_tables() == derived  # read back
    finally:
        verse._rhyme_tables.cache_clear()
    lexicon = load_rhyme_lexicon()
    index, qafiyas = derived
    assert [w for w, _ in index] == [w for w, n in lexicon.items() if n >= verse.MIN_RHYME_COUNT]
    assert all(key == rhyme_key(w) for w, key in index[::97])
    assert len(qafiyas) == verse.COMMON_QAFIYAS
    for q in qafiyas[:5]:
        assert sum(qafiya_of(w) == q for w in lexicon) >= verse.MIN_QAFIYA_WORDS


def test_decoder_rewinds_to_the_same_logits_as_a_fresh_start(shipped):
    engine = Engine(shipped.model)
    prompt = shipped.tokenizer.encode("الا یا ایها الساقی")
    decoder = engine.decoder(prompt, 1)
    extra = shipped.tokenizer.encode(" ادر کاسا و ناولها")
    for token in extra:
        decoder.push(token)
    decoder.rewind(len(prompt) + 2)
    fresh = engine.decoder(prompt + extra[:2], 1)
    assert decoder.history == fresh.history
    np.testing.assert_allclose(decoder.logits, fresh.logits, rtol=1e-5, atol=1e-5)


def test_decoder_rewinds_across_a_window_slide(tiny_model_dir):
    poetry = load_model(tiny_model_dir)  # a 64-token context
    engine = Engine(poetry.model)
    tokens = poetry.tokenizer.encode("الا یا ایها الساقی ادر کاسا و ناولها که عشق آسان نمود اول ولی افتاد مشکل‌ها")
    decoder = engine.decoder(tokens[:3], 3)
    for token in tokens[3:]:
        decoder.push(token)
    assert len(decoder.history) > 64
    decoder.rewind(len(tokens) - 40)
    assert decoder.history == tokens[:len(tokens) - 40]
    window = tokens[:3] + tokens[3:len(tokens) - 40][-((64 - 3) // 2):]
    fresh = engine.decoder(window, 3)
    np.testing.assert_allclose(decoder.logits, fresh.logits, rtol=1e-5, atol=1e-5)


def _check_poem(poem, metre: int, spec: RhymeSpec, form: str):
    hemistichs = [h for pair in poem.couplets for h in pair]
    tracker = MetreTracker(metre, max_cost=WRITING_MAX_COST)  # the writer's cap, lower than the judges'
    assert WRITING_MAX_COST < MAX_READING_COST
    kept = [i for i in range(len(hemistichs)) if i not in poem.constraints["relaxed"]]
    assert len(kept) >= len(hemistichs) - 1  # at most one hemistich may give up the metre
    assert all(tracker.complete(hemistichs[i]) for i in kept)
    assert all(spec.holds(hemistichs[i]) for i in rhyming_positions(len(hemistichs), form))
    own = poet_words(poem.poet)
    words = own if len(own) >= MIN_POET_VOCABULARY else known_words()  # Khayyam's is too small
    for i in kept:
        assert all(w in words for w in verse_words(hemistichs[i]))


def test_a_ghazal_in_metre_and_rhyme(shipped):
    poem = write_poem(shipped, PoemRequest(poet="hafez", form="ghazal", couplets=3, metre="رمل مثمن مخبون محذوف",
                                           rhyme="ار", seed=1))
    assert len(poem.couplets) == 3 and poem.metre == 7
    assert "<|metre:7|><|rhyme|>ار<|body|>" in poem.header
    _check_poem(poem, 7, RhymeSpec("ار"), "ghazal")


def test_a_ghazal_with_a_radif(shipped):
    poem = write_poem(shipped, PoemRequest(poet="saadi", form="ghazal", couplets=2, metre=2, rhyme="ان", radif="ما",
                                           seed=2))
    assert poem.rhyme == "انما" and poem.radif == "ما"
    _check_poem(poem, 2, RhymeSpec("ان", ("ما",)), "ghazal")
    assert all(h.endswith(" ما") for h in (poem.couplets[0][0], poem.couplets[0][1], poem.couplets[1][1]))


def test_a_rubai_keeps_lines_one_two_and_four(shipped):
    poem = write_poem(shipped, PoemRequest(poet="khayyam", form="rubai", rhyme="ان", seed=3))
    assert poem.metre == 24 and len(poem.couplets) == 2
    _check_poem(poem, 24, RhymeSpec("ان"), "rubai")


def test_repeats_catches_a_word_said_twice_and_a_run_of_function_words():
    assert repeats("ز حال تو تو".split())  # the same word twice
    assert repeats("بر تو با تو".split())
    assert not repeats("دل و جان و".split())  # «و» joins a list as often as it likes
    assert not repeats("که از تو".split())  # three function words in a row are common Persian
    assert MAX_FUNCTION_RUN == 3 and repeats("که از بر این".split())  # a fourth is not
    assert not repeats("که از بر دل".split())


@pytest.mark.parametrize("poet, form, seed", [("hafez", "ghazal", 1000), ("saadi", "ghazal", 1001),
                                              ("ferdousi", "masnavi", 1002)])
def test_no_word_is_said_twice_in_a_hemistich_outside_the_radif(shipped, poet, form, seed):
    poem = write_poem(shipped, PoemRequest(poet=poet, form=form, couplets=4, seed=seed))
    radif = poem.radif.split()
    hemistichs = [h for couplet in poem.couplets for h in couplet]
    for i, hemistich in enumerate(hemistichs):
        words = hemistich.split()
        if radif and words[-len(radif):] == radif:
            words = words[:-len(radif)]
        if i not in poem.constraints["relaxed"]:  # a relaxed hemistich is the model alone
            assert not any(repeats(words[:k]) for k in range(1, len(words) + 1)), hemistich


def test_a_given_first_hemistich_is_continued(shipped):
    poem = write_poem(shipped, PoemRequest(poet="hafez", form="ghazal", couplets=2, first=[HAFEZ], seed=4))
    assert poem.couplets[0][0] == HAFEZ
    assert poem.metre == 2  # read from the given hemistich
    assert poem.constraints["qafiya"] == "ها"  # from its last word


def test_the_free_path_stays_available(shipped):
    poem = write_poem(shipped, PoemRequest(couplets=2, seed=5, free=True))
    assert len(poem.couplets) == 2 and poem.constraints == {}


def test_the_lexicon_is_built_from_the_train_split(tmp_path):
    from persian_poetry.data.corpus import split_of

    ids = [i for i in range(1, 400) if split_of(i) == "train"][:3]
    records = [{"Id": pid, "Poet": "hafez", "PoemFormat": "Ghazal", "Metre": None, "RhymeLetters": None,
                "Verses": [{"Position": "Right", "CoupletIndex": 0, "Text": "دل من به یار"},
                           {"Position": "Left", "CoupletIndex": 0, "Text": "غم دل به کار"}]} for pid in ids]
    data = tmp_path / "poems.jsonl.gz"
    with gzip.open(data, "wt", encoding="utf-8") as f:
        f.write("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")
    out = tmp_path / "lexicon.tsv.gz"
    assert build_lexicon(data, out=out, progress=False) == 6  # دل, به ×6; یار, کار, من, غم ×3
    words = known_words(out)
    assert words["دل"] == 6 and words["یار"] == 3
    assert set(load_rhyme_lexicon(out)) == {"یار", "کار", "به"}  # last two words of each hemistich
    assert poet_words("hafez", out) == {"دل", "من", "به", "یار", "غم", "کار"} and not poet_words("saadi", out)


def _logprob_per_char(poetry, prefix: list[int], tokens: list[int], chars: int) -> float:
    """The model's log-probability of `tokens` after `prefix`, per character, by one full forward."""
    ids = prefix + tokens
    logits, _ = poetry.model.forward(np.array([ids]))
    logits = logits[0].astype(np.float64)
    at = range(len(prefix) - 1, len(ids) - 1)
    return sum(logits[i, ids[i + 1]] - np.logaddexp.reduce(logits[i]) for i in at) / chars


def test_best_of_keeps_the_likeliest_candidate_of_each_hemistich(shipped, monkeypatch):
    """best_of=3: every hemistich is written three times from the same place; the poem keeps, at
    each place, the candidate with the highest log-probability per character under the model alone
    (scored here by a fresh forward pass, not by the decoder's bookkeeping)."""
    written = []  # (history before, candidate tokens, text, relaxed) of every candidate
    original = VerseWriter.write

    def recording(self, separator, rhyme):
        start = len(self.decoder.history)
        result = original(self, separator, rhyme)
        history = self.decoder.history
        written.append((list(history[:start]), list(history[start:]), result.text, result.relaxed))
        return result

    monkeypatch.setattr(VerseWriter, "write", recording)
    poem = write_poem(shipped, PoemRequest(poet="hafez", form="ghazal", couplets=2, metre=2, seed=11, best_of=3))
    assert len(written) == 4 * 3
    hemistichs = [h for couplet in poem.couplets for h in couplet]
    for place in range(4):
        candidates = written[3 * place:3 * place + 3]
        assert all(c[0] == candidates[0][0] for c in candidates)  # all written from the same place
        scores = [(not relaxed, _logprob_per_char(shipped, before, tokens, len(text) + 1))
                  for before, tokens, text, relaxed in candidates]
        best = max(range(3), key=lambda i: scores[i])
        assert hemistichs[place] == candidates[best][2]
        if place < 3:  # the next place is written after the kept candidate
            assert written[3 * place + 3][0] == candidates[best][0] + candidates[best][1]
    with pytest.raises(PoetryError, match="best-of"):
        write_poem(shipped, PoemRequest(best_of=0))
    with pytest.raises(PoetryError, match="free"):
        write_poem(shipped, PoemRequest(best_of=2, free=True))


def test_bad_constraint_requests(shipped):
    with pytest.raises(PoetryError, match="rubai"):
        write_poem(shipped, PoemRequest(form="rubai", metre=7))
    with pytest.raises(PoetryError, match="ambiguous"):
        write_poem(shipped, PoemRequest(metre="رمل"))


def test_a_token_that_begins_no_known_word_is_refused_before_it_is_written(shipped):
    from persian_poetry.gpt.engine import Engine, Sampling, new_generator
    from persian_poetry.writing.verse import VerseWriter, _prefixes
    tok = shipped.tokenizer
    decoder = Engine(shipped.model).decoder([tok.token_to_id("<|body|>")], 1)
    everything = lambda ids: np.ones(tok.vocab_size, dtype=bool)  # noqa: E731
    writer = VerseWriter(shipped, decoder, Sampling(), new_generator(0), 2, everything, poet="hafez")
    start = len(decoder.history)
    written = tok.encode("که عشق آسان نمود اول ولی افتاد مشکل")
    for t in written[:-1]:
        decoder.push(t)
    assert writer._could_be_known(start, written[-1])  # مشکل is a word of Hafez
    ids = {"ژ": tok.encode("ژ"), " رزم": writer._word_tokens("رزم"), " دل": writer._word_tokens("دل")}
    assert all(len(v) == 1 for v in ids.values()), ids
    assert not writer._could_be_known(start, ids["ژ"][0])  # مشکلژ begins no word
    assert not writer._could_be_known(start, ids[" رزم"][0])  # Ferdowsi's battle is no word of Hafez
    assert writer._could_be_known(start, ids[" دل"][0])  # a new word that begins دل, دلبر, ...
    assert {"م", "مش", "مشک", "مشکل"} <= _prefixes("hafez") and "مشکلژ" not in _prefixes("hafez")
    assert _prefixes(None) >= set(known_words())


def test_taking_a_word_back_rewinds_bans_its_first_token_and_forgets_what_came_after():
    from persian_poetry.gpt.model import GPT, GPTConfig
    from persian_poetry.writing.verse import _Draft

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, context_length=32, n_layer=1, n_head=2, n_embd=16)).eval()
    decoder = Engine(inference_of(model)).decoder([1, 2], 1)
    draft = _Draft.begin(decoder)
    assert (draft.start, draft.word_starts, draft.position) == (2, [2], 2)
    for token in [10, 11, 12, 13, 14]:  # words 10 11 | 12 13 | 14, begun at 2, 4 and 6
        if token in (12, 14):
            draft.word_starts.append(draft.position)
        decoder.push(token)
    draft.refuse(5, 20)
    draft.refuse(7, 21)
    assert draft.dead_word() == 6  # a dead end inside a word takes that word back
    draft.take_back_word()  # 14
    assert decoder.history == [1, 2, 10, 11, 12, 13] and draft.tries == 1
    assert draft.bans == {5: {20}, 6: {14}} and draft.word_starts == [2, 4, 6]
    assert draft.dead_word() == 4  # at a word's start, nothing of it written: the word before
    draft.take_back(draft.dead_word())  # 12 13, and with it what was refused after 12
    assert decoder.history == [1, 2, 10, 11] and draft.tries == 2
    assert draft.bans == {4: {12}} and draft.word_starts == [2, 4]
    assert draft.refused(4) == {12} and draft.refused(3) == set()


def test_a_hemistich_written_with_the_metre_relaxed_still_says_no_word_twice(shipped):
    """When the metre is given up (`VerseWriter._free`), the repetition rule still holds: at 1.5 the
    model alone repeats itself within a line often enough that forty lines show it without the rule."""
    from persian_poetry.gpt.engine import Engine, Sampling, new_generator
    from persian_poetry.writing.generate import _separator_for

    tok = shipped.tokenizer
    separator = _separator_for(shipped, 0, 7)

    def everything(ids):
        return np.ones(tok.vocab_size, dtype=bool)

    lines = []
    for seed in range(40):
        decoder = Engine(shipped.model).decoder([tok.token_to_id("<|body|>")], 1)
        writer = VerseWriter(shipped, decoder, Sampling(temperature=1.5), new_generator(seed), 2, everything,
                             poet="hafez")
        writer._start = len(decoder.history)
        lines.append(writer._free(separator, None, HemistichResult("")))
    assert len([line for line in lines if verse_words(line)]) >= 30
    for line in lines:
        words = verse_words(line)
        assert not any(repeats(words[:i + 1]) for i in range(1, len(words))), line
