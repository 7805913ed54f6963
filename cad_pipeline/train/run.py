"""One tracked fine-tuning run: train, save the model (adapter or whole) with what it needs to reload, record it all in MLflow."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from mlflow.entities import Metric, Param

from cad_pipeline.train.image_use import ImageUse, measure_image_use, model_of_image
from cad_pipeline.train.config import TrainConfig, resolved_image_contrast, resolved_train_mode, resolved_vision_learning_rate_scale
from cad_pipeline.train.loop import StepRecord, TrainState, ValidationRecord, train, validation_loss
from cad_pipeline.train.memory import GIB
from cad_pipeline.train.model import save_trained, trainable_parameters, trainable_parameters_by_part, trained_parts
from cad_pipeline.train.plan import BatchChoice, choose_batch
from cad_pipeline.train.presets import preset_name
from cad_pipeline.train.session import open_session
from cad_pipeline.train.tracking import Tracking, log_step, loss_curve_png

ADAPTER_NAME = "adapter"
"""The trained model's folder in a run's output folder: the LoRA adapter, or the whole model after full training."""
RUN_FILE = "run.json"
"""In the trained model's folder: the MLflow run that trained it, so its evaluation is logged next to it."""
LOSS_CURVE_FILE = "loss_curve.png"
AUTO_BATCH_FILE = "auto_batch.json"
PARAM_VALUE_LIMIT = 6000
"""MLflow's longest param value; paths beyond it are cut rather than failing the run."""


@dataclass(frozen=True)
class TrainingRun:
    config: TrainConfig
    state: TrainState
    adapter: Path
    loss_curve: Path
    experiment_id: str
    run_id: str
    run_url: str
    seconds: float
    params: dict
    image_use: dict[str, ImageUse | None]
    """'before' and 'after' training (the weights saved), on the validation samples; None where they cannot be
    shuffled."""

    @property
    def saved_validation(self) -> ValidationRecord:
        return _saved_validation(self.config, self.state)

    @property
    def validation_before_and_after(self) -> tuple[float, float]:
        """The validation loss before training, and of the weights saved."""
        return self.state.validations[0].loss, self.saved_validation.loss

    @property
    def seconds_per_step(self) -> float:
        """Mean over the steps after the first, whose time includes one-off start-up work."""
        timed = self.state.steps[1:] or self.state.steps
        return sum(record.seconds for record in timed) / len(timed)


def run_training(
    config: TrainConfig,
    partition_dir: Path,
    out_dir: Path,
    tracking: Tracking,
    run_name: str,
    tags: dict[str, str],
    report: Callable[[StepRecord], None] | None = None,
) -> TrainingRun:
    """Checkpoints live under out_dir keyed by the settings, so re-running after a kill resumes that run."""
    if preset_name(config.base_model) and not config.train_preset:
        raise ValueError(
            f"base model {config.base_model!r} has random weights: it is for plans and benchmarks (`cad-pipeline estimate`, "
            "`bench train`, `bench plan`); give a real model folder, or set train_preset (--train-preset) to train it anyway"
        )
    session = open_session(config, partition_dir, out_dir)
    checkpoints = out_dir / "checkpoints" / settings_key(session.config)
    batch = batch_choice(session, checkpoints) if config.auto_batch_size else None
    config = replace(session.config, batch_size=batch.batch_size, gradient_accumulation=batch.gradient_accumulation) if batch else session.config
    parts = trained_parts(session.model, config)
    client = tracking.client()
    experiment = tracking.experiment_id(client)
    run_id = client.create_run(experiment, run_name=run_name, tags=tags).info.run_id
    params = {
        **config.to_json(),
        "partition_dir": str(partition_dir),
        "base_model_source": session.base.source,
        "attention": session.base.attention,
        "packed": session.packed,
        "train_samples": len(session.train.samples),
        "val_samples": len(session.val.samples),
        "dropped_too_long": len(session.train.too_long) + len(session.val.too_long),
        "total_parameters": sum(p.numel() for p in session.model.parameters()),
        "trainable_parameters": trainable_parameters(session.model),
        **{f"trainable_parameters_{part}": count for part, count in trainable_parameters_by_part(session.model).items()},
        "train_mode_resolved": resolved_train_mode(config),
        "vision_learning_rate_scale_resolved": resolved_vision_learning_rate_scale(config),
        "image_contrast_resolved": resolved_image_contrast(config),
        "trained_parts": ", ".join(f"{part}: {how}" for part, how in parts.items()),
        "resolved_device": str(session.device),
        "resolved_dtype": str(session.dtype),
        **({f"auto_batch_{key}": value for key, value in batch.to_json().items()} if batch else {}),
    }
    client.log_batch(run_id, params=[Param(key, str(value)[:PARAM_VALUE_LIMIT]) for key, value in params.items()])
    models = [model_of_image(sample.image) for sample in session.val.samples]

    def shuffled_loss(true_image_loss: float) -> ImageUse | None:
        def loss_of(samples):
            return validation_loss(session.model, samples, session.processor, config, session.device, session.dtype, session.packed)

        return measure_image_use(loss_of, session.val.samples, models, true_image_loss)

    image_use: dict[str, ImageUse | None] = {"before": None}

    def on_validation(record: ValidationRecord) -> None:
        client.log_metric(run_id, "val_loss", record.loss, step=record.step)
        if record.step == 0:
            image_use["before"] = shuffled_loss(record.loss)

    started = time.perf_counter()
    try:
        state = train(
            session.model, session.processor, session.train.samples, session.val.samples, config, session.device, session.dtype,
            checkpoints, session.packed,
            on_step=lambda record: (log_step(client, run_id, record), report and report(record)),
            on_validation=on_validation,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        image_use["after"] = shuffled_loss(_saved_validation(config, state).loss)
        log_image_use(client, run_id, image_use, state.step)
        if state.best:
            now = int(time.time() * 1000)
            best = {"best_val_loss": state.best.loss, "best_step": state.best.step, "best_epoch": state.best.epoch}
            client.log_batch(run_id, metrics=[Metric(name, float(value), now, state.step) for name, value in best.items()])
        run_url = tracking.run_url(experiment, run_id)
        record = {"run_id": run_id, "experiment_id": experiment, "run_url": run_url, "tracking_uri": tracking.tracking_uri}

        def run_records(version: Path) -> None:
            loss_curve_png(state, version / LOSS_CURVE_FILE)
            (version / RUN_FILE).write_text(json.dumps(record, indent=1))

        adapter = out_dir / ADAPTER_NAME
        save_trained(session.model, session.processor, config, adapter, run_records)
        client.log_artifacts(run_id, str(adapter), "adapter")
        client.log_artifact(run_id, str(adapter / LOSS_CURVE_FILE))
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return TrainingRun(config, state, adapter, adapter / LOSS_CURVE_FILE, experiment, run_id, run_url, seconds, params, image_use)


def _saved_validation(config: TrainConfig, state: TrainState) -> ValidationRecord:
    """The validation of the weights saved: the best one with keep_best, else the last."""
    return state.best if config.keep_best and state.best else state.validations[-1]


def log_image_use(client, run_id: str, image_use: dict[str, ImageUse | None], step: int) -> None:
    """`image_loss_true_before`, `image_loss_shuffled_after`, `image_loss_gap_nats_after` and the like."""
    now = int(time.time() * 1000)
    metrics = [
        Metric(f"{name}_{when}", value, now, step)
        for when, use in image_use.items()
        if use is not None
        for name, value in (("image_loss_true", use.true_image_loss), ("image_loss_shuffled", use.shuffled_image_loss), ("image_loss_gap_nats", use.gap_nats))
    ]
    if metrics:
        client.log_batch(run_id, metrics=metrics)


def batch_choice(session, checkpoints: Path) -> BatchChoice:
    """The micro-batch `auto_batch_size` chose for this run: chosen once and kept beside its checkpoints, so a resumed
    run goes on with the batches it started with."""
    saved = checkpoints / AUTO_BATCH_FILE
    if saved.is_file():
        return BatchChoice(**json.loads(saved.read_text()))
    choice = choose_batch(session, session.config.memory_budget_gib * GIB)
    checkpoints.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps(choice.to_json()))
    return choice


def settings_key(config: TrainConfig) -> str:
    return hashlib.sha256(json.dumps(config.to_json(), sort_keys=True).encode()).hexdigest()[:12]
