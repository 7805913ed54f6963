"""One model: draw a draft, write it as DeepCAD JSON, and keep it only when it builds into a sound solid."""

from __future__ import annotations

import math
import random

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
from cad_pipeline.cad.sample_corpus.base_extrude import add_base
from cad_pipeline.cad.sample_corpus.deepcad_format import bbox_json, model_json
from cad_pipeline.cad.sample_corpus.draft import Draft
from cad_pipeline.cad.sample_corpus.features import add_feature, add_unused_sketch
from cad_pipeline.cad.sample_corpus.numeric import pick, snap

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


def generate_model(rng: random.Random, model_id: str) -> dict:
    """One DeepCAD JSON model that builds into a sound solid, with its exact bounding box.

    Candidates that do not build, or build into something invalid or sliver-thin, are dropped and
    the next one is drawn from the same stream, so the result still depends only on `rng`'s state.
    """
    for _ in range(MAX_ATTEMPTS):
        data = model_json(_draft_model(rng))
        box = _sound_bbox(data, model_id)
        if box is not None:
            data["properties"]["bounding_box"] = bbox_json(*box)
            return data
    raise RuntimeError(f"{model_id}: no buildable model in {MAX_ATTEMPTS} attempts")


def _draft_model(rng: random.Random) -> Draft:
    size, grid = _size_and_grid(rng)
    draft = Draft(rng, size, grid)
    add_base(draft)
    n_extrudes = pick(rng, EXTRUDE_COUNT_WEIGHTS)
    for index in range(1, n_extrudes):
        add_feature(draft, last=index == n_extrudes - 1)
    if rng.random() < 0.2:
        add_unused_sketch(draft)
    return draft


def _size_and_grid(rng: random.Random) -> tuple[float, float]:
    """A log-uniform model size and a round step in millimetres or inches to dimension it with."""
    target = math.exp(rng.uniform(math.log(SIZE_RANGE[0]), math.log(SIZE_RANGE[1])))
    steps = MILLIMETRE_STEPS if rng.random() < 0.6 else INCH_STEPS
    grid = max((step for step in steps if step <= target / GRID_DIVISIONS), default=steps[0])
    return snap(target, grid), grid


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
