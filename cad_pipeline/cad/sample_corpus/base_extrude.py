"""The base of a model: its first sketch, placed and sized as designers do, and the NewBody extrude of it."""

from __future__ import annotations

import random

from cad_pipeline.cad.sample_corpus.draft import NEW_BODY, Block, Draft, Face
from cad_pipeline.cad.sample_corpus.extents import ONE_SIDE, SYMMETRIC, TWO_SIDES, encode_extent
from cad_pipeline.cad.sample_corpus.frames import base_frame, map_rect
from cad_pipeline.cad.sample_corpus.numeric import log_uniform, pick, snap
from cad_pipeline.cad.sample_corpus.shapes import BASE_SHAPES, hole_shapes, make_shape
from cad_pipeline.cad.sample_corpus.sketch_geometry import Point2, Rect, Region


def add_base(draft: Draft) -> None:
    """The first sketch and its NewBody extrude, with the top and bottom faces later features use."""
    rng, grid, size = draft.rng, draft.grid, draft.size
    frame = base_frame(rng, size, grid)
    width, height = size, max(4 * grid, snap(size * log_uniform(rng, 0.3, 1.0), grid))
    if rng.random() < 0.5:
        width, height = height, width
    rect = Rect.around(_base_center(rng, width, height, size, grid), width / 2, height / 2)
    shape = make_shape(rng, pick(rng, BASE_SHAPES), rect, grid)
    holes = hole_shapes(rng, shape.inner, grid) if rng.random() < 0.45 else []
    sketch = draft.add_sketch(frame, [Region(shape.loop, tuple(hole.loop for hole, _ in holes))])
    kind = pick(rng, ((ONE_SIDE, 78), (SYMMETRIC, 14), (TWO_SIDES, 8)))
    low, high = _base_interval(rng, kind, max(grid, snap(size * log_uniform(rng, 0.04, 1.5), grid)), grid)
    draft.add_extrude(sketch, (0,), NEW_BODY, encode_extent(rng, kind, low, high))
    draft.base_interval, draft.base_kind = (low, high), kind
    claims = [spot.inset(-grid / 2, -grid / 2) for _, spot in holes]
    top = Face(frame.child((0.0, 0.0, high), (0, 0, 1), (1, 0, 0)), shape.inner, high - low, list(claims))
    bottom_frame = frame.child((0.0, 0.0, low), (0, 0, -1), (1, 0, 0))
    bottom = Face(bottom_frame, map_rect(shape.inner, top.frame, bottom_frame), high - low, [map_rect(c, top.frame, bottom_frame) for c in claims])
    top.opposite, bottom.opposite = bottom, top
    draft.faces += [top, bottom]
    draft.blocks.append(Block(frame, (rect.x0, rect.y0, low), (rect.x1, rect.y1, high)))


def _base_center(rng: random.Random, width: float, height: float, size: float, grid: float) -> Point2:
    """Designers centre a part on the origin, put a corner there, or leave it anywhere."""
    draw = rng.random()
    if draw < 0.5:
        return 0.0, 0.0
    if draw < 0.8:
        return rng.choice((-1, 1)) * width / 2, rng.choice((-1, 1)) * height / 2
    return snap(rng.uniform(-size, size), grid), snap(rng.uniform(-size, size), grid)


def _base_interval(rng: random.Random, kind: str, thickness: float, grid: float) -> tuple[float, float]:
    if kind == SYMMETRIC:
        half = max(grid / 2, snap(thickness / 2, grid / 2))
        return -half, half
    if kind == TWO_SIDES:
        along = min(max(grid, snap(rng.uniform(0.3, 0.8) * thickness, grid)), thickness)
        return -max(grid, thickness - along), along
    return (0.0, thickness) if rng.random() < 0.82 else (-thickness, 0.0)
