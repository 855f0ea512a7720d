"""What the package needs at run time travels in its wheel, not only in an editable checkout."""

import tomllib
from fnmatch import fnmatch
from pathlib import Path

import persian_poetry

ROOT = Path(__file__).resolve().parents[1]


def test_every_data_file_of_the_package_is_declared_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["persian_poetry"]
    package = Path(persian_poetry.__file__).parent
    data = [p.relative_to(package).as_posix() for p in package.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert "assets/lexicon.tsv.gz" in data and "assets/default_model/model.safetensors" in data
    missing = [f for f in data if not any(fnmatch(f, pattern) for pattern in patterns)]
    assert not missing, f"not in [tool.setuptools.package-data]: {missing}"
