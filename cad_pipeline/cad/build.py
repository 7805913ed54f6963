"""CadSequence -> OpenCASCADE solid, with the booleans DeepCAD applies (NewBody/Join fuse, Cut, Intersect).

Each extrude is one prism over the depth interval it fills (a Symmetric or TwoSides extrude is
the union of two prisms that share the sketch face, so one prism is the same solid without a
boolean). Consecutive fuses, and consecutive cuts, go into one boolean with several tools, which
is the same set operation done once.

OpenCASCADE's tolerances are absolute (1e-7), so a model far smaller or larger than a metre is
built at a power-of-two scale (exact in floating point) and scaled back.

OpenCASCADE's booleans can return a wrong solid without reporting an error, typically where a
face touches a circle's seam or is tangent to a cylinder. Every boolean's volume is therefore checked
against the bounds any correct result obeys (a cut removes at most its tools, a fuse is at least its
largest part and at most their sum, an intersection at most its smaller part). A model with circles
whose result breaks them is rebuilt with its circles starting at another angle: the same geometry,
another parametrization, which moves the seam away from whatever it touched.
"""

from __future__ import annotations

import math
from itertools import groupby

import OCP.Standard
import OCP.StdFail
from OCP.BRepAlgoAPI import BRepAlgoAPI_BooleanOperation, BRepAlgoAPI_Common, BRepAlgoAPI_Cut, BRepAlgoAPI_Fuse
from OCP.BRepGProp import BRepGProp
from OCP.BRepBuilderAPI import BRepBuilderAPI_MakeEdge, BRepBuilderAPI_MakeFace, BRepBuilderAPI_MakeWire, BRepBuilderAPI_Transform
from OCP.BRepPrimAPI import BRepPrimAPI_MakePrism
from OCP.collections import List_TopoDS_Shape
from OCP.GC import GC_MakeArcOfCircle
from OCP.GProp import GProp_GProps
from OCP.gp import gp_Ax2, gp_Ax3, gp_Circ, gp_Dir, gp_Pln, gp_Pnt, gp_Trsf, gp_Vec
from OCP.TopAbs import TopAbs_SOLID
from OCP.TopExp import TopExp_Explorer
from OCP.TopoDS import TopoDS, TopoDS_Shape

from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.loops import signed_area
from cad_pipeline.cad.sequence import CadSequence, Circle, Extrude, Line, Loop, Operation, Point2, SketchPlane

OCC_ERRORS = tuple(
    value
    for module in (OCP.Standard, OCP.StdFail)
    for value in vars(module).values()
    if isinstance(value, type) and issubclass(value, BaseException)
)
"""OpenCASCADE's exception classes (OCP derives them from Exception, not from one common base)."""

WELL_CONDITIONED_SIZE = (2.0**-7, 2.0**7)
"""Model sizes in metres (about 8 mm to 128 m) that are built as they are."""

SEAM_ANGLES = (0.0, 2.399963229728653, 4.799926459457306)
"""Radians from the sketch x axis at which full circles start, tried in order: 0 first, as OpenECAD's
reader builds them, then multiples of the golden angle, which no sketch's round numbers line up with."""

BOUND_SLACK = 1e-4
"""Relative volume slack of the bound checks: the default Gauss rule is about 1e-5 accurate on curved faces."""

_BOOLEAN_KIND = {Operation.NEW_BODY: "fuse", Operation.JOIN: "fuse", Operation.CUT: "cut", Operation.INTERSECT: "common"}


def build_solid(sequence: CadSequence) -> TopoDS_Shape:
    """The final body in metres; raises ModelError when a step cannot be built or nothing solid remains."""
    scale = conditioning_scale(sequence)
    has_circle = any(isinstance(curve, Circle) for extrude in sequence.extrudes for loop in extrude.profile.loops for curve in loop.curves)
    seams = SEAM_ANGLES if has_circle else SEAM_ANGLES[:1]
    try:
        for seam in seams:
            try:
                body = _build(sequence, scale, seam)
                break
            except _BoundBroken as error:
                broken = error
        else:
            tried = f"with each of {len(seams)} circle seam placements" if has_circle else "and the model has no circle seam to move"
            raise ModelError("boolean_inconsistent", f"{broken} {tried}: OpenCASCADE's boolean is unreliable on this geometry")
        if scale != 1.0:
            back = gp_Trsf()
            back.SetScale(gp_Pnt(0.0, 0.0, 0.0), 1.0 / scale)
            body = BRepBuilderAPI_Transform(body, back, True).Shape()
    except OCC_ERRORS as error:
        raise ModelError("occ_failure", f"OpenCASCADE failed while building: {type(error).__name__}: {error}") from None
    return body


def conditioning_scale(sequence: CadSequence) -> float:
    """1 for models of ordinary size, else the power of two that brings the model's size near 1."""
    size = 0.0
    for extrude in sequence.extrudes:
        (x0, y0), (x1, y1) = extrude.profile.loops[0].bbox()
        size = max(size, *map(abs, extrude.plane.origin), abs(x0), abs(y0), abs(x1), abs(y1), *map(abs, extrude.depth_interval()))
    low, high = WELL_CONDITIONED_SIZE
    if size == 0.0 or low <= size <= high:
        return 1.0
    return 2.0 ** -round(math.log2(size))


def extrude_prism(extrude: Extrude, scale: float = 1.0, seam: float = 0.0) -> TopoDS_Shape:
    """The solid one extrude sweeps, before any boolean (lengths multiplied by `scale`, circles starting at `seam`)."""
    low, high = extrude.depth_interval()
    plane = extrude.plane
    shifted = SketchPlane(
        origin=tuple(o + low * n for o, n in zip(plane.origin, plane.normal)),
        x_axis=plane.x_axis,
        y_axis=plane.y_axis,
        normal=plane.normal,
    )
    face = _face(shifted, extrude, scale, seam)
    prism = BRepPrimAPI_MakePrism(face, gp_Vec(*(n * (high - low) * scale for n in plane.normal)))
    if not prism.IsDone():
        raise ModelError("prism_failed", f"{extrude.source}: OpenCASCADE could not extrude the profile")
    return prism.Shape()


def _build(sequence: CadSequence, scale: float, seam: float) -> TopoDS_Shape:
    body: TopoDS_Shape | None = None
    body_volume = 0.0
    for kind, run in groupby(sequence.extrudes, key=lambda extrude: _BOOLEAN_KIND[extrude.operation]):
        run = list(run)
        steps = [[extrude] for extrude in run] if kind == "common" else [run]
        for extrudes in steps:
            tools = [(extrude_prism(extrude, scale, seam), _prism_volume(extrude) * scale**3) for extrude in extrudes]
            if body is None and kind == "fuse":
                (body, body_volume), tools = tools[0], tools[1:]
            if tools:
                where = "; ".join(extrude.source for extrude in extrudes)
                body, body_volume = _boolean(kind, body, body_volume, tools, where)
    if body is None or not TopExp_Explorer(body, TopAbs_SOLID).More():
        raise ModelError("no_solid", "the operations leave no solid (cuts or intersections remove everything)")
    return body


def _prism_volume(extrude: Extrude) -> float:
    outer, *holes = extrude.profile.loops
    low, high = extrude.depth_interval()
    return (abs(signed_area(outer)) - sum(abs(signed_area(hole)) for hole in holes)) * (high - low)


class _BoundBroken(Exception):
    """A boolean's result has a volume no correct result can have."""


_OPERATIONS = {"fuse": BRepAlgoAPI_Fuse, "cut": BRepAlgoAPI_Cut, "common": BRepAlgoAPI_Common}


def _boolean(kind: str, body, body_volume: float, tools: list[tuple[TopoDS_Shape, float]], where: str):
    """The result of one boolean and its volume, checked against the bounds any correct result obeys."""
    if body is None:
        raise ModelError("no_body", f"{where}: a cut or intersect comes before any body exists")
    operation: BRepAlgoAPI_BooleanOperation = _OPERATIONS[kind]()
    arguments, tool_list = List_TopoDS_Shape(), List_TopoDS_Shape()
    arguments.Append(body)
    for tool, _ in tools:
        tool_list.Append(tool)
    operation.SetArguments(arguments)
    operation.SetTools(tool_list)
    operation.SetRunParallel(False)
    operation.SetToFillHistory(False)
    operation.SetCheckInverted(False)  # prisms are built outward-facing, so the check only costs time
    operation.Build()
    if not operation.IsDone():
        raise ModelError("boolean_failed", f"{where}: the boolean operation failed in OpenCASCADE")
    result = operation.Shape()
    volume = _volume(result)
    _check_bounds(kind, body_volume, [tool_volume for _, tool_volume in tools], volume, where)
    return result, volume


def _check_bounds(kind: str, body: float, tools: list[float], result: float, where: str) -> None:
    low, high = {
        "fuse": (max(body, *tools), body + sum(tools)),
        "cut": (body - sum(tools), body),
        "common": (0.0, min(body, *tools)),
    }[kind]
    slack = BOUND_SLACK * (body + sum(tools))
    if not low - slack <= result <= high + slack:
        raise _BoundBroken(f"{where}: the {kind} gave volume {result:.6g}, outside [{low:.6g}, {high:.6g}]")


def _volume(shape: TopoDS_Shape) -> float:
    properties = GProp_GProps()
    BRepGProp.VolumeProperties_s(shape, properties)
    return properties.Mass()


def _face(plane: SketchPlane, extrude: Extrude, scale: float, seam: float):
    frame = gp_Pln(gp_Ax3(_point(plane, (0.0, 0.0), scale), gp_Dir(*plane.normal), gp_Dir(*plane.x_axis)))
    outer, *holes = extrude.profile.loops
    maker = BRepBuilderAPI_MakeFace(frame, _wire(plane, outer, extrude, scale, seam), True)
    for hole in holes:
        wire = _wire(plane, hole, extrude, scale, seam)
        if isinstance(hole.curves[0], Circle):
            wire = TopoDS.Wire(wire.Reversed())  # a lone circle is made counter-clockwise; holes run clockwise
        maker.Add(wire)
    if not maker.IsDone():
        raise ModelError("face_failed", f"{extrude.source}: OpenCASCADE could not make a face from the profile")
    return maker.Face()


def _wire(plane: SketchPlane, loop: Loop, extrude: Extrude, scale: float, seam: float):
    maker = BRepBuilderAPI_MakeWire()
    for index, curve in enumerate(loop.curves):
        maker.Add(_edge(plane, curve, scale, seam, f"{extrude.source} curve {index}"))
    if not maker.IsDone():
        raise ModelError("wire_failed", f"{extrude.source}: its curves do not join into a closed wire")
    return maker.Wire()


def _edge(plane: SketchPlane, curve, scale: float, seam: float, where: str):
    if isinstance(curve, Line):
        return BRepBuilderAPI_MakeEdge(_point(plane, curve.start, scale), _point(plane, curve.end, scale)).Edge()
    if isinstance(curve, Circle):
        start = tuple(math.cos(seam) * x + math.sin(seam) * y for x, y in zip(plane.x_axis, plane.y_axis))
        axis = gp_Ax2(_point(plane, curve.center, scale), gp_Dir(*plane.normal), gp_Dir(*start))
        return BRepBuilderAPI_MakeEdge(gp_Circ(axis, curve.radius * scale)).Edge()
    arc = GC_MakeArcOfCircle(_point(plane, curve.start, scale), _point(plane, curve.mid, scale), _point(plane, curve.end, scale))
    if not arc.IsDone():
        raise ModelError("degenerate_curve", f"{where}: the arc's start, middle and end points are collinear")
    return BRepBuilderAPI_MakeEdge(arc.Value()).Edge()


def _point(plane: SketchPlane, point: Point2, scale: float) -> gp_Pnt:
    x, y, z = plane.to_world(point)
    return gp_Pnt(x * scale, y * scale, z * scale)
