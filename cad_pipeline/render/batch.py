"""Rendering many models through an Executor, never twice: images live in the content-addressed store.

A model's images are keyed by the hash of its file, the render settings and the renderer's own
code, so any scale that meets the same model again finds its images already there.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import zlib
import time
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path

from PIL import Image

from cad_pipeline.cad.build import OCC_ERRORS, build_solid
from cad_pipeline.cad.deepcad_json import read_bytes, read_model_file
from cad_pipeline.cad.errors import ModelError
from cad_pipeline.options import SettingError
from cad_pipeline.parallel import Isolated, map_in_sandboxes
from cad_pipeline.render.drawing import LineStyle, draw_grid, draw_views, encode_png
from cad_pipeline.render.views import parse_views
from cad_pipeline.store import DamagedEntry, code_version, read_sealed, store_path, write_sealed


LAYOUTS = ("per_view", "grid")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 4096
"""Pixels per side: below 32 no drawing is legible; above 4096 one image outgrows a worker's memory budget."""
STYLES = ("lines", "shaded")


@dataclass(frozen=True)
class RenderSettings:
    views: tuple[str, ...] = ("front", "top", "right")
    """Used by the per_view layout; the grid always holds iso, front, top and right."""
    size: int = 512
    layout: str = "per_view"
    style: str = "lines"

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise SettingError(f"layout {self.layout!r}: must be one of {', '.join(LAYOUTS)}")
        if self.style not in STYLES:
            raise SettingError(f"style {self.style!r}: must be one of {', '.join(STYLES)}")
        if not MIN_IMAGE_SIZE <= self.size <= MAX_IMAGE_SIZE:
            raise SettingError(f"size {self.size!r}: must be at least {MIN_IMAGE_SIZE} and at most {MAX_IMAGE_SIZE} pixels")
        try:
            parse_views(list(self.views))
        except ValueError as error:
            raise SettingError(f"views {list(self.views)}: {error}") from None

    @property
    def image_names(self) -> tuple[str, ...]:
        """The images each model gets: one per view, or the single grid."""
        return self.views if self.layout == "per_view" else ("grid",)

    def version(self) -> str:
        """Names the images these settings and this renderer make; part of every store path."""
        return _settings_version(self)


@dataclass(frozen=True)
class RenderOutcome:
    id: str
    status: str
    """rendered, reused or failed."""
    reason_code: str | None
    reason: str | None
    images: dict[str, str]
    """View name -> PNG path in the store."""
    repaired: tuple[str, ...] = ()
    """Damaged stored images this drawing replaced: each path and what was wrong."""


@dataclass(frozen=True)
class BatchResult:
    outcomes: list[RenderOutcome]
    seconds: float

    def count(self, status: str) -> int:
        return sum(outcome.status == status for outcome in self.outcomes)

    @property
    def failed_by_reason(self) -> dict[str, int]:
        return dict(Counter(o.reason_code for o in self.outcomes if o.status == "failed").most_common())

    @property
    def repaired(self) -> list[str]:
        return [damage for outcome in self.outcomes for damage in outcome.repaired]

    @property
    def models_per_minute(self) -> float:
        return 60.0 * len(self.outcomes) / self.seconds if self.seconds > 0 else float("inf")


RENDERER_MODULES = (
    "render/views.py", "render/hidden_lines.py", "render/drawing.py", "render/shading.py",
    "cad/sequence.py", "cad/loops.py", "cad/deepcad_json.py", "cad/build.py", "cad/measure.py",
)  # fmt: skip
"""The code a drawing depends on: the renderer, and the reader, builder and bbox that frame it."""
CHUNK = 16
"""Models per task: each task forks one sandbox, so a chunk spreads that cost over several models."""


def render_models(
    files: dict[str, Path],
    settings: RenderSettings,
    store: Path,
    executor: Executor,
    timeout: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> BatchResult:
    """Render every model (id -> file) that the store does not hold yet; report what happened to each.

    A model that hangs longer than `timeout` seconds, or crashes its process, is recorded as failed
    and the rest carry on.
    """
    started = time.perf_counter()
    jobs = [(model_id, str(path), settings, str(store)) for model_id, path in files.items()]
    outcomes = map_in_sandboxes(executor, render_one, jobs, _render_failed, timeout, CHUNK, progress)
    return BatchResult(outcomes=outcomes, seconds=time.perf_counter() - started)


def _render_failed(job: tuple[str, str, RenderSettings, str], isolated: Isolated) -> RenderOutcome:
    return RenderOutcome(job[0], "failed", isolated.failure, f"{job[1]}: {isolated.detail}", {})


def render_one(job: tuple[str, str, RenderSettings, str]) -> RenderOutcome:
    """Worker: one model's images, from the store when they are all there, else built and drawn now."""
    model_id, path, settings, store = job
    try:
        raw = read_model_file(Path(path))
    except ModelError as error:
        return RenderOutcome(model_id, "failed", error.code, error.message, {})
    key = hashlib.sha256(raw).hexdigest()
    version = settings.version()
    images = {name: str(store_path(Path(store), "renders", version, key, f"_{name}.png")) for name in settings.image_names}
    missing, damaged = _verified(images.values())
    if not missing and not damaged:
        return RenderOutcome(model_id, "reused", None, None, images)
    try:
        drawings = _draw(build_solid(read_bytes(raw, model_id)), settings)
    except ModelError as error:
        return RenderOutcome(model_id, "failed", error.code, error.message, {}, damaged)
    except OCC_ERRORS as error:
        return RenderOutcome(model_id, "failed", "occ_failure", f"OpenCASCADE failed while drawing: {error}", {}, damaged)
    for name, image in drawings.items():
        write_sealed(Path(images[name]), encode_png(image))
    return RenderOutcome(model_id, "rendered", None, None, images, damaged)


def _verified(images: Iterable[str]) -> tuple[int, tuple[str, ...]]:
    """(images never made, damaged ones with what is wrong), each checked against its seal."""
    missing, damaged = 0, []
    for image in images:
        try:
            missing += read_sealed(Path(image)) is None
        except DamagedEntry as error:
            damaged.append(str(error))
    return missing, tuple(damaged)


def _draw(shape, settings: RenderSettings) -> dict:
    style = LineStyle(size=settings.size, shaded=settings.style == "shaded")
    if settings.layout == "grid":
        return {"grid": draw_grid(shape, style)}
    return draw_views(shape, parse_views(list(settings.views)), style)


@cache
def _settings_version(settings: RenderSettings) -> str:
    """Hashed once per process and settings, not once per model."""
    digest = hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode())
    digest.update(code_version(*RENDERER_MODULES).encode())
    return digest.hexdigest()[:16]


def decoded_size(path: Path) -> tuple[int, int] | None:
    """Width and height of a PNG decoded whole, or None when the file is missing, truncated or not an image: a
    header alone says nothing about the pixels after it."""
    try:
        with Image.open(path) as image:
            image.load()
            return image.size
    except (OSError, SyntaxError, ValueError, struct.error, zlib.error, Image.DecompressionBombError):
        return None


def image_file_name(model_id: str, view: str) -> str:
    """The readable name of a model's image: `<id>_<view>.png`, slashes of bucketed ids as '_'."""
    return f"{model_id.replace('/', '_')}_{view}.png"


def image_owner(model_ids: Iterable[str]) -> Callable[[str], str | None]:
    """The inverse of `image_file_name` over these models: image name -> model id, or None for another model's."""
    by_prefix = {model_id.replace("/", "_"): model_id for model_id in model_ids}
    return lambda image: by_prefix.get(image.removesuffix(".png").rsplit("_", 1)[0])


def link_images(images: Iterable[tuple[str, str, str]], folder: Path) -> list[Path]:
    """Give (model id, view, store path) images their readable names in `folder`: hard links, or copies
    where the store is on another file system."""
    folder.mkdir(parents=True, exist_ok=True)
    linked = []
    for model_id, view, image in images:
        target = folder / image_file_name(model_id, view)
        target.unlink(missing_ok=True)
        try:
            os.link(image, target)
        except OSError:
            shutil.copyfile(image, target)
        linked.append(target)
    return linked
