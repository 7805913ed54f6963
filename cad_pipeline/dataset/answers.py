"""The code answer of every model, each proven by a round trip, kept in the content-addressed store.

An answer depends only on the model file and the code that writes, reads and builds it, so it is
stored under the file's hash and that code's version: a larger scale, or a rerun, only works on
models it has not seen. Building can crash or hang inside OpenCASCADE, so each model runs in a
sandbox, as rendering does.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path

from cad_pipeline.cad.deepcad_json import read_bytes, read_model_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.measure import Measurements
from cad_pipeline.cad.openecad.round_trip import round_trip
from cad_pipeline.parallel import Isolated, map_in_sandboxes
from cad_pipeline.store import DamagedEntry, code_version, read_sealed, store_path, write_sealed

ANSWER_MODULES = (
    "cad/sequence.py", "cad/loops.py", "cad/deepcad_json.py", "cad/build.py", "cad/measure.py",
    "cad/openecad/numbers.py", "cad/openecad/planes.py", "cad/openecad/loop_order.py", "cad/openecad/writer.py",
    "cad/openecad/program.py", "cad/openecad/interpreter.py", "cad/openecad/round_trip.py", "dataset/answers.py",
)  # fmt: skip
CHUNK = 32
"""Models per task: each task's sandbox serves several models."""


@dataclass(frozen=True)
class CodeAnswer:
    id: str
    code: str | None
    """None when the model could not be read or its code could not be written."""
    round_trip: bool
    reason: str | None
    """Why there is no code or why the round trip failed."""
    reused: bool
    displacement_bound: float | None = None
    bbox_error: float | None = None
    volume_error: float | None = None
    volume_tolerance: float | None = None
    repaired: str | None = None
    """A damaged stored answer this one replaced: its path and what was wrong."""


@dataclass(frozen=True)
class AnswersResult:
    answers: list[CodeAnswer]
    seconds: float

    @property
    def reused(self) -> int:
        return sum(answer.reused for answer in self.answers)

    @property
    def repaired(self) -> list[str]:
        return [answer.repaired for answer in self.answers if answer.repaired]

    @property
    def failed_round_trip(self) -> list[CodeAnswer]:
        return [answer for answer in self.answers if not answer.round_trip]


def answers_version() -> str:
    return code_version(*ANSWER_MODULES)


def code_answers(
    files: dict[str, Path],
    direct: dict[str, Measurements],
    store: Path,
    executor: Executor,
    timeout: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> AnswersResult:
    """Every model's code answer and round-trip verdict against its direct build (`direct`, from the subset)."""
    started = time.perf_counter()
    jobs = [(model_id, str(path), direct[model_id], str(store)) for model_id, path in files.items()]
    answers = map_in_sandboxes(executor, answer_one, jobs, _answer_failed, timeout, CHUNK, progress)
    return AnswersResult(answers, time.perf_counter() - started)


def _answer_failed(job: tuple[str, str, Measurements, str], isolated: Isolated) -> CodeAnswer:
    return CodeAnswer(job[0], None, False, f"{isolated.failure}: {isolated.detail}", False)


def answer_one(job: tuple[str, str, Measurements, str]) -> CodeAnswer:
    """Worker: one model's answer, from the store when it is there."""
    model_id, path, direct, store = job
    try:
        raw = read_model_file(Path(path))
    except ModelError as error:
        return CodeAnswer(model_id, None, False, error.message, False)
    stored = store_path(Path(store), "answers", answers_version(), hashlib.sha256(raw).hexdigest(), ".json")
    try:
        kept = read_sealed(stored)
        if kept is not None:
            return CodeAnswer(id=model_id, reused=True, **json.loads(kept))
        damage = None
    except DamagedEntry as error:
        damage = str(error)
    except (ValueError, TypeError) as error:
        damage = f"{stored}: sealed, but not an answer ({type(error).__name__})"
    try:
        result = round_trip(read_bytes(raw, model_id), direct)
    except ModelError as error:
        return CodeAnswer(model_id, None, False, f"the model cannot be read: {error.message}", False, repaired=damage)
    answer = CodeAnswer(
        id=model_id,
        code=result.code,
        round_trip=result.passed,
        reason=result.reason,
        reused=False,
        displacement_bound=result.displacement_bound,
        bbox_error=result.bbox_error,
        volume_error=result.volume_error,
        volume_tolerance=result.volume_tolerance,
        repaired=damage,
    )
    record = asdict(answer)
    del record["id"], record["reused"], record["repaired"]
    write_sealed(stored, json.dumps(record).encode())
    return answer
