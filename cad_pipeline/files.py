"""Atomic writes: a killed process leaves either the old file or the new one, never half of one. Bounded reads: an
input file is never read past the size its reader accepts."""

from __future__ import annotations

import os
import tempfile
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
