"""Files written whole or not at all, their checksums, and where caches live."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType
from typing import TypeVar

T = TypeVar("T")


def cache_root() -> Path:
    """Where derived data (encoded corpora, the evaluation's train text) is cached:
    $PERSIAN_POETRY_CACHE, else ~/.cache/persian-poetry."""
    return Path(os.environ.get("PERSIAN_POETRY_CACHE") or Path.home() / ".cache" / "persian-poetry")


def cached_derivation(name: str, inputs: Iterable[str | Path | ModuleType], derive: Callable[[], T]) -> T:
    """derive(), or what it returned before for the same input files, from the cache.

    `inputs` are every file the result depends on: the data and the source code that reads it
    (a module stands for its file), so that a change to either makes a new entry instead of a
    stale answer. The entry is JSON (a cache file can be tampered with, and JSON runs no code):
    `derive` returns JSON data, lists rather than tuples, never None. A cache that cannot be
    read is derived again, one that cannot be written is skipped with a warning: a cache is
    never an error. A new entry replaces the name's older ones."""
    digest = hashlib.sha256()
    for source in inputs:
        digest.update(Path(source.__file__ if isinstance(source, ModuleType) else source).read_bytes())
    path = cache_root() / "derived" / f"{name}-{digest.hexdigest()[:16]}.json"
    value = _read_json(path)
    if value is None:
        value = derive()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8"))
            for stale in path.parent.glob(f"{name}-{'?' * 16}.json"):  # from older data or code
                if stale != path:
                    stale.unlink(missing_ok=True)
        except OSError as error:
            warnings.warn(f"could not cache {name} in {path.parent}: {error}", stacklevel=2)
    return value


def _read_json(path: Path) -> object | None:
    """What the file holds, or None where it is absent or cut short."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # ValueError: JSON cut short, or bytes that are not UTF-8
        return None


def atomic_write(path: str | Path, write: Callable[[str], object]) -> None:
    """Call write(tmp_path) then rename tmp_path onto path (same folder, so the rename is atomic).

    The file gets the permissions an ordinary new file gets (the temporary file's are 0600), and
    the folder is fsynced after the rename, so that the rename itself survives a power cut."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0o022)  # the only way to read it is to set it; put it straight back
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
