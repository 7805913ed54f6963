"""How much a model learns in a fixed wall-clock budget: train on a partition until the time is spent, then generate
code for validation pictures and score it, so one number set says whether a change of model, settings or data makes
the model learn faster.

The run is the training run of `run_training` with its evaluation (`evaluate_adapter`) nested under it in MLflow; the
bench's headline figures are logged on the training run as `bench.*` metrics.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric
from tabulate import tabulate

from cad_pipeline.evaluate.config import EvaluationConfig
from cad_pipeline.evaluate.evaluation import ADAPTER, CUT, EVALUATION_FOLDER, SAMPLES_FILE, evaluate_adapter
from cad_pipeline.partition import TRAIN_JSON
from cad_pipeline.train.config import TrainConfig
from cad_pipeline.train.data import read_records
from cad_pipeline.train.image_use import ImageUse
from cad_pipeline.train.loop import plan_steps
from cad_pipeline.train.run import TrainingRun, run_training
from cad_pipeline.train.tracking import Tracking

BENCH_FOLDER = "bench_learn"
"""The bench's output folder in the partition, apart from `lora_adapter`, which the asset owns."""
EPOCHS_UNTIL_TIME = 10_000
"""Epochs when the user sets none: more than any budget fits, so the time budget ends training."""
VALIDATIONS_PER_EPOCH = 10
"""Validations per epoch when the user sets no `validation_every`: about ten points over a budget of about one epoch."""
VALIDATION_SAMPLES = 60
"""Validation samples when the user sets none: 60 models' first views, enough for the image-use gap, few enough that
validating does not eat a CPU's budget."""
HEADLINE = (
    "invalid_ratio_pct", "iou_median_pct", "chamfer_deepcad_median_x1e3", "chamfer_cad_recode_median_x1e3",
    "distinct_answer_share", "image_loss_gap_nats", "image_loss_gap_nats_before", "train_seconds", "steps", "epochs", "samples",
)  # fmt: skip
"""The figures logged on the training run as `bench.<name>`."""


@dataclass(frozen=True)
class LearningBenchmark:
    partition_dir: Path
    minutes: float
    training: TrainingRun
    aggregates: dict[str, float]
    """The evaluation's aggregates of the trained model (`evaluation.AGGREGATES`)."""
    failure_reasons: dict[str, int]
    """Invalid answers by the prefix of their failure (`no_code`, `code_rejected`, `no_solid`, ...)."""
    distinct_answer_share: float
    evaluation_dir: Path
    evaluation_run_url: str

    @property
    def validations(self) -> list[dict]:
        """Every validation point, with the train loss of the optimizer step it followed (None before training)."""
        train_loss = {record.step: record.loss for record in self.training.state.steps}
        return [
            {"step": record.step, "epoch": record.epoch, "validation_loss": record.loss, "train_loss": train_loss.get(record.step)}
            for record in self.training.state.validations
        ]

    def to_json(self) -> dict:
        """Every figure, NaN as None so that it serializes as JSON null."""
        run, state = self.training, self.training.state
        figures = {
            "partition": str(self.partition_dir),
            "minutes": self.minutes,
            "train_mode": run.params["train_mode_resolved"],
            "train_seconds": run.seconds,
            "steps": state.step,
            "epochs": state.validations[-1].epoch,
            "saved_step": run.saved_validation.step,
            "validations": self.validations,
            **_image_use_figures(run.image_use["after"], ""),
            **_image_use_figures(run.image_use["before"], "_before"),
            "samples": int(self.aggregates["samples"]),
            "samples_cut": int(self.aggregates["samples_cut"]),
            "invalid_ratio_pct": self.aggregates["invalid_ratio_pct"],
            "failure_reasons": self.failure_reasons,
            "distinct_answer_share": self.distinct_answer_share,
            "iou_median_pct": self.aggregates["iou_median_pct"],
            "chamfer_deepcad_median_x1e3": self.aggregates["chamfer_deepcad_median_x1e3"],
            "chamfer_cad_recode_median_x1e3": self.aggregates["chamfer_cad_recode_median_x1e3"],
            "adapter": str(run.adapter),
            "evaluation_dir": str(self.evaluation_dir),
            "mlflow_run_id": run.run_id,
            "mlflow_run_url": run.run_url,
            "mlflow_evaluation_run_url": self.evaluation_run_url,
        }
        return _nan_as_none(figures)

    def text(self) -> str:
        figures = self.to_json()
        rows = [
            ("*" if row["step"] == figures["saved_step"] else "", row["step"], row["epoch"], row["validation_loss"], row["train_loss"])
            for row in figures["validations"]
        ]
        curve = tabulate(rows, headers=("saved", "step", "epoch", "validation loss", "train loss"), floatfmt=("", "", ".3f", ".4f", ".4f"), missingval="-")
        image_use = [
            (when, figures[f"image_loss_true{suffix}"], figures[f"image_loss_shuffled{suffix}"], figures[f"image_loss_gap_nats{suffix}"])
            for when, suffix in (("before", "_before"), ("after", ""))
        ]
        image_table = tabulate(image_use, headers=("training", "true-image loss", "shuffled-image loss", "gap (nats)"), floatfmt=".4f", missingval="n/a")
        reasons = ", ".join(f"{reason} {count}" for reason, count in figures["failure_reasons"].items()) or "none"
        cut = f" ({figures['samples_cut']} more cut: the generation budget ran out)" if figures["samples_cut"] else ""
        return "\n".join(
            [
                f"partition {figures['partition']}, {figures['minutes']:g} min budget, {figures['train_mode']} training",
                f"trained {figures['train_seconds']:.1f} s: {figures['steps']} steps, {figures['epochs']:.3f} epochs; weights saved from step {figures['saved_step']} (*)",
                "",
                curve,
                "",
                image_table,
                "",
                f"validation samples evaluated (first views): {figures['samples']}{cut}",
                f"invalid ratio: {_shown(figures['invalid_ratio_pct'], '.1f', '%')} ({reasons})",
                f"distinct answers: {_shown(figures['distinct_answer_share'], '.0%')} of the models",
                f"median IoU: {_shown(figures['iou_median_pct'], '.1f', '%')}",
                f"median Chamfer x10^3: DeepCAD {_shown(figures['chamfer_deepcad_median_x1e3'], '.3f')}, "
                f"CAD-Recode {_shown(figures['chamfer_cad_recode_median_x1e3'], '.3f')}",
                f"per-sample table: {self.evaluation_dir / SAMPLES_FILE}",
                f"MLflow run: {figures['mlflow_run_url']} (evaluation nested under it: {figures['mlflow_evaluation_run_url']})",
            ]
        )


def learning_train_config(given: dict, minutes: float, train_samples: int) -> TrainConfig:
    """The user's settings (`given`, TrainConfig fields) with `max_minutes` set to the budget; where the user set none,
    epochs enough for the time to end training, the best weights kept, a validation every tenth of an epoch on the
    first views of 60 models."""
    if minutes <= 0:
        raise ValueError(f"the time budget is {minutes:g} minutes: give a positive number")
    config = TrainConfig(**{**given, "max_minutes": minutes})
    steps_per_epoch = plan_steps(train_samples, config).steps_per_epoch
    chosen = {
        "epochs": EPOCHS_UNTIL_TIME, "keep_best": True, "validation_every": max(1, steps_per_epoch // VALIDATIONS_PER_EPOCH),
        "validation_samples": VALIDATION_SAMPLES,
    }  # fmt: skip
    return replace(config, **{name: value for name, value in chosen.items() if name not in given})


def learning_evaluation_config(minutes: float, samples: int, max_new_tokens: int, batch_size: int) -> EvaluationConfig:
    """The first view of `samples` validation models, without the base model, generated within as much time as training
    had; each batch gets an equal share of it, so answers run out of time before samples are cut."""
    if samples < 1:
        raise ValueError(f"{samples} samples to evaluate: give at least 1")
    budget = 60.0 * minutes
    return EvaluationConfig(
        sample_limit=samples, baseline=False, max_new_tokens=max_new_tokens, generation_batch_size=batch_size,
        generation_budget=budget, generation_batch_budget=budget / math.ceil(samples / batch_size),
    )  # fmt: skip


def learn_benchmark(
    partition_dir: Path,
    corpus_root: Path,
    given: dict,
    minutes: float,
    samples: int,
    executor: Executor,
    tracking: Tracking,
    tags: dict[str, str],
    max_new_tokens: int = EvaluationConfig.max_new_tokens,
    generation_batch_size: int = EvaluationConfig.generation_batch_size,
    log: Callable[[str], None] = print,
) -> LearningBenchmark:
    """Train for `minutes` with the user's settings (`given`), evaluate `samples` validation models, and log the
    headline figures on the training run. `log` takes the evaluation's progress lines."""
    evaluation_config = learning_evaluation_config(minutes, samples, max_new_tokens, generation_batch_size)
    config = learning_train_config(given, minutes, len(read_records(partition_dir / TRAIN_JSON)))
    out_dir = partition_dir / BENCH_FOLDER
    tags = {**tags, "bench": "learn"}
    training = run_training(config, partition_dir, out_dir, tracking, f"bench learn {partition_dir.name}", tags)
    evaluation_dir = out_dir / EVALUATION_FOLDER
    evaluation = evaluate_adapter(
        training.adapter, partition_dir, corpus_root, evaluation_config, executor, tracking,
        f"bench learn evaluation {partition_dir.name}", tags, evaluation_dir, log,
    )  # fmt: skip
    result = LearningBenchmark(
        partition_dir, minutes, training, evaluation.aggregates[ADAPTER],
        failure_reasons(pd.read_parquet(evaluation_dir / SAMPLES_FILE)), evaluation.distinct_answer_share, evaluation_dir, evaluation.run_url,
    )  # fmt: skip
    log_headline(tracking, training.run_id, result.to_json())
    return result


def failure_reasons(table: pd.DataFrame) -> dict[str, int]:
    """The trained model's invalid answers counted by what failed: the failure's text up to its first ':'. Cut samples
    were never answered, so they are left out, as they are of the invalid ratio."""
    rows = table[(table.variant == ADAPTER) & (table.stop_reason != CUT) & ~table.valid]
    return dict(Counter(failure.split(":", 1)[0].strip() for failure in rows.failure).most_common())


def log_headline(tracking: Tracking, run_id: str, figures: dict) -> None:
    client = tracking.client()
    now = int(time.time() * 1000)
    metrics = [Metric(f"bench.{name}", float(figures[name]), now, 0) for name in HEADLINE if figures[name] is not None]
    client.log_batch(run_id, metrics=metrics)


def _image_use_figures(image_use: ImageUse | None, suffix: str) -> dict[str, float]:
    values = (image_use.true_image_loss, image_use.shuffled_image_loss, image_use.gap_nats) if image_use else (math.nan,) * 3
    return dict(zip((f"image_loss_true{suffix}", f"image_loss_shuffled{suffix}", f"image_loss_gap_nats{suffix}"), values))


def _nan_as_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _nan_as_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_nan_as_none(item) for item in value]
    return value


def _shown(value: float | None, spec: str, unit: str = "") -> str:
    return "n/a" if value is None else format(value, spec) + unit
