"""Training plans from measurement: time real optimizer steps of the configured model, then project every scale.

The steps are drawn evenly from the first epoch's own batch order (length-grouped, as training
runs), so their mean stands for the epoch; warm-up steps (allocator, kernel selection) are run
but not timed. Projections scale steps per epoch with the samples a scale holds; rendering time
comes from rendering some of the partition's models now, with the configured settings.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
from dataclasses import asdict, dataclass

import torch

from cad_pipeline.dataset.scales import configured_scales, estimated_full_train_models, planned_scales
from cad_pipeline.train.config import TrainConfig
from cad_pipeline.train.data import Sample, length_grouped_batches
from cad_pipeline.train.loop import TrainState, cosine_with_warmup, optimizer_step, plan_steps
from cad_pipeline.train.memory import ModelShape, TrainShape, calibrate, fitting_configurations, memory_table_markdown


@dataclass(frozen=True)
class StepMeasurement:
    device: str
    dtype: str
    steps: int
    warmup_steps: int
    seconds_per_step: float
    """Mean over the timed steps."""
    seconds_per_step_median: float
    startup_seconds: float
    """What the warm-up steps took beyond steady steps (allocator, kernel choice): paid once per run."""
    real_tokens_per_second: float
    pad_fraction: float
    peak_memory_bytes: int
    baseline_memory_bytes: int
    """Memory in use before the measured steps (CPU: the process's resident set), subtracted when calibrating."""
    max_padded_length: int
    answer_fraction: float

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScaleProjection:
    scale: str
    train_models: int
    train_samples: int
    steps_per_epoch: int
    epoch_seconds: float
    run_steps: int
    """Optimizer steps the configured run takes (epochs, or max_steps when set)."""
    run_seconds: float
    models_to_render: int
    render_seconds: float


def measure_steps(model, processor, samples: list[Sample], config: TrainConfig, device, dtype, packed: bool, steps: int, warmup: int) -> StepMeasurement:
    """Run `warmup + steps` real optimizer steps on batches spread over the first epoch and time the last `steps`."""
    batches = length_grouped_batches([s.length for s in samples], config.batch_size, config.seed, 0)
    groups = [batches[i : i + config.gradient_accumulation] for i in range(0, len(batches), config.gradient_accumulation)]
    wanted = warmup + steps
    chosen = [groups[round(i * (len(groups) - 1) / max(1, wanted - 1))] for i in range(wanted)] if groups else []
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(plan_steps(len(samples), config).total_steps, config.warmup_ratio))
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    baseline = _resident_bytes() if device.type != "cuda" else int(torch.cuda.memory_allocated(device))
    records, state = [], TrainState()
    for group in chosen:
        records.append(optimizer_step(model, processor, optimizer, schedule, [[samples[i] for i in b] for b in group], config, device, dtype, packed, state))
    timed = records[warmup:] or records
    seconds = [r.seconds for r in timed]
    timed_groups = chosen[warmup:] or chosen
    lengths = [max(samples[i].length for i in batch) for group in timed_groups for batch in group]
    answers = sum(len(samples[i].answer_ids) for group in timed_groups for batch in group for i in batch)
    real = sum(samples[i].length for group in timed_groups for batch in group for i in batch)
    return StepMeasurement(
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        steps=len(timed),
        warmup_steps=len(records) - len(timed),
        seconds_per_step=statistics.fmean(seconds),
        seconds_per_step_median=statistics.median(seconds),
        startup_seconds=max(0.0, sum(r.seconds for r in records[: len(records) - len(timed)]) - (len(records) - len(timed)) * statistics.fmean(seconds)),
        real_tokens_per_second=real / sum(seconds),
        pad_fraction=statistics.fmean(r.pad_fraction for r in timed),
        peak_memory_bytes=max(r.peak_memory_bytes for r in records),
        baseline_memory_bytes=baseline,
        max_padded_length=max(lengths),
        answer_fraction=answers / real,
    )


def project_scales(
    measurement: StepMeasurement,
    config: TrainConfig,
    samples_per_model: float,
    current: tuple[str, int],
    scales: list[tuple[str, int]],
    render_models_per_second: float,
    views_rendered: bool = True,
) -> list[ScaleProjection]:
    """This scale and every larger one: steps per epoch from the samples each holds, times the measured step, plus the
    start-up once (the first epoch's time).

    A larger scale contains the smaller one, so only its extra models need rendering."""
    _, current_models = current
    projections = []
    for scale, train_models in scales:
        if train_models < current_models:
            continue
        samples = round(samples_per_model * train_models)
        plan = plan_steps(samples, config)
        extra = train_models - current_models if views_rendered else train_models
        projections.append(
            ScaleProjection(
                scale=scale,
                train_models=train_models,
                train_samples=samples,
                steps_per_epoch=plan.steps_per_epoch,
                epoch_seconds=measurement.startup_seconds + plan.steps_per_epoch * measurement.seconds_per_step,
                run_steps=plan.total_steps,
                run_seconds=measurement.startup_seconds + plan.total_steps * measurement.seconds_per_step,
                models_to_render=extra,
                render_seconds=extra / render_models_per_second if render_models_per_second > 0 else math.nan,
            )
        )
    return projections


def model_shape(model, config: TrainConfig, dtype: torch.dtype) -> ModelShape:
    """The memory model's view of a LLaVA-style model (text_config / vision_config)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text, vision = base.config.text_config, base.config.vision_config
    size = torch.tensor([], dtype=dtype).element_size()
    return ModelShape(
        total_parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        heads=text.num_attention_heads,
        vocab=text.vocab_size,
        image_tokens=getattr(base.config, "image_seq_length", 0) or 0,
        vision_layers=vision.num_hidden_layers,
        vision_hidden=vision.hidden_size,
        vision_trained=config.lora_vision,
        weight_bytes=size,
        activation_bytes=size,
    )


def memory_plan(shape: ModelShape, measurement: StepMeasurement, config: TrainConfig, budget_bytes: float, on_gpu: bool):
    """(calibration factor, configurations that fit the budget). A GPU peak excludes the CUDA context, so the plan adds
    the planner's default overhead there; on the CPU the process's own baseline is the overhead."""
    measured = TrainShape(config.batch_size, config.gradient_accumulation, measurement.max_padded_length, config.gradient_checkpointing, measurement.answer_fraction)
    factor = calibrate(shape, measured, measurement.peak_memory_bytes, measurement.baseline_memory_bytes, overhead=0.0)
    overhead = {"overhead": 1.5 * 2**30} if on_gpu else {"overhead": float(measurement.baseline_memory_bytes)}
    lengths = sorted({512, 1024, 2048, 3072, 4096, measurement.max_padded_length})
    rows = fitting_configurations(shape, budget_bytes, factor, max_lengths=tuple(lengths), answer_fraction=measurement.answer_fraction, **overhead)
    return factor, rows


def device_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory())
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def projection_markdown(projections: list[ScaleProjection], measurement: StepMeasurement) -> str:
    head = (
        f"Measured on {measurement.device} ({measurement.dtype}): {measurement.seconds_per_step:.2f} s/step mean "
        f"({measurement.seconds_per_step_median:.2f} median) over {measurement.steps} steps after {measurement.warmup_steps} "
        f"warm-up, {measurement.real_tokens_per_second:,.0f} real tokens/s, pad {measurement.pad_fraction:.1%}, "
        f"peak memory {measurement.peak_memory_bytes / 2**30:.2f} GiB.\n\n"
    )
    rows = [
        "| scale | train models | samples | steps/epoch | epoch | steps this run | run time | models to render | render time |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in projections:
        rows.append(
            f"| {p.scale} | {p.train_models:,} | {p.train_samples:,} | {p.steps_per_epoch:,} | {_duration(p.epoch_seconds)} | "
            f"{p.run_steps:,} | {_duration(p.run_seconds)} | {p.models_to_render:,} | {_duration(p.render_seconds)} |"
        )
    return head + "\n".join(rows)


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "n/a"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@dataclass(frozen=True)
class TrainingPlan:
    measurement: StepMeasurement
    projections: list[ScaleProjection]
    render_models_per_second: float
    memory_calibration: float
    memory_budget_bytes: float
    memory_rows: list

    def to_json(self, config: TrainConfig) -> dict:
        return {
            "config": config.to_json(),
            "measurement": self.measurement.to_json(),
            "projections": [asdict(p) for p in self.projections],
            "render_models_per_second": self.render_models_per_second,
            "memory_calibration": self.memory_calibration,
            "memory_budget_bytes": self.memory_budget_bytes,
        }

    def markdown(self) -> tuple[str, str]:
        """(projections table, memory table)."""
        return projection_markdown(self.projections, self.measurement), memory_table_markdown(self.memory_rows, self.memory_budget_bytes)


def scales_of(corpus, manifest, current: str) -> list[tuple[str, int]]:
    """This scale (`manifest` is its manifest) and every configured scale the corpus can fill, with their train
    models, smallest first; `full` is estimated from the share of the models examined so far that built."""
    train = manifest[manifest.split == "train"]
    full = estimated_full_train_models(len(corpus.splits["train"]), len(train), int(train.valid.sum()))
    scales = dict(planned_scales(configured_scales(), full))
    scales[current] = int((train.selected).sum())
    return sorted(scales.items(), key=lambda item: item[1])


def make_plan(
    session,
    steps: int,
    warmup: int,
    scale: str,
    scales: list[tuple[str, int]],
    render_models_per_second: float,
    budget_bytes: float = 0.0,
) -> TrainingPlan:
    """`scales` lists (name, train models) of every configured scale, this one included."""
    config = session.config
    measurement = measure_steps(session.model, session.processor, session.train.samples, config, session.device, session.dtype, session.packed, steps, warmup)
    train_models = dict(scales)[scale]
    per_model = len(session.train.samples) / train_models
    projections = project_scales(measurement, config, per_model, (scale, train_models), scales, render_models_per_second)
    budget = budget_bytes or device_memory_bytes(session.device)
    factor, rows = memory_plan(model_shape(session.model, config, session.dtype), measurement, config, budget, session.device.type == "cuda")
    return TrainingPlan(measurement, projections, render_models_per_second, factor, budget, rows)
