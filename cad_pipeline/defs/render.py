"""Rendered views: orthographic line drawings of every model of a scale, from the shared render store."""

import base64
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pydantic
from PIL import Image

from cad_pipeline.dataset.corpus import model_path
from cad_pipeline.defs.data import OWNERS, cad_subset
from cad_pipeline.defs.failures import DEFAULT_MAX_FAILED_SHARE, failed_share_check, failed_share_spec, require_output, store_repairs
from cad_pipeline.defs.partitions import scale_partitions, writes_partition
from cad_pipeline.defs.resources import PipelineSettings
from cad_pipeline.files import atomic_write_parquet
from cad_pipeline.partition import MANIFEST, RENDER_INDEX
from cad_pipeline.render.batch import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, BatchResult, RenderSettings, decoded_size, render_models
from cad_pipeline.render.gallery import contact_sheet

GALLERY_MODELS = 4


class RenderConfig(dg.Config):
    views: list[str] = ["front", "top", "right"]
    """Any of front, back, top, bottom, left, right, iso."""
    size: int = pydantic.Field(default=512, ge=MIN_IMAGE_SIZE, le=MAX_IMAGE_SIZE)
    """Image width and height in pixels (32-4096)."""
    layout: str = "per_view"
    """per_view (one image per view) or grid (iso, front, top and right in one 2x2 image per model)."""
    style: str = "lines"
    """lines (visible edges solid, hidden edges dashed) or shaded (grey body under its visible edges)."""
    max_failed_share: float = pydantic.Field(default=DEFAULT_MAX_FAILED_SHARE, ge=0.0, le=1.0)
    """The blocking `failed_share` check fails above this share of models that could not be drawn."""


@dg.asset(
    group_name="data",
    kinds={"python", "png"},
    owners=OWNERS,
    partitions_def=scale_partitions,
    deps=[cad_subset],
    check_specs=[
        dg.AssetCheckSpec(
            "renders_complete", asset="rendered_views", description="Every selected model has every view, as a PNG of the configured size."
        ),
        failed_share_spec("rendered_views", "to be drawn"),
    ],
    description=(
        "Orthographic engineering drawings (visible edges solid, hidden edges dashed, one scale per model) of every "
        "model of the scale, one PNG per view. Images live in a content-addressed store keyed by the model file, the "
        "render settings and the renderer version, so a larger scale renders only its new models."
    ),
)
@writes_partition
def rendered_views(context: dg.AssetExecutionContext, config: RenderConfig, settings: PipelineSettings) -> dg.MaterializeResult:
    scale = context.partition_key
    render_settings = RenderSettings(views=tuple(config.views), size=config.size, layout=config.layout, style=config.style)
    manifest = pd.read_parquet(settings.partition_dir(scale) / MANIFEST)
    selected = manifest[manifest.selected]
    files = {model_id: model_path(settings.corpus_path, model_id) for model_id in selected.id}
    with settings.open_executor() as executor:
        result = render_models(files, render_settings, settings.store_path, executor, timeout=settings.model_timeout)
    require_output(result.count("rendered") + result.count("reused"), "drawing", result.failed_by_reason)
    index = _render_index(result, selected, render_settings)
    index_path = settings.partition_dir(scale) / RENDER_INDEX
    atomic_write_parquet(index, index_path)
    context.log.info(
        f"{scale}: {result.count('rendered'):,} rendered, {result.count('reused'):,} reused, "
        f"{result.count('failed'):,} failed in {result.seconds:.1f} s"
    )
    return dg.MaterializeResult(
        metadata={
            "index": dg.MetadataValue.path(str(index_path.resolve())),
            "store": dg.MetadataValue.path(str(settings.store_path.resolve())),
            "models": len(result.outcomes),
            "rendered": result.count("rendered"),
            "reused": result.count("reused"),
            "failed": result.count("failed"),
            "failed_by_reason": dg.MetadataValue.json(result.failed_by_reason),
            "seconds": round(result.seconds, 2),
            "models_per_minute": round(result.models_per_minute, 1),
            "gallery": dg.MetadataValue.md(_gallery_markdown(index, render_settings.image_names, config.size)),
            **store_repairs(context, "renders", result.repaired),
        },
        check_results=[
            _renders_complete(index, selected, render_settings),
            failed_share_check("rendered_views", result.failed_by_reason, len(result.outcomes), config.max_failed_share),
        ],
    )


def _render_index(result: BatchResult, selected: pd.DataFrame, settings: RenderSettings) -> pd.DataFrame:
    """One row per (model, view) image, with the model's split and the settings that made it, in subset order."""
    split_of = dict(zip(selected.id, selected.split))
    rows = [
        {"id": outcome.id, "split": split_of[outcome.id], "view": view, "image": image, "layout": settings.layout, "size": settings.size}
        for outcome in result.outcomes
        for view, image in outcome.images.items()
    ]
    return pd.DataFrame(rows, columns=["id", "split", "view", "image", "layout", "size"])


def _renders_complete(index: pd.DataFrame, selected: pd.DataFrame, settings: RenderSettings) -> dg.AssetCheckResult:
    """Decodes every image whole, so a missing, truncated or wrong-size file fails the check."""
    size = (settings.size, settings.size)
    present = {(row.id, row.view) for row in index.itertuples() if decoded_size(Path(row.image)) == size}
    missing = [f"{model_id} {name}" for model_id in selected.id for name in settings.image_names if (model_id, name) not in present]
    return dg.AssetCheckResult(
        check_name="renders_complete",
        passed=not missing,
        metadata={"images_checked": len(index), "missing_or_wrong_size": dg.MetadataValue.json(missing[:50])},
    )


def _gallery_markdown(index: pd.DataFrame, views: tuple[str, ...], size: int) -> str:
    models = list(dict.fromkeys(index.id))[:GALLERY_MODELS]
    if not models:
        return "no images"
    images = index.set_index(["id", "view"]).image
    rows = [[np.asarray(Image.open(images[(model_id, view)])) for view in views] for model_id in models]
    sheet = contact_sheet(rows, factor=max(1, size // 128))
    caption = f"{', '.join(models)} ({', '.join(views)})"
    return f"{caption}\n\n![gallery](data:image/png;base64,{base64.b64encode(sheet).decode()})"
