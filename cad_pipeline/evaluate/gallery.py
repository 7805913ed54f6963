"""Ground truth next to predictions, drawn with the project's renderer, for the evaluation's gallery.

Drawing an untrusted prediction builds it in OpenCASCADE, so it runs in a worker's sandbox like scoring.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cad_pipeline.cad.build import OCC_ERRORS, build_solid
from cad_pipeline.cad.deepcad_json import read_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.openecad.interpreter import interpret
from cad_pipeline.cad.openecad.program import CodeRejected
from cad_pipeline.parallel import Isolated
from cad_pipeline.render.drawing import LineStyle, draw_grid
from cad_pipeline.render.gallery import contact_sheet

CELL = 384
"""Pixels of one drawn model (a 2x2 grid of iso, front, top and right, each model at its own scale)."""
NO_SOLID_GRAY = 225


@dataclass(frozen=True)
class DrawJob:
    truth_file: str
    codes: tuple[str | None, ...]
    """The predictions drawn beside the truth, one per column; None where there is no code."""


def draw_row(job: DrawJob) -> list[np.ndarray]:
    """Worker: the truth's drawing, then each prediction's, or a crossed-out cell where it builds no solid."""
    row = [draw_grid(build_solid(read_file(job.truth_file)), LineStyle(size=CELL))]
    for code in job.codes:
        try:
            row.append(draw_grid(build_solid(interpret(code, "prediction")), LineStyle(size=CELL)) if code is not None else no_solid_cell())
        except (CodeRejected, ModelError, *OCC_ERRORS):
            row.append(no_solid_cell())
    return row


def draw_row_failed(job: DrawJob, isolated: Isolated) -> list[np.ndarray]:
    return [no_solid_cell() for _ in range(1 + len(job.codes))]


def no_solid_cell() -> np.ndarray:
    """A grey cell crossed from corner to corner."""
    cell = np.full((CELL, CELL), NO_SOLID_GRAY, dtype=np.uint8)
    diagonal = np.arange(CELL)
    for offset in (-1, 0, 1):
        shifted = np.clip(diagonal + offset, 0, CELL - 1)
        cell[diagonal, shifted] = 120
        cell[diagonal, CELL - 1 - shifted] = 120
    return cell


def gallery_png(rows: list[list[np.ndarray]]) -> bytes:
    return contact_sheet(rows, factor=1)
