"""The judges of evaluate-generation, on real verse and on hand-made cases."""

import numpy as np
from conftest import hafez_ghazals

from persian_poetry.judges.evaluate_generation import (
    TrainText,
    _window_hashes,
    distinct_2,
    longest_shared_run,
    make_requests,
    score_poem,
    summarize,
)
from persian_poetry.writing.generate import PoemRequest

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
