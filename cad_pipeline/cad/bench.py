"""Parse+build throughput, measured on one core and on a process pool over the same files."""

from __future__ import annotations

import time
from pathlib import Path

from cad_pipeline.cad.build import build_solid
from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.parallel import available_cores, process_pool


def build_throughput(files: list[Path], seconds: float, workers: int = 0) -> dict:
    """Models per second on one core, and on `workers` processes (0: every core) running the same loop."""
    invalid = sum(not _build_one(path) for path in files)
    one_core = _models_per_second(files, seconds)
    workers = workers or available_cores()
    with process_pool(workers) as pool:
        rates = list(pool.map(_models_per_second, [files] * workers, [seconds] * workers))
    return {"one_core": one_core, "all_cores": sum(rates), "workers": workers, "invalid": invalid}


def _models_per_second(files: list[Path], seconds: float) -> float:
    """Timed inside the process that builds, so a pool worker's start-up is not counted."""
    started = time.perf_counter()
    return _count_builds(files, seconds) / (time.perf_counter() - started)


def _count_builds(files: list[Path], seconds: float) -> int:
    """Whole passes over the files until at least `seconds` have gone by."""
    started, count = time.perf_counter(), 0
    while count == 0 or time.perf_counter() - started < seconds:
        for path in files:
            _build_one(path)
        count += len(files)
    return count


def _build_one(path: Path) -> bool:
    try:
        build_solid(read_file(path))
    except ModelError:
        return False
    return True
