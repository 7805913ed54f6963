"""OpenECAD v2 code -> CadSequence, without executing anything the code contains.

`program.parse_program` accepts only assignments of OpenECAD calls with literal arguments; this
module gives those calls their meaning, as OpenECAD's reader (`py2step.py`) does: curves append
to the latest `Curves` list and loops to the latest `Loops` list, `add_loop` reorders its curves
in place (`loop_order`), `add_sketchplane` derives y = normal x x_axis, and numbers are
millimetres. Two of that reader's numeric slips are not copied: it stores plane directions as
spherical angles whose azimuth comes from arctan (not arctan2), so a normal or y axis pointing
towards -x comes back pointing towards +x; here every direction is used as written, except that a
direction within rounding of an axis of an earlier sketch plane is that axis (`planes.snap_frame`):
sketches on faces share their axes exactly, and printing each plane separately must not pull faces
that coincided microns apart.

Every problem is a `CodeRejected` naming the line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.loops import assemble_profile
from cad_pipeline.cad.openecad.numbers import ROUNDED_CONTACT
from cad_pipeline.cad.openecad.loop_order import CodeCurve, reorder_loop
from cad_pipeline.cad.openecad.planes import KINDS, Frame, absolute_frame, referenced_frame, snap_frame
from cad_pipeline.cad.openecad.program import CodeRejected, Name, Statement, parse_program
from cad_pipeline.cad.sequence import Arc, CadSequence, Circle, ExtentType, Extrude, Line, Operation, SketchPlane

M_PER_MM = 1e-3

_PARAMETERS = {
    "add_sketchplane": (("origin", "normal", "x_axis"), {}),
    "add_sketchplane_ref": (("extrude", "origin", "type", "line", "reverse", "angle"), {"line": None, "reverse": False, "angle": 0.0}),
    "add_line": (("start", "end"), {}),
    "add_arc": (("start", "end", "mid"), {}),
    "add_circle": (("center", "radius"), {}),
    "add_loop": (("curves",), {}),
    "add_profile": (("loops",), {}),
    "add_sketch": (("sketch_plane", "profile", "sketch_position", "sketch_size"), {"sketch_position": None, "sketch_size": None}),
    "add_extrude": (("sketch", "operation", "type", "extent_one", "extent_two"), {}),
}
"""Each call's parameters in order, and the defaults of the optional ones (OpenECAD's signatures)."""


@dataclass
class _List:
    items: list


@dataclass(frozen=True)
class _Loop:
    curves: tuple[CodeCurve, ...]
    line: int


@dataclass(frozen=True)
class _Profile:
    loops: tuple[_Loop, ...]


@dataclass(frozen=True)
class _Sketch:
    frame: Frame
    loops: tuple[_Loop, ...]


@dataclass(frozen=True)
class _Extrude:
    frame: Frame
    extent_one: float
    extent_two: float
    """As written, whatever the extent type: `extent_two` references use it so."""
    lines: frozenset[int]
    """ids of the line objects of its profile, which `line` references may name."""


def interpret(source: str, model_id: str = "code") -> CadSequence:
    """The CadSequence (metres) the code describes; raises CodeRejected for anything wrong with it."""
    interpreter = _Interpreter()
    for statement in parse_program(source):
        interpreter.run(statement)
    if not interpreter.extrudes:
        raise CodeRejected(None, "the code has no add_extrude call, so it describes no solid")
    return CadSequence(model_id=model_id, extrudes=tuple(interpreter.extrudes), stated_bbox=None)


class _Interpreter:
    def __init__(self):
        self.names: dict[str, object] = {}
        self.curves: _List | None = None
        self.loops: _List | None = None
        self.extrudes: list[Extrude] = []
        self.frames: list[Frame] = []

    def run(self, statement: Statement) -> None:
        self.line = statement.line
        if statement.call is None:
            value = _List([])
            if statement.target.startswith("Curves"):
                self.curves = value
            elif statement.target.startswith("Loops"):
                self.loops = value
        else:
            arguments = self._bind(statement)
            value = getattr(self, f"_{statement.call}")(**arguments)
        self.names[statement.target] = value

    def _bind(self, statement: Statement) -> dict:
        """Python's argument binding for OpenECAD's signatures, with names resolved to earlier values."""
        order, defaults = _PARAMETERS[statement.call]
        if len(statement.args) > len(order):
            self._reject(f"{statement.call} takes at most {len(order)} arguments, got {len(statement.args)}")
        bound = dict(zip(order, statement.args))
        for key, value in statement.kwargs.items():
            if key not in order:
                self._reject(f"{statement.call} has no parameter {key!r}; its parameters are {', '.join(order)}")
            if key in bound:
                self._reject(f"{statement.call} got parameter {key!r} twice")
            bound[key] = value
        missing = [key for key in order if key not in bound and key not in defaults]
        if missing:
            self._reject(f"{statement.call} is missing {', '.join(missing)}")
        return {key: self._resolve(bound[key]) if key in bound else defaults[key] for key in order}

    def _resolve(self, value):
        return self.names[value.id] if isinstance(value, Name) else value

    def _add_sketchplane(self, origin, normal, x_axis) -> Frame:
        origin, normal, x_axis = self._vector(origin, 3, "origin"), self._vector(normal, 3, "normal"), self._vector(x_axis, 3, "x_axis")
        try:
            return self._keep_frame(absolute_frame(origin, normal, x_axis))
        except ValueError:
            self._reject(f"add_sketchplane: normal {list(normal)} and x_axis {list(x_axis)} do not span a plane (zero or parallel)")

    def _add_sketchplane_ref(self, extrude, origin, type, line, reverse, angle) -> Frame:
        if not isinstance(extrude, _Extrude):
            self._reject("add_sketchplane_ref: the first argument must be an Extrude defined earlier")
        if type not in KINDS:
            self._reject(f"add_sketchplane_ref: type must be one of {', '.join(KINDS)}, found {type!r}")
        if not isinstance(reverse, bool):
            self._reject(f"add_sketchplane_ref: reverse must be True or False, found {reverse!r}")
        angle = self._number(angle, "angle")
        origin = self._vector(origin, 2, "origin")
        segment = None
        if type == "line":
            if not (isinstance(line, CodeCurve) and line.kind == "line" and id(line) in extrude.lines):
                self._reject("add_sketchplane_ref: type 'line' needs line= a Line of the referenced extrude's profile")
            segment = (line.start, line.end)
        try:
            frame = referenced_frame(extrude.frame, extrude.extent_one, extrude.extent_two, type, origin, angle, reverse, segment)
        except ValueError:
            self._reject("add_sketchplane_ref: the referenced line has no length")
        return self._keep_frame(frame)

    def _keep_frame(self, frame: Frame) -> Frame:
        frame = snap_frame(frame, self.frames)
        self.frames.append(frame)
        return frame

    def _add_line(self, start, end) -> CodeCurve:
        return self._append_curve(CodeCurve("line", self._vector(start, 2, "start"), self._vector(end, 2, "end")))

    def _add_arc(self, start, end, mid) -> CodeCurve:
        curve = CodeCurve("arc", self._vector(start, 2, "start"), self._vector(end, 2, "end"), mid=self._vector(mid, 2, "mid"))
        return self._append_curve(curve)

    def _add_circle(self, center, radius) -> CodeCurve:
        radius = self._number(radius, "radius")
        if not radius > 0.0:
            self._reject(f"add_circle: radius must be positive, found {radius!r}")
        return self._append_curve(CodeCurve.circle(self._vector(center, 2, "center"), radius))

    def _append_curve(self, curve: CodeCurve) -> CodeCurve:
        if self.curves is None:
            self._reject("a curve comes before any `Curves... = []` list it could be appended to")
        self.curves.items.append(curve)
        return curve

    def _add_loop(self, curves) -> _Loop:
        if not isinstance(curves, _List) or not curves.items or not all(isinstance(c, CodeCurve) for c in curves.items):
            self._reject("add_loop needs a Curves list holding at least one curve")
        if self.loops is None:
            self._reject("add_loop comes before any `Loops... = []` list it could be appended to")
        loop = _Loop(tuple(reorder_loop(list(curves.items))), self.line)
        self.loops.items.append(loop)
        return loop

    def _add_profile(self, loops) -> _Profile:
        if not isinstance(loops, _List) or not loops.items or not all(isinstance(loop, _Loop) for loop in loops.items):
            self._reject("add_profile needs a Loops list holding at least one loop")
        return _Profile(tuple(loops.items))

    def _add_sketch(self, sketch_plane, profile, sketch_position, sketch_size) -> _Sketch:
        if not isinstance(sketch_plane, Frame):
            self._reject("add_sketch: sketch_plane must be a SketchPlane defined earlier")
        if not isinstance(profile, _Profile):
            self._reject("add_sketch: profile must be a Profile defined earlier")
        return _Sketch(sketch_plane, profile.loops)

    def _add_extrude(self, sketch, operation, type, extent_one, extent_two) -> _Extrude:
        if not isinstance(sketch, _Sketch):
            self._reject("add_extrude: sketch must be a Sketch defined earlier")
        operation = self._code(operation, Operation, "operation")
        extent_type = self._code(type, ExtentType, "type")
        extent_one, extent_two = self._number(extent_one, "extent_one"), self._number(extent_two, "extent_two")
        frame = sketch.frame
        extrude = Extrude(
            plane=SketchPlane(
                origin=tuple(v * M_PER_MM for v in frame.origin), x_axis=frame.x_axis, y_axis=frame.y_axis, normal=frame.normal
            ),
            profile=self._profile(sketch.loops),
            operation=operation,
            extent_type=extent_type,
            extent_one=extent_one * M_PER_MM,
            extent_two=extent_two * M_PER_MM if extent_type is ExtentType.TWO_SIDES else 0.0,
            source=f"Extrude{len(self.extrudes)} (line {self.line})",
        )
        low, high = extrude.depth_interval()
        if not high - low > 0.0:
            self._reject(f"add_extrude has zero depth (extent_one {extent_one!r}, extent_two {extent_two!r}, type {int(extent_type)})")
        self.extrudes.append(extrude)
        lines = frozenset(id(curve) for loop in sketch.loops for curve in loop.curves if curve.kind == "line")
        return _Extrude(frame, extent_one, extent_two, lines)

    def _profile(self, loops: tuple[_Loop, ...]):
        raw_loops = [[self._sequence_curve(curve, loop.line) for curve in loop.curves] for loop in loops]
        try:
            return assemble_profile(raw_loops, f"the profile of Extrude{len(self.extrudes)}", ROUNDED_CONTACT)
        except ModelError as error:
            self._reject(error.message)

    def _sequence_curve(self, curve: CodeCurve, line: int):
        """The curve in metres; an arc's centre and radius come from its three points."""
        if curve.kind == "line":
            return Line(_metres(curve.start), _metres(curve.end))
        if curve.kind == "circle":
            return Circle(_metres(curve.center), curve.radius * M_PER_MM)
        center = circle_through(curve.start, curve.mid, curve.end)
        if center is None:
            self.line = line
            self._reject(f"an arc's start {list(curve.start)}, mid {list(curve.mid)} and end {list(curve.end)} lie on one line")
        radius = math.dist(center, curve.start)
        return Arc(_metres(curve.start), _metres(curve.mid), _metres(curve.end), _metres(center), radius * M_PER_MM)

    def _vector(self, value, size: int, what: str) -> tuple[float, ...]:
        if not (isinstance(value, tuple) and len(value) == size):
            self._reject(f"{what} must be a list of {size} numbers, found {_describe(value)}")
        return value

    def _number(self, value, what: str) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self._reject(f"{what} must be a number, found {_describe(value)}")
        return float(value)

    def _code(self, value, kind, what: str):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in {member.value for member in kind}:
            choices = ", ".join(f"{member.value} {member.name.lower()}" for member in kind)
            self._reject(f"{what} must be one of {choices}; found {_describe(value)}")
        return kind(int(value))

    def _reject(self, why: str):
        raise CodeRejected(self.line, why)


def circle_through(a, b, c) -> tuple[float, float] | None:
    """Centre of the circle through three points, or None when they are (nearly) collinear."""
    ax, ay = b[0] - a[0], b[1] - a[1]
    bx, by = c[0] - a[0], c[1] - a[1]
    denominator = 2.0 * (ax * by - ay * bx)
    scale = max(math.hypot(ax, ay), math.hypot(bx, by))
    if abs(denominator) <= 1e-12 * scale * scale:
        return None
    a_sq, b_sq = ax * ax + ay * ay, bx * bx + by * by
    return a[0] + (by * a_sq - ay * b_sq) / denominator, a[1] + (ax * b_sq - bx * a_sq) / denominator


def _metres(point) -> tuple[float, float]:
    return point[0] * M_PER_MM, point[1] * M_PER_MM


def _describe(value) -> str:
    if isinstance(value, tuple):
        return f"a list of {len(value)}"
    if isinstance(value, (CodeCurve, _Loop, _Profile, _Sketch, _Extrude, Frame, _List)):
        return "an object of the wrong kind"
    return repr(value)
