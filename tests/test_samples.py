"""docs/samples.md is what the code and the shipped model write for its fixed spread and seeds: no
picked poems, no drift."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "write_samples.py"


def load_script():
    spec = importlib.util.spec_from_file_location("write_samples", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_samples_page_is_what_the_code_writes():
    script = load_script()
    assert len(script.SPREAD) == 10
    assert len({poet for poet, *_ in script.SPREAD}) == 10 and len({form for _, form, *_ in script.SPREAD}) >= 5
    assert script.SAMPLES_PAGE.read_text(encoding="utf-8") == script.samples_page(), \
        "docs/samples.md is stale: run python scripts/write_samples.py"
