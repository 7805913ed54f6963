"""Exact hidden-line removal (OpenCASCADE HLRBRep_Algo): a solid's visible and hidden edges as 2-D polylines.

Visible lines are sharp edges, smooth (tangent) edges and silhouettes of curved faces; hidden
lines are the same kinds behind the material. Coordinates are the view's (right, up) in metres.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from OCP.BRepAdaptor import BRepAdaptor_Curve
from OCP.GCPnts import GCPnts_QuasiUniformDeflection
from OCP.GeomAbs import GeomAbs_Line
from OCP.gp import gp_Ax2, gp_Dir, gp_Pnt
from OCP.HLRAlgo import HLRAlgo_Projector
from OCP.HLRBRep import HLRBRep_Algo, HLRBRep_HLRToShape
from OCP.TopAbs import TopAbs_EDGE
from OCP.TopExp import TopExp_Explorer
from OCP.TopoDS import TopoDS, TopoDS_Shape

from cad_pipeline.render.views import View


@dataclass(frozen=True)
class LineDrawing:
    visible: list[np.ndarray]
    """Polylines, each an (n, 2) array of (right, up) points."""
    hidden: list[np.ndarray]


def hidden_line_drawing(shape: TopoDS_Shape, view: View, deflection: float) -> LineDrawing:
    """Project the solid for one view; curves are flattened to within `deflection` metres."""
    algo = HLRBRep_Algo()
    algo.Add(shape)
    frame = gp_Ax2(gp_Pnt(0.0, 0.0, 0.0), gp_Dir(*view.toward_viewer), gp_Dir(*view.right))
    algo.Projector(HLRAlgo_Projector(frame))
    algo.Update()
    algo.Hide()
    edges = HLRBRep_HLRToShape(algo)
    visible = (edges.VCompound(), edges.Rg1LineVCompound(), edges.OutLineVCompound())
    hidden = (edges.HCompound(), edges.Rg1LineHCompound(), edges.OutLineHCompound())
    return LineDrawing(
        visible=[line for compound in visible for line in _polylines(compound, deflection)],
        hidden=[line for compound in hidden for line in _polylines(compound, deflection)],
    )


def _polylines(compound: TopoDS_Shape, deflection: float) -> list[np.ndarray]:
    if compound.IsNull():
        return []
    lines = []
    explorer = TopExp_Explorer(compound, TopAbs_EDGE)
    while explorer.More():
        curve = BRepAdaptor_Curve(TopoDS.Edge(explorer.Current()))
        if curve.GetType() == GeomAbs_Line:
            points = [curve.Value(curve.FirstParameter()), curve.Value(curve.LastParameter())]
        else:
            sampler = GCPnts_QuasiUniformDeflection(curve, deflection)
            points = [sampler.Value(index) for index in range(1, sampler.NbPoints() + 1)] if sampler.IsDone() else []
        if len(points) >= 2:
            lines.append(np.array([(point.X(), point.Y()) for point in points]))
        explorer.Next()
    return lines
