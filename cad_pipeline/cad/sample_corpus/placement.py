"""Where a feature goes: a face or block of the draft, a free spot on a face, and the sketch plane there."""

from __future__ import annotations

import random

from cad_pipeline.cad.sample_corpus.draft import Block, Draft, Face
from cad_pipeline.cad.sample_corpus.frames import Frame, map_box, map_rect, unit
from cad_pipeline.cad.sample_corpus.numeric import pick, snap, snap_down
from cad_pipeline.cad.sample_corpus.sketch_geometry import Rect


def pick_face(draft: Draft) -> Face:
    """Any face, the base's top and bottom more often."""
    weights = [4.0, 2.0] + [1.0] * (len(draft.faces) - 2)
    return draft.rng.choices(draft.faces, weights)[0]


def pick_block(draft: Draft) -> Block:
    return draft.blocks[0] if draft.rng.random() < 0.7 else draft.rng.choice(draft.blocks)


def find_spot(rng: random.Random, face: Face, grid: float, low: float, high: float) -> Rect | None:
    """A rectangle on the face's free area clear of earlier features, a `low`-`high` share of it each way."""
    free = face.free
    for _ in range(6):
        width = snap_down(rng.uniform(low, high) * free.width, grid / 2)
        height = snap_down(rng.uniform(low, high) * free.height, grid / 2)
        if width <= 0.0 or height <= 0.0:
            return None
        x0 = snap(free.x0 + rng.uniform(0.0, free.width - width), grid / 2)
        y0 = snap(free.y0 + rng.uniform(0.0, free.height - height), grid / 2)
        spot = Rect(x0, y0, x0 + width, y0 + height)
        if free.contains(spot) and not any(spot.overlaps(claim, grid / 2) for claim in face.claimed):
            return spot
    return None


def claim_spot(face: Face, spot: Rect, through: bool) -> None:
    face.claimed.append(spot)
    if through and face.opposite is not None:
        face.opposite.claimed.append(map_rect(spot, face.frame, face.opposite.frame))


def face_sketch_frame(rng: random.Random, face: Face, spot: Rect, grid: float) -> tuple[Frame, int]:
    """A sketch plane on the face, and +1 when its normal points out of the material (-1 when flipped).

    Onshape puts the origin where the part's origin projects or wherever the user starts, and the
    x axis along one of the face's edges.
    """
    sign = 1 if rng.random() < 0.85 else -1
    x_axis = pick(rng, (((1, 0, 0), 55), ((-1, 0, 0), 15), ((0, 1, 0), 15), ((0, -1, 0), 15)))
    origin = (0.0, 0.0, 0.0) if rng.random() < 0.6 else (snap(spot.x0, grid / 2), snap(spot.y0, grid / 2), 0.0)
    return face.frame.child(origin, (0, 0, sign), x_axis), sign


def cross_frame(rng: random.Random, block: Block, grid: float, at_side: bool) -> tuple[Frame, Rect, float, float]:
    """A plane across a block, through its middle or on its side, with the block's section and depth range."""
    axis, sign = rng.randrange(2), rng.choice((1, -1))
    x_axis = unit(rng.choice((1 - axis, 2)), rng.choice((1, -1)))
    origin = [0.0, 0.0, 0.0]
    if at_side:
        origin[axis] = block.high[axis] if sign > 0 else block.low[axis]
    else:
        origin[axis] = snap((block.low[axis] + block.high[axis]) / 2, grid / 2)
    frame = block.frame.child(tuple(origin), unit(axis, sign), x_axis)
    low, high = map_box(block.low, block.high, block.frame, frame)
    return frame, Rect(low[0], low[1], high[0], high[1]), low[2], high[2]
