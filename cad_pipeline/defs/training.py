"""Training: a plan measured on the configured model, then the fine-tuned model; each materialization is one MLflow run.

torch, transformers and peft are imported inside the assets, so the code server, sensors and data steps, which load
this module too, start in seconds.
"""

import base64
import json
from pathlib import Path

import dagster as dg
import pydantic

from cad_pipeline.defs.config_fields import config_class
from cad_pipeline.defs.conversations import conversations
from cad_pipeline.defs.partitions import scale_partitions, writes_partition
from cad_pipeline.defs.resources import MlflowSettings, PipelineSettings
from cad_pipeline.files import atomic_write_bytes
from cad_pipeline.options import from_values
from cad_pipeline.partition import ADAPTER_FOLDER, PLAN
from cad_pipeline.train.config import TrainConfig

TRAINING_OWNERS = ["team:cad-training"]
REPORT_EVERY = 10
USES_IMAGE_DESCRIPTION = (
    "The model reads its picture: on the validation samples, the loss with images shuffled among the samples (same "
    "answers) is clearly above the loss with each sample's own image, and (on evaluation) different models get "
    "different answers. A falling loss alone does not show this: a model that ignores the picture still learns the "
    "code's grammar and its most typical program."
)


TrainingConfig = config_class("TrainingConfig", TrainConfig, "Fine-tuning settings; the same fields as `cad-pipeline train`'s flags.", __name__)


class PlanConfig(TrainingConfig):
    measure_steps: int = pydantic.Field(default=20, ge=1, description="optimizer steps timed (after the warm-up)")
    warmup_steps: int = pydantic.Field(default=3, ge=0, description="optimizer steps run first and not timed")


@dg.asset(
    group_name="training",
    kinds={"pytorch"},
    owners=TRAINING_OWNERS,
    partitions_def=scale_partitions,
    deps=[conversations],
    pool="gpu",
    description=(
        "Runs the configured model in its train mode (LoRA or full) on real batches of this scale for a number of optimizer steps and projects "
        "steps per epoch, epoch time and total time for this and every larger scale (plus rendering time), and lists "
        "the batch / accumulation / length / checkpointing configurations that fit the device's memory."
    ),
)
@writes_partition
def training_plan(context: dg.AssetExecutionContext, config: PlanConfig, settings: PipelineSettings) -> dg.MaterializeResult:
    from cad_pipeline.train.plan import plan_partition

    scale = context.partition_key
    folder = settings.partition_dir(scale)
    options = from_values(TrainConfig, config)
    context.log.info(f"{scale}: timing {config.measure_steps} optimizer steps after {config.warmup_steps} warm-up")
    plan = plan_partition(
        options, folder, settings.corpus_path, scale, config.measure_steps, config.warmup_steps, settings.workers
    )
    atomic_write_bytes(folder / PLAN, json.dumps(plan.to_json(options), indent=1).encode())
    projections, memory = plan.markdown()
    this, measurement = plan.projections[0], plan.measurement
    return dg.MaterializeResult(
        metadata={
            "plan": dg.MetadataValue.path(str((folder / PLAN).resolve())),
            "seconds_per_step": round(measurement.seconds_per_step, 4),
            "real_tokens_per_second": round(measurement.real_tokens_per_second, 1),
            "peak_memory_gib": round(measurement.peak_memory_bytes / 2**30, 3),
            "projected_epoch_seconds": round(this.epoch_seconds, 1),
            "projected_run_seconds": round(this.run_seconds, 1),
            "projections": dg.MetadataValue.md(projections),
            "memory_plan": dg.MetadataValue.md(memory),
            "device": measurement.device,
            "max_length": plan.max_length,
            "samples_left_out": plan.samples_left_out,
        }
    )


@dg.asset(
    group_name="training",
    kinds={"pytorch", "mlflow"},
    owners=TRAINING_OWNERS,
    partitions_def=scale_partitions,
    deps=[training_plan],
    pool="gpu",
    check_specs=[
        dg.AssetCheckSpec(
            "validation_loss_fell", asset="lora_adapter", description="The validation loss of the saved weights is below the loss before training."
        ),
        dg.AssetCheckSpec("uses_image", asset="lora_adapter", description=USES_IMAGE_DESCRIPTION),
    ],
    description=(
        "The base model fine-tuned on this scale's conversations: in full mode (the default for the tiny base model) "
        "the whole model (language model, connector and vision tower unless frozen), in LoRA mode an adapter on the "
        "language model's linear layers with the connector trained in full; resumable checkpoints, validation during "
        "training, optionally the best weights kept and a time budget. One MLflow run holds params (train mode, trained "
        "parts, trainable parameters per part), per-step loss, learning rate, real tokens/s, pad fraction and peak "
        "memory, validation loss, the best validation point, and the saved model, tokenizer, config and loss curve."
    ),
)
@writes_partition
def lora_adapter(context: dg.AssetExecutionContext, config: TrainingConfig, settings: PipelineSettings, mlflow: MlflowSettings) -> dg.MaterializeResult:
    from cad_pipeline.train.run import run_training

    scale = context.partition_key
    folder = settings.partition_dir(scale)
    tags = {"dagster_run_id": context.run.run_id, "partition": scale, "asset": "lora_adapter"}
    options = from_values(TrainConfig, config)

    def report(record) -> None:
        if record.step % REPORT_EVERY == 0:
            context.log.info(f"step {record.step}: loss {record.loss:.4f}, {record.real_tokens_per_second:,.0f} real tokens/s")

    run = run_training(options, folder, folder / ADAPTER_FOLDER, mlflow.tracking(settings), f"lora_adapter[{scale}]", tags, report)
    before, after = run.validation_before_and_after
    steps = run.state.steps
    context.log.info(
        f"{scale}: {run.params['train_mode_resolved']} training, {len(steps)} steps in {run.seconds:.0f} s, "
        f"validation loss {before:.4f} -> {after:.4f}; MLflow run {run.run_url}"
    )
    best = run.state.best
    return dg.MaterializeResult(
        metadata={
            "mlflow_run": dg.MetadataValue.url(run.run_url),
            "mlflow_run_id": run.run_id,
            "adapter": dg.MetadataValue.path(str(run.adapter.absolute())),
            "train_mode": run.params["train_mode_resolved"],
            "trained_parts": run.params["trained_parts"],
            "trainable_parameters": run.params["trainable_parameters"],
            "steps": len(steps),
            **({"best_step": best.step, "best_epoch": round(best.epoch, 3), "best_val_loss": round(best.loss, 4)} if options.keep_best and best else {}),
            "final_train_loss": round(steps[-1].loss, 4),
            "validation_loss_before": round(before, 4),
            "validation_loss_after": round(after, 4),
            "train_seconds": round(run.seconds, 1),
            "seconds_per_step": round(run.seconds_per_step, 4),
            "real_tokens_per_second": round(sum(r.real_tokens_per_second for r in steps) / len(steps), 1),
            "pad_fraction": round(sum(r.pad_fraction for r in steps) / len(steps), 4),
            **_plan_comparison(folder, scale, steps),
            **image_use_metadata(run.image_use),
            "loss_curve": dg.MetadataValue.md(f"![loss curve](data:image/png;base64,{base64.b64encode(run.loss_curve.read_bytes()).decode()})"),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="validation_loss_fell",
                passed=bool(after < before),
                severity=dg.AssetCheckSeverity.WARN,
                metadata={"before": before, "after": after},
            ),
            uses_image_check(run.image_use["after"], None),
        ],
    )


def image_use_metadata(image_use: dict) -> dict:
    """`image_loss_gap_nats_after` and its parts, for each measurement that could be made."""
    return {f"{name}_{when}": round(value, 4) for when, use in image_use.items() if use is not None for name, value in use.to_json().items() if name != "samples"}


def uses_image_check(image_use, answer_share: float | None) -> dg.AssetCheckResult:
    """The `uses_image` warning: fails when shuffling the images costs the model nothing, or its answers barely vary."""
    from cad_pipeline.train.image_use import uses_image

    passed, reason = uses_image(image_use, answer_share)
    measured = {**(image_use.to_json() if image_use else {}), **({"distinct_answer_share": answer_share} if answer_share is not None else {})}
    return dg.AssetCheckResult(
        check_name="uses_image",
        passed=passed if measured else False,
        severity=dg.AssetCheckSeverity.WARN,
        description=reason if measured else "not measured: the validation samples show fewer than two models",
        metadata={name: float(value) for name, value in measured.items()},
    )


def _plan_comparison(folder: Path, scale: str, steps) -> dict:
    """The plan's projected time for this run next to the time its optimizer steps took, when a plan exists."""
    path = folder / PLAN
    if not path.is_file():
        return {}
    projected = next((p["run_seconds"] for p in json.loads(path.read_text())["projections"] if p["scale"] == scale), None)
    if projected is None:
        return {}
    measured = sum(record.seconds for record in steps)
    return {"planned_run_seconds": round(projected, 1), "measured_run_seconds": round(measured, 1), "planned_over_measured": round(projected / measured, 3)}
