"""The content-addressed store shared by every scale: an artifact is found by what it was made from.

Layout: `<root>/<kind>/<version>/<key[:2]>/<key><suffix>`, where `key` is the hash of the input
(a model file's bytes) and `version` names the code and settings that made it, so an artifact
made by older code is never mistaken for a current one.
"""

from __future__ import annotations

from pathlib import Path


def store_path(root: Path, kind: str, version: str, key: str, suffix: str) -> Path:
    return Path(root) / kind / version / key[:2] / f"{key}{suffix}"
