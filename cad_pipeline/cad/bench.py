"""Parse+build throughput, measured on one core and on a process pool over the same files.

Shared machines are noisy, so each measurement is split into rounds: the best round shows what
the code does when the machine leaves it alone, the median what a busy machine gives.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from cad_pipeline.cad.build import build_solid
from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.parallel import available_cores, process_pool

ROUNDS = 5


def build_throughput(files: list[Path], seconds: float, workers: int = 0) -> dict:
    """Models per second on one core (best and median round), and summed over `workers` processes (0: every core)."""
    invalid = sum(not _build_one(path) for path in files)
    rounds = _round_rates(files, seconds)
    workers = workers or available_cores()
    with process_pool(workers) as pool:
        per_worker = list(pool.map(_round_rates, [files] * workers, [seconds] * workers))
    return {
        "one_core_best": max(rounds),
        "one_core_median": statistics.median(rounds),
        "all_cores_median": sum(statistics.median(worker) for worker in per_worker),
        "workers": workers,
        "invalid": invalid,
    }


def _round_rates(files: list[Path], seconds: float) -> list[float]:
    """Models per second in each round; timed inside the building process, so pool start-up is not counted."""
    rates = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        count = _count_builds(files, seconds / ROUNDS)
        rates.append(count / (time.perf_counter() - started))
    return rates


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
