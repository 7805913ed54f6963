"""Nested, deterministic subsets: the first N buildable train models of one fixed seeded order of the split.

Because the order is fixed and validity is a property of the file, every scale is a prefix of
the next larger one (the 1k models are the first 1k of the 10k). Unbuildable models are skipped
and listed in the manifest with their reason.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from cad_pipeline.cad.deepcad_json import read_model_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.inspect import ModelReport, inspect_bytes, inspect_file, inspector_version
from cad_pipeline.dataset.corpus import DOWNLOAD_HINT, Corpus, model_path, unsafe_id_reason
from cad_pipeline.dataset.scales import validation_target
from cad_pipeline.files import atomic_write_parquet
from cad_pipeline.store import DamagedEntry, read_sealed, store_path, write_sealed

"""Each partition's table of its models: split, order, whether selected, why invalid, measurements."""
MANIFEST_COLUMNS = [
    "id", "split", "order", "selected", "valid", "reason_code", "reason", "n_extrudes", "n_curves", "volume", "area",
    "bbox_min_x", "bbox_min_y", "bbox_min_z", "bbox_max_x", "bbox_max_y", "bbox_max_z", "sha256", "reused",
]  # fmt: skip


class ScaleTooLarge(Exception):
    """The corpus has fewer buildable train models than the scale asks for."""


@dataclass(frozen=True)
class SubsetResult:
    manifest: pd.DataFrame
    """Every model examined, in selection order; `selected` marks the subset."""
    seconds: float
    repaired: list[str] = field(default_factory=list)
    """Damaged store reports found and rebuilt: each path and what was wrong."""

    @property
    def n_train(self) -> int:
        return int((self.manifest.selected & (self.manifest.split == "train")).sum())

    @property
    def n_validation(self) -> int:
        return int((self.manifest.selected & (self.manifest.split == "validation")).sum())

    @property
    def invalid_by_reason(self) -> dict[str, int]:
        return dict(Counter(self.manifest.loc[~self.manifest.valid, "reason_code"]).most_common())

    @property
    def n_reused(self) -> int:
        return int(self.manifest.reused.sum())

    @property
    def models_per_second(self) -> float:
        return len(self.manifest) / self.seconds if self.seconds > 0 else float("inf")


def seeded_order(ids: Iterable[str], seed: int) -> list[str]:
    """One fixed order of a split, independent of how the split file happens to list it."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    return order


def select_subset(
    corpus: Corpus,
    n_train: int | None,
    seed: int,
    executor: Executor,
    store: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> SubsetResult:
    """Build models in seeded order until n_train valid train models (None: all) and their validation share are found.

    With a `store`, each model's report is kept by content, so a larger scale or a rerun reuses
    every model an earlier one built.
    """
    started = time.perf_counter()
    train_ids = corpus.splits["train"]
    if n_train is not None and n_train > len(train_ids):
        raise ScaleTooLarge(
            f"this scale needs {n_train:,} train models but the corpus at {corpus.root} has {len(train_ids):,} "
            f"({sum(len(ids) for ids in corpus.splits.values()):,} models in all). {DOWNLOAD_HINT}"
        )
    seen: set[str] = set()
    train = _take_valid(corpus, store, "train", seeded_order(train_ids, seed), n_train, executor, progress, seen)
    n_found = sum(record["valid"] for record in train)
    if n_train is not None and n_found < n_train:
        raise ScaleTooLarge(
            f"this scale needs {n_train:,} buildable train models but only {n_found:,} of the corpus's "
            f"{len(train_ids):,} train models at {corpus.root} build. {DOWNLOAD_HINT}"
        )
    validation_order = seeded_order(corpus.splits["validation"], seed)
    validation = _take_valid(corpus, store, "validation", validation_order, validation_target(n_found), executor, progress, seen)
    records = train + validation
    manifest = pd.DataFrame.from_records(records, columns=MANIFEST_COLUMNS)
    repaired = [record["repaired"] for record in records if record.get("repaired")]
    return SubsetResult(manifest=manifest, seconds=time.perf_counter() - started, repaired=repaired)


def write_manifest(result: SubsetResult, path: Path) -> None:
    atomic_write_parquet(result.manifest, path)


def _take_valid(
    corpus: Corpus,
    store: Path | None,
    split: str,
    order: list[str],
    wanted: int | None,
    executor: Executor,
    progress: Callable[[int], None] | None,
    seen: set[str],
) -> list[dict]:
    """Inspect models in order, in batches a little larger than what is still missing, until enough are valid. An id
    met before, in this split or an earlier one, is listed as a duplicate and not inspected again."""
    records: list[dict] = []
    found = position = 0
    while position < len(order) and (wanted is None or found < wanted):
        missing = len(order) if wanted is None else wanted - found
        batch = order[position : position + missing + missing // 20 + 8]
        position += len(batch)
        repeated = []
        for model_id in batch:
            repeated.append(model_id in seen)
            seen.add(model_id)
        jobs = [(str(corpus.root), model_id, str(store) if store else None) for model_id, again in zip(batch, repeated) if not again]
        inspected = executor.map(inspect_corpus_model, jobs, chunksize=max(1, min(64, len(jobs) // 32)))
        for model_id, again in zip(batch, repeated):
            record = _refused(model_id, "duplicate_id", f"{model_id} is listed more than once in the split file (in this or another split); it is used once") if again else next(inspected)  # fmt: skip
            record.update(split=split, order=len(records), selected=record["valid"])
            records.append(record)
            found += record["valid"]
            if progress:
                progress(1)
            if wanted is not None and found == wanted:
                break
    return records


def _refused(model_id: str, reason_code: str, reason: str) -> dict:
    """The manifest row of an id that is not read."""
    return {**dict.fromkeys(MANIFEST_COLUMNS), "id": model_id, "valid": False, "reason_code": reason_code, "reason": reason, "reused": False}


def inspect_corpus_model(job: tuple[str, str, str | None]) -> dict:
    """Worker: one model's manifest row (runs in a pool process), from the store when it was built before."""
    root, model_id, store = job
    unsafe = unsafe_id_reason(Path(root), model_id)
    if unsafe:
        return _refused(model_id, "unsafe_id", unsafe)
    path = model_path(Path(root), model_id)
    repaired = None
    try:
        raw = read_model_file(path)
    except ModelError:
        report, digest, reused = inspect_file(path), None, False
    else:
        digest = hashlib.sha256(raw).hexdigest()
        report, reused, repaired = _stored_or_inspected(raw, digest, model_id, store)
    low = report.bbox_min or (None, None, None)
    high = report.bbox_max or (None, None, None)
    return {
        "id": model_id,
        "valid": report.valid,
        "reason_code": report.reason_code,
        "reason": report.reason,
        "n_extrudes": report.n_extrudes,
        "n_curves": report.n_curves,
        "volume": report.volume,
        "area": report.area,
        "bbox_min_x": low[0], "bbox_min_y": low[1], "bbox_min_z": low[2],
        "bbox_max_x": high[0], "bbox_max_y": high[1], "bbox_max_z": high[2],
        "sha256": digest,
        "reused": reused,
        "repaired": repaired,
    }  # fmt: skip


def _stored_or_inspected(raw: bytes, digest: str, model_id: str, store: str | None) -> tuple[ModelReport, bool, str | None]:
    """(report, reused, what was wrong with a damaged stored report that was rebuilt)."""
    if store is None:
        return inspect_bytes(raw, model_id), False, None
    path = store_path(Path(store), "reports", inspector_version(), digest, ".json")
    try:
        stored = read_sealed(path)
        if stored is not None:
            return ModelReport.from_stored_json(stored, model_id), True, None
        damage = None
    except DamagedEntry as error:
        damage = str(error)
    except (ValueError, TypeError, KeyError) as error:
        damage = f"{path}: sealed, but not a report ({type(error).__name__})"
    report = inspect_bytes(raw, model_id)
    write_sealed(path, report.to_stored_json())
    return report, False, damage
