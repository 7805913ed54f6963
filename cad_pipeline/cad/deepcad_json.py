"""DeepCAD `cad_json` files -> CadSequence, following DeepCAD's cadlib semantics and rejecting bad input with reasons.

Semantics (see DeepCAD `cadlib/extrude.py`, `curves.py`, `sketch.py`): steps follow `sequence`;
only extrudes matter and sketches are reached through their profile references; an extrude with n
profiles becomes n extrudes (a NewBody keeps NewBody for the first and joins the rest); arcs run
counter-clockwise in the sketch frame from `reference_vector` through `end_angle`, whatever the
sign of `normal`; Symmetric extents are half-depths; TwoSides puts `extent_two` against the normal.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.loops import MIN_LENGTH, assemble_profile
from cad_pipeline.cad.sequence import (
    Arc,
    CadSequence,
    Circle,
    Curve,
    ExtentType,
    Extrude,
    Line,
    Operation,
    SketchPlane,
)
from cad_pipeline.files import FileTooLarge, read_bounded

OPERATIONS = {
    "NewBodyFeatureOperation": Operation.NEW_BODY,
    "JoinFeatureOperation": Operation.JOIN,
    "CutFeatureOperation": Operation.CUT,
    "IntersectFeatureOperation": Operation.INTERSECT,
}
EXTENT_TYPES = {
    "OneSideFeatureExtentType": ExtentType.ONE_SIDE,
    "SymmetricFeatureExtentType": ExtentType.SYMMETRIC,
    "TwoSidesFeatureExtentType": ExtentType.TWO_SIDES,
}
MAX_LENGTH = 1e6
"""Metres above which a coordinate, radius or extent is rejected: no part in metres is that large (a wrong
unit or a corrupt value). Far beyond it OpenCASCADE breaks down: a small part placed 1e20 m from the origin
gets a wrong volume, from about 1e50 m it raises, and near 1e200 m it crashes the process."""


MAX_FILE_BYTES = 16 * 2**20
"""The largest DeepCAD JSON file read: DeepCAD's own are at most a few hundred kilobytes."""


def read_file(path: str | Path) -> CadSequence:
    """Read a DeepCAD JSON file; the model id is the file name without `.json`."""
    return read_bytes(read_model_file(Path(path)), model_id=Path(path).stem)


def read_model_file(path: Path) -> bytes:
    """A model file's bytes, as ModelError when it cannot be read or is too large to be a DeepCAD model."""
    try:
        return read_bounded(path, MAX_FILE_BYTES, "a DeepCAD JSON file")
    except FileTooLarge as error:
        raise ModelError("file_too_large", str(error)) from None
    except OSError as error:
        raise ModelError("unreadable_file", f"cannot read {path}: {error.strerror or error}") from None


def read_bytes(raw: bytes | str, model_id: str) -> CadSequence:
    try:
        data = json.loads(raw, parse_constant=_reject_constant)
    except _NonFiniteConstant as constant:
        raise ModelError(
            "non_finite_number",
            f"the file contains {constant.name}{_position_of(raw, constant.name)}, which is not valid JSON; "
            "every number must be finite",
        ) from None
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        raise ModelError("invalid_json", f"not valid JSON ({error}); re-download or regenerate the file") from None
    return read_dict(data, model_id)


def read_dict(data: object, model_id: str) -> CadSequence:
    """Build the sequence from parsed JSON; any structural or geometric problem raises ModelError."""
    model = _expect(data, dict, "the file's top level")
    entities = _expect(_field(model, "entities", "the file"), dict, "entities")
    sequence = _expect(_field(model, "sequence", "the file"), list, "sequence")
    extrudes: list[Extrude] = []
    empty_extrudes: list[str] = []
    planes: dict[str, SketchPlane] = {}
    for position, step in enumerate(sequence):
        step = _expect(step, dict, f"sequence[{position}]")
        kind = _field(step, "type", f"sequence[{position}]")
        if kind not in ("Sketch", "ExtrudeFeature"):
            raise ModelError(
                "unsupported_feature", f"sequence[{position}] has type {_preview(kind)}; only Sketch and ExtrudeFeature exist in DeepCAD"
            )
        entity_id = _expect(_field(step, "entity", f"sequence[{position}]"), str, f"sequence[{position}].entity")
        if entity_id not in entities:
            raise ModelError("missing_entity", f"sequence[{position}] refers to entity {entity_id!r}, which is not in entities")
        entity = _check_kind(entities, entity_id, kind, f"sequence[{position}]")
        if kind == "Sketch":
            continue
        new = _read_extrude(entities, entity, entity_id, planes)
        if not new:
            empty_extrudes.append(entity_id)
        extrudes.extend(new)
    if not extrudes:
        if empty_extrudes:
            raise ModelError(
                "empty_profiles",
                f"no extrude has any profile: the profiles list of {_id_list(empty_extrudes)} is empty "
                "(the extrude selects no sketch region), so there is no solid",
            )
        raise ModelError("no_extrude", "the sequence has no ExtrudeFeature, so there is no solid")
    return CadSequence(model_id=model_id, extrudes=tuple(extrudes), stated_bbox=_read_bbox(model))


def _read_extrude(entities: dict, entity: dict, entity_id: str, planes: dict[str, SketchPlane]) -> list[Extrude]:
    where = f"extrude {entity_id!r}"
    operation = _choice(_field(entity, "operation", where), OPERATIONS, f"{where}.operation")
    extent_type = _choice(_field(entity, "extent_type", where), EXTENT_TYPES, f"{where}.extent_type")
    extent_one = _distance(entity, "extent_one", where)
    extent_two = _distance(entity, "extent_two", where) if extent_type is ExtentType.TWO_SIDES else 0.0
    references = _expect(_field(entity, "profiles", where), list, f"{where}.profiles")
    extrudes = []
    for index, reference in enumerate(references):
        reference = _expect(reference, dict, f"{where}.profiles[{index}]")
        sketch_id = _expect(_field(reference, "sketch", f"{where}.profiles[{index}]"), str, f"{where}.profiles[{index}].sketch")
        profile_id = _expect(_field(reference, "profile", f"{where}.profiles[{index}]"), str, f"{where}.profiles[{index}].profile")
        sketch = entities.get(sketch_id)
        if not isinstance(sketch, dict) or sketch.get("type") != "Sketch":
            raise ModelError("missing_entity", f"{where} uses sketch {sketch_id!r}, which is not a Sketch entity")
        profiles = _expect(_field(sketch, "profiles", f"sketch {sketch_id!r}"), dict, f"sketch {sketch_id!r}.profiles")
        if profile_id not in profiles:
            raise ModelError("missing_entity", f"{where} uses profile {profile_id!r}, which sketch {sketch_id!r} does not have")
        if sketch_id not in planes:
            planes[sketch_id] = _read_plane(sketch, f"sketch {sketch_id!r}")
        source = f"extrude {entity_id!r} profile {profile_id!r} of sketch {sketch_id!r}"
        step_operation = Operation.JOIN if operation is Operation.NEW_BODY and index > 0 else operation
        extrude = Extrude(
            plane=planes[sketch_id],
            profile=_read_profile(profiles[profile_id], source),
            operation=step_operation,
            extent_type=extent_type,
            extent_one=extent_one,
            extent_two=extent_two,
            source=source,
        )
        low, high = extrude.depth_interval()
        if high - low <= MIN_LENGTH:
            raise ModelError(
                "zero_depth",
                f"{where} has zero depth (extent_one {extent_one!r}, extent_two {extent_two!r}, {entity['extent_type']}; "
                f"the depth must be more than {MIN_LENGTH:g} m)",
            )
        extrudes.append(extrude)
    return extrudes


def _read_profile(profile: object, where: str):
    profile = _expect(profile, dict, where)
    loops = _expect(_field(profile, "loops", where), list, f"{where}.loops")
    if not loops:
        raise ModelError("empty_loop", f"{where} has no loops")
    raw_loops = []
    for loop_index, loop in enumerate(loops):
        loop = _expect(loop, dict, f"{where} loop {loop_index}")
        curves = _expect(_field(loop, "profile_curves", f"{where} loop {loop_index}"), list, f"{where} loop {loop_index}")
        raw_loops.append([_read_curve(curve, f"{where} loop {loop_index} curve {i}") for i, curve in enumerate(curves)])
    return assemble_profile(raw_loops, where)


def _read_curve(curve: object, where: str) -> Curve:
    curve = _expect(curve, dict, where)
    kind = _field(curve, "type", where)
    if kind == "Line3D":
        start, end = _point2(curve, "start_point", where), _point2(curve, "end_point", where)
        length = math.dist(start, end)
        if length <= MIN_LENGTH:
            raise ModelError(
                "degenerate_curve",
                f"{where} is a zero-length line at ({start[0]:.6g}, {start[1]:.6g}) m "
                f"(its ends are {length:.3g} m apart; a line must be longer than {MIN_LENGTH:g} m)",
            )
        return Line(start, end)
    if kind == "Circle3D":
        center, radius = _point2(curve, "center_point", where), _length(curve, "radius", where)
        if radius <= MIN_LENGTH:
            raise ModelError("degenerate_curve", f"{where} is a circle with radius {radius!r} m")
        return Circle(center, radius)
    if kind == "Arc3D":
        return _read_arc(curve, where)
    raise ModelError("unsupported_curve", f"{where} has type {kind!r}; DeepCAD curves are Line3D, Arc3D and Circle3D")


def _read_arc(curve: dict, where: str) -> Arc:
    start, end = _point2(curve, "start_point", where), _point2(curve, "end_point", where)
    center, radius = _point2(curve, "center_point", where), _length(curve, "radius", where)
    sweep = _number(curve, "end_angle", where) - _number(curve, "start_angle", where)
    rx, ry = _point2(curve, "reference_vector", where, _number)
    length = math.hypot(rx, ry)
    if radius <= MIN_LENGTH or length < 1e-9 or not 0.0 < sweep < 2.0 * math.pi or radius * sweep <= MIN_LENGTH:
        raise ModelError(
            "degenerate_curve", f"{where} is a degenerate arc (radius {radius!r} m, sweep {sweep!r} rad, reference vector length {length:.3g})"
        )
    rx, ry = rx / length, ry / length
    first = (center[0] + radius * rx, center[1] + radius * ry)
    cos_s, sin_s = math.cos(sweep), math.sin(sweep)
    last = (center[0] + radius * (rx * cos_s - ry * sin_s), center[1] + radius * (rx * sin_s + ry * cos_s))
    half = 0.5 * sweep
    mid = (center[0] + radius * (rx * math.cos(half) - ry * math.sin(half)), center[1] + radius * (rx * math.sin(half) + ry * math.cos(half)))
    slack = 1e-4 * radius + MIN_LENGTH
    if math.dist(first, start) <= slack and math.dist(last, end) <= slack:
        return Arc(start, mid, end, center, radius)
    if math.dist(first, end) <= slack and math.dist(last, start) <= slack:
        return Arc(end, mid, start, center, radius)
    raise ModelError(
        "inconsistent_arc",
        f"{where}: its end points do not lie where reference_vector and end_angle put them "
        f"(expected ({first[0]:.6g}, {first[1]:.6g}) and ({last[0]:.6g}, {last[1]:.6g}) m)",
    )


def _read_plane(sketch: dict, where: str) -> SketchPlane:
    transform = _expect(_field(sketch, "transform", where), dict, f"{where}.transform")
    origin = _vector3(transform, "origin", where, _length)
    normal = _unit(_vector3(transform, "z_axis", where), f"{where}.transform.z_axis")
    x_axis = _unit(_vector3(transform, "x_axis", where), f"{where}.transform.x_axis")
    along = sum(a * b for a, b in zip(x_axis, normal))
    in_plane = tuple(x - along * n for x, n in zip(x_axis, normal))
    if math.hypot(*in_plane) < 1e-9:
        raise ModelError(
            "degenerate_plane", f"{where}.transform.x_axis is parallel to its z_axis, so the sketch plane has no x direction"
        )
    x_axis = _unit(in_plane, f"{where}.transform.x_axis")
    y_axis = (
        normal[1] * x_axis[2] - normal[2] * x_axis[1],
        normal[2] * x_axis[0] - normal[0] * x_axis[2],
        normal[0] * x_axis[1] - normal[1] * x_axis[0],
    )
    return SketchPlane(origin=origin, x_axis=x_axis, y_axis=y_axis, normal=normal)


def _read_bbox(model: dict):
    box = (model.get("properties") or {}).get("bounding_box") if isinstance(model.get("properties"), dict) else None
    if not isinstance(box, dict):
        return None
    try:
        return _vector3(box, "min_point", "bounding_box", _length), _vector3(box, "max_point", "bounding_box", _length)
    except ModelError:
        return None


def _distance(entity: dict, key: str, where: str) -> float:
    extent = _expect(_field(entity, key, where), dict, f"{where}.{key}")
    distance = _expect(_field(extent, "distance", f"{where}.{key}"), dict, f"{where}.{key}.distance")
    return _length(distance, "value", f"{where}.{key}.distance")


def _check_kind(entities: dict, entity_id: str, kind: str, where: str) -> dict:
    """The entity a sequence step names, which must have the step's type."""
    entity = _expect(entities[entity_id], dict, f"entity {entity_id!r}")
    if entity.get("type") != kind:
        raise ModelError(
            "missing_entity", f"{where} lists {entity_id!r} as type {kind} but that entity has type {_preview(entity.get('type'))}"
        )
    return entity


def _unit(vector: tuple[float, float, float], where: str) -> tuple[float, float, float]:
    length = math.hypot(*vector)  # no overflow or underflow for huge or tiny components
    if length < 1e-9:
        raise ModelError("degenerate_plane", f"{where} has zero length, so the sketch plane is undefined")
    return tuple(v / length for v in vector)


def _point2(container: dict, key: str, where: str, number=None) -> tuple[float, float]:
    """The x and y of an {x, y, z} object; `number` reads each (lengths in metres unless given)."""
    point = _expect(_field(container, key, where), dict, f"{where}.{key}")
    return tuple((number or _length)(point, axis, f"{where}.{key}") for axis in "xy")


def _vector3(container: dict, key: str, where: str, number=None) -> tuple[float, float, float]:
    """An {x, y, z} object; `number` reads each component (plain numbers unless given, e.g. `_length`)."""
    point = _expect(_field(container, key, where), dict, f"{where}.{key}")
    return tuple((number or _number)(point, axis, f"{where}.{key}") for axis in "xyz")


def _length(container: dict, key: str, where: str) -> float:
    """A coordinate, radius or distance in metres: a number no larger in size than MAX_LENGTH."""
    value = _number(container, key, where)
    if abs(value) > MAX_LENGTH:
        raise ModelError(
            "out_of_range",
            f"{where}.{key} is {value:.6g} m, beyond {MAX_LENGTH:.0e} m; DeepCAD lengths are metres, so this is "
            "a wrong unit or a corrupt value",
        )
    return value


def _number(container: dict, key: str, where: str) -> float:
    value = _field(container, key, where)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelError("wrong_type", f"{where}.{key} should be a number, found {type(value).__name__} {_preview(value)}")
    try:
        value = float(value)
    except OverflowError:
        raise ModelError("out_of_range", f"{where}.{key} is an integer beyond 1e308, too large for any length or angle") from None
    if not math.isfinite(value):
        raise ModelError("non_finite_number", f"{where}.{key} is {value}; every coordinate must be finite")
    return value


def _choice(value: object, options: dict, where: str):
    if not isinstance(value, str) or value not in options:
        raise ModelError("unknown_value", f"{where} is {_preview(value)}; expected one of {', '.join(options)}")
    return options[value]


def _field(container: dict, key: str, where: str):
    try:
        return container[key]
    except KeyError:
        raise ModelError("missing_field", f"{where} has no {key!r} field") from None


def _expect(value: object, kind: type, where: str):
    if not isinstance(value, kind):
        raise ModelError("wrong_type", f"{where} should be a {_TYPE_NAMES[kind]}, found {type(value).__name__} {_preview(value)}")
    return value


_TYPE_NAMES = {dict: "JSON object", list: "JSON list", str: "string"}


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _id_list(ids: list[str]) -> str:
    names = ", ".join(repr(entity_id) for entity_id in ids[:5])
    more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
    return f"extrude {names}{more}" if len(ids) == 1 else f"extrudes {names}{more}"


class _NonFiniteConstant(Exception):
    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _reject_constant(name: str):
    raise _NonFiniteConstant(name)


def _position_of(raw: bytes | str, name: str) -> str:
    """' at line L column C' for the first bare NaN/Infinity token in the text, or '' if it cannot be found."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    match = re.search(r"(?<![\w\"])-?" + re.escape(name) + r"(?![\w\"])", text)
    if match is None:
        return ""
    line = text.count("\n", 0, match.start()) + 1
    column = match.start() - (text.rfind("\n", 0, match.start()) + 1) + 1
    return f" at line {line} column {column}"
