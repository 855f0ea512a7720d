"""The metre catalogue: foot parsing, patterns derived by code, the rubai forms, the shipped JSON."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from persian_poetry import assets
from persian_poetry.assets import CATALOGUE_PATH
from persian_poetry.errors import MetreError
from persian_poetry.prosody.metres import (
    FEET,
    build_catalogue,
    catalogue_markdown,
    feet_pattern,
    load_catalogue,
    parse_feet,
    parse_metre,
    rubai_forms,
)


def test_parse_feet_reads_the_feet_before_the_name():
    assert parse_feet("فعلاتن فعلاتن فعلاتن فعلن (رمل مثمن مخبون محذوف)") == ("فعلاتن",) * 3 + ("فعلن",)
    assert parse_feet("مفعول مفاعیل مفاعیل فعل (هزج مثمن اخرب مکفوف محذوف)") == (
        "مفعول", "مفاعیل", "مفاعیل", "فعل")
    assert parse_feet("متفعلن متفعلن متفعلن متفعلن ") == ("متفعلن",) * 4
    # Arabic yeh and kaf in a label are normalized first
    assert parse_feet("مفاعيلن مفاعيلن فعولن") == ("مفاعیلن", "مفاعیلن", "فعولن")


def test_unknown_feet_are_an_error():
    with pytest.raises(MetreError):
        parse_feet("فعلاتن بلبلن")
    with pytest.raises(MetreError):
        parse_feet("(رمل)")


def test_feet_patterns():
    assert feet_pattern(("فاعلاتن", "فاعلاتن", "فاعلن")) == "-U---U---U-"            # Masnavi
    assert feet_pattern(("فعولن", "فعولن", "فعولن", "فعل")) == "U--U--U--U-"            # Shahnameh
    assert feet_pattern(("مفاعیلن",) * 4) == "U---" * 4
    assert feet_pattern(("مفعول", "مفاعیل", "مفاعیل", "فعل")) == "--UU--UU--UU-"
    # the overlong last syllable of فاع / فعول counts as one long at the end of a hemistich
    assert feet_pattern(("مفعول", "مفاعیل", "مفاعیلن", "فاع")) == feet_pattern(
        ("مفعول", "مفاعیل", "مفاعیلن", "فع"))
    assert all(set(w) <= {"-", "U"} for w in FEET.values())


def test_rubai_has_24_forms_and_12_patterns():
    forms = rubai_forms()
    assert len(forms) == 24 and len(set(forms)) == 24
    assert sum(f[0] == "مفعول" for f in forms) == 12      # akhrab tree
    assert sum(f[0] == "مفعولن" for f in forms) == 12     # akhram tree
    patterns = {feet_pattern(f) for f in forms}
    assert len(patterns) == 12
    assert {len(p) for p in patterns} == {10, 11, 12, 13}
    rubai = parse_metre(24, "مفعول مفاعیل مفاعیل فعل (وزن رباعی)")
    assert rubai.pattern == "--UU--UU--UU-" and len(rubai.patterns) == 12 and len(rubai.forms) == 24


def test_licences_give_extra_patterns():
    m = parse_metre(7, "فعلاتن فعلاتن فعلاتن فعلن (رمل مثمن مخبون محذوف)")
    assert m.pattern == "UU--UU--UU--UU-"
    assert "-U--UU--UU--UU-" in m.patterns      # فاعلاتن for the first فعلاتن
    assert "UU--UU--UU----" in m.patterns       # تسکین of the last فعلن
    assert len(m.patterns) == len(m.licences) == 4
    plain = parse_metre(8, "فاعلاتن فاعلاتن فاعلاتن فاعلن (رمل مثمن محذوف)")
    assert plain.patterns == ("-U---U---U---U-",) and plain.family == "رمل"


def test_shipped_catalogue_loads_without_the_data():
    assert CATALOGUE_PATH.parent == Path(assets.__file__).parent  # ships inside the package
    assert "shared" not in CATALOGUE_PATH.parts
    catalogue = load_catalogue()
    ids = [m.id for m in catalogue]
    assert len(ids) >= 100 and len(set(ids)) == len(ids)
    by_id = {m.id: m for m in catalogue}
    assert by_id[24].name.startswith("مفعول مفاعیل مفاعیل فعل") and len(by_id[24].patterns) == 12
    assert by_id[23].pattern == "U--U--U--U-"
    assert by_id[2].pattern == "U---" * 4
    assert by_id[6].pattern == "-U---U---U-"
    for m in catalogue:
        assert m.patterns and all(set(p) <= {"-", "U"} for p in m.patterns)
        if m.id != 24:
            assert m.pattern == feet_pattern(m.feet)
        assert not m.shares or (len(m.shares) == len(m.patterns) and abs(sum(m.shares) - 1) < 0.01)


def test_catalogue_json_is_metadata_only():
    rows = json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))["metres"]
    allowed = {"id", "name", "feet", "patterns", "licences", "family", "poems", "forms", "shares", "quatrains"}
    assert all(set(row) <= allowed for row in rows)


def test_build_catalogue_from_a_small_export(tmp_path):
    records = [
        {"Id": 1, "Poet": "x", "Metre": {"Id": 8, "Rhythm": "فاعلاتن فاعلاتن فاعلاتن فاعلن (رمل مثمن محذوف)"},
         "Verses": [{"Position": "Right", "Text": "a"}, {"Position": "Left", "Text": "b"}]},
        {"Id": 2, "Poet": "x", "Metre": {"Id": 8, "Rhythm": "فاعلاتن فاعلاتن فاعلاتن فاعلن (رمل مثمن محذوف)"},
         "Verses": [{"Position": "Right", "Text": "a"}] * 4},
        {"Id": 3, "Poet": "x", "Metre": {"Id": 24, "Rhythm": "مفعول مفاعیل مفاعیل فعل (وزن رباعی)"}, "Verses": []},
        {"Id": 4, "Poet": "x", "Metre": None, "Verses": []},
    ]
    path = tmp_path / "poems.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
        f.write("not json\n")
    built = build_catalogue(path)
    assert [(m.id, m.poems, m.quatrains) for m in built] == [(8, 2, 1), (24, 1, 0)]
    text = catalogue_markdown(built)
    assert "| 8 |" in text and "24 forms" in text and "−∪−−" in text
