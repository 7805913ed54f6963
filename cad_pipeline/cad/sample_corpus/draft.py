"""The draft: the sketches and extrudes of a model being drawn, and the faces and blocks later features attach to."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from cad_pipeline.cad.sample_corpus.extents import ONE_SIDE, Extent
from cad_pipeline.cad.sample_corpus.frames import Frame, Vec3
from cad_pipeline.cad.sample_corpus.sketch_geometry import Rect, Region

NEW_BODY = "NewBodyFeatureOperation"
JOIN = "JoinFeatureOperation"
CUT = "CutFeatureOperation"
INTERSECT = "IntersectFeatureOperation"


@dataclass
class Sketch:
    frame: Frame
    regions: list[Region]

    def hole_faces(self) -> list[int]:
        """Profile indices of the discs inside holes; they follow the one profile per region."""
        n_holes = sum(len(region.holes) for region in self.regions)
        return list(range(len(self.regions), len(self.regions) + n_holes))


@dataclass(frozen=True)
class Extrude:
    sketch: int
    profiles: tuple[int, ...]
    operation: str
    extent: Extent


@dataclass
class Face:
    """A planar face of the body that a later sketch can sit on; +z of `frame` points out of the material."""

    frame: Frame
    free: Rect
    thickness: float
    claimed: list[Rect] = field(default_factory=list)
    opposite: Face | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Block:
    """A prism of the body as the box its profile sweeps in its sketch frame."""

    frame: Frame
    low: Vec3
    high: Vec3


@dataclass
class Draft:
    rng: random.Random
    size: float
    grid: float
    sketches: list[Sketch] = field(default_factory=list)
    extrudes: list[Extrude] = field(default_factory=list)
    steps: list[tuple[str, int]] = field(default_factory=list)
    faces: list[Face] = field(default_factory=list)
    blocks: list[Block] = field(default_factory=list)
    base_interval: tuple[float, float] = (0.0, 0.0)
    base_kind: str = ONE_SIDE

    def add_sketch(self, frame: Frame, regions: list[Region]) -> int:
        self.sketches.append(Sketch(frame, regions))
        self.steps.append(("Sketch", len(self.sketches) - 1))
        return len(self.sketches) - 1

    def add_extrude(self, sketch: int, profiles: tuple[int, ...], operation: str, extent: Extent) -> None:
        self.extrudes.append(Extrude(sketch, profiles, operation, extent))
        self.steps.append(("ExtrudeFeature", len(self.extrudes) - 1))
