"""The content-addressed store shared by every scale: an artifact is found by what it was made from.

Layout: `<root>/<kind>/<version>/<key[:2]>/<key><suffix>`, where `key` is the hash of the input
(a model file's bytes) and `version` names the code and settings that made it, so an artifact
made by older code is never mistaken for a current one.

Every entry is sealed: written atomically, then `<entry>.seal` with its size and sha256, last, so a sealed entry is
complete. Reuse reads the entry against its seal, so a missing seal, a truncated, garbage or edited entry is never
served: the caller rebuilds it and reports the repair.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path

import OCP

from cad_pipeline.files import atomic_write_bytes

PACKAGE = Path(__file__).parent


def store_path(root: Path, kind: str, version: str, key: str, suffix: str) -> Path:
    return Path(root) / kind / version / key[:2] / f"{key}{suffix}"


SEAL_SUFFIX = ".seal"


class DamagedEntry(Exception):
    """A store entry that is there but does not match its seal; `path` is the entry, the message says how."""

    def __init__(self, path: Path, why: str):
        super().__init__(f"{path}: {why}")
        self.path = path


def write_sealed(path: Path, data: bytes) -> None:
    atomic_write_bytes(path, data)
    seal = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    atomic_write_bytes(_seal_of(path), json.dumps(seal).encode())


def read_sealed(path: Path) -> bytes | None:
    """The entry's bytes once they match its seal; None when neither the entry nor its seal exists (never made);
    DamagedEntry when either is there but they do not agree."""
    seal_path = _seal_of(path)
    if not path.exists() and not seal_path.exists():
        return None
    try:
        seal = json.loads(seal_path.read_bytes())
        size, digest = int(seal["bytes"]), str(seal["sha256"])
    except (OSError, ValueError, TypeError, KeyError) as error:
        raise DamagedEntry(path, f"its seal is missing or unreadable ({type(error).__name__})") from None
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DamagedEntry(path, f"cannot be read ({error.strerror or error})") from None
    if len(data) != size:
        raise DamagedEntry(path, f"{len(data):,} bytes where {size:,} were written")
    if hashlib.sha256(data).hexdigest() != digest:
        raise DamagedEntry(path, "its content differs from what was written")
    return data


def _seal_of(path: Path) -> Path:
    return path.with_name(path.name + SEAL_SUFFIX)


@cache
def code_version(*modules: str) -> str:
    """A short hash of these package modules' source (paths relative to the package) and the OpenCASCADE
    version: it changes whenever the code that makes an artifact changes, so stored artifacts never go stale."""
    digest = hashlib.sha256(OCP.__version__.encode())
    for module in modules:
        digest.update((PACKAGE / module).read_bytes())
    return digest.hexdigest()[:16]
