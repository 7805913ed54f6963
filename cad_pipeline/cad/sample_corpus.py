"""Seeded generator of DeepCAD-style `cad_json` models, and of a corpus laid out like DeepCAD's data folder.

The corpus lets the pipeline run end to end without downloading DeepCAD, so the models copy the
real files rather than what the reader happens to accept: the Python-2 key order and separators,
Onshape-style entity, profile and curve ids, every region face of a sketch listed as a profile,
line and arc end points in Onshape's order rather than loop order, arc and circle normals of
either sign, half-depth Symmetric extents and TwoSides extents against the normal, metres.
Every model is built with OpenCASCADE before it is kept, and its stated bounding box is the
built solid's exact box.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from OCP.BRepCheck import BRepCheck_Analyzer
from OCP.BRepGProp import BRepGProp
from OCP.GProp import GProp_GProps
from OCP.TopAbs import TopAbs_SOLID
from OCP.TopExp import TopExp_Explorer
from OCP.TopoDS import TopoDS_Shape

from cad_pipeline.cad.build import build_solid
from cad_pipeline.cad.deepcad_json import read_dict
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.measure import exact_bbox
from cad_pipeline.files import atomic_write_bytes
from cad_pipeline.parallel import available_cores, process_pool

NEW_BODY = "NewBodyFeatureOperation"
JOIN = "JoinFeatureOperation"
CUT = "CutFeatureOperation"
INTERSECT = "IntersectFeatureOperation"
ONE_SIDE = "OneSideFeatureExtentType"
SYMMETRIC = "SymmetricFeatureExtentType"
TWO_SIDES = "TwoSidesFeatureExtentType"

ONSHAPE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
"""The digits of Onshape's deterministic ids ("JGC", "KGBB")."""
ENTITY_ID_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

EXTRUDE_COUNT_WEIGHTS = ((1, 55.0), (2, 25.0), (3, 9.5), (4, 3.8), (5, 2.3), (6, 1.5), (7, 1.0), (8, 0.7), (9, 0.6), (10, 0.6))
"""Extrudes per model, shaped like DeepCAD: mostly one to three, up to its MAX_N_EXT of ten."""
SIZE_RANGE = (0.003, 0.8)
"""Metres spanned by a model's base sketch, drawn log-uniformly; thickness and features take the largest to about a metre."""
GRID_DIVISIONS = 40
"""Dimensions are multiples of a round step near size / GRID_DIVISIONS, as a designer would type them."""
MILLIMETRE_STEPS = tuple(step * 0.001 for step in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0))
INCH_STEPS = tuple(0.0254 / divisions for divisions in (256, 128, 64, 32, 16, 8, 4, 2, 1))
MIN_FILL = 1e-3
"""Smallest volume / bounding-box volume kept; below it the solid is a sliver."""
MAX_ATTEMPTS = 200
MAX_EXTRUDES = 10
"""DeepCAD's limit on extrudes after multi-profile extrudes are split (MAX_N_EXT); longer models are redrawn."""
HOLDOUT_SHARE = 0.08
"""Share of models in each of the validation and test splits."""
PARALLEL_MIN_MODELS = 200
"""Below this many models, starting worker processes costs more than it saves."""


@dataclass(frozen=True)
class CorpusSummary:
    n_models: int
    n_train: int
    n_validation: int
    n_test: int
    seconds: float

    def to_json(self) -> dict:
        return asdict(self)


def write_corpus(
    out_dir: Path, n_models: int, seed: int, progress: Callable[[int], None] | None = None, workers: int = 0
) -> CorpusSummary:
    """Write `cad_json/<bucket>/<id>.json` and `train_val_test_split.json` as DeepCAD lays them out.

    Model i depends only on (seed, i), so the files are the same whatever `workers` is (0: all
    cores), and a corpus can be extended or partly regenerated. `progress` is called with the
    number of models written so far.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    for done, _ in enumerate(_write_models(out_dir, n_models, seed, workers), start=1):
        if progress is not None:
            progress(done)
    split = split_ids([model_key(index) for index in range(n_models)], seed)
    atomic_write_bytes(out_dir / "train_val_test_split.json", dumps_model(split).encode())
    return CorpusSummary(
        n_models=n_models,
        n_train=len(split["train"]),
        n_validation=len(split["validation"]),
        n_test=len(split["test"]),
        seconds=time.perf_counter() - started,
    )


def _write_models(out_dir: Path, n_models: int, seed: int, workers: int) -> Iterator[None]:
    """Write every model, yielding once per model in id order; OpenCASCADE work spreads over processes."""
    write = partial(_write_model, out_dir, seed)
    workers = min(workers or available_cores(), n_models)
    if workers <= 1 or n_models < PARALLEL_MIN_MODELS:
        yield from map(write, range(n_models))
        return
    with process_pool(workers) as pool:
        yield from pool.map(write, range(n_models), chunksize=8)


def _write_model(out_dir: Path, seed: int, index: int) -> None:
    model_id = f"{index:08d}"
    data = generate_model(random.Random(f"{seed}:{index}"), model_id)
    atomic_write_bytes(out_dir / "cad_json" / f"{model_key(index)}.json", dumps_model(data).encode())


def model_key(index: int) -> str:
    """DeepCAD's "<bucket>/<id>": an 8-digit id under a folder named by its first four digits."""
    return f"{index // 10000:04d}/{index:08d}"


def split_ids(keys: list[str], seed: int) -> dict[str, list[str]]:
    """DeepCAD's split file: a seeded shuffle, about 8% each to validation and test (one each from 3 models)."""
    shuffled = list(keys)
    random.Random(f"{seed}:split").shuffle(shuffled)
    holdout = max(1, round(HOLDOUT_SHARE * len(keys))) if len(keys) >= 3 else 0
    return {"train": shuffled[2 * holdout :], "validation": shuffled[:holdout], "test": shuffled[holdout : 2 * holdout]}


def dumps_model(data: dict) -> str:
    """Serialise like DeepCAD's Python-2 `json.dump(indent=1)`, which leaves a space before each line break."""
    return json.dumps(data, indent=1, separators=(", ", ": "))


def generate_model(rng: random.Random, model_id: str) -> dict:
    """One DeepCAD JSON model that builds into a sound solid, with its exact bounding box.

    Candidates that do not build, or build into something invalid or sliver-thin, are dropped and
    the next one is drawn from the same stream, so the result still depends only on `rng`'s state.
    """
    for _ in range(MAX_ATTEMPTS):
        data = _model_json(_draft_model(rng))
        box = _sound_bbox(data, model_id)
        if box is not None:
            data["properties"]["bounding_box"] = _bbox_json(*box)
            return data
    raise RuntimeError(f"{model_id}: no buildable model in {MAX_ATTEMPTS} attempts")


# ---------------------------------------------------------------------------------------------
# Checking a candidate


def _sound_bbox(data: dict, model_id: str):
    """The built solid's exact box, or None when the model fails to build or is not one sound solid."""
    try:
        sequence = read_dict(data, model_id)
        if len(sequence.extrudes) > MAX_EXTRUDES:
            return None
        shape = build_solid(sequence)
    except ModelError:
        return None
    if _solid_count(shape) != 1 or not BRepCheck_Analyzer(shape).IsValid():
        return None
    low, high = exact_bbox(shape)
    box_volume = math.prod(b - a for a, b in zip(low, high))
    if not box_volume > 0.0 or _volume(shape) < MIN_FILL * box_volume:
        return None
    return low, high


def _solid_count(shape: TopoDS_Shape) -> int:
    explorer, count = TopExp_Explorer(shape, TopAbs_SOLID), 0
    while explorer.More():
        count += 1
        explorer.Next()
    return count


def _volume(shape: TopoDS_Shape) -> float:
    """Volume by OpenCASCADE's default Gauss rule: 1e-5 accurate, plenty for a sliver test."""
    properties = GProp_GProps()
    BRepGProp.VolumeProperties_s(shape, properties)
    return properties.Mass()


# ---------------------------------------------------------------------------------------------
# Plane geometry of sketches

Point2 = tuple[float, float]
Vec3 = tuple[float, float, float]
Axis = tuple[int, int, int]


@dataclass(frozen=True)
class _Line:
    start: Point2
    end: Point2


@dataclass(frozen=True)
class _Arc:
    """Traversed from start to end, counter-clockwise in the sketch frame when `ccw`."""

    start: Point2
    end: Point2
    center: Point2
    radius: float
    ccw: bool


@dataclass(frozen=True)
class _Circle:
    center: Point2
    radius: float


_Segment = _Line | _Arc | _Circle
_Loop = tuple[_Segment, ...]


@dataclass(frozen=True)
class _Region:
    """One region a designer drew: an outer loop and the holes inside it."""

    outer: _Loop
    holes: tuple[_Loop, ...] = ()


@dataclass(frozen=True)
class _Rect:
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def center(self) -> Point2:
        return 0.5 * (self.x0 + self.x1), 0.5 * (self.y0 + self.y1)

    @property
    def short(self) -> float:
        return min(self.width, self.height)

    @staticmethod
    def around(center: Point2, half_width: float, half_height: float) -> _Rect:
        return _Rect(center[0] - half_width, center[1] - half_height, center[0] + half_width, center[1] + half_height)

    @staticmethod
    def spanning(points: list[Point2]) -> _Rect:
        """Bounding rectangle, rounded to 1e-12 m so frame changes do not leave float dust on round numbers."""
        xs, ys = [round(p[0], 12) for p in points], [round(p[1], 12) for p in points]
        return _Rect(min(xs), min(ys), max(xs), max(ys))

    def inset(self, dx: float, dy: float) -> _Rect:
        return _Rect(self.x0 + dx, self.y0 + dy, self.x1 - dx, self.y1 - dy)

    def contains(self, other: _Rect) -> bool:
        slack = 1e-12
        return self.x0 - slack <= other.x0 and other.x1 <= self.x1 + slack and self.y0 - slack <= other.y0 and other.y1 <= self.y1 + slack

    def overlaps(self, other: _Rect, gap: float) -> bool:
        return not (
            self.x1 + gap <= other.x0 or other.x1 + gap <= self.x0 or self.y1 + gap <= other.y0 or other.y1 + gap <= self.y0
        )


@dataclass(frozen=True)
class _Shape:
    loop: _Loop
    inner: _Rect
    """A rectangle well inside the shape, where holes and features on its face can go."""


_Edge = tuple[Point2, float, bool] | None
"""How a path vertex connects to the next: None for a line, (centre, radius, ccw) for an arc."""


def _closed_loop(path: list[tuple[Point2, _Edge]]) -> _Loop:
    segments = []
    for index, (point, arc) in enumerate(path):
        following = path[(index + 1) % len(path)][0]
        segments.append(_Line(point, following) if arc is None else _Arc(point, following, *arc))
    return tuple(segments)


def _polygon_loop(vertices: list[Point2]) -> _Loop:
    return _closed_loop([(vertex, None) for vertex in vertices])


def _moved(segment: _Segment, move: Callable[[Point2], Point2], mirrored: bool) -> _Segment:
    """The segment under a rigid map; a mirror reverses which way arcs turn."""
    if isinstance(segment, _Line):
        return _Line(move(segment.start), move(segment.end))
    if isinstance(segment, _Arc):
        return _Arc(move(segment.start), move(segment.end), move(segment.center), segment.radius, segment.ccw != mirrored)
    return _Circle(move(segment.center), segment.radius)


def _translated(shape: _Shape, dx: float, dy: float) -> _Shape:
    def move(point: Point2) -> Point2:
        return point[0] + dx, point[1] + dy

    inner = shape.inner
    return _Shape(tuple(_moved(s, move, False) for s in shape.loop), _Rect(inner.x0 + dx, inner.y0 + dy, inner.x1 + dx, inner.y1 + dy))


# ---------------------------------------------------------------------------------------------
# Shapes: each fills a given rectangle, drawn in one canonical orientation


def _rectangle(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    corners = [(rect.x0, rect.y0), (rect.x1, rect.y0), (rect.x1, rect.y1), (rect.x0, rect.y1)]
    return _Shape(_polygon_loop(corners), rect.inset(0.1 * rect.width, 0.1 * rect.height))


def _rounded_rectangle(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    radius = _snap_down(rng.uniform(0.1, 0.4) * rect.short, grid / 2)
    if radius <= 0.0:
        return _rectangle(rng, rect, grid)
    x0, y0, x1, y1, r = rect.x0, rect.y0, rect.x1, rect.y1, radius
    path = [
        ((x0 + r, y0), None),
        ((x1 - r, y0), ((x1 - r, y0 + r), r, True)),
        ((x1, y0 + r), None),
        ((x1, y1 - r), ((x1 - r, y1 - r), r, True)),
        ((x1 - r, y1), None),
        ((x0 + r, y1), ((x0 + r, y1 - r), r, True)),
        ((x0, y1 - r), None),
        ((x0, y0 + r), ((x0 + r, y0 + r), r, True)),
    ]
    margin = 0.3 * r + 0.08 * rect.short
    return _Shape(_closed_loop(path), rect.inset(margin, margin))


def _slot(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    """An obround along x: two lines joined by half circles."""
    r = _snap_down(min(rect.height / 2, rect.width / 2.6), grid / 2)
    if r <= 0.0:
        return _rectangle(rng, rect, grid)
    (cx, cy), x0, x1 = rect.center, rect.x0, rect.x1
    path = [
        ((x0 + r, cy - r), None),
        ((x1 - r, cy - r), ((x1 - r, cy), r, True)),
        ((x1 - r, cy + r), None),
        ((x0 + r, cy + r), ((x0 + r, cy), r, True)),
    ]
    return _Shape(_closed_loop(path), _Rect(x0 + 0.7 * r, cy - 0.7 * r, x1 - 0.7 * r, cy + 0.7 * r))


def _tab(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    """A lug: square at one end, a half circle at the other."""
    r = _snap_down(min(rect.height / 2, rect.width / 2.2), grid / 2)
    if r <= 0.0:
        return _rectangle(rng, rect, grid)
    (cx, cy), x0, x1 = rect.center, rect.x0, rect.x1
    path = [((x0, cy - r), None), ((x1 - r, cy - r), ((x1 - r, cy), r, True)), ((x1 - r, cy + r), None), ((x0, cy + r), None)]
    return _Shape(_closed_loop(path), _Rect(x0 + 0.08 * rect.width, cy - 0.7 * r, x1 - 0.75 * r, cy + 0.7 * r))


def _polygon(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    sides = rng.choice((3, 5, 6, 6, 8))
    radius = _snap_down(rect.short / 2, grid / 2) or rect.short / 2
    start = rng.choice((math.pi / 2, math.pi / sides, rng.uniform(0.0, 2.0 * math.pi)))
    (cx, cy) = rect.center
    vertices = [
        (cx + radius * math.cos(start + 2.0 * math.pi * k / sides), cy + radius * math.sin(start + 2.0 * math.pi * k / sides))
        for k in range(sides)
    ]
    half = 0.65 * radius * math.cos(math.pi / sides)
    return _Shape(_polygon_loop(vertices), _Rect.around((cx, cy), half, half))


def _circle(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    radius = _snap_down(rect.short / 2, grid / 2) or rect.short / 2
    return _Shape((_Circle(rect.center, radius),), _Rect.around(rect.center, 0.6 * radius, 0.6 * radius))


def _d_shape(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    """A circle with one flat (canonically on top), like a keyed shaft."""
    radius = _snap_down(rect.short / 2, grid / 2) or rect.short / 2
    flat = min(max(_snap(rng.uniform(0.35, 0.8) * radius, grid / 2), 0.3 * radius), 0.85 * radius)
    (cx, cy) = rect.center
    theta = math.atan2(flat, math.sqrt(radius * radius - flat * flat))
    right = (cx + radius * math.cos(theta), cy + radius * math.sin(theta))
    left = (cx + radius * math.cos(math.pi - theta), cy + radius * math.sin(math.pi - theta))
    inner = _Rect(cx - 0.6 * radius, cy - 0.6 * radius, cx + 0.6 * radius, cy + min(0.6 * radius, flat - 0.1 * radius))
    return _Shape(_closed_loop([(right, None), (left, ((cx, cy), radius, True))]), inner)


def _quadrant(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    """A quarter disc with its corner at the rectangle's corner."""
    r = _snap_down(rect.short, grid / 2) or rect.short
    x0, y0 = rect.x0, rect.y0
    path = [((x0, y0), None), ((x0 + r, y0), ((x0, y0), r, True)), ((x0, y0 + r), None)]
    return _Shape(_closed_loop(path), _Rect(x0 + 0.08 * r, y0 + 0.08 * r, x0 + 0.62 * r, y0 + 0.62 * r))


def _l_shape(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    arm_x = _fraction_of(rng, rect.width, 0.25, 0.6, grid)
    arm_y = _fraction_of(rng, rect.height, 0.25, 0.6, grid)
    x0, y0, x1, y1 = rect.x0, rect.y0, rect.x1, rect.y1
    vertices = [(x0, y0), (x1, y0), (x1, y0 + arm_y), (x0 + arm_x, y0 + arm_y), (x0 + arm_x, y1), (x0, y1)]
    bottom, left = _Rect(x0, y0, x1, y0 + arm_y), _Rect(x0, y0, x0 + arm_x, y1)
    arm = bottom if rect.width * arm_y >= rect.height * arm_x else left
    return _Shape(_polygon_loop(vertices), arm.inset(0.12 * arm.width, 0.12 * arm.height))


def _t_shape(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    bar = _fraction_of(rng, rect.height, 0.25, 0.5, grid)
    stem = _fraction_of(rng, rect.width, 0.25, 0.5, grid)
    (cx, _), x0, y0, x1, y1 = rect.center, rect.x0, rect.y0, rect.x1, rect.y1
    s0, s1 = cx - stem / 2, cx + stem / 2
    vertices = [(s0, y0), (s1, y0), (s1, y1 - bar), (x1, y1 - bar), (x1, y1), (x0, y1), (x0, y1 - bar), (s0, y1 - bar)]
    top = _Rect(x0, y1 - bar, x1, y1)
    return _Shape(_polygon_loop(vertices), top.inset(0.1 * top.width, 0.12 * top.height))


def _u_shape(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    base = _fraction_of(rng, rect.height, 0.25, 0.5, grid)
    arm = _fraction_of(rng, rect.width, 0.15, 0.35, grid)
    x0, y0, x1, y1 = rect.x0, rect.y0, rect.x1, rect.y1
    vertices = [(x0, y0), (x1, y0), (x1, y1), (x1 - arm, y1), (x1 - arm, y0 + base), (x0 + arm, y0 + base), (x0 + arm, y1), (x0, y1)]
    bottom = _Rect(x0, y0, x1, y0 + base)
    return _Shape(_polygon_loop(vertices), bottom.inset(0.1 * bottom.width, 0.12 * bottom.height))


def _plus(rng: random.Random, rect: _Rect, grid: float) -> _Shape:
    tx = _fraction_of(rng, rect.width, 0.25, 0.5, grid)
    ty = _fraction_of(rng, rect.height, 0.25, 0.5, grid)
    (cx, cy), x0, y0, x1, y1 = rect.center, rect.x0, rect.y0, rect.x1, rect.y1
    a0, a1, b0, b1 = cx - tx / 2, cx + tx / 2, cy - ty / 2, cy + ty / 2
    vertices = [(a0, y0), (a1, y0), (a1, b0), (x1, b0), (x1, b1), (a1, b1), (a1, y1), (a0, y1), (a0, b1), (x0, b1), (x0, b0), (a0, b0)]
    bar = _Rect(x0, b0, x1, b1)
    return _Shape(_polygon_loop(vertices), bar.inset(0.1 * bar.width, 0.12 * bar.height))


_Builder = Callable[[random.Random, _Rect, float], _Shape]
_SHAPES: dict[str, tuple[_Builder, bool]] = {
    "rectangle": (_rectangle, False),
    "rounded_rectangle": (_rounded_rectangle, False),
    "slot": (_slot, True),
    "tab": (_tab, True),
    "polygon": (_polygon, False),
    "circle": (_circle, False),
    "d_shape": (_d_shape, True),
    "quadrant": (_quadrant, True),
    "l_shape": (_l_shape, True),
    "t_shape": (_t_shape, True),
    "u_shape": (_u_shape, True),
    "plus": (_plus, False),
}
"""Builder and whether it is asymmetric enough to be drawn in all eight orientations."""
BASE_SHAPES = (
    ("rectangle", 22), ("rounded_rectangle", 12), ("circle", 18), ("slot", 6), ("polygon", 7), ("l_shape", 8),
    ("t_shape", 5), ("u_shape", 5), ("plus", 3), ("d_shape", 5), ("tab", 5), ("quadrant", 4),
)
FEATURE_SHAPES = (
    ("rectangle", 25), ("circle", 30), ("rounded_rectangle", 12), ("slot", 8), ("polygon", 8), ("d_shape", 4),
    ("tab", 3), ("l_shape", 4), ("t_shape", 2), ("u_shape", 2), ("plus", 1), ("quadrant", 1),
)
HOLE_SHAPES = (("circle", 70), ("rectangle", 8), ("rounded_rectangle", 5), ("slot", 10), ("polygon", 7))
BAR_SHAPES = (("rectangle", 40), ("circle", 25), ("rounded_rectangle", 15), ("slot", 10), ("polygon", 10))
TRIM_SHAPES = (("circle", 25), ("polygon", 20), ("rounded_rectangle", 25), ("slot", 15), ("d_shape", 15))

_SYMMETRIES = (((1, 0), (0, 1)), ((0, -1), (1, 0)), ((-1, 0), (0, -1)), ((0, 1), (-1, 0)),
               ((-1, 0), (0, 1)), ((1, 0), (0, -1)), ((0, 1), (1, 0)), ((0, -1), (-1, 0)))
"""The eight rotations and mirrors of a square, as 2x2 matrices."""


def _make_shape(rng: random.Random, kind: str, rect: _Rect, grid: float) -> _Shape:
    build, orientable = _SHAPES[kind]
    if not orientable:
        return build(rng, rect, grid)
    return _oriented(rng, rect, grid, build)


def _oriented(rng: random.Random, rect: _Rect, grid: float, build: _Builder) -> _Shape:
    """Draw the canonical shape turned or mirrored, so L, T, slots and lugs face every way."""
    (a, b), (c, d) = rng.choice(_SYMMETRIES)
    center = rect.center
    swaps = a == 0
    canonical = _Rect.around(center, rect.height / 2, rect.width / 2) if swaps else rect
    shape = build(rng, canonical, grid)

    def move(point: Point2) -> Point2:
        dx, dy = point[0] - center[0], point[1] - center[1]
        return center[0] + a * dx + b * dy, center[1] + c * dx + d * dy

    mirrored = a * d - b * c < 0
    corners = [move((shape.inner.x0, shape.inner.y0)), move((shape.inner.x1, shape.inner.y1))]
    return _Shape(tuple(_moved(segment, move, mirrored) for segment in shape.loop), _Rect.spanning(corners))


def _hole_shapes(rng: random.Random, inner: _Rect, grid: float) -> list[tuple[_Shape, _Rect]]:
    """Holes for a plate: one in the middle, a pair, one at each corner, or middle and corners."""
    short = inner.short
    if short < 6 * grid:
        return []
    pattern = _pick(rng, (("center", 50), ("pair", 15), ("corners", 25), ("center_corners", 10)))
    spots = []
    if pattern in ("center", "center_corners"):
        fraction = rng.uniform(0.3, 0.75) if pattern == "center" else rng.uniform(0.25, 0.4)
        square = rng.random() < 0.5
        half_w = fraction * (short if square else inner.width) / 2
        half_h = fraction * (short if square else inner.height) / 2
        spots.append(_Rect.around(inner.center, half_w, half_h))
    if pattern == "pair":
        radius = rng.uniform(0.1, 0.2) * short
        offset = 0.3 * max(inner.width, inner.height)
        along_x = inner.width >= inner.height
        for side in (-1, 1):
            dx, dy = (side * offset, 0.0) if along_x else (0.0, side * offset)
            spots.append(_Rect.around((inner.center[0] + dx, inner.center[1] + dy), radius, radius))
    if pattern in ("corners", "center_corners"):
        radius = rng.uniform(0.06, 0.13) * short
        inset = radius + 0.02 * short
        for x, y in ((inner.x0 + inset, inner.y0 + inset), (inner.x1 - inset, inner.y0 + inset),
                     (inner.x1 - inset, inner.y1 - inset), (inner.x0 + inset, inner.y1 - inset)):
            spots.append(_Rect.around((x, y), radius, radius))
    kind = _pick(rng, HOLE_SHAPES)
    holes = []
    for spot in spots:
        sized = _Rect.around(spot.center, _snap_down(spot.width / 2, grid / 4), _snap_down(spot.height / 2, grid / 4))
        if sized.short > 0.0:
            holes.append((_make_shape(rng, kind, sized, grid), sized))
    return holes


def _central_hole(rng: random.Random, shape: _Shape, grid: float) -> list[tuple[_Shape, _Rect]]:
    """A single hole in the middle of a shape, turning a boss into a tube or a pocket into a groove."""
    inner = shape.inner
    if inner.short < 3 * grid:
        return []
    fraction = rng.uniform(0.3, 0.7)
    spot = _Rect.around(inner.center, _snap_down(fraction * inner.short / 2, grid / 4), _snap_down(fraction * inner.short / 2, grid / 4))
    if spot.short <= 0.0:
        return []
    return [(_make_shape(rng, _pick(rng, HOLE_SHAPES), spot, grid), spot)]


# ---------------------------------------------------------------------------------------------
# Frames in space


@dataclass(frozen=True)
class _Frame:
    """A right-handed frame in world coordinates (metres); a sketch's transform."""

    origin: Vec3
    x_axis: Vec3
    y_axis: Vec3
    z_axis: Vec3

    def to_world(self, point: Vec3) -> Vec3:
        return tuple(o + point[0] * x + point[1] * y + point[2] * z for o, x, y, z in zip(self.origin, self.x_axis, self.y_axis, self.z_axis))

    def to_local(self, point: Vec3) -> Vec3:
        offset = tuple(p - o for p, o in zip(point, self.origin))
        return _dot(offset, self.x_axis), _dot(offset, self.y_axis), _dot(offset, self.z_axis)

    def child(self, origin: Vec3, z: Axis, x: Axis) -> _Frame:
        """A frame at a local point whose axes are signed local axes, so its axes stay exact."""
        y = (z[1] * x[2] - z[2] * x[1], z[2] * x[0] - z[0] * x[2], z[0] * x[1] - z[1] * x[0])
        return _Frame(self.to_world(origin), self._direction(x), self._direction(y), self._direction(z))

    def _direction(self, axis: Axis) -> Vec3:
        return tuple(axis[0] * x + axis[1] * y + axis[2] * z for x, y, z in zip(self.x_axis, self.y_axis, self.z_axis))


def _dot(a: Vec3, b: Vec3) -> float:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cross(a: Vec3, b: Vec3) -> Vec3:
    return a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]


def _normalized(v: Vec3) -> Vec3:
    length = math.sqrt(_dot(v, v))
    return v[0] / length, v[1] / length, v[2] / length


def _unit(axis: int, sign: int) -> Axis:
    return tuple(sign if index == axis else 0 for index in range(3))


def _map_rect(rect: _Rect, source: _Frame, target: _Frame, height: float = 0.0) -> _Rect:
    """A rectangle lying at `height` in `source`, in the coordinates of a parallel `target` plane."""
    corners = [target.to_local(source.to_world((x, y, height))) for x, y in ((rect.x0, rect.y0), (rect.x1, rect.y1))]
    return _Rect.spanning([(c[0], c[1]) for c in corners])


def _map_box(low: Vec3, high: Vec3, source: _Frame, target: _Frame) -> tuple[Vec3, Vec3]:
    """An axis-aligned box of `source` in a `target` frame whose axes are signed axes of `source`."""
    corners = [target.to_local(source.to_world(corner)) for corner in (low, high)]
    return (
        tuple(round(min(a, b), 12) for a, b in zip(*corners)),
        tuple(round(max(a, b), 12) for a, b in zip(*corners)),
    )


STANDARD_PLANES = ((((0, 0, 1), (1, 0, 0)), 30), (((0, -1, 0), (1, 0, 0)), 18), (((1, 0, 0), (0, 1, 0)), 14))
"""Onshape's Top, Front and Right planes as (normal, x axis), with how often a model starts on each."""
AXIS_PLANES = tuple(
    (normal, x_axis)
    for normal in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
    for x_axis in ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
    if _dot(normal, x_axis) == 0
)
WORLD = _Frame((0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))


def _base_frame(rng: random.Random, size: float, grid: float) -> _Frame:
    """The first sketch's plane: mostly a standard plane, else any axis-aligned plane or an arbitrary rotation."""
    draw = rng.random()
    if draw < 0.15:
        frame = _rotated_frame(rng)
    else:
        normal, x_axis = _pick(rng, STANDARD_PLANES) if draw < 0.77 else rng.choice(AXIS_PLANES)
        frame = WORLD.child((0.0, 0.0, 0.0), normal, x_axis)
    if rng.random() < 0.15:
        offset = _snap(rng.uniform(-0.5, 0.5) * size, grid)
        frame = _Frame(tuple(offset * n for n in frame.z_axis), frame.x_axis, frame.y_axis, frame.z_axis)
    return frame


def _rotated_frame(rng: random.Random) -> _Frame:
    normal = _normalized((rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0), rng.gauss(0.0, 1.0)))
    helper = (1.0, 0.0, 0.0) if abs(normal[0]) < 0.9 else (0.0, 1.0, 0.0)
    along = _dot(helper, normal)
    x_axis = _normalized(tuple(h - along * n for h, n in zip(helper, normal)))
    return _Frame((0.0, 0.0, 0.0), x_axis, _cross(normal, x_axis), normal)


# ---------------------------------------------------------------------------------------------
# The draft: sketches, extrudes and what later features can attach to


@dataclass(frozen=True)
class _Extent:
    kind: str
    one: float
    two: float = 0.0


@dataclass
class _Sketch:
    frame: _Frame
    regions: list[_Region]

    def hole_faces(self) -> list[int]:
        """Profile indices of the discs inside holes; they follow the one profile per region."""
        n_holes = sum(len(region.holes) for region in self.regions)
        return list(range(len(self.regions), len(self.regions) + n_holes))


@dataclass(frozen=True)
class _Extrude:
    sketch: int
    profiles: tuple[int, ...]
    operation: str
    extent: _Extent


@dataclass
class _Face:
    """A planar face of the body that a later sketch can sit on; +z of `frame` points out of the material."""

    frame: _Frame
    free: _Rect
    thickness: float
    claimed: list[_Rect] = field(default_factory=list)
    opposite: _Face | None = field(default=None, repr=False)


@dataclass(frozen=True)
class _Block:
    """A prism of the body as the box its profile sweeps in its sketch frame."""

    frame: _Frame
    low: Vec3
    high: Vec3


@dataclass
class _Draft:
    rng: random.Random
    size: float
    grid: float
    sketches: list[_Sketch] = field(default_factory=list)
    extrudes: list[_Extrude] = field(default_factory=list)
    steps: list[tuple[str, int]] = field(default_factory=list)
    faces: list[_Face] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)
    base_interval: tuple[float, float] = (0.0, 0.0)
    base_kind: str = ONE_SIDE

    def add_sketch(self, frame: _Frame, regions: list[_Region]) -> int:
        self.sketches.append(_Sketch(frame, regions))
        self.steps.append(("Sketch", len(self.sketches) - 1))
        return len(self.sketches) - 1

    def add_extrude(self, sketch: int, profiles: tuple[int, ...], operation: str, extent: _Extent) -> None:
        self.extrudes.append(_Extrude(sketch, profiles, operation, extent))
        self.steps.append(("ExtrudeFeature", len(self.extrudes) - 1))


def _draft_model(rng: random.Random) -> _Draft:
    size, grid = _size_and_grid(rng)
    draft = _Draft(rng, size, grid)
    _add_base(draft)
    n_extrudes = _pick(rng, EXTRUDE_COUNT_WEIGHTS)
    for index in range(1, n_extrudes):
        _add_feature(draft, last=index == n_extrudes - 1)
    if rng.random() < 0.2:
        _add_unused_sketch(draft)
    return draft


def _size_and_grid(rng: random.Random) -> tuple[float, float]:
    """A log-uniform model size and a round step in millimetres or inches to dimension it with."""
    target = math.exp(rng.uniform(math.log(SIZE_RANGE[0]), math.log(SIZE_RANGE[1])))
    steps = MILLIMETRE_STEPS if rng.random() < 0.6 else INCH_STEPS
    grid = max((step for step in steps if step <= target / GRID_DIVISIONS), default=steps[0])
    return _snap(target, grid), grid


FEATURES = (
    ("boss", 30), ("pocket", 26), ("pattern", 6), ("cross_hole", 7), ("cross_bar", 6),
    ("new_body", 7), ("hole_fill", 5), ("intersect", 6),
)
"""Kinds of later extrude, with weights; an intersect only ever ends a model."""


def _add_feature(draft: _Draft, last: bool) -> None:
    """Add one extrude (with its sketch), falling back to a cross feature when a face has no room."""
    rng = draft.rng
    allowed = [
        (kind, weight)
        for kind, weight in FEATURES
        if (kind != "intersect" or last) and (kind != "hole_fill" or _can_fill_holes(draft))
    ]
    if not _FEATURE_BUILDERS[_pick(rng, tuple(allowed))](draft):
        (_add_cross_hole if rng.random() < 0.5 else _add_cross_bar)(draft)


def _add_base(draft: _Draft) -> None:
    """The first sketch and its NewBody extrude, with the top and bottom faces later features use."""
    rng, grid, size = draft.rng, draft.grid, draft.size
    frame = _base_frame(rng, size, grid)
    width, height = size, max(4 * grid, _snap(size * _log_uniform(rng, 0.3, 1.0), grid))
    if rng.random() < 0.5:
        width, height = height, width
    rect = _Rect.around(_base_center(rng, width, height, size, grid), width / 2, height / 2)
    shape = _make_shape(rng, _pick(rng, BASE_SHAPES), rect, grid)
    holes = _hole_shapes(rng, shape.inner, grid) if rng.random() < 0.45 else []
    sketch = draft.add_sketch(frame, [_Region(shape.loop, tuple(hole.loop for hole, _ in holes))])
    kind = _pick(rng, ((ONE_SIDE, 78), (SYMMETRIC, 14), (TWO_SIDES, 8)))
    low, high = _base_interval(rng, kind, max(grid, _snap(size * _log_uniform(rng, 0.04, 1.5), grid)), grid)
    draft.add_extrude(sketch, (0,), NEW_BODY, _encode_extent(rng, kind, low, high))
    draft.base_interval, draft.base_kind = (low, high), kind
    claims = [spot.inset(-grid / 2, -grid / 2) for _, spot in holes]
    top = _Face(frame.child((0.0, 0.0, high), (0, 0, 1), (1, 0, 0)), shape.inner, high - low, list(claims))
    bottom_frame = frame.child((0.0, 0.0, low), (0, 0, -1), (1, 0, 0))
    bottom = _Face(bottom_frame, _map_rect(shape.inner, top.frame, bottom_frame), high - low, [_map_rect(c, top.frame, bottom_frame) for c in claims])
    top.opposite, bottom.opposite = bottom, top
    draft.faces += [top, bottom]
    draft.blocks.append(_Block(frame, (rect.x0, rect.y0, low), (rect.x1, rect.y1, high)))


def _base_center(rng: random.Random, width: float, height: float, size: float, grid: float) -> Point2:
    """Designers centre a part on the origin, put a corner there, or leave it anywhere."""
    draw = rng.random()
    if draw < 0.5:
        return 0.0, 0.0
    if draw < 0.8:
        return rng.choice((-1, 1)) * width / 2, rng.choice((-1, 1)) * height / 2
    return _snap(rng.uniform(-size, size), grid), _snap(rng.uniform(-size, size), grid)


def _base_interval(rng: random.Random, kind: str, thickness: float, grid: float) -> tuple[float, float]:
    if kind == SYMMETRIC:
        half = max(grid / 2, _snap(thickness / 2, grid / 2))
        return -half, half
    if kind == TWO_SIDES:
        along = min(max(grid, _snap(rng.uniform(0.3, 0.8) * thickness, grid)), thickness)
        return -max(grid, thickness - along), along
    return (0.0, thickness) if rng.random() < 0.82 else (-thickness, 0.0)


def _add_boss(draft: _Draft, operation: str = JOIN) -> bool:
    """A solid (or tube) grown out of a face; its top becomes a face for later features."""
    rng, grid = draft.rng, draft.grid
    face = _pick_face(draft)
    spot = _find_spot(rng, face, grid, 0.25, 0.85)
    if spot is None:
        return False
    frame, sign = _face_sketch_frame(rng, face, spot, grid)
    local = _map_rect(spot, face.frame, frame)
    shape = _make_shape(rng, _pick(rng, FEATURE_SHAPES), local, grid)
    holes = _central_hole(rng, shape, grid) if rng.random() < 0.25 else []
    sketch = draft.add_sketch(frame, [_Region(shape.loop, tuple(hole.loop for hole, _ in holes))])
    height = max(grid, _snap(spot.short * _log_uniform(rng, 0.15, 2.0), grid))
    kind = _extent_kind(rng)
    low, high = _grown_interval(rng, kind, height, face.thickness, grid)
    profiles = (0, 1) if holes and rng.random() < 0.2 else (0,)
    draft.add_extrude(sketch, profiles, operation, _encode_extent(rng, kind, *_signed(low, high, sign)))
    face.claimed.append(spot)
    top = frame.child((0.0, 0.0, sign * high), (0, 0, sign), (1, 0, 0))
    claims = [_map_rect(hole_spot, frame, top, sign * high) for _, hole_spot in holes]
    draft.faces.append(_Face(top, _map_rect(shape.inner, frame, top, sign * high), height, claims))
    lower, upper = sorted(_signed(low, high, sign))
    draft.blocks.append(_Block(frame, (local.x0, local.y0, lower), (local.x1, local.y1, upper)))
    return True


def _add_new_body(draft: _Draft) -> bool:
    """A boss made as a separate body, as designers often do before merging; the builder fuses it."""
    return _add_boss(draft, NEW_BODY)


def _add_pocket(draft: _Draft) -> bool:
    """A blind pocket or a through cut from a face; a blind pocket's floor becomes a face."""
    rng, grid = draft.rng, draft.grid
    face = _pick_face(draft)
    spot = _find_spot(rng, face, grid, 0.2, 0.7)
    if spot is None:
        return False
    frame, sign = _face_sketch_frame(rng, face, spot, grid)
    shape = _make_shape(rng, _pick(rng, FEATURE_SHAPES), _map_rect(spot, face.frame, frame), grid)
    islands = _central_hole(rng, shape, grid) if rng.random() < 0.12 else []
    sketch = draft.add_sketch(frame, [_Region(shape.loop, tuple(island.loop for island, _ in islands))])
    through = face.thickness < 3 * grid or rng.random() < 0.45
    depth = _cut_depth(rng, face.thickness, grid, through)
    kind = _extent_kind(rng)
    low, high = _cut_interval(rng, kind, depth, grid)
    draft.add_extrude(sketch, (0,), CUT, _encode_extent(rng, kind, *_signed(low, high, sign)))
    _claim(face, spot, through)
    if not through:
        floor = frame.child((0.0, 0.0, -sign * depth), (0, 0, sign), (1, 0, 0))
        claims = [_map_rect(island_spot, frame, floor, -sign * depth) for _, island_spot in islands]
        draft.faces.append(_Face(floor, _map_rect(shape.inner, frame, floor, -sign * depth), face.thickness - depth, claims))
    return True


def _add_pattern(draft: _Draft) -> bool:
    """Two to six equal holes or pegs in a grid, each its own profile, in one multi-profile extrude."""
    rng, grid = draft.rng, draft.grid
    face = _pick_face(draft)
    spot = _find_spot(rng, face, grid, 0.3, 0.9)
    if spot is None:
        return False
    frame, sign = _face_sketch_frame(rng, face, spot, grid)
    local = _map_rect(spot, face.frame, frame)
    items = _grid_of_shapes(rng, local, grid)
    sketch = draft.add_sketch(frame, [_Region(item.loop) for item in items])
    profiles = tuple(range(len(items)))
    if rng.random() < 0.15:
        profiles = tuple(sorted(rng.sample(profiles, rng.randrange(1, len(profiles)))))
    kind = _extent_kind(rng)
    if rng.random() < 0.7:
        through = face.thickness < 3 * grid or rng.random() < 0.6
        low, high = _cut_interval(rng, kind, _cut_depth(rng, face.thickness, grid, through), grid)
        draft.add_extrude(sketch, profiles, CUT, _encode_extent(rng, kind, *_signed(low, high, sign)))
        _claim(face, spot, through)
        return True
    height = max(grid, _snap(spot.short * _log_uniform(rng, 0.2, 1.5), grid))
    low, high = _grown_interval(rng, kind, height, face.thickness, grid)
    draft.add_extrude(sketch, profiles, JOIN, _encode_extent(rng, kind, *_signed(low, high, sign)))
    face.claimed.append(spot)
    return True


def _grid_of_shapes(rng: random.Random, rect: _Rect, grid: float) -> list[_Shape]:
    """Copies of one small shape at the centres of a grid of cells, the long way along the rectangle."""
    columns, rows = rng.choice(((2, 1), (3, 1), (2, 2), (4, 1), (3, 2)))
    if rect.height > rect.width:
        columns, rows = rows, columns
    cell_w, cell_h = rect.width / columns, rect.height / rows
    fraction = rng.uniform(0.35, 0.75)
    half_w = _snap_down(fraction * cell_w / 2, grid / 4) or fraction * cell_w / 2
    half_h = _snap_down(fraction * cell_h / 2, grid / 4) or fraction * cell_h / 2
    if rng.random() < 0.6:
        half_w = half_h = min(half_w, half_h)
    first_center = (rect.x0 + cell_w / 2, rect.y0 + cell_h / 2)
    first = _make_shape(rng, _pick(rng, HOLE_SHAPES), _Rect.around(first_center, half_w, half_h), grid)
    return [_translated(first, column * cell_w, row * cell_h) for row in range(rows) for column in range(columns)]


def _add_cross_hole(draft: _Draft) -> bool:
    """A hole across the body, drilled from a side or from a plane through its middle."""
    rng, grid = draft.rng, draft.grid
    from_side = rng.random() < 0.35
    frame, section, z_low, z_high = _cross_frame(rng, _pick_block(draft), grid, from_side)
    size = rng.uniform(0.15, 0.4) * section.short
    half = _snap_down(size / 2, grid / 4) or size / 2
    center = section.center
    if rng.random() < 0.3:
        shift = rng.uniform(-0.25, 0.25)
        center = (center[0] + shift * section.width, center[1]) if section.width > section.height else (center[0], center[1] + shift * section.height)
    shape = _make_shape(rng, _pick(rng, HOLE_SHAPES), _Rect.around(center, half, half), grid)
    sketch = draft.add_sketch(frame, [_Region(shape.loop)])
    span = z_high - z_low
    margin = _snap(rng.uniform(0.0, 0.3) * span, grid)
    if from_side:
        kind = _pick(rng, ((ONE_SIDE, 80), (TWO_SIDES, 20)))
        depth = span + margin if rng.random() < 0.6 else max(grid, _snap(rng.uniform(0.3, 0.7) * span, grid))
        low, high = (-depth, 0.0) if kind == ONE_SIDE else (-depth, max(grid, _snap(rng.uniform(0.1, 0.3) * span, grid)))
    else:
        kind = _pick(rng, ((SYMMETRIC, 55), (TWO_SIDES, 20), (ONE_SIDE, 25)))
        reach = max(-z_low, z_high) + margin
        low, high = {SYMMETRIC: (-reach, reach), TWO_SIDES: (z_low - margin, z_high + margin), ONE_SIDE: (0.0, reach)}[kind]
    draft.add_extrude(sketch, (0,), CUT, _encode_extent(rng, kind, low, high))
    return True


def _add_cross_bar(draft: _Draft) -> bool:
    """A bar or rod through the body's middle that sticks out on one or both sides."""
    rng, grid = draft.rng, draft.grid
    block = _pick_block(draft)
    frame, section, z_low, z_high = _cross_frame(rng, block, grid, False)
    half_w = _snap_down(rng.uniform(0.2, 0.6) * section.width / 2, grid / 4) or 0.2 * section.width
    half_h = _snap_down(rng.uniform(0.2, 0.6) * section.height / 2, grid / 4) or 0.2 * section.height
    cx, cy = section.center
    if rng.random() < 0.5:
        cx += _snap(rng.uniform(-1.0, 1.0) * (section.width / 2 - half_w), grid / 2)
        cy += _snap(rng.uniform(-1.0, 1.0) * (section.height / 2 - half_h), grid / 2)
    bar = _Rect.around((cx, cy), half_w, half_h)
    shape = _make_shape(rng, _pick(rng, BAR_SHAPES), bar, grid)
    sketch = draft.add_sketch(frame, [_Region(shape.loop)])
    half_span = max(-z_low, z_high)
    kind = _pick(rng, ((SYMMETRIC, 45), (TWO_SIDES, 20), (ONE_SIDE, 35)))
    reach_one, reach_two = (max(grid, _snap(half_span * rng.uniform(1.15, 2.0), grid)) for _ in range(2))
    low, high = {SYMMETRIC: (-reach_one, reach_one), TWO_SIDES: (-reach_two, reach_one), ONE_SIDE: (0.0, reach_one)}[kind]
    operation = NEW_BODY if rng.random() < 0.1 else JOIN
    draft.add_extrude(sketch, (0,), operation, _encode_extent(rng, kind, low, high))
    draft.blocks.append(_Block(frame, (bar.x0, bar.y0, low), (bar.x1, bar.y1, high)))
    return True


def _add_hole_fill(draft: _Draft) -> bool:
    """A second extrude of the first sketch: the discs inside its holes, grown taller than the plate."""
    rng, grid = draft.rng, draft.grid
    holes = draft.sketches[0].hole_faces()
    profiles = tuple(holes) if rng.random() < 0.6 else (rng.choice(holes),)
    low, high = draft.base_interval
    extra = max(grid, _snap(rng.uniform(0.2, 1.0) * (high - low), grid))
    kind = draft.base_kind
    if kind == SYMMETRIC:
        low, high = low - extra, high + extra
    elif kind == ONE_SIDE:
        low, high = (low, high + extra) if low == 0.0 else (low - extra, high)
    else:
        low, high = (low - extra, high) if rng.random() < 0.5 else (low, high + extra)
    operation = JOIN if rng.random() < 0.7 else NEW_BODY
    draft.add_extrude(0, profiles, operation, _encode_extent(rng, kind, low, high))
    return True


def _can_fill_holes(draft: _Draft) -> bool:
    return bool(draft.sketches[0].hole_faces()) and all(extrude.sketch != 0 or index == 0 for index, extrude in enumerate(draft.extrudes))


def _add_intersect(draft: _Draft) -> bool:
    """Keep only what lies inside a rounded or faceted prism through the whole body."""
    rng, grid = draft.rng, draft.grid
    block = draft.blocks[0]
    if rng.random() < 0.5:
        middle = _snap((block.low[2] + block.high[2]) / 2, grid / 2)
        frame = block.frame.child((0.0, 0.0, middle), (0, 0, rng.choice((1, -1))), _unit(rng.randrange(2), rng.choice((1, -1))))
        low, high = _map_box(block.low, block.high, block.frame, frame)
        section = _Rect(low[0], low[1], high[0], high[1])
    else:
        frame, section, _, _ = _cross_frame(rng, block, grid, False)
    scale = rng.uniform(0.8, 1.05)
    shape = _make_shape(rng, _pick(rng, TRIM_SHAPES), _Rect.around(section.center, scale * section.width / 2, scale * section.height / 2), grid)
    sketch = draft.add_sketch(frame, [_Region(shape.loop)])
    reach = _snap(10.0 * max(draft.size, draft.base_interval[1] - draft.base_interval[0]), grid)
    kind = _pick(rng, ((SYMMETRIC, 70), (TWO_SIDES, 30)))
    draft.add_extrude(sketch, (0,), INTERSECT, _encode_extent(rng, kind, -reach, reach))
    return True


_FEATURE_BUILDERS: dict[str, Callable[[_Draft], bool]] = {
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


def _add_unused_sketch(draft: _Draft) -> None:
    """A last sketch that no extrude uses, as a quarter of DeepCAD's files have."""
    rng, grid = draft.rng, draft.grid
    face = _pick_face(draft)
    spot = _find_spot(rng, face, grid, 0.2, 0.8)
    if spot is None:
        return
    frame, _ = _face_sketch_frame(rng, face, spot, grid)
    local = _map_rect(spot, face.frame, frame)
    if rng.random() < 0.5:
        regions = [_Region(item.loop) for item in _grid_of_shapes(rng, local, grid)]
    else:
        regions = [_Region(_make_shape(rng, _pick(rng, FEATURE_SHAPES), local, grid).loop)]
    draft.add_sketch(frame, regions)


def _pick_face(draft: _Draft) -> _Face:
    """Any face, the base's top and bottom more often."""
    weights = [4.0, 2.0] + [1.0] * (len(draft.faces) - 2)
    return draft.rng.choices(draft.faces, weights)[0]


def _pick_block(draft: _Draft) -> _Block:
    return draft.blocks[0] if draft.rng.random() < 0.7 else draft.rng.choice(draft.blocks)


def _find_spot(rng: random.Random, face: _Face, grid: float, low: float, high: float) -> _Rect | None:
    """A rectangle on the face's free area clear of earlier features, a `low`-`high` share of it each way."""
    free = face.free
    for _ in range(6):
        width = _snap_down(rng.uniform(low, high) * free.width, grid / 2)
        height = _snap_down(rng.uniform(low, high) * free.height, grid / 2)
        if width <= 0.0 or height <= 0.0:
            return None
        x0 = _snap(free.x0 + rng.uniform(0.0, free.width - width), grid / 2)
        y0 = _snap(free.y0 + rng.uniform(0.0, free.height - height), grid / 2)
        spot = _Rect(x0, y0, x0 + width, y0 + height)
        if free.contains(spot) and not any(spot.overlaps(claim, grid / 2) for claim in face.claimed):
            return spot
    return None


def _claim(face: _Face, spot: _Rect, through: bool) -> None:
    face.claimed.append(spot)
    if through and face.opposite is not None:
        face.opposite.claimed.append(_map_rect(spot, face.frame, face.opposite.frame))


def _face_sketch_frame(rng: random.Random, face: _Face, spot: _Rect, grid: float) -> tuple[_Frame, int]:
    """A sketch plane on the face, and +1 when its normal points out of the material (-1 when flipped).

    Onshape puts the origin where the part's origin projects or wherever the user starts, and the
    x axis along one of the face's edges.
    """
    sign = 1 if rng.random() < 0.85 else -1
    x_axis = _pick(rng, (((1, 0, 0), 55), ((-1, 0, 0), 15), ((0, 1, 0), 15), ((0, -1, 0), 15)))
    origin = (0.0, 0.0, 0.0) if rng.random() < 0.6 else (_snap(spot.x0, grid / 2), _snap(spot.y0, grid / 2), 0.0)
    return face.frame.child(origin, (0, 0, sign), x_axis), sign


def _cross_frame(rng: random.Random, block: _Block, grid: float, at_side: bool) -> tuple[_Frame, _Rect, float, float]:
    """A plane across a block, through its middle or on its side, with the block's section and depth range."""
    axis, sign = rng.randrange(2), rng.choice((1, -1))
    x_axis = _unit(rng.choice((1 - axis, 2)), rng.choice((1, -1)))
    origin = [0.0, 0.0, 0.0]
    if at_side:
        origin[axis] = block.high[axis] if sign > 0 else block.low[axis]
    else:
        origin[axis] = _snap((block.low[axis] + block.high[axis]) / 2, grid / 2)
    frame = block.frame.child(tuple(origin), _unit(axis, sign), x_axis)
    low, high = _map_box(block.low, block.high, block.frame, frame)
    return frame, _Rect(low[0], low[1], high[0], high[1]), low[2], high[2]


# ---------------------------------------------------------------------------------------------
# Extents


def _extent_kind(rng: random.Random) -> str:
    return _pick(rng, ((ONE_SIDE, 76), (SYMMETRIC, 15), (TWO_SIDES, 9)))


def _grown_interval(rng: random.Random, kind: str, height: float, thickness: float, grid: float) -> tuple[float, float]:
    """Depth range of a boss, measured outward from its face: on it, half sunk into it, or partly sunk."""
    if kind == SYMMETRIC:
        return -height, height
    if kind == TWO_SIDES:
        return -max(grid, _snap_down(rng.uniform(0.2, 0.8) * thickness, grid)), height
    return 0.0, height


def _cut_depth(rng: random.Random, thickness: float, grid: float, through: bool) -> float:
    if through:
        return thickness if rng.random() < 0.4 else thickness + max(grid, _snap(rng.uniform(0.1, 0.5) * thickness, grid))
    return min(max(grid, _snap(rng.uniform(0.2, 0.75) * thickness, grid)), thickness - grid)


def _cut_interval(rng: random.Random, kind: str, depth: float, grid: float) -> tuple[float, float]:
    """Depth range of a cut, measured outward from its face; the outward part only cuts air."""
    if kind == SYMMETRIC:
        return -depth, depth
    if kind == TWO_SIDES:
        return -depth, max(grid, _snap(rng.uniform(0.1, 0.5) * depth, grid))
    return -depth, 0.0


def _signed(low: float, high: float, sign: int) -> tuple[float, float]:
    """An outward depth range in the coordinates of a sketch whose normal is `sign` times outward."""
    return (low, high) if sign > 0 else (-high, -low)


def _encode_extent(rng: random.Random, kind: str, low: float, high: float) -> _Extent:
    """DeepCAD's fields for a depth range along the sketch normal: Symmetric stores the half depth
    (negative now and then, as Onshape's flip leaves it), TwoSides stores the second side against the normal."""
    if kind == SYMMETRIC:
        return _Extent(kind, -high if rng.random() < 0.15 else high)
    if kind == TWO_SIDES:
        return _Extent(kind, high, -low)
    return _Extent(kind, high if low == 0.0 else low)


# ---------------------------------------------------------------------------------------------
# JSON in DeepCAD's layout


def _model_json(draft: _Draft) -> dict:
    """The file's three top-level keys; entities in shuffled order, as Python 2 dicts left them."""
    rng = draft.rng
    suffix_style = _pick(rng, (("split", 80), ("none", 10), ("count", 10)))
    entities: list[tuple[str, dict]] = []
    sequence, sketch_ids, profile_ids, used_ids = [], {}, {}, set()
    n_sketches = n_extrudes = 0
    for position, (step_type, index) in enumerate(draft.steps):
        entity_id = _entity_id(rng, used_ids, _id_suffix(suffix_style, position, n_extrudes))
        if step_type == "Sketch":
            n_sketches += 1
            sketch_ids[index] = entity_id
            profile_ids[index], entity = _sketch_json(rng, draft.sketches[index], _sketch_letter(position), f"Sketch {n_sketches}")
        else:
            n_extrudes += 1
            extrude = draft.extrudes[index]
            entity = _extrude_json(extrude, sketch_ids[extrude.sketch], profile_ids[extrude.sketch], f"Extrude {n_extrudes}")
        entities.append((entity_id, entity))
        sequence.append({"index": position, "type": step_type, "entity": entity_id})
    rng.shuffle(entities)
    return {"entities": dict(entities), "properties": {"bounding_box": None}, "sequence": sequence}


def _entity_id(rng: random.Random, used: set[str], suffix: str) -> str:
    """An Onshape feature id: "F" and 14 random letters or digits, then a part suffix such as "_0"."""
    while True:
        entity_id = "F" + "".join(rng.choice(ENTITY_ID_CHARACTERS) for _ in range(14)) + suffix
        if entity_id not in used:
            used.add(entity_id)
            return entity_id


def _id_suffix(style: str, position: int, extrudes_before: int) -> str:
    """Most files mark the first sketch and extrude "_0" and the rest "_1"; some count extrudes; some have none."""
    if style == "none":
        return ""
    if style == "count":
        return f"_{extrudes_before}"
    return "_0" if position < 2 else "_1"


def _sketch_letter(position: int) -> str:
    """The letter Onshape's ids give a sketch's geometry, by feature position: G, J, N, R, ..."""
    return "G" if position == 0 else ONSHAPE_ALPHABET[min(5 + 2 * position, 63)]


def _profile_id(letter: str, index: int) -> str:
    if index < 16:
        return f"J{letter}{ONSHAPE_ALPHABET[2 + 4 * index]}"
    return f"K{letter}{ONSHAPE_ALPHABET[(2 + 4 * (index - 16)) % 64]}B"


def _curve_id(letter: str, index: int) -> str:
    if index < 16:
        return f"J{letter}{ONSHAPE_ALPHABET[1 + 4 * index]}"
    rest = index - 16
    return f"K{letter}{ONSHAPE_ALPHABET[1 + 4 * (rest % 16)]}{ONSHAPE_ALPHABET[1 + rest // 16]}"


def _sketch_json(rng: random.Random, sketch: _Sketch, letter: str, name: str) -> tuple[list[str], dict]:
    """The sketch entity and its profile ids by profile index: one profile per region, then one per hole disc.

    Curves keep one id and one form in every profile that shares them, as Onshape's edges do.
    """
    loops, faces = _loops_and_faces(sketch)
    curve_lists = _curve_lists(rng, loops, sketch.frame.z_axis, letter)
    ids = [_profile_id(letter, index) for index in range(len(faces))]
    rng.shuffle(ids)
    profiles = [(ids[index], _profile_json(rng, members, curve_lists)) for index, members in enumerate(faces)]
    rng.shuffle(profiles)
    frame = sketch.frame
    transform = {"origin": _xyz(frame.origin), "y_axis": _xyz(frame.y_axis), "x_axis": _xyz(frame.x_axis), "z_axis": _xyz(frame.z_axis)}
    return ids, {"transform": transform, "type": "Sketch", "name": name, "profiles": dict(profiles), "reference_plane": {}}


def _loops_and_faces(sketch: _Sketch) -> tuple[list[_Loop], list[list[int]]]:
    """Every loop once, and each region face as loop indices (a region, then the disc inside each hole)."""
    loops, region_faces, hole_faces = [], [], []
    for region in sketch.regions:
        members = []
        for loop in (region.outer, *region.holes):
            members.append(len(loops))
            loops.append(loop)
        region_faces.append(members)
        hole_faces.extend([member] for member in members[1:])
    return loops, region_faces + hole_faces


def _curve_lists(rng: random.Random, loops: list[_Loop], normal: Vec3, letter: str) -> list[list[dict]]:
    """Curve dicts per loop; ids follow drawing order, while a loop lists them from any curve, either way round."""
    lists, counter = [], 0
    for loop in loops:
        curves = []
        for segment in loop:
            curves.append(_curve_json(rng, segment, _curve_id(letter, counter), normal))
            counter += 1
        start = rng.randrange(len(curves))
        curves = curves[start:] + curves[:start]
        lists.append(curves[::-1] if rng.random() < 0.3 else curves)
    return lists


def _profile_json(rng: random.Random, members: list[int], curve_lists: list[list[dict]]) -> dict:
    order = list(members)
    if len(order) > 1 and rng.random() < 0.2:
        rng.shuffle(order)
    return {"loops": [{"is_outer": True, "profile_curves": curve_lists[member]} for member in order], "properties": {}}


def _curve_json(rng: random.Random, segment: _Segment, curve_id: str, normal: Vec3) -> dict:
    if isinstance(segment, _Line):
        start, end = (segment.start, segment.end) if rng.random() < 0.6 else (segment.end, segment.start)
        return {"type": "Line3D", "start_point": _xy(start), "curve": curve_id, "end_point": _xy(end)}
    if isinstance(segment, _Circle):
        sign = -1.0 if rng.random() < 0.05 else 1.0
        return {"center_point": _xy(segment.center), "type": "Circle3D", "radius": segment.radius, "curve": curve_id, "normal": _xyz(normal, sign)}
    return _arc_json(rng, segment, curve_id, normal)


def _arc_json(rng: random.Random, arc: _Arc, curve_id: str, normal: Vec3) -> dict:
    """Onshape's arc: reference_vector points where the counter-clockwise sweep starts, end_angle is the sweep,
    and start_point / end_point come in either order."""
    first, last = (arc.start, arc.end) if arc.ccw else (arc.end, arc.start)
    cx, cy = arc.center
    dx, dy = first[0] - cx, first[1] - cy
    length = math.hypot(dx, dy)
    sweep = (math.atan2(last[1] - cy, last[0] - cx) - math.atan2(dy, dx)) % (2.0 * math.pi)
    start, end = (first, last) if rng.random() < 0.57 else (last, first)
    sign = -1.0 if rng.random() < 0.15 else 1.0
    return {
        "center_point": _xy(arc.center),
        "normal": _xyz(normal, sign),
        "end_point": _xy(end),
        "start_angle": 0.0,
        "curve": curve_id,
        "end_angle": sweep,
        "radius": arc.radius,
        "type": "Arc3D",
        "start_point": _xy(start),
        "reference_vector": _xy((dx / length, dy / length)),
    }


def _extrude_json(extrude: _Extrude, sketch_id: str, profile_ids: list[str], name: str) -> dict:
    return {
        "name": name,
        "type": "ExtrudeFeature",
        "profiles": [{"profile": profile_ids[index], "sketch": sketch_id} for index in extrude.profiles],
        "extent_two": _extent_json(extrude.extent.two, "AgainstDistance", "Side2TaperAngle"),
        "extent_one": _extent_json(extrude.extent.one, "AlongDistance", "TaperAngle"),
        "operation": extrude.operation,
        "start_extent": {"type": "ProfilePlaneStartDefinition"},
        "extent_type": extrude.extent.kind,
    }


def _extent_json(distance: float, role: str, taper_role: str) -> dict:
    return {
        "distance": {"type": "ModelParameter", "role": role, "name": "none", "value": float(distance)},
        "type": "DistanceExtentDefinition",
        "taper_angle": {"type": "ModelParameter", "role": taper_role, "name": "none", "value": 0.0},
    }


def _bbox_json(low: Vec3, high: Vec3) -> dict:
    return {"max_point": _xyz(high), "type": "BoundingBox3D", "min_point": _xyz(low)}


def _xy(point: Point2) -> dict:
    """A sketch-local point as the files store it: key order y, x, z and z always 0."""
    return {"y": float(point[1]), "x": float(point[0]), "z": 0.0}


def _xyz(vector: Vec3, sign: float = 1.0) -> dict:
    return {"y": sign * vector[1], "x": sign * vector[0], "z": sign * vector[2]}


# ---------------------------------------------------------------------------------------------
# Small numeric helpers


def _pick(rng: random.Random, weighted: tuple):
    """One item of ((item, weight), ...), using one draw from `rng`."""
    return rng.choices([item for item, _ in weighted], [weight for _, weight in weighted])[0]


def _log_uniform(rng: random.Random, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def _snap(value: float, step: float) -> float:
    return round(value / step) * step


def _snap_down(value: float, step: float) -> float:
    """The largest multiple of `step` not above `value` (0.0 when `value` is under one step)."""
    return max(0, math.floor(value / step + 1e-6)) * step


def _fraction_of(rng: random.Random, length: float, low: float, high: float, grid: float) -> float:
    """A round share of a length, at least half a step away from nothing and from the whole length where it fits."""
    value = _snap(rng.uniform(low, high) * length, grid / 2)
    return min(max(value, min(grid / 2, low * length)), length - min(grid / 2, (1.0 - high) * length))
