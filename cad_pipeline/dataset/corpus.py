"""A corpus in DeepCAD's layout: `cad_json/<bucket>/<id>.json` plus `train_val_test_split.json`."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from cad_pipeline.cad.sample_corpus import write_corpus

SPLIT_FILE = "train_val_test_split.json"
SPLITS = ("train", "validation", "test")
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
        """Counts a user checks first: files on disk, split sizes, and split ids without a file."""
        on_disk = sum(1 for _ in (self.root / "cad_json").glob("*/*.json"))
        missing = {split: sum(1 for i in ids if not self.path_of(i).is_file()) for split, ids in self.splits.items()}
        return {
            "root": str(self.root),
            "files_on_disk": on_disk,
            "split_sizes": {split: len(ids) for split, ids in self.splits.items()},
            "missing_files": missing,
        }


def model_path(root: Path, model_id: str) -> Path:
    """File of an id as the split file writes it (`<bucket>/<id>`)."""
    return Path(root) / "cad_json" / f"{model_id}.json"


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
