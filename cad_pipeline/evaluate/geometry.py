"""Geometric scores of a predicted solid against the true one, under the protocols published work uses.

- DeepCAD (`evaluation/evaluate_ae_cd.py`): both solids in the truth's normalized frame (scaled by
  0.75 / max |bbox coordinate|, not centred; the truth's exact box stands for the box DeepCAD's JSON
  states, which was measured on the same solid), 2,000 surface points each, Chamfer distance =
  mean squared nearest distance truth->prediction + prediction->truth; a prediction whose points
  reach past 2 is divided by its largest coordinate, as DeepCAD does. Papers report it x10^3.
- CAD-Recode: both solids moved into the unit cube by the truth's box (centred, largest extent 1),
  8,192 points each, the same two-way mean squared distance, reported x10^3.
- IoU from exact OpenCASCADE boolean volumes, in metres (a ratio, so no normalization is needed).

Sampling: the papers draw the truth's and the prediction's points independently, so even a perfect
prediction scores the sampling floor (about 0.2-1.4 x10^3 under DeepCAD's protocol on the real
samples, less with CAD-Recode's 8,192 points); `paired=False` does the same, and its numbers are the
ones to compare with published work. `paired=True` draws both clouds with one seed over canonically
ordered meshes, so a solid scored against itself gets exactly 0 and a small error shows undrowned by
the floor; it is this project's own, more sensitive reading.
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
CANONICAL_QUANTUM = 1e-9
"""Positions that differ by less than this share of the model's size sort as equal (float noise of a rebuild)."""
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
    size = float(np.max(high - low))
    mesh = triangles(shape, MESH_DEFLECTION * size)
    if len(mesh) == 0:
        raise ValueError("the solid has no surface to sample")
    mesh = canonical_order(mesh, size * CANONICAL_QUANTUM)
    a, b, c = mesh[:, 0], mesh[:, 1], mesh[:, 2]
    areas = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    chosen = rng.choice(len(mesh), size=count, p=areas / areas.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1.0
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    return a[chosen] + u[:, None] * (b[chosen] - a[chosen]) + v[:, None] * (c[chosen] - a[chosen])


def canonical_order(mesh: np.ndarray, quantum: float) -> np.ndarray:
    """The triangles with their corners and themselves sorted by position, so that the same surface meshed from
    another B-rep of it (faces or edges listed in another order, as a solid rebuilt from code is) gives the same
    sampled points."""
    keys = np.round(mesh / quantum)
    corner_order = np.lexsort((keys[:, :, 2], keys[:, :, 1], keys[:, :, 0]), axis=-1)
    mesh = np.take_along_axis(mesh, corner_order[:, :, None], axis=1)
    keys = np.take_along_axis(keys, corner_order[:, :, None], axis=1).reshape(len(mesh), 9)
    return mesh[np.lexsort(keys.T[::-1])]


def chamfer(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Mean squared nearest distance both ways, summed (no square root), as DeepCAD and CAD-Recode compute it."""
    to_predicted, _ = cKDTree(predicted).query(truth)
    to_truth, _ = cKDTree(truth).query(predicted)
    return float(np.mean(to_predicted**2) + np.mean(to_truth**2))


def deepcad_chamfer(truth: TopoDS_Shape, predicted: TopoDS_Shape, seed: int = 0, truth_bbox: tuple | None = None, paired: bool = False) -> float:
    """`truth_bbox`: the box DeepCAD normalizes by (the JSON's stated one); the truth's exact box when not given."""
    frame = deepcad_frame(truth_bbox or exact_bbox(truth))
    truth_points, predicted_points = _point_clouds(truth, predicted, DEEPCAD_POINTS, frame, seed, paired)
    reach = float(np.max(np.abs(predicted_points)))
    if reach > 2.0:
        predicted_points = predicted_points / reach
    return chamfer(truth_points, predicted_points)


def cad_recode_chamfer(truth: TopoDS_Shape, predicted: TopoDS_Shape, seed: int = 0, paired: bool = False) -> float:
    return chamfer(*_point_clouds(truth, predicted, CAD_RECODE_POINTS, unit_cube_frame(exact_bbox(truth)), seed, paired))


def _point_clouds(truth: TopoDS_Shape, predicted: TopoDS_Shape, count: int, frame: Frame, seed: int, paired: bool) -> tuple[np.ndarray, np.ndarray]:
    truth_points = frame.apply(surface_points(truth, count, np.random.default_rng(seed)))
    predicted_points = frame.apply(surface_points(predicted, count, np.random.default_rng(seed if paired else seed + 1)))
    return truth_points, predicted_points


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

