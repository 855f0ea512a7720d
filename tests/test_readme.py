"""The README shows what the code does: its sample poem is the real output of the command printed
above it, run again here, so the docs cannot drift from the code."""

import re
import shlex
from pathlib import Path

import torch

from persian_poetry.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_sample_is_what_its_command_prints(capsys):
    text = README.read_text(encoding="utf-8")
    found = re.search(r"`(persian-poetry generate [^`]+)` prints:\s*```text\n(.*?)```", text, re.S)
    assert found, "README has no 'persian-poetry generate ...` prints:' sample"
    command, shown = found.groups()
    torch.set_num_threads(1)
    assert main(shlex.split(command)[1:]) == 0
    assert capsys.readouterr().out == shown
