"""Atomic writes: a killed process leaves either the old file (or folder) or the new one, never half of one. Bounded
reads: an input file is never read past the size its reader accepts."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

class FileTooLarge(ValueError):
    """A file larger than its reader accepts; nothing past the limit was read."""


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The file's bytes, or FileTooLarge once more than `limit` are there (it also stops endless devices and pipes)."""
    with open(path, "rb") as stream:
        raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise FileTooLarge(f"{path} is larger than {limit:,} bytes, the most {what} may be; it was not read")
    return raw


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` that replaces it when the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes owner-only files; give the usual permissions
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_target(path) as temporary:
        temporary.write_bytes(data)


def atomic_write_parquet(frame: pd.DataFrame, path: Path) -> None:
    with atomic_target(path) as temporary:
        frame.to_parquet(temporary, index=False)


@contextmanager
def published_folder(link: Path, generations: Path) -> Iterator[Path]:
    """An empty folder in `generations` to write a new version of a folder into; when the block succeeds, `link`
    points to it, switched in one rename, and the other generations (the previous one, any a killed writer left
    half made) are deleted. A block that fails, or a writer killed in it, leaves `link` as it was. A real folder at
    `link` (written before versions were linked) is replaced once, not atomically."""
    staging = generations / uuid.uuid4().hex
    staging.mkdir(parents=True)
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    replace_with_link(link, os.path.relpath(staging, link.parent))
    for stale in generations.iterdir():
        if stale not in (staging, link):
            stale.unlink() if stale.is_symlink() else shutil.rmtree(stale, ignore_errors=True)


def replace_with_link(path: Path, target: str) -> None:
    """`path` becomes a link to `target` in one rename (a link made beside it first)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.link")
    os.symlink(target, temporary)
    os.replace(temporary, path)
