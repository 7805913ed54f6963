"""The shaded style: a grey body lit from the viewer's side, with its visible edges drawn dark on top.

Faces are meshed with OpenCASCADE, culled when they face away and painted far to near; the exact
visible edges from hidden-line removal are drawn over them, so outlines stay crisp.
"""

from __future__ import annotations

import numpy as np
from OCP.BRep import BRep_Tool
from OCP.BRepMesh import BRepMesh_IncrementalMesh
from OCP.TopAbs import TopAbs_FACE, TopAbs_REVERSED
from OCP.TopExp import TopExp_Explorer
from OCP.TopLoc import TopLoc_Location
from OCP.TopoDS import TopoDS, TopoDS_Shape
from PIL import Image, ImageDraw

from cad_pipeline.render.views import View

LIGHT_TILT = np.array([0.3, 0.5])
"""How far the light leans right and up from the viewing direction, so faces at different slopes differ."""


def triangles(shape: TopoDS_Shape, deflection: float) -> np.ndarray:
    """All faces as an (n, 3, 3) array of world triangles, wound counter-clockwise seen from outside."""
    BRepMesh_IncrementalMesh(shape, deflection, False, 0.5, False)
    found = []
    explorer = TopExp_Explorer(shape, TopAbs_FACE)
    while explorer.More():
        face = TopoDS.Face(explorer.Current())
        location = TopLoc_Location()
        mesh = BRep_Tool.Triangulation_s(face, location)
        if mesh is not None:
            transform = location.Transformation()
            nodes = np.array([_xyz(mesh.Node(i).Transformed(transform)) for i in range(1, mesh.NbNodes() + 1)])
            corners = np.array([mesh.Triangle(i).Get() for i in range(1, mesh.NbTriangles() + 1)]) - 1
            if face.Orientation() == TopAbs_REVERSED:
                corners = corners[:, ::-1]
            found.append(nodes[corners])
        explorer.Next()
    return np.concatenate(found) if found else np.zeros((0, 3, 3))


def paint_faces(canvas: np.ndarray, world_triangles: np.ndarray, view: View, to_pixels) -> np.ndarray:
    """Paint the front-facing triangles of one view onto a greyscale canvas, farthest first."""
    toward, right, up = (np.array(v) for v in (view.toward_viewer, view.right, view.up))
    normals = np.cross(world_triangles[:, 1] - world_triangles[:, 0], world_triangles[:, 2] - world_triangles[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    facing = (normals @ toward) > 1e-12 * lengths.max(initial=1.0)
    visible, normals = world_triangles[facing], normals[facing] / lengths[facing, None]
    light = toward + LIGHT_TILT[0] * right + LIGHT_TILT[1] * up
    light /= np.linalg.norm(light)
    shade = (70 + 150 * np.clip(normals @ light, 0.0, 1.0)).astype(np.uint8)
    depth = (visible @ toward).mean(axis=1)
    image = Image.fromarray(canvas, mode="L")
    draw = ImageDraw.Draw(image)
    for index in np.argsort(depth, kind="stable"):
        flat = np.column_stack((visible[index] @ right, visible[index] @ up))
        draw.polygon([tuple(point) for point in to_pixels(flat)], fill=int(shade[index]))
    return np.asarray(image).copy()


def _xyz(point) -> tuple[float, float, float]:
    return point.X(), point.Y(), point.Z()
