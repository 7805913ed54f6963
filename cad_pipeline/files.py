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


CURRENT_VERSION = "current"


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


@contextmanager
def published_files(folder: Path, names: tuple[str, ...], versions: str) -> Iterator[Path]:
    """An empty folder to write a new version of `names` (files or folders) into; when the block succeeds the version
    is published whole by one rename of `folder/versions/current`, through which each name in `folder` is a link (made
    once; an entry written before versions were linked is replaced by it)."""
    generations = folder / versions
    with published_folder(generations / CURRENT_VERSION, generations) as staging:
        yield staging
    for name in names:
        entry = folder / name
        target = os.path.join(versions, CURRENT_VERSION, name)
        if not (entry.is_symlink() and os.readlink(entry) == target):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            replace_with_link(entry, target)


def replace_with_link(path: Path, target: str) -> None:
    """`path` becomes a link to `target` in one rename (a link made beside it first)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.link")
    os.symlink(target, temporary)
    os.replace(temporary, path)
