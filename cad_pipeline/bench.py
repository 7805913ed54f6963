"""Throughput benchmarks: one loop over a corpus, timed on one core and on a process pool.

Shared machines are noisy, so each measurement is split into rounds: the best round shows what
the code does when the machine leaves it alone, the median what a busy machine gives.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

from cad_pipeline.cad.build import build_solid
from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.parallel import available_cores, process_pool
from cad_pipeline.render.drawing import LineStyle, draw_views, encode_png
from cad_pipeline.render.views import parse_views

ROUNDS = 5
VIEWS_PER_MODEL = 3
RENDER_VIEWS = parse_views("front,top,right")


def build_one(path: Path) -> bool:
    """Parse and build one model; False when it is rejected."""
    try:
        build_solid(read_file(path))
    except ModelError:
        return False
    return True


def render_one(path: Path) -> bool:
    """Parse, build, draw the three default views at 512 px and encode them as PNG, in memory."""
    try:
        images = draw_views(build_solid(read_file(path)), RENDER_VIEWS, LineStyle(size=512))
    except ModelError:
        return False
    for image in images.values():
        encode_png(image)
    return True


def render_rate(files: list[Path], workers: int = 0) -> float:
    """Models per second that `workers` processes (0: every core) render, from timing the files on this core."""
    started = time.perf_counter()
    for path in files:
        render_one(path)
    return len(files) / (time.perf_counter() - started) * (workers or available_cores())


def throughput(work: Callable[[Path], bool], files: list[Path], seconds: float, workers: int = 0) -> dict:
    """Models per second on one core (best and median round), and summed over `workers` processes (0: every core)."""
    rejected = sum(not work(path) for path in files)
    rounds = _round_rates(work, files, seconds)
    workers = workers or available_cores()
    with process_pool(workers) as pool:
        per_worker = list(pool.map(_round_rates, [work] * workers, [files] * workers, [seconds] * workers))
    return {
        "one_core_best": max(rounds),
        "one_core_median": statistics.median(rounds),
        "all_cores_median": sum(statistics.median(worker) for worker in per_worker),
        "workers": workers,
        "rejected": rejected,
    }


def _round_rates(work: Callable[[Path], bool], files: list[Path], seconds: float) -> list[float]:
    """Models per second in each round; timed inside the working process, so pool start-up is not counted."""
    rates = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        count = _count(work, files, seconds / ROUNDS)
        rates.append(count / (time.perf_counter() - started))
    return rates


def _count(work: Callable[[Path], bool], files: list[Path], seconds: float) -> int:
    """Whole passes over the files until at least `seconds` have gone by."""
    started, count = time.perf_counter(), 0
    while count == 0 or time.perf_counter() - started < seconds:
        for path in files:
            work(path)
        count += len(files)
    return count


def conversation_rate(files: list[Path], seconds: float) -> dict:
    """Samples per minute on one core for what the conversations asset adds per model: the code, its token count
    and one record per view. Reading and building are measured by the build benchmark, so models are read first."""
    from cad_pipeline.cad.openecad.writer import write_code
    from cad_pipeline.dataset.conversations import answer_text, conversation
    from cad_pipeline.dataset.tokens import OPENECAD_TOKENIZER, open_token_counter

    sequences, rejected = [], 0
    for path in files:
        try:
            sequences.append(read_file(path))
        except ModelError:
            rejected += 1
    tokens = open_token_counter(OPENECAD_TOKENIZER)

    def one_model(sequence) -> int:
        code = write_code(sequence)
        tokens.count(answer_text(code))
        for view in ("front", "top", "right")[:VIEWS_PER_MODEL]:
            conversation(f"{sequence.model_id}_{view}", f"{sequence.model_id}_{view}.png", "per_view", code)
        return VIEWS_PER_MODEL

    rates = []
    for _ in range(ROUNDS):
        samples, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds / ROUNDS:
            for sequence in sequences:
                samples += one_model(sequence)
        rates.append(60.0 * samples / (time.perf_counter() - started))
    return {"best": max(rates), "median": statistics.median(rates), "models": len(sequences), "rejected": rejected}
