"""A corpus in DeepCAD's layout: `cad_json/<bucket>/<id>.json` plus `train_val_test_split.json`."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cad_pipeline.cad.sample_corpus import write_corpus

SPLIT_FILE = "train_val_test_split.json"
SPLITS = ("train", "validation", "test")
MODELS_DIR = "cad_json"
FINGERPRINT_HEX = 16
DOWNLOAD_HINT = (
    "To use the real DeepCAD corpus, download and unpack DeepCAD's data.tar and point the pipeline at the folder "
    "that holds cad_json/ and train_val_test_split.json (environment variable CAD_PIPELINE_CORPUS, or the "
    "`corpus_dir` setting of the `settings` resource)."
)


class CorpusError(Exception):
    """The corpus folder is missing or not in DeepCAD's layout."""


@dataclass(frozen=True)
class Corpus:
    root: Path
    splits: dict[str, list[str]]

    @classmethod
    def open(cls, root: str | Path) -> Corpus:
        root = Path(root)
        split_path = root / SPLIT_FILE
        if not split_path.is_file():
            raise CorpusError(f"{split_path} does not exist, so {root} is not a DeepCAD corpus. {DOWNLOAD_HINT}")
        try:
            raw = json.loads(split_path.read_text())
        except (OSError, ValueError) as error:
            raise CorpusError(f"{split_path} is not readable JSON ({error}); re-download or regenerate it.") from None
        if not isinstance(raw, dict):
            raise CorpusError(f"{split_path} should be an object with {', '.join(SPLITS)} lists.")
        splits = {}
        for split in SPLITS:
            ids = raw.get(split, [])
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise CorpusError(f"{split_path}: '{split}' should be a list of ids like '0000/00000007'.")
            splits[split] = ids
        return cls(root=root, splits=splits)

    def path_of(self, model_id: str) -> Path:
        return model_path(self.root, model_id)

    def describe(self) -> dict:
        """Counts a user checks first (files on disk, split sizes, split ids without a file) and the corpus's
        fingerprint, all from one scan of the folder: DeepCAD has 178k files."""
        listing = sorted(_corpus_files(self.root))
        on_disk = {relative[len(MODELS_DIR) + 1 : -len(".json")] for relative, _, _ in listing if relative != SPLIT_FILE}
        return {
            "root": str(self.root),
            "files_on_disk": len(on_disk),
            "split_sizes": {split: len(ids) for split, ids in self.splits.items()},
            "missing_files": {split: sum(1 for i in ids if i not in on_disk) for split, ids in self.splits.items()},
            "fingerprint": _fingerprint(listing),
        }


def model_path(root: Path, model_id: str) -> Path:
    """File of an id as the split file writes it (`<bucket>/<id>`)."""
    return Path(root) / MODELS_DIR / f"{model_id}.json"


def unsafe_id_reason(root: Path, model_id: str) -> str | None:
    """Why a split file's id may not be read, or None: ids name files under `cad_json/` as `<bucket>/<id>`, and a
    split file that says otherwise (`..`, an absolute path, deeper paths, a link out of the corpus) must not make the
    pipeline read, and ship, a file from elsewhere."""
    parts = model_id.split("/")
    if not model_id or "\x00" in model_id or "\\" in model_id or len(parts) > 2 or any(part in ("", ".", "..") for part in parts):
        return f"id {model_id[:80]!r} is not DeepCAD's <bucket>/<id> (at most one '/', no '..', '.', empty part or backslash)"
    models = (Path(root) / MODELS_DIR).resolve()
    resolved = model_path(root, model_id).resolve()
    if not resolved.is_relative_to(models):
        return f"{model_path(root, model_id)} resolves to {resolved}, outside the corpus's {models}"
    return None


@dataclass(frozen=True)
class CorpusFingerprint:
    files: int
    bytes: int
    digest: str
    """Short hex sha256 of every file's relative path, size and mtime: equal digests mean an unchanged corpus."""


def corpus_fingerprint(root: str | Path) -> CorpusFingerprint:
    """Identify the corpus by its file listing, without reading a file, so a check every few minutes stays cheap.

    Covers the split file and every `cad_json/<bucket>/*.json`; other files in the folder do not count.
    """
    root = Path(root)
    if not root.is_dir():
        raise CorpusError(f"{root} does not exist, so there is no corpus to fingerprint yet. {DOWNLOAD_HINT}")
    return _fingerprint(sorted(_corpus_files(root)))


def _fingerprint(listing: list[tuple[str, int, int]]) -> CorpusFingerprint:
    digest = hashlib.sha256()
    for relative, size, mtime_ns in listing:
        digest.update(f"{relative}\t{size}\t{mtime_ns}\n".encode())
    return CorpusFingerprint(
        files=len(listing), bytes=sum(size for _, size, _ in listing), digest=digest.hexdigest()[:FINGERPRINT_HEX]
    )


def _corpus_files(root: Path):
    """(relative path, size, mtime_ns) of the split file and every model file; os.scandir keeps 178k files fast."""
    split = root / SPLIT_FILE
    if split.is_file():
        stat = split.stat()
        yield SPLIT_FILE, stat.st_size, stat.st_mtime_ns
    models = root / MODELS_DIR
    if not models.is_dir():
        return
    with os.scandir(models) as buckets:
        for bucket in buckets:
            if not bucket.is_dir():
                continue
            with os.scandir(bucket.path) as entries:
                for entry in entries:
                    if entry.name.endswith(".json") and entry.is_file():
                        stat = entry.stat()
                        yield f"{MODELS_DIR}/{bucket.name}/{entry.name}", stat.st_size, stat.st_mtime_ns


def open_or_generate(root: Path, generate_if_missing: bool, sample_models: int, sample_seed: int) -> tuple[Corpus, bool]:
    """Open the corpus; when allowed and the folder does not exist yet, first write the sample corpus there.

    The sample is written beside the target and renamed into place, so an interrupted first run
    never leaves a half corpus that later runs would take for a whole one.
    """
    root = Path(root)
    if not generate_if_missing or root.exists():
        return Corpus.open(root), False
    staging = root.with_name(root.name + ".partial")
    if staging.exists():
        shutil.rmtree(staging)
    write_corpus(staging, sample_models, sample_seed)
    staging.rename(root)
    return Corpus.open(root), True
