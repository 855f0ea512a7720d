"""Files written whole or not at all, their checksums, and where caches live."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def cache_root() -> Path:
    """Where derived data (encoded corpora, the evaluation's train text) is cached:
    $PERSIAN_POETRY_CACHE, else ~/.cache/persian-poetry."""
    return Path(os.environ.get("PERSIAN_POETRY_CACHE") or Path.home() / ".cache" / "persian-poetry")


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
