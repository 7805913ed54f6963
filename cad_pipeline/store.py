"""The content-addressed store shared by every scale: an artifact is found by what it was made from.

Layout: `<root>/<kind>/<version>/<key[:2]>/<key><suffix>`, where `key` is the hash of the input
(a model file's bytes) and `version` names the code and settings that made it, so an artifact
made by older code is never mistaken for a current one.
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

import OCP

PACKAGE = Path(__file__).parent


def store_path(root: Path, kind: str, version: str, key: str, suffix: str) -> Path:
    return Path(root) / kind / version / key[:2] / f"{key}{suffix}"


@cache
def code_version(*modules: str) -> str:
    """A short hash of these package modules' source (paths relative to the package) and the OpenCASCADE
    version: it changes whenever the code that makes an artifact changes, so stored artifacts never go stale."""
    digest = hashlib.sha256(OCP.__version__.encode())
    for module in modules:
        digest.update((PACKAGE / module).read_bytes())
    return digest.hexdigest()[:16]
