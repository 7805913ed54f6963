"""One call from a DeepCAD file to the facts a user checks first: valid or why not, counts, volume, area, bbox."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


from cad_pipeline.cad.build import OCC_ERRORS, build_solid
from cad_pipeline.cad.deepcad_json import read_bytes, read_model_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.measure import measure
from cad_pipeline.cad.openecad.interpreter import interpret
from cad_pipeline.cad.openecad.program import CodeRejected
from cad_pipeline.store import code_version


@dataclass(frozen=True)
class ModelReport:
    id: str
    valid: bool
    reason: str | None
    reason_code: str | None
    n_extrudes: int
    n_curves: int
    volume: float | None
    area: float | None
    bbox_min: tuple[float, float, float] | None
    bbox_max: tuple[float, float, float] | None

    def to_json(self) -> dict:
        """The `inspect --json` object (the reason code stays internal, for counting)."""
        record = asdict(self)
        del record["reason_code"]
        return record

    def to_stored_json(self) -> bytes:
        """Everything but the id: the report depends only on the file's content."""
        record = asdict(self)
        del record["id"]
        return json.dumps(record).encode()

    @classmethod
    def from_stored_json(cls, raw: bytes, model_id: str) -> ModelReport:
        record = json.loads(raw)
        for key in ("bbox_min", "bbox_max"):
            record[key] = tuple(record[key]) if record[key] is not None else None
        return cls(id=model_id, **record)


def inspector_version() -> str:
    """Names the code that decides a report, so stored reports never go stale."""
    return code_version(*(f"cad/{name}.py" for name in ("sequence", "loops", "deepcad_json", "build", "measure", "errors", "inspect")))


def inspect_bytes(raw: bytes | str, model_id: str) -> ModelReport:
    """Read, build and measure; bad input gives a report with valid=False, never an exception."""
    return _inspect(lambda: read_bytes(raw, model_id), model_id)


def inspect_code(source: str, model_id: str) -> ModelReport:
    """The same report for OpenECAD code, read through the safe interpreter (nothing in it is executed)."""

    def read():
        try:
            return interpret(source, model_id)
        except CodeRejected as error:
            raise ModelError("code_rejected", str(error)) from None

    return _inspect(read, model_id)


def _inspect(read, model_id: str) -> ModelReport:
    n_extrudes = n_curves = 0
    try:
        sequence = read()
        n_extrudes, n_curves = len(sequence.extrudes), sequence.n_curves
        measured = measure(build_solid(sequence))
        if not measured.volume > 0.0:
            raise ModelError("no_solid", f"the built solid has no volume ({measured.volume:.3g} m^3)")
    except OCC_ERRORS as error:
        reason = f"OpenCASCADE failed while measuring the solid: {type(error).__name__}: {error}"
        return ModelReport(model_id, False, reason, "occ_failure", n_extrudes, n_curves, None, None, None, None)
    except ModelError as error:
        return ModelReport(model_id, False, error.message, error.code, n_extrudes, n_curves, None, None, None, None)
    return ModelReport(
        model_id, True, None, None, n_extrudes, n_curves, measured.volume, measured.area, measured.bbox_min, measured.bbox_max
    )


def inspect_file(path: str | Path) -> ModelReport:
    path = Path(path)
    try:
        raw = read_model_file(path)
    except ModelError as error:
        return ModelReport(path.stem, False, error.message, error.code, 0, 0, None, None, None, None)
    return inspect_bytes(raw, path.stem)
