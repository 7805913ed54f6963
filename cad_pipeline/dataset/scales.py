"""Dataset scales: partition names such as `1k`, `10k`, `50k` or `full`, and what they mean."""

from __future__ import annotations

import os
import re

from cad_pipeline.options import SettingError

DEFAULT_SCALES = ("1k", "10k", "100k", "full")
SCALES_ENV = "CAD_PIPELINE_SCALES"
_SCALE = re.compile(r"^(\d+(?:\.\d+)?)([km]?)$")


def configured_scales() -> list[str]:
    """Scales from $CAD_PIPELINE_SCALES (comma-separated), smallest first, or the defaults."""
    raw = os.environ.get(SCALES_ENV, "")
    names = [name.strip() for name in raw.split(",") if name.strip()] or list(DEFAULT_SCALES)
    for name in names:
        try:
            scale_size(name)
        except SettingError as error:
            raise SettingError(f"{SCALES_ENV}={raw!r}: {error}") from None
    return sorted(dict.fromkeys(names), key=_order)


def scale_size(name: str) -> int | None:
    """Number of train models a scale asks for; None for `full` (every buildable train model)."""
    if name == "full":
        return None
    match = _SCALE.match(name)
    if not match:
        raise SettingError(f"scale {name!r} is not a count like 1k, 10k, 2.5k, 1m, 500 or 'full'")
    value = float(match.group(1)) * {"": 1, "k": 1_000, "m": 1_000_000}[match.group(2)]
    if value < 1 or value != int(value):
        raise SettingError(f"scale {name!r} must name a whole, positive number of models")
    return int(value)


def validation_target(n_train: int) -> int:
    """Validation models a scale asks for: a tenth of its train models."""
    return n_train // 10


def validation_size(n_train: int, available: int) -> int:
    """Validation models a scale gets: its target, or all there are."""
    return min(validation_target(n_train), available)


def _order(name: str) -> float:
    size = scale_size(name)
    return float("inf") if size is None else size


def planned_scales(names: list[str], full_train_models: int) -> list[tuple[str, int]]:
    """(scale, train models) for every scale the corpus can fill, `full` being all its buildable train models."""
    sizes = [(name, scale_size(name) or full_train_models) for name in names]
    return [(name, size) for name, size in sizes if size <= full_train_models]


def estimated_full_train_models(train_ids_in_split: int, examined: int, valid: int) -> int:
    """Buildable train models of the whole corpus, from the share of examined models that built."""
    return round(train_ids_in_split * valid / examined) if examined else train_ids_in_split
