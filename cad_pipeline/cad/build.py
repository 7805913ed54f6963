"""CadSequence -> OpenCASCADE solid, with the booleans DeepCAD applies (NewBody/Join fuse, Cut, Intersect).

Each extrude is one prism over the depth interval it fills (a Symmetric or TwoSides extrude is
the union of two prisms that share the sketch face, so one prism is the same solid without a
boolean). Consecutive fuses, and consecutive cuts, go into one boolean with several tools, which
is the same set operation done once.
"""

from __future__ import annotations

from itertools import groupby

from OCP.BRepAlgoAPI import BRepAlgoAPI_BooleanOperation, BRepAlgoAPI_Common, BRepAlgoAPI_Cut, BRepAlgoAPI_Fuse
from OCP.BRepBuilderAPI import BRepBuilderAPI_MakeEdge, BRepBuilderAPI_MakeFace, BRepBuilderAPI_MakeWire
from OCP.BRepPrimAPI import BRepPrimAPI_MakePrism
from OCP.GC import GC_MakeArcOfCircle
from OCP.gp import gp_Ax2, gp_Ax3, gp_Circ, gp_Dir, gp_Pln, gp_Pnt, gp_Vec
from OCP.Standard import Standard_Failure
from OCP.TopAbs import TopAbs_SOLID
from OCP.TopExp import TopExp_Explorer
from OCP.TopoDS import TopoDS, TopoDS_Shape
from OCP.collections import List_TopoDS_Shape

from cad_pipeline.cad.errors import ModelError
from cad_pipeline.cad.sequence import Arc, CadSequence, Circle, Extrude, Line, Loop, Operation, SketchPlane


def build_solid(sequence: CadSequence) -> TopoDS_Shape:
    """The final body; raises ModelError when a step cannot be built or nothing solid remains."""
    try:
        return _build(sequence)
    except Standard_Failure as error:
        raise ModelError("occ_failure", f"OpenCASCADE failed while building: {error}") from None


def extrude_prism(extrude: Extrude) -> TopoDS_Shape:
    """The solid one extrude sweeps, before any boolean."""
    low, high = extrude.depth_interval()
    plane = extrude.plane
    shifted = SketchPlane(
        origin=tuple(o + low * n for o, n in zip(plane.origin, plane.normal)),
        x_axis=plane.x_axis,
        y_axis=plane.y_axis,
        normal=plane.normal,
    )
    face = _face(shifted, extrude)
    prism = BRepPrimAPI_MakePrism(face, gp_Vec(*(n * (high - low) for n in plane.normal)))
    if not prism.IsDone():
        raise ModelError("prism_failed", f"{extrude.source}: OpenCASCADE could not extrude the profile")
    return prism.Shape()


def _build(sequence: CadSequence) -> TopoDS_Shape:
    body: TopoDS_Shape | None = None
    kinds = {Operation.NEW_BODY: "fuse", Operation.JOIN: "fuse", Operation.CUT: "cut", Operation.INTERSECT: "common"}
    position = 0
    for kind, run in groupby(sequence.extrudes, key=lambda extrude: kinds[extrude.operation]):
        run = list(run)
        if kind == "common":
            for extrude in run:
                body = _boolean(BRepAlgoAPI_Common(), body, [extrude_prism(extrude)], extrude.source, position)
                position += 1
            continue
        tools = [extrude_prism(extrude) for extrude in run]
        where = run[0].source if len(run) == 1 else f"extrudes {position}-{position + len(run) - 1}"
        if kind == "fuse":
            if body is None:
                body, tools = tools[0], tools[1:]
            if tools:
                body = _boolean(BRepAlgoAPI_Fuse(), body, tools, where, position)
        else:
            body = _boolean(BRepAlgoAPI_Cut(), body, tools, where, position)
        position += len(run)
    if body is None or not _has_solid(body):
        raise ModelError("no_solid", f"{sequence.model_id}: the operations leave no solid (cuts or intersections remove everything)")
    return body


def _boolean(operation: BRepAlgoAPI_BooleanOperation, body, tools: list, where: str, position: int) -> TopoDS_Shape:
    if body is None:
        raise ModelError("no_body", f"{where}: a cut or intersect comes before any body exists (step {position})")
    arguments, tool_list = List_TopoDS_Shape(), List_TopoDS_Shape()
    arguments.Append(body)
    for tool in tools:
        tool_list.Append(tool)
    operation.SetArguments(arguments)
    operation.SetTools(tool_list)
    operation.SetRunParallel(False)
    operation.SetToFillHistory(False)
    operation.SetCheckInverted(False)  # prisms are built outward-facing, so the check only costs time
    operation.Build()
    if not operation.IsDone():
        raise ModelError("boolean_failed", f"{where}: the boolean operation failed in OpenCASCADE")
    return operation.Shape()


def _has_solid(shape: TopoDS_Shape) -> bool:
    return TopExp_Explorer(shape, TopAbs_SOLID).More()


def _face(plane: SketchPlane, extrude: Extrude):
    frame = gp_Pln(gp_Ax3(gp_Pnt(*plane.origin), gp_Dir(*plane.normal), gp_Dir(*plane.x_axis)))
    outer, *holes = extrude.profile.loops
    maker = BRepBuilderAPI_MakeFace(frame, _wire(plane, outer, extrude), True)
    for hole in holes:
        wire = _wire(plane, hole, extrude)
        if isinstance(hole.curves[0], Circle):
            wire = TopoDS.Wire(wire.Reversed())  # a lone circle is made counter-clockwise; holes run clockwise
        maker.Add(wire)
    if not maker.IsDone():
        raise ModelError("face_failed", f"{extrude.source}: OpenCASCADE could not make a face from the profile")
    return maker.Face()


def _wire(plane: SketchPlane, loop: Loop, extrude: Extrude):
    maker = BRepBuilderAPI_MakeWire()
    for curve in loop.curves:
        maker.Add(_edge(plane, curve))
    if not maker.IsDone():
        raise ModelError("wire_failed", f"{extrude.source}: its curves do not join into a closed wire")
    return maker.Wire()


def _edge(plane: SketchPlane, curve):
    if isinstance(curve, Line):
        return BRepBuilderAPI_MakeEdge(gp_Pnt(*plane.to_world(curve.start)), gp_Pnt(*plane.to_world(curve.end))).Edge()
    if isinstance(curve, Circle):
        axis = gp_Ax2(gp_Pnt(*plane.to_world(curve.center)), gp_Dir(*plane.normal), gp_Dir(*plane.x_axis))
        return BRepBuilderAPI_MakeEdge(gp_Circ(axis, curve.radius)).Edge()
    arc = GC_MakeArcOfCircle(
        gp_Pnt(*plane.to_world(curve.start)), gp_Pnt(*plane.to_world(curve.mid)), gp_Pnt(*plane.to_world(curve.end))
    )
    if not arc.IsDone():
        raise ModelError("degenerate_curve", "an arc's three points are collinear")
    return BRepBuilderAPI_MakeEdge(arc.Value()).Edge()
