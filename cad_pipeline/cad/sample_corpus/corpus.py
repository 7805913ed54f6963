"""The corpus folder: every model's file and the train / validation / test split, as DeepCAD lays them out."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from cad_pipeline.cad.sample_corpus.deepcad_format import dumps_model
from cad_pipeline.cad.sample_corpus.model import generate_model
from cad_pipeline.files import atomic_write_bytes
from cad_pipeline.parallel import available_cores, process_pool

HOLDOUT_SHARE = 0.08
"""Share of models in each of the validation and test splits."""
PARALLEL_MIN_MODELS = 200
"""Below this many models, starting worker processes costs more than it saves."""


@dataclass(frozen=True)
class CorpusSummary:
    n_models: int
    n_train: int
    n_validation: int
    n_test: int
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)


def write_corpus(
    out_dir: Path, n_models: int, seed: int, progress: Callable[[int], None] | None = None, workers: int = 0
) -> CorpusSummary:
    """Write `cad_json/<bucket>/<id>.json` and `train_val_test_split.json` as DeepCAD lays them out.

    Model i depends only on (seed, i), so the files are the same whatever `workers` is (0: all
    cores), and a corpus can be extended or partly regenerated. `progress` is called with the
    number of models written so far.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    for done, _ in enumerate(_write_models(out_dir, n_models, seed, workers), start=1):
        if progress is not None:
            progress(done)
    split = split_ids([model_key(index) for index in range(n_models)], seed)
    atomic_write_bytes(out_dir / "train_val_test_split.json", dumps_model(split).encode())
    return CorpusSummary(
        n_models=n_models,
        n_train=len(split["train"]),
        n_validation=len(split["validation"]),
        n_test=len(split["test"]),
        seconds=time.perf_counter() - started,
    )


def _write_models(out_dir: Path, n_models: int, seed: int, workers: int) -> Iterator[None]:
    """Write every model, yielding once per model in id order; OpenCASCADE work spreads over processes."""
    write = partial(_write_model, out_dir, seed)
    workers = min(workers or available_cores(), n_models)
    if workers <= 1 or n_models < PARALLEL_MIN_MODELS:
        yield from map(write, range(n_models))
        return
    with process_pool(workers) as pool:
        yield from pool.map(write, range(n_models), chunksize=8)


def _write_model(out_dir: Path, seed: int, index: int) -> None:
    model_id = f"{index:08d}"
    data = generate_model(random.Random(f"{seed}:{index}"), model_id)
    atomic_write_bytes(out_dir / "cad_json" / f"{model_key(index)}.json", dumps_model(data).encode())


def model_key(index: int) -> str:
    """DeepCAD's "<bucket>/<id>": an 8-digit id under a folder named by its first four digits."""
    return f"{index // 10000:04d}/{index:08d}"


def split_ids(keys: list[str], seed: int) -> dict[str, list[str]]:
    """DeepCAD's split file: a seeded shuffle, about 8% each to validation and test (one each from 3 models)."""
    shuffled = list(keys)
    random.Random(f"{seed}:split").shuffle(shuffled)
    holdout = max(1, round(HOLDOUT_SHARE * len(keys))) if len(keys) >= 3 else 0
    return {"train": shuffled[2 * holdout :], "validation": shuffled[:holdout], "test": shuffled[holdout : 2 * holdout]}
