"""Exact measurements of a built solid: volume, area and the B-rep bounding box."""

from __future__ import annotations

from dataclasses import dataclass

from OCP.Bnd import Bnd_Box
from OCP.BRepBndLib import BRepBndLib
from OCP.BRepGProp import BRepGProp
from OCP.GProp import GProp_GProps
from OCP.TopAbs import TopAbs_EDGE
from OCP.TopExp import TopExp_Explorer
from OCP.TopoDS import TopoDS_Shape

INTEGRATION_EPS = 1e-9
"""Relative error target of OpenCASCADE's adaptive integration; its default Gauss rule can be 1e-5 off on curved faces."""


@dataclass(frozen=True)
class Measurements:
    volume: float
    area: float
    bbox_min: tuple[float, float, float]
    bbox_max: tuple[float, float, float]


def measure(shape: TopoDS_Shape) -> Measurements:
    area = GProp_GProps()
    BRepGProp.SurfaceProperties_s(shape, area, INTEGRATION_EPS)
    bbox_min, bbox_max = exact_bbox(shape)
    return Measurements(volume=volume(shape), area=area.Mass(), bbox_min=bbox_min, bbox_max=bbox_max)


def volume(shape: TopoDS_Shape) -> float:
    """Exact enough for comparing solids; defined for an empty shape too (0), unlike the bbox."""
    properties = GProp_GProps()
    BRepGProp.VolumeProperties_s(shape, properties, INTEGRATION_EPS, True)
    return properties.Mass()


def exact_bbox(shape: TopoDS_Shape) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Union of the edges' optimal boxes: the true extent, since a prism's extremes lie on its edges.

    Face-based optimal boxes pad trimmed cylinders by about 1e-7 m, and tessellation-based boxes
    are only as good as the mesh, so edges are used.
    """
    box = Bnd_Box()
    explorer = TopExp_Explorer(shape, TopAbs_EDGE)
    while explorer.More():
        BRepBndLib.AddOptimal_s(explorer.Current(), box, False, False)
        explorer.Next()
    low, high = box.CornerMin(), box.CornerMax()
    return (low.X(), low.Y(), low.Z()), (high.X(), high.Y(), high.Z())
