"""Features: the extrudes after the base (bosses, pockets, patterns, cross holes and bars, hole fills,
intersects), and a sketch no extrude uses."""

from __future__ import annotations

import random
from collections.abc import Callable

from cad_pipeline.cad.sample_corpus.draft import CUT, INTERSECT, JOIN, NEW_BODY, Block, Draft, Face
from cad_pipeline.cad.sample_corpus.extents import (
    ONE_SIDE,
    SYMMETRIC,
    TWO_SIDES,
    cut_depth,
    cut_interval,
    encode_extent,
    extent_kind,
    grown_interval,
    signed,
)
from cad_pipeline.cad.sample_corpus.frames import map_box, map_rect, unit
from cad_pipeline.cad.sample_corpus.numeric import log_uniform, pick, snap, snap_down
from cad_pipeline.cad.sample_corpus.placement import claim_spot, cross_frame, face_sketch_frame, find_spot, pick_block, pick_face
from cad_pipeline.cad.sample_corpus.shapes import BAR_SHAPES, FEATURE_SHAPES, HOLE_SHAPES, TRIM_SHAPES, central_hole, make_shape
from cad_pipeline.cad.sample_corpus.sketch_geometry import Rect, Region, Shape, translated

FEATURES = (
    ("boss", 30), ("pocket", 26), ("pattern", 6), ("cross_hole", 7), ("cross_bar", 6),
    ("new_body", 7), ("hole_fill", 5), ("intersect", 6),
)
"""Kinds of later extrude, with weights; an intersect only ever ends a model."""


def add_feature(draft: Draft, last: bool) -> None:
    """Add one extrude (with its sketch), falling back to a cross feature when a face has no room."""
    rng = draft.rng
    allowed = [
        (kind, weight)
        for kind, weight in FEATURES
        if (kind != "intersect" or last) and (kind != "hole_fill" or _can_fill_holes(draft))
    ]
    if not _FEATURE_BUILDERS[pick(rng, tuple(allowed))](draft):
        (_add_cross_hole if rng.random() < 0.5 else _add_cross_bar)(draft)


def _add_boss(draft: Draft, operation: str = JOIN) -> bool:
    """A solid (or tube) grown out of a face; its top becomes a face for later features."""
    rng, grid = draft.rng, draft.grid
    face = pick_face(draft)
    spot = find_spot(rng, face, grid, 0.25, 0.85)
    if spot is None:
        return False
    frame, sign = face_sketch_frame(rng, face, spot, grid)
    local = map_rect(spot, face.frame, frame)
    shape = make_shape(rng, pick(rng, FEATURE_SHAPES), local, grid)
    holes = central_hole(rng, shape, grid) if rng.random() < 0.25 else []
    sketch = draft.add_sketch(frame, [Region(shape.loop, tuple(hole.loop for hole, _ in holes))])
    height = max(grid, snap(spot.short * log_uniform(rng, 0.15, 2.0), grid))
    kind = extent_kind(rng)
    low, high = grown_interval(rng, kind, height, face.thickness, grid)
    profiles = (0, 1) if holes and rng.random() < 0.2 else (0,)
    draft.add_extrude(sketch, profiles, operation, encode_extent(rng, kind, *signed(low, high, sign)))
    face.claimed.append(spot)
    top = frame.child((0.0, 0.0, sign * high), (0, 0, sign), (1, 0, 0))
    claims = [map_rect(hole_spot, frame, top, sign * high) for _, hole_spot in holes]
    draft.faces.append(Face(top, map_rect(shape.inner, frame, top, sign * high), height, claims))
    lower, upper = sorted(signed(low, high, sign))
    draft.blocks.append(Block(frame, (local.x0, local.y0, lower), (local.x1, local.y1, upper)))
    return True


def _add_new_body(draft: Draft) -> bool:
    """A boss made as a separate body, as designers often do before merging; the builder fuses it."""
    return _add_boss(draft, NEW_BODY)


def _add_pocket(draft: Draft) -> bool:
    """A blind pocket or a through cut from a face; a blind pocket's floor becomes a face."""
    rng, grid = draft.rng, draft.grid
    face = pick_face(draft)
    spot = find_spot(rng, face, grid, 0.2, 0.7)
    if spot is None:
        return False
    frame, sign = face_sketch_frame(rng, face, spot, grid)
    shape = make_shape(rng, pick(rng, FEATURE_SHAPES), map_rect(spot, face.frame, frame), grid)
    islands = central_hole(rng, shape, grid) if rng.random() < 0.12 else []
    sketch = draft.add_sketch(frame, [Region(shape.loop, tuple(island.loop for island, _ in islands))])
    through = face.thickness < 3 * grid or rng.random() < 0.45
    depth = cut_depth(rng, face.thickness, grid, through)
    kind = extent_kind(rng)
    low, high = cut_interval(rng, kind, depth, grid)
    draft.add_extrude(sketch, (0,), CUT, encode_extent(rng, kind, *signed(low, high, sign)))
    claim_spot(face, spot, through)
    if not through:
        floor = frame.child((0.0, 0.0, -sign * depth), (0, 0, sign), (1, 0, 0))
        claims = [map_rect(island_spot, frame, floor, -sign * depth) for _, island_spot in islands]
        draft.faces.append(Face(floor, map_rect(shape.inner, frame, floor, -sign * depth), face.thickness - depth, claims))
    return True


def _add_pattern(draft: Draft) -> bool:
    """Two to six equal holes or pegs in a grid, each its own profile, in one multi-profile extrude."""
    rng, grid = draft.rng, draft.grid
    face = pick_face(draft)
    spot = find_spot(rng, face, grid, 0.3, 0.9)
    if spot is None:
        return False
    frame, sign = face_sketch_frame(rng, face, spot, grid)
    local = map_rect(spot, face.frame, frame)
    items = _grid_of_shapes(rng, local, grid)
    sketch = draft.add_sketch(frame, [Region(item.loop) for item in items])
    profiles = tuple(range(len(items)))
    if rng.random() < 0.15:
        profiles = tuple(sorted(rng.sample(profiles, rng.randrange(1, len(profiles)))))
    kind = extent_kind(rng)
    if rng.random() < 0.7:
        through = face.thickness < 3 * grid or rng.random() < 0.6
        low, high = cut_interval(rng, kind, cut_depth(rng, face.thickness, grid, through), grid)
        draft.add_extrude(sketch, profiles, CUT, encode_extent(rng, kind, *signed(low, high, sign)))
        claim_spot(face, spot, through)
        return True
    height = max(grid, snap(spot.short * log_uniform(rng, 0.2, 1.5), grid))
    low, high = grown_interval(rng, kind, height, face.thickness, grid)
    draft.add_extrude(sketch, profiles, JOIN, encode_extent(rng, kind, *signed(low, high, sign)))
    face.claimed.append(spot)
    return True


def _grid_of_shapes(rng: random.Random, rect: Rect, grid: float) -> list[Shape]:
    """Copies of one small shape at the centres of a grid of cells, the long way along the rectangle."""
    columns, rows = rng.choice(((2, 1), (3, 1), (2, 2), (4, 1), (3, 2)))
    if rect.height > rect.width:
        columns, rows = rows, columns
    cell_w, cell_h = rect.width / columns, rect.height / rows
    fraction = rng.uniform(0.35, 0.75)
    half_w = snap_down(fraction * cell_w / 2, grid / 4) or fraction * cell_w / 2
    half_h = snap_down(fraction * cell_h / 2, grid / 4) or fraction * cell_h / 2
    if rng.random() < 0.6:
        half_w = half_h = min(half_w, half_h)
    first_center = (rect.x0 + cell_w / 2, rect.y0 + cell_h / 2)
    first = make_shape(rng, pick(rng, HOLE_SHAPES), Rect.around(first_center, half_w, half_h), grid)
    return [translated(first, column * cell_w, row * cell_h) for row in range(rows) for column in range(columns)]


def _add_cross_hole(draft: Draft) -> bool:
    """A hole across the body, drilled from a side or from a plane through its middle."""
    rng, grid = draft.rng, draft.grid
    from_side = rng.random() < 0.35
    frame, section, z_low, z_high = cross_frame(rng, pick_block(draft), grid, from_side)
    size = rng.uniform(0.15, 0.4) * section.short
    half = snap_down(size / 2, grid / 4) or size / 2
    center = section.center
    if rng.random() < 0.3:
        shift = rng.uniform(-0.25, 0.25)
        center = (center[0] + shift * section.width, center[1]) if section.width > section.height else (center[0], center[1] + shift * section.height)
    shape = make_shape(rng, pick(rng, HOLE_SHAPES), Rect.around(center, half, half), grid)
    sketch = draft.add_sketch(frame, [Region(shape.loop)])
    span = z_high - z_low
    margin = snap(rng.uniform(0.0, 0.3) * span, grid)
    if from_side:
        kind = pick(rng, ((ONE_SIDE, 80), (TWO_SIDES, 20)))
        depth = span + margin if rng.random() < 0.6 else max(grid, snap(rng.uniform(0.3, 0.7) * span, grid))
        low, high = (-depth, 0.0) if kind == ONE_SIDE else (-depth, max(grid, snap(rng.uniform(0.1, 0.3) * span, grid)))
    else:
        kind = pick(rng, ((SYMMETRIC, 55), (TWO_SIDES, 20), (ONE_SIDE, 25)))
        reach = max(-z_low, z_high) + margin
        low, high = {SYMMETRIC: (-reach, reach), TWO_SIDES: (z_low - margin, z_high + margin), ONE_SIDE: (0.0, reach)}[kind]
    draft.add_extrude(sketch, (0,), CUT, encode_extent(rng, kind, low, high))
    return True


def _add_cross_bar(draft: Draft) -> bool:
    """A bar or rod through the body's middle that sticks out on one or both sides."""
    rng, grid = draft.rng, draft.grid
    block = pick_block(draft)
    frame, section, z_low, z_high = cross_frame(rng, block, grid, False)
    half_w = snap_down(rng.uniform(0.2, 0.6) * section.width / 2, grid / 4) or 0.2 * section.width
    half_h = snap_down(rng.uniform(0.2, 0.6) * section.height / 2, grid / 4) or 0.2 * section.height
    cx, cy = section.center
    if rng.random() < 0.5:
        cx += snap(rng.uniform(-1.0, 1.0) * (section.width / 2 - half_w), grid / 2)
        cy += snap(rng.uniform(-1.0, 1.0) * (section.height / 2 - half_h), grid / 2)
    bar = Rect.around((cx, cy), half_w, half_h)
    shape = make_shape(rng, pick(rng, BAR_SHAPES), bar, grid)
    sketch = draft.add_sketch(frame, [Region(shape.loop)])
    half_span = max(-z_low, z_high)
    kind = pick(rng, ((SYMMETRIC, 45), (TWO_SIDES, 20), (ONE_SIDE, 35)))
    reach_one, reach_two = (max(grid, snap(half_span * rng.uniform(1.15, 2.0), grid)) for _ in range(2))
    low, high = {SYMMETRIC: (-reach_one, reach_one), TWO_SIDES: (-reach_two, reach_one), ONE_SIDE: (0.0, reach_one)}[kind]
    operation = NEW_BODY if rng.random() < 0.1 else JOIN
    draft.add_extrude(sketch, (0,), operation, encode_extent(rng, kind, low, high))
    draft.blocks.append(Block(frame, (bar.x0, bar.y0, low), (bar.x1, bar.y1, high)))
    return True


def _add_hole_fill(draft: Draft) -> bool:
    """A second extrude of the first sketch: the discs inside its holes, grown taller than the plate."""
    rng, grid = draft.rng, draft.grid
    holes = draft.sketches[0].hole_faces()
    profiles = tuple(holes) if rng.random() < 0.6 else (rng.choice(holes),)
    low, high = draft.base_interval
    extra = max(grid, snap(rng.uniform(0.2, 1.0) * (high - low), grid))
    kind = draft.base_kind
    if kind == SYMMETRIC:
        low, high = low - extra, high + extra
    elif kind == ONE_SIDE:
        low, high = (low, high + extra) if low == 0.0 else (low - extra, high)
    else:
        low, high = (low - extra, high) if rng.random() < 0.5 else (low, high + extra)
    operation = JOIN if rng.random() < 0.7 else NEW_BODY
    draft.add_extrude(0, profiles, operation, encode_extent(rng, kind, low, high))
    return True


def _can_fill_holes(draft: Draft) -> bool:
    return bool(draft.sketches[0].hole_faces()) and all(extrude.sketch != 0 or index == 0 for index, extrude in enumerate(draft.extrudes))


def _add_intersect(draft: Draft) -> bool:
    """Keep only what lies inside a rounded or faceted prism through the whole body."""
    rng, grid = draft.rng, draft.grid
    block = draft.blocks[0]
    if rng.random() < 0.5:
        middle = snap((block.low[2] + block.high[2]) / 2, grid / 2)
        frame = block.frame.child((0.0, 0.0, middle), (0, 0, rng.choice((1, -1))), unit(rng.randrange(2), rng.choice((1, -1))))
        low, high = map_box(block.low, block.high, block.frame, frame)
        section = Rect(low[0], low[1], high[0], high[1])
    else:
        frame, section, _, _ = cross_frame(rng, block, grid, False)
    scale = rng.uniform(0.8, 1.05)
    shape = make_shape(rng, pick(rng, TRIM_SHAPES), Rect.around(section.center, scale * section.width / 2, scale * section.height / 2), grid)
    sketch = draft.add_sketch(frame, [Region(shape.loop)])
    reach = snap(10.0 * max(draft.size, draft.base_interval[1] - draft.base_interval[0]), grid)
    kind = pick(rng, ((SYMMETRIC, 70), (TWO_SIDES, 30)))
    draft.add_extrude(sketch, (0,), INTERSECT, encode_extent(rng, kind, -reach, reach))
    return True


_FEATURE_BUILDERS: dict[str, Callable[[Draft], bool]] = {
    "boss": _add_boss,
    "new_body": _add_new_body,
    "pocket": _add_pocket,
    "pattern": _add_pattern,
    "cross_hole": _add_cross_hole,
    "cross_bar": _add_cross_bar,
    "hole_fill": _add_hole_fill,
    "intersect": _add_intersect,
}
"""Each adds one extrude of its kind, or returns False when the body has no room for it."""


def add_unused_sketch(draft: Draft) -> None:
    """A last sketch that no extrude uses, as a quarter of DeepCAD's files have."""
    rng, grid = draft.rng, draft.grid
    face = pick_face(draft)
    spot = find_spot(rng, face, grid, 0.2, 0.8)
    if spot is None:
        return
    frame, _ = face_sketch_frame(rng, face, spot, grid)
    local = map_rect(spot, face.frame, frame)
    if rng.random() < 0.5:
        regions = [Region(item.loop) for item in _grid_of_shapes(rng, local, grid)]
    else:
        regions = [Region(make_shape(rng, pick(rng, FEATURE_SHAPES), local, grid).loop)]
    draft.add_sketch(frame, regions)
