"""Executors for per-model work (build, render, sample)."""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def process_pool(workers: int = 0) -> ProcessPoolExecutor:
    """A local pool on all cores by default.

    Workers are spawned, not forked: the parent (a Dagster step, a CLI with progress threads) may
    hold threads and locks that a forked child would inherit in an unusable state, and a crash in
    OpenCASCADE then stays inside a worker.
    """
    return ProcessPoolExecutor(max_workers=workers or available_cores(), mp_context=multiprocessing.get_context("spawn"))
