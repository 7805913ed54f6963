"""Named orthographic views, with Z up and third-angle names (the viewer of `front` stands at -Y)."""

from __future__ import annotations

import math
from dataclasses import dataclass

Vector3 = tuple[float, float, float]


@dataclass(frozen=True)
class View:
    name: str
    toward_viewer: Vector3
    """Unit vector from the model to the viewer."""
    right: Vector3
    """World direction that points right in the image; up is toward_viewer x right."""

    @property
    def up(self) -> Vector3:
        (a, b, c), (d, e, f) = self.toward_viewer, self.right
        return (b * f - c * e, c * d - a * f, a * e - b * d)

    def project(self, point: Vector3) -> tuple[float, float]:
        """Image-plane coordinates (right, up) of a world point, in world units."""
        right, up = self.right, self.up
        return (
            sum(p * r for p, r in zip(point, right)),
            sum(p * u for p, u in zip(point, up)),
        )


_ISO_TOWARD = tuple(v / math.sqrt(3.0) for v in (1.0, -1.0, 1.0))
_ISO_RIGHT = tuple(v / math.sqrt(2.0) for v in (1.0, 1.0, 0.0))

VIEWS: dict[str, View] = {
    view.name: view
    for view in (
        View("front", (0.0, -1.0, 0.0), (1.0, 0.0, 0.0)),
        View("back", (0.0, 1.0, 0.0), (-1.0, 0.0, 0.0)),
        View("top", (0.0, 0.0, 1.0), (1.0, 0.0, 0.0)),
        View("bottom", (0.0, 0.0, -1.0), (1.0, 0.0, 0.0)),
        View("right", (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
        View("left", (-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
        View("iso", _ISO_TOWARD, _ISO_RIGHT),
    )
}
"""front/back/top/bottom/right/left look along the axes; iso looks from the front-right-top corner."""


def parse_views(names: str | list[str]) -> list[View]:
    """Views by name, in the order given; an unknown name is an error that lists the known ones."""
    if isinstance(names, str):
        names = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in names if name not in VIEWS]
    if unknown or not names:
        raise ValueError(f"unknown views {unknown or names}; choose from {', '.join(VIEWS)}")
    return [VIEWS[name] for name in dict.fromkeys(names)]
