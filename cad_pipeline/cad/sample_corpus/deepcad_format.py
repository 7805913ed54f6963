"""JSON in DeepCAD's layout: a draft as Onshape-style entities, with Onshape's ids and Python 2's formatting."""

from __future__ import annotations

import json
import math
import random

from cad_pipeline.cad.sample_corpus.draft import Draft, Extrude, Sketch
from cad_pipeline.cad.sample_corpus.frames import Vec3
from cad_pipeline.cad.sample_corpus.numeric import pick
from cad_pipeline.cad.sample_corpus.sketch_geometry import Arc, Circle, Line, Loop, Point2, Segment

ONSHAPE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
"""The digits of Onshape's deterministic ids ("JGC", "KGBB")."""
ENTITY_ID_CHARACTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def dumps_model(data: dict) -> str:
    """Serialise like DeepCAD's Python-2 `json.dump(indent=1)`, which leaves a space before each line break."""
    return json.dumps(data, indent=1, separators=(", ", ": "))


def model_json(draft: Draft) -> dict:
    """The file's three top-level keys; entities in shuffled order, as Python 2 dicts left them."""
    rng = draft.rng
    suffix_style = pick(rng, (("split", 80), ("none", 10), ("count", 10)))
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


def _sketch_json(rng: random.Random, sketch: Sketch, letter: str, name: str) -> tuple[list[str], dict]:
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


def _loops_and_faces(sketch: Sketch) -> tuple[list[Loop], list[list[int]]]:
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


def _curve_lists(rng: random.Random, loops: list[Loop], normal: Vec3, letter: str) -> list[list[dict]]:
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


def _curve_json(rng: random.Random, segment: Segment, curve_id: str, normal: Vec3) -> dict:
    if isinstance(segment, Line):
        start, end = (segment.start, segment.end) if rng.random() < 0.6 else (segment.end, segment.start)
        return {"type": "Line3D", "start_point": _xy(start), "curve": curve_id, "end_point": _xy(end)}
    if isinstance(segment, Circle):
        sign = -1.0 if rng.random() < 0.05 else 1.0
        return {"center_point": _xy(segment.center), "type": "Circle3D", "radius": segment.radius, "curve": curve_id, "normal": _xyz(normal, sign)}
    return _arc_json(rng, segment, curve_id, normal)


def _arc_json(rng: random.Random, arc: Arc, curve_id: str, normal: Vec3) -> dict:
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


def _extrude_json(extrude: Extrude, sketch_id: str, profile_ids: list[str], name: str) -> dict:
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


def bbox_json(low: Vec3, high: Vec3) -> dict:
    return {"max_point": _xyz(high), "type": "BoundingBox3D", "min_point": _xyz(low)}


def _xy(point: Point2) -> dict:
    """A sketch-local point as the files store it: key order y, x, z and z always 0."""
    return {"y": float(point[1]), "x": float(point[0]), "z": 0.0}


def _xyz(vector: Vec3, sign: float = 1.0) -> dict:
    return {"y": sign * vector[1], "x": sign * vector[0], "z": sign * vector[2]}
