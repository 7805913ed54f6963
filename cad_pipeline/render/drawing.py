"""Engineering line drawings: one scale for every view of a model, visible lines solid, hidden lines dashed.

Pixels are drawn with numpy from exact hidden-line removal, so the same model and settings give
the same bytes in every process.
"""

from __future__ import annotations

import io
import itertools
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import numpy as np
from OCP.TopoDS import TopoDS_Shape
from PIL import Image

from cad_pipeline.cad.measure import exact_bbox
from cad_pipeline.render.hidden_lines import hidden_line_drawing
from cad_pipeline.render.shading import paint_faces, triangles
from cad_pipeline.render.views import VIEWS, View

WHITE, BLACK = 255, 0


@dataclass(frozen=True)
class LineStyle:
    size: int = 512
    shaded: bool = False
    """Paint the body grey under its visible edges (and leave hidden edges out), instead of a pure line drawing."""
    margin: float = 0.08
    """Share of the image left empty on each side of the widest view."""
    visible_width: int = 2
    hidden_gray: int = 110
    dash_on: int = 6
    dash_off: int = 4


@dataclass(frozen=True)
class Framing:
    """Where a model lands in every view: the pixels per metre shared by all views, and each view's centre."""

    scale: float
    centers: dict[str, tuple[float, float]]

    def to_pixels(self, view: View, points: np.ndarray, size: int) -> np.ndarray:
        cx, cy = self.centers[view.name]
        half = size / 2.0
        return np.column_stack(((points[:, 0] - cx) * self.scale + half, half - (points[:, 1] - cy) * self.scale))


def frame_views(shape: TopoDS_Shape, views: list[View], style: LineStyle) -> Framing:
    """One scale that fits the widest projected bounding box of all views inside the margins."""
    low, high = exact_bbox(shape)
    corners = list(itertools.product(*zip(low, high)))
    extents, centers = [], {}
    for view in views:
        projected = np.array([view.project(corner) for corner in corners])
        lo, hi = projected.min(axis=0), projected.max(axis=0)
        extents.append(float((hi - lo).max()))
        centers[view.name] = (float(lo[0] + hi[0]) / 2.0, float(lo[1] + hi[1]) / 2.0)
    usable = style.size * (1.0 - 2.0 * style.margin)
    return Framing(scale=usable / max(max(extents), 1e-12), centers=centers)


def draw_views(shape: TopoDS_Shape, views: list[View], style: LineStyle = LineStyle()) -> dict[str, np.ndarray]:
    """Greyscale images (uint8, white background) of the solid, one per view, at one common scale."""
    framing = frame_views(shape, views, style)
    deflection = 0.5 / framing.scale  # chords stay within half a pixel of the true curve
    faces = triangles(shape, deflection) if style.shaded else None
    images = {}
    for view in views:
        lines = hidden_line_drawing(shape, view, deflection)
        canvas = np.full((style.size, style.size), WHITE, dtype=np.uint8)
        to_pixels = partial(framing.to_pixels, view, size=style.size)
        if faces is None:
            _stroke(canvas, lines.hidden, to_pixels, style.hidden_gray, 1, style)
        else:
            canvas = paint_faces(canvas, faces, view, to_pixels)
        _stroke(canvas, lines.visible, to_pixels, BLACK, style.visible_width, None)
        images[view.name] = canvas
    return images


GRID_VIEWS = ("iso", "front", "top", "right")
"""The 2x2 grid, row by row: iso and front above, top and right below (the layout OpenECAD trained on)."""


def draw_grid(shape: TopoDS_Shape, style: LineStyle = LineStyle()) -> np.ndarray:
    """One image of `style.size` pixels holding the four grid views at half size and one common scale."""
    half = replace(style, size=style.size // 2)
    images = draw_views(shape, [VIEWS[name] for name in GRID_VIEWS], half)
    top_row = np.hstack([images["iso"], images["front"]])
    bottom_row = np.hstack([images["top"], images["right"]])
    grid = np.full((style.size, style.size), WHITE, dtype=np.uint8)
    grid[: 2 * half.size, : 2 * half.size] = np.vstack([top_row, bottom_row])
    return grid


def encode_png(image: np.ndarray) -> bytes:
    """Single-channel PNG at zlib level 1: drawings are mostly white, so the fast level costs little size."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _stroke(
    canvas: np.ndarray,
    polylines: list[np.ndarray],
    to_pixels: Callable[[np.ndarray], np.ndarray],
    value: int,
    width: int,
    dashes: LineStyle | None,
) -> None:
    """Draw polylines (view coordinates) as runs of pixels sampled every half pixel; dashes take their phase from
    the screen coordinate along each segment's main axis, so coincident hidden edges keep one dash pattern."""
    if not polylines:
        return
    starts = to_pixels(np.concatenate([line[:-1] for line in polylines]))
    ends = to_pixels(np.concatenate([line[1:] for line in polylines]))
    delta = ends - starts
    steps = np.ceil(np.abs(delta).max(axis=1) * 2.0).astype(np.int64) + 1
    segment = np.repeat(np.arange(len(starts)), steps)
    offset = np.arange(int(steps.sum())) - np.repeat(np.cumsum(steps) - steps, steps)
    points = starts[segment] + delta[segment] * (offset / np.maximum(steps - 1, 1)[segment])[:, None]
    if dashes is not None:
        along_x = np.abs(delta[segment, 0]) >= np.abs(delta[segment, 1])
        phase = np.where(along_x, points[:, 0], points[:, 1])
        points = points[np.mod(phase, dashes.dash_on + dashes.dash_off) < dashes.dash_on]
    pixels = np.floor(points - (width - 1) / 2.0).astype(np.int64)
    size = canvas.shape[0]
    for dx in range(width):
        for dy in range(width):
            x, y = pixels[:, 0] + dx, pixels[:, 1] + dy
            inside = (x >= 0) & (x < size) & (y >= 0) & (y < size)
            canvas[y[inside], x[inside]] = value
