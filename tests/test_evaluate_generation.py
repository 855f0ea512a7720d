"""The judges of evaluate-generation, on real verse and on hand-made cases, and the whole run on
the shipped model and a corpus written here."""

import json
import random
import statistics

import numpy as np
import pytest
import torch
from conftest import ganjoor_record, hafez_ghazals

from persian_poetry.data.corpus import OFFERED_POETS, split_of
from persian_poetry.judges.evaluate_generation import (
    WINDOW,
    TrainText,
    _window_hashes,
    classifier_metres,
    distinct_2,
    evaluate_generation,
    longest_shared_run,
    make_requests,
    score_poem,
    summarize,
)
from persian_poetry.judges.poet import classify_poet, load_poet_classifier
from persian_poetry.prosody.metres import load_catalogue
from persian_poetry.text import normalize
from persian_poetry.writing.bundle import load_model
from persian_poetry.writing.generate import PoemRequest, write_poem
from persian_poetry.writing.request import DEFAULT_STRENGTH, FORM_COUPLETS

GHAZAL_1 = hafez_ghazals()[0]  # الا یا ایها الساقی ...: هزج مثمن سالم (Ganjoor metre 2), rhyme "ها"


def _train(texts: list[str]) -> TrainText:
    text = "\n".join(texts)
    return TrainText(set(texts), text, np.unique(_window_hashes(text)),
                     {("ghazal", 2): [("ها", ())], ("rubai", 24): [("ار", ())]})


def test_a_real_ghazal_scores_as_one():
    couplets = [tuple(GHAZAL_1[i:i + 2]) for i in range(0, 8, 2)]
    request = PoemRequest(poet="hafez", form="ghazal", couplets=4, metre=2, rhyme="ها")
    score = score_poem(request, couplets, 1.0, _train(GHAZAL_1))
    assert score.form_ok and score.hemistichs == 8
    assert score.metre_ok >= 6  # the scanner reads most of Hafez in his metre within the cost cap
    assert score.rhyme_ok == score.rhyme_positions == 5  # hemistichs 1, 2, 4, 6, 8
    assert score.verbatim == 8 and score.longest_run == max(len(h) for h in GHAZAL_1[:8])


def test_wrong_requests_score_low():
    couplets = [tuple(GHAZAL_1[i:i + 2]) for i in range(0, 4, 2)]
    request = PoemRequest(poet="hafez", form="ghazal", couplets=3, metre=24, rhyme="ار")
    score = score_poem(request, couplets, 1.0, _train(["چیزی دیگر"]))
    assert not score.form_ok  # two couplets where three were asked for
    assert score.metre_ok == 0 and score.rhyme_ok == 0 and score.verbatim == 0 and score.longest_run == 0


def test_longest_shared_run_finds_the_real_overlap():
    train = _train(["دل می‌رود ز دستم صاحب‌دلان خدا را"])
    assert longest_shared_run("آه که دل می‌رود ز دستم امشب", train) == len("دل می‌رود ز دستم ")  # the text starts at دل
    assert longest_shared_run("کاملا چیز دیگری", train) == 0


def test_distinct_2_and_summary():
    assert distinct_2([[["a b c", "a b c"]]]) == 0.0  # Latin letters are not verse words: no pairs
    assert distinct_2([[["دل و جان", "دل و جان"]]]) == 0.5
    requests = make_requests(8, [24, 2], _train(GHAZAL_1))
    assert [r.form for r in requests[:4]] == ["ghazal", "rubai", "masnavi", "qasida"]
    assert all(r.metre == 24 for r in requests if r.form == "rubai")
    assert requests[0].rhyme == "ها" and requests[0].seed != requests[1].seed
    couplets = [tuple(GHAZAL_1[i:i + 2]) for i in range(0, 8, 2)]
    score = score_poem(PoemRequest(form="ghazal", couplets=4, metre=2, rhyme="ها"), couplets, 2.0, None)
    summary = summarize([score], free=False, metres=[2])
    assert summary["form_share"] == 1.0 and summary["rhyme_share"] == 1.0 and summary["seconds_mean"] == 2.0


# --- the whole run ----------------------------------------------------------------------------------


def first_ids(split: str, count: int) -> list[int]:
    return [i for i in range(1, 100_000) if split_of(i) == split][:count]


def longest_common_run(hemistich: str, text: str) -> int:
    """By brute force: the longest substring of `hemistich` found in `text`, counted from WINDOW
    characters (shorter shared runs count as none)."""
    for length in range(len(hemistich), WINDOW - 1, -1):
        if any(hemistich[i:i + length] in text for i in range(len(hemistich) - length + 1)):
            return length
    return 0


@pytest.fixture(scope="module")
def shipped():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield load_model()
    torch.set_num_threads(threads)


def test_evaluate_generation_end_to_end(shipped, tmp_path, monkeypatch):
    """Three constrained poems (a ghazal, a rubai, a masnavi) of the shipped model, judged against a
    corpus written here: train ghazals in every metre of the model but the rubai's, all Hafez's
    first; a test-split ghazal for the reference; and the rubai's two hemistichs (the rubai does
    not depend on this corpus, so it is written first), one in a train poem of a classical poet,
    the other in one of a poet who is not classical and so is not part of the train text."""
    # The rubai is the second request whatever the corpus holds: saadi, metre 24, seed 1001, and
    # the default rhyme "ار" when the corpus has no rubai and no metre-24 poem.
    rubai = write_poem(shipped, PoemRequest(poet="saadi", form="rubai", couplets=2, metre=24, rhyme="ار", seed=1001))
    known, unknown = rubai.couplets[0]
    catalogue = {m.id: m for m in load_catalogue()}
    model_metres = [m for m in shipped.controls.metres if m in catalogue]
    train_ids, test_id = first_ids("train", len(model_metres) + 2), first_ids("test", 1)[0]
    records = [ganjoor_record(i, "hafez", GHAZAL_1, metre=(m, catalogue[m].name))
               for i, m in zip(train_ids, [m for m in model_metres if m != 24], strict=False)]
    records.append(ganjoor_record(train_ids[-2], "jami", [known, GHAZAL_1[0]], form="Masnavi", metre=None, rhyme=None))
    records.append(ganjoor_record(train_ids[-1], "not-a-classical-poet", [unknown, GHAZAL_1[1]], metre=None,
                                  rhyme=None))
    reference = hafez_ghazals()[1]
    records.append(ganjoor_record(test_id, "saadi", reference, metre=(2, catalogue[2].name)))
    data = tmp_path / "poems.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")

    classifier = load_poet_classifier()
    monkeypatch.setenv("PERSIAN_POETRY_CACHE", str(tmp_path / "cache"))  # the train text's cache, not ~/.cache's
    report = evaluate_generation(shipped, data, n=3, progress=False, poet_classifier=classifier)
    assert len(list((tmp_path / "cache" / "train-text").iterdir())) == 1
    detail = report["poems_detail"]

    # The requests: forms in turn, poets in turn, fixed seeds; the rubai in the rubai metre, the
    # others in the model's most common other metre; rhymes from the train poems of that metre
    # (every ghazal here is Hafez's first, whose rhyme words ناولها, مشکل‌ها, دل‌ها ... share
    # "لها"), the rubai's from nowhere: the default "ار".
    assert report["constraints"] is True and report["poems"] == 3
    assert len(report["metres"]) == min(10, len(model_metres)) and set(report["metres"]) <= set(model_metres)
    top = max((m for m in model_metres if m != 24), key=lambda m: catalogue[m].poems)
    requests = [d["request"] for d in detail]
    assert [r["form"] for r in requests] == ["ghazal", "rubai", "masnavi"]
    assert [r["poet"] for r in requests] == list(OFFERED_POETS[:3])
    assert [r["seed"] for r in requests] == [1000, 1001, 1002]
    assert [r["metre"] for r in requests] == [top, 24, top]
    assert [r["rhyme"] for r in requests] == ["لها", "ار", "لها"]
    assert all(r["style"] == DEFAULT_STRENGTH and not r["free"] for r in requests)
    assert report["style"] == DEFAULT_STRENGTH and report["style_prior"] is True
    # Fixed seeds: the rubai is the one written above.
    couplets = [d["couplets"] for d in detail]
    assert couplets[1] == [list(pair) for pair in rubai.couplets]

    # Form: exactly the couplets asked for, each of two non-empty hemistichs.
    assert [len(c) for c in couplets] == [FORM_COUPLETS[f] for f in ("ghazal", "rubai", "masnavi")]
    assert all(len(pair) == 2 and all(pair) for poem in couplets for pair in poem)
    assert report["hemistichs"] == 2 * (7 + 2 + 10) == sum(d["hemistichs"] for d in detail)
    assert report["form_share"] == 1.0 and {f: v["poems"] for f, v in report["by_form"].items()} == {
        "ghazal": 1, "rubai": 1, "masnavi": 1}
    # Metre and rhyme: constrained decoding holds each hemistich that was not relaxed.
    relaxed = [len(d["constraints"]["relaxed"]) for d in detail]
    assert report["relaxed_hemistichs"] == sum(relaxed)
    for d, r in zip(detail, relaxed, strict=True):
        assert d["metre_ok"] >= d["hemistichs"] - r and d["rhyme_ok"] >= d["rhyme_positions"] - r
    assert report["metre_share"] == round(sum(d["metre_ok"] for d in detail) / 38, 4)
    assert report["metre_share"] >= 1 - sum(relaxed) / 38
    assert report["rhyme_share"] == round(sum(d["rhyme_ok"] for d in detail) / sum(d["rhyme_positions"] for d in detail), 4)
    assert 0 <= report["metre_top_share"] <= 1
    # The judge the decoding never consults: the learned classifier's top metre, hemistich by hemistich.
    named = [classifier_metres([h for pair in poem for h in pair]) for poem in couplets]
    assert [d["metre_classifier"] for d in detail] == [
        sum(m == r["metre"] for m in poem) for poem, r in zip(named, requests, strict=True)]
    assert report["metre_classifier_share"] == round(sum(d["metre_classifier"] for d in detail) / 38, 4)

    # Novelty, against the train split's hemistichs of classical poets: the rubai's first hemistich
    # is there (jami's), its second is not (the outsider's).
    generated = [h for poem in couplets for pair in poem for h in pair]
    train_hemistichs = {normalize(h) for h in [*GHAZAL_1, known]}
    verbatim = sum(normalize(h) in train_hemistichs for h in generated)
    assert verbatim >= 1 and report["verbatim_share"] == round(verbatim / 38, 4)
    train_text = "\n".join(["\n".join(normalize(h) for h in GHAZAL_1)] * (len(model_metres) - 1)
                           + [normalize(known) + "\n" + normalize(GHAZAL_1[0])])
    assert unknown not in train_text
    longest = max(longest_common_run(h, train_text) for h in generated)
    assert longest >= len(known) and report["longest_shared_run"] == longest
    assert 0 < report["distinct_2"] <= 1 and 0 <= report["repeat_share"] <= 1

    # Poets: the classifier's verdict on each poem, and the share that names the poet asked for.
    verdicts = [classify_poet(g, classifier)[0] for g in ([h for pair in poem for h in pair] for poem in couplets)]
    assert [d["poet_predicted"] for d in detail] == verdicts
    hits = [v == r["poet"] for v, r in zip(verdicts, requests, strict=True)]
    assert report["poet_share"] == round(sum(hits) / 3, 4)
    assert report["poet_share_by_poet"] == {r["poet"]: float(h) for r, h in zip(requests, hits, strict=True)}

    # Times are only summarized here (how long they are is the benchmarks' business).
    assert report["seconds_mean"] == round(statistics.mean(d["seconds"] for d in detail), 3)
    assert report["ghazal7_seconds_mean"] == round(detail[0]["seconds"], 3)

    # The reference: the one labelled test-split poem, under its label.
    real = report["real_poems_reference"]
    assert (real["poems"], real["hemistichs"]) == (1, len(reference))
    assert all(0 <= real[k] <= 1 for k in ("metre_share", "metre_top_share", "metre_classifier_share", "repeat_share"))


def test_the_learned_classifier_alone_names_the_metre_of_real_verse_and_not_of_shuffled():
    """`classifier_metres`, the honest metre judge: Hafez's first ghazal is in hazaj (Ganjoor id 2)
    for the classifier alone; the same words in another order mostly are not."""
    named = classifier_metres(GHAZAL_1)
    assert sum(m == 2 for m in named) >= 0.8 * len(GHAZAL_1)
    rng = random.Random(0)
    shuffled = [" ".join(rng.sample(h.split(), len(h.split()))) for h in GHAZAL_1]
    assert sum(m == 2 for m in classifier_metres(shuffled)) < sum(m == 2 for m in named)
    assert classifier_metres([]) == []
