"""Geometric scores of a predicted solid against the true one, under the protocols published work uses.

- DeepCAD (`evaluation/evaluate_ae_cd.py`): both solids in the truth's normalized frame (scaled by
  0.75 / max |bbox coordinate|, not centred; the truth's exact box stands for the box DeepCAD's JSON
  states, which was measured on the same solid), 2,000 surface points each, Chamfer distance =
  mean squared nearest distance truth->prediction + prediction->truth; a prediction whose points
  reach past 2 is divided by its largest coordinate, as DeepCAD does. Papers report it x10^3.
- CAD-Recode: both solids moved into the unit cube by the truth's box (centred, largest extent 1),
  8,192 points each, the same two-way mean squared distance, reported x10^3.
- IoU from exact OpenCASCADE boolean volumes, in metres (a ratio, so no normalization is needed).

Truth and prediction are sampled with generators seeded alike, so a solid scored against itself
gets exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from OCP.BRepAlgoAPI import BRepAlgoAPI_Common
from OCP.TopoDS import TopoDS_Shape
from scipy.spatial import cKDTree

from cad_pipeline.cad.measure import exact_bbox, volume
from cad_pipeline.render.shading import triangles

DEEPCAD_POINTS = 2000
DEEPCAD_SCALE = 0.75
CAD_RECODE_POINTS = 8192
MESH_DEFLECTION = 1e-3
"""Mesh deflection relative to the model's size: points lie within 0.1% of the true surface."""


@dataclass(frozen=True)
class Frame:
    """x -> (x - offset) * scale, the same for truth and prediction."""

    offset: np.ndarray
    scale: float

    def apply(self, points: np.ndarray) -> np.ndarray:
        return (points - self.offset) * self.scale


def deepcad_frame(truth_bbox: tuple) -> Frame:
    """DeepCAD's CADSequence.normalize: scaled by 0.75 / the largest absolute bbox coordinate, not centred."""
    low, high = np.asarray(truth_bbox[0]), np.asarray(truth_bbox[1])
    return Frame(np.zeros(3), DEEPCAD_SCALE / float(np.max(np.abs(np.concatenate([low, high])))))


def unit_cube_frame(truth_bbox: tuple) -> Frame:
    """CAD-Recode: centred on the truth's box, its largest extent scaled to 1, shifted into [0, 1]."""
    low, high = np.asarray(truth_bbox[0]), np.asarray(truth_bbox[1])
    scale = 1.0 / float(np.max(high - low))
    return Frame((low + high) / 2 - 0.5 / scale, scale)


def surface_points(shape: TopoDS_Shape, count: int, rng: np.random.Generator) -> np.ndarray:
    """Points uniformly distributed over the surface (area-weighted triangles of a fine mesh)."""
    low, high = (np.asarray(corner) for corner in exact_bbox(shape))
    mesh = triangles(shape, MESH_DEFLECTION * float(np.max(high - low)))
    if len(mesh) == 0:
        raise ValueError("the solid has no surface to sample")
    a, b, c = mesh[:, 0], mesh[:, 1], mesh[:, 2]
    areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    chosen = rng.choice(len(mesh), size=count, p=areas / areas.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1.0
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    return a[chosen] + u[:, None] * (b[chosen] - a[chosen]) + v[:, None] * (c[chosen] - a[chosen])


def chamfer(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean squared nearest distance both ways, summed (no square root), as DeepCAD and CAD-Recode compute it."""
    to_predicted, _ = cKDTree(predicted).query(truth)
    to_truth, _ = cKDTree(truth).query(predicted)
    return float(np.mean(to_predicted**2) + np.mean(to_truth**2))


def deepcad_chamfer(truth: TopoDS_Shape, predicted: TopoDS_Shape, seed: int = 0, truth_bbox: tuple | None = None) -> float:
    """`truth_bbox`: the box DeepCAD normalizes by (the JSON's stated one); the truth's exact box when not given."""
    frame = deepcad_frame(truth_bbox or exact_bbox(truth))
    truth_points = frame.apply(surface_points(truth, DEEPCAD_POINTS, np.random.default_rng(seed)))
    predicted_points = frame.apply(surface_points(predicted, DEEPCAD_POINTS, np.random.default_rng(seed)))
    reach = float(np.max(np.abs(predicted_points)))
    if reach > 2.0:
        predicted_points = predicted_points / reach
    return chamfer(truth_points, predicted_points)


def cad_recode_chamfer(truth: TopoDS_Shape, predicted: TopoDS_Shape, seed: int = 0) -> float:
    frame = unit_cube_frame(exact_bbox(truth))
    truth_points = frame.apply(surface_points(truth, CAD_RECODE_POINTS, np.random.default_rng(seed)))
    return chamfer(truth_points, frame.apply(surface_points(predicted, CAD_RECODE_POINTS, np.random.default_rng(seed))))


def iou(truth: TopoDS_Shape, predicted: TopoDS_Shape) -> float:
    """Volume of the intersection over volume of the union, from OpenCASCADE's exact boolean."""
    common = BRepAlgoAPI_Common(truth, predicted)
    common.SetRunParallel(False)
    common.Build()
    if not common.IsDone():
        raise ValueError("OpenCASCADE could not intersect the two solids")
    both = volume(common.Shape())
    union = volume(truth) + volume(predicted) - both
    return min(1.0, both / union) if union > 0 else 0.0  # above 1 only by integration error

