"""Training plans from measurement: time real optimizer steps of the configured model, then project every scale.

Warm-up steps (allocator, kernel selection) run first and count once as start-up. The timed steps
span the range of the epoch's step sizes, and a line fitted to them predicts each step of the
epoch's own batch order (length-grouped, as training runs). Projections scale steps per epoch with
the samples a scale holds; rendering time comes from rendering some of the partition's models now.
"""

from __future__ import annotations

import math
import os
import resource
import statistics
from itertools import islice
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pandas as pd
import torch

from cad_pipeline.bench import render_rate
from cad_pipeline.dataset.corpus import Corpus, model_path
from cad_pipeline.dataset.scales import configured_scales, estimated_full_train_models, planned_scales
from cad_pipeline.partition import MANIFEST
from cad_pipeline.train.config import TrainConfig
from cad_pipeline.train.data import Sample, image_inputs, length_grouped_batches
from cad_pipeline.train.loop import TrainState, answer_targets, contrast_pool, make_optimizer, optimizer_step, plan_steps, prefetched_batches, release_freed_heap
from cad_pipeline.train.memory import DEFAULT_OVERHEAD_BYTES, GIB, PLAN_MARGIN, MemoryEstimate, ModelShape, TrainShape, estimate_memory, fit_calibration, fitting_configurations, memory_table_markdown
from cad_pipeline.train.model import trainable_parameters, trainable_parameters_by_part
from cad_pipeline.train.presets import described
from cad_pipeline.train.session import open_session


@dataclass(frozen=True)
class StepMeasurement:
    device: str
    dtype: str
    steps: int
    warmup_steps: int
    seconds_per_step: float
    """Mean predicted time of the first epoch's steps (see `measure_steps`)."""
    measured_seconds_per_step: float
    """Mean of the timed steps themselves, which were chosen across the range of step sizes."""
    seconds_per_padded_token: float
    seconds_fixed_per_step: float
    startup_seconds: float
    """What the warm-up steps took beyond their predicted time (allocator, kernel choice): paid once per run."""
    real_tokens_per_second: float
    pad_fraction: float
    data_wait_share: float
    """Share of the timed steps' time spent waiting for micro-batches to be made."""
    peak_memory_bytes: int
    baseline_memory_bytes: int
    """Memory in use before the measured steps (CPU: the process's resident set), subtracted when calibrating."""
    max_padded_length: int
    answer_fraction: float
    step_seconds: list[float] = field(repr=False)
    """Predicted time of each step of the first epoch, in training order."""

    def to_json(self) -> dict:
        return {key: value for key, value in asdict(self).items() if key != "step_seconds"}

    def run_seconds(self, steps: int) -> float:
        """The first `steps` optimizer steps of a run over these samples, start-up included."""
        epochs, rest = divmod(steps, len(self.step_seconds))
        return self.startup_seconds + epochs * sum(self.step_seconds) + sum(self.step_seconds[:rest])


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


def measure_steps(
    model, processor, samples: list[Sample], config: TrainConfig, device, dtype, packed: bool, steps: int, warmup: int,
    contrast_from: list[Sample] | None = None,
) -> StepMeasurement:  # fmt: skip
    """Time `steps` real optimizer steps after `warmup` untimed ones, and predict every step of the first epoch.

    A step's time follows the padded tokens it processes, and those vary several-fold between batches,
    so a few steps drawn at random miss the epoch's mean by tens of percent. The timed steps are taken
    across the range of the epoch's step sizes, a line seconds = fixed + per_token * padded tokens is
    fitted to them, and the line is applied to each step of the epoch's own batch order. The image-contrast
    term draws its other pictures from `contrast_from` (default: `samples`), so that a single batch can be measured.
    """
    batches = length_grouped_batches([s.length for s in samples], config.batch_size, config.seed, 0)
    groups = [batches[i : i + config.gradient_accumulation] for i in range(0, len(batches), config.gradient_accumulation)]
    sizes = [sum(max(samples[i].length for i in batch) * len(batch) for batch in group) for group in groups]
    by_size = sorted(range(len(groups)), key=sizes.__getitem__)
    timed_indices = [by_size[round(i * (len(groups) - 1) / max(1, steps - 1))] for i in range(steps)]
    warm_indices = list(range(min(warmup, len(groups))))  # the epoch's first steps, the longest batch among them
    optimizer = make_optimizer(model, config)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    release_freed_heap()
    baseline = (_resident_bytes() if device.type != "cuda" else int(torch.cuda.memory_allocated(device))) - _model_bytes(model)
    records, state = [], TrainState()
    chosen = [[[samples[i] for i in batch] for batch in groups[index]] for index in warm_indices + timed_indices]
    stream = prefetched_batches((batch for group in chosen for batch in group), processor, packed, contrast_pool(contrast_from or samples, config))
    for group in chosen:
        records.append(optimizer_step(model, optimizer, config.learning_rate, islice(stream, len(group)), answer_targets(group), config, device, dtype, state))
    stream.close()
    warm, timed = records[: len(warm_indices)], records[len(warm_indices) :]
    fixed, per_token = _fit_line([sizes[i] for i in timed_indices], [r.seconds for r in timed])
    predicted = [fixed + per_token * size for size in sizes]
    timed_samples = [samples[i] for index in timed_indices for batch in groups[index] for i in batch]
    real = sum(sample.length for sample in timed_samples)
    return StepMeasurement(
        device=str(device),
        dtype=str(dtype).removeprefix("torch."),
        steps=len(timed),
        warmup_steps=len(warm),
        seconds_per_step=statistics.fmean(predicted),
        measured_seconds_per_step=statistics.fmean(r.seconds for r in timed),
        seconds_per_padded_token=per_token,
        seconds_fixed_per_step=fixed,
        startup_seconds=max(0.0, sum(r.seconds for r in warm) - sum(predicted[i] for i in warm_indices)),
        real_tokens_per_second=real / sum(r.seconds for r in timed),
        pad_fraction=statistics.fmean(r.pad_fraction for r in timed),
        data_wait_share=sum(r.data_wait_seconds for r in timed) / sum(r.seconds for r in timed),
        peak_memory_bytes=max(r.peak_memory_bytes for r in records),
        baseline_memory_bytes=baseline,
        max_padded_length=max(max(samples[i].length for i in batch) for group in groups for batch in group),
        answer_fraction=sum(len(sample.answer_ids) for sample in timed_samples) / real,
        step_seconds=predicted,
    )


def _fit_line(sizes: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares (fixed, per_token); through the origin when the sizes do not spread or the fit goes negative."""
    mean_size, mean_seconds = statistics.fmean(sizes), statistics.fmean(seconds)
    spread = sum((size - mean_size) ** 2 for size in sizes)
    if spread > 0:
        per_token = sum((size - mean_size) * (s - mean_seconds) for size, s in zip(sizes, seconds)) / spread
        fixed = mean_seconds - per_token * mean_size
        if per_token > 0 and fixed >= 0:
            return fixed, per_token
    return 0.0, sum(seconds) / sum(sizes)


def project_scales(
    measurement: StepMeasurement,
    config: TrainConfig,
    samples_per_model: float,
    current: tuple[str, int],
    scales: list[tuple[str, int]],
    render_models_per_second: float,
    views_rendered: bool = True,
) -> list[ScaleProjection]:
    """This scale and every larger one: this scale's own steps as predicted one by one; a larger scale's steps
    per epoch times the mean step; the start-up once.

    A larger scale contains the smaller one, so only its extra models need rendering."""
    current_scale, current_models = current
    projections = []
    for scale, train_models in scales:
        if train_models < current_models:
            continue
        samples = round(samples_per_model * train_models)
        plan = plan_steps(samples, config)
        extra = train_models - current_models if views_rendered else train_models
        if scale == current_scale:
            epoch, run = measurement.run_seconds(plan.steps_per_epoch), measurement.run_seconds(plan.total_steps)
        else:
            epoch = measurement.startup_seconds + plan.steps_per_epoch * measurement.seconds_per_step
            run = measurement.startup_seconds + plan.total_steps * measurement.seconds_per_step
        projections.append(
            ScaleProjection(
                scale=scale,
                train_models=train_models,
                train_samples=samples,
                steps_per_epoch=plan.steps_per_epoch,
                epoch_seconds=epoch,
                run_steps=plan.total_steps,
                run_seconds=run,
                models_to_render=extra,
                render_seconds=extra / render_models_per_second if render_models_per_second > 0 else math.nan,
            )
        )
    return projections


def model_shape(model, processor, image: Path, dtype: torch.dtype, packed: bool) -> ModelShape:
    """The memory model's view of a LLaVA- or Qwen2-VL-style model (text_config / vision_config) as its train mode
    set it up: every parameter trainable in full mode, the adapters and the connector with LoRA. `image` is one the
    model trains on, which sets the tower's tokens where the resolution is dynamic; `packed`, whether its
    batches are packed (no attention mask) or padded."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text, vision = base.config.text_config, base.config.vision_config
    size = torch.tensor([], dtype=dtype).element_size()
    return ModelShape(
        total_parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=trainable_parameters(model),
        layers=text.num_hidden_layers,
        hidden=text.hidden_size,
        intermediate=text.intermediate_size,
        heads=text.num_attention_heads,
        vocab=text.vocab_size,
        image_tokens=tower_tokens(base, processor, image),
        vision_layers=getattr(vision, "depth", None) or vision.num_hidden_layers,
        vision_hidden=getattr(vision, "embed_dim", None) or vision.hidden_size,
        vision_trained=trainable_parameters_by_part(model)["vision_tower"] > 0,
        weight_bytes=size,
        activation_bytes=size,
        padding_mask_bytes=0.0 if packed else size,
        vision_bytes_per_image=vision_saved_bytes(base, processor, image, dtype),
    )


def vision_saved_bytes(base, processor, image: Path, dtype: torch.dtype) -> float:
    """Bytes the vision path (tower and connector) keeps for backward for one image, as autograd saves them (the
    weights it holds on to left out, the planner counts those once): exact for any tower, a convolutional one
    included, and 0 for a frozen one."""
    device = next(base.parameters()).device
    inputs = {name: tensor.to(device) for name, tensor in image_inputs(processor, [image]).items()}
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    counted = {parameter.data_ptr() for parameter in base.parameters()}
    kept = 0

    def count(tensor: torch.Tensor) -> torch.Tensor:
        nonlocal kept
        if tensor.data_ptr() not in counted:
            counted.add(tensor.data_ptr())
            kept += tensor.numel() * tensor.element_size()
        return tensor

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(count, lambda tensor: tensor):
        base.get_image_features(**inputs)
    return float(kept)


def tower_tokens(base, processor, image: Path) -> int:
    """Tokens the vision tower works on per image: LLaVA's fixed `image_seq_length`, or the patches of the image's
    grid where the resolution is dynamic (Qwen2-VL), before the connector merges them."""
    fixed = getattr(base.config, "image_seq_length", 0)
    if fixed:
        return int(fixed)
    grid = image_inputs(processor, [image]).get("image_grid_thw")
    return int(grid.prod()) if grid is not None else 0


def measured_train_shape(measurement: StepMeasurement, config: TrainConfig) -> TrainShape:
    """The configuration the measured steps ran, at their longest padded sample."""
    return TrainShape(config.batch_size, config.gradient_accumulation, measurement.max_padded_length, config.gradient_checkpointing, measurement.answer_fraction)


@dataclass(frozen=True)
class MemoryCalibration:
    """The planner fitted to measured steps: `estimate` is then at or above what they held."""

    shape: ModelShape
    longest: TrainShape
    """One sample per micro-batch at the epoch's longest padded sample."""
    factor: float
    slack_bytes: float
    overhead_bytes: float

    def estimate(self, train: TrainShape) -> MemoryEstimate:
        return estimate_memory(self.shape, train, self.factor, self.overhead_bytes, self.slack_bytes, PLAN_MARGIN)


def batch_shape(batch: list[Sample], gradient_checkpointing: bool) -> TrainShape:
    """The memory planner's view of one micro-batch: padded to its longest sample, logits at its answer positions."""
    length = max(sample.length for sample in batch)
    answers = sum(len(sample.answer_ids) for sample in batch)
    return TrainShape(len(batch), 1, length, gradient_checkpointing, answers / (len(batch) * length))


CALIBRATION_BATCHES = ((1, 0.0), (2, 1.0), (4, 1.0))
"""(samples per micro-batch, length quantile) of the calibration steps, smallest first (a CPU's resident set would
otherwise carry a larger step's memory into a smaller one's reading): the shortest sample alone, then the two and
the four longest together. Without the four the slope is that of small steps and under-promises larger ones (by
6% at eight samples on CPU)."""
MEMORY_STEPS = (1, 1)
"""(timed, warm-up) optimizer steps a memory reading takes on its one batch: the first allocates the optimizer's
state, so the second's peak holds it."""


def calibrate_memory(session) -> MemoryCalibration:
    """Two optimizer steps on each calibration batch (`CALIBRATION_BATCHES`), fitted by `fit_calibration`: what
    grows with the batch's tokens sets the factor, what a step holds whatever its size the slack; the short
    sample is what shows the latter. Each step is fitted on what it added to the memory in use before it, and the
    plan adds the largest of those baselines: a process keeps some of what its first steps allocate (on CPU the
    resident set before a step grew by 60 MiB over the first few), which the plan must carry and the fit must not
    read as activations. A batch the steps so far plan above the device's memory (or `memory_budget_gib`) is not
    tried: on a CPU running out of memory kills the process rather than raising. The weights and the random state
    are put back after every step."""
    samples, checkpointing = session.train.samples, session.config.gradient_checkpointing
    shape = model_shape(session.model, session.processor, samples[0].image, session.dtype, session.packed)
    longest = batch_shape(samples_near(samples, 1.0, 1), checkpointing)
    budget = session.config.memory_budget_gib * GIB or device_memory_bytes(session.device)
    steps, calibration = [], None
    for micro, quantile in CALIBRATION_BATCHES:
        batch = samples_near(samples, quantile, micro)
        if calibration is not None and len(steps) > 1 and calibration.estimate(batch_shape(batch, checkpointing)).total > budget:
            break
        try:
            measured = measure_batch(session, batch, checkpointing)
        except torch.OutOfMemoryError:
            if not steps:
                raise
            break  # one sample fits, more do not: the smaller steps calibrate alone
        steps.append((batch_shape(batch, checkpointing), measured))
        calibration = _fitted(shape, longest, steps, session.device.type == "cuda")
    return calibration


def measure_batch(session, batch: list[Sample], gradient_checkpointing: bool) -> StepMeasurement:
    """`MEMORY_STEPS` optimizer steps on this one batch, the image-contrast term's other pictures drawn from the
    whole training set; the weights and the random state put back afterwards."""
    config = replace(session.config, batch_size=len(batch), gradient_accumulation=1, gradient_checkpointing=gradient_checkpointing)
    with weights_kept(session.model):
        return measure_steps(session.model, session.processor, batch, config, session.device, session.dtype, session.packed, *MEMORY_STEPS, session.train.samples)


def _fitted(shape: ModelShape, longest: TrainShape, steps: list[tuple[TrainShape, StepMeasurement]], on_gpu: bool) -> MemoryCalibration:
    grown = [(train, measured.peak_memory_bytes - measured.baseline_memory_bytes) for train, measured in steps]
    factor, slack = fit_calibration(shape, grown, overhead=0.0)
    latest = max((measured for _, measured in steps), key=lambda measured: measured.baseline_memory_bytes)
    return MemoryCalibration(shape, longest, factor, slack, plan_overhead(latest, on_gpu))


def samples_near(samples: list[Sample], quantile: float, count: int) -> list[Sample]:
    """`count` samples as close in length as the data allows, the longest of them at the given quantile of the
    samples' lengths: a batch that pads little, so its peak is the one the plan for its length should give."""
    by_length = sorted(samples, key=lambda sample: sample.length)
    end = max(count, round(quantile * (len(by_length) - 1)) + 1)
    if end > len(by_length):
        raise ValueError(f"a batch of {count} needs {count} training samples; there are {len(by_length)}")
    return by_length[end - count : end]


def memory_rows(calibration: MemoryCalibration, budget_bytes: float) -> list:
    """Configurations that fit the budget, at the usual lengths and the epoch's longest sample."""
    lengths = sorted({512, 1024, 2048, 3072, 4096, calibration.longest.max_length})
    return fitting_configurations(
        calibration.shape, budget_bytes, calibration.factor, max_lengths=tuple(lengths), answer_fraction=calibration.longest.answer_fraction,
        overhead=calibration.overhead_bytes, slack=calibration.slack_bytes, margin=PLAN_MARGIN,
    )  # fmt: skip


def plan_overhead(measurement: StepMeasurement, on_gpu: bool) -> float:
    """A GPU peak excludes the CUDA context, so the plan adds the planner's default overhead there; on the CPU the
    process's own baseline is the overhead."""
    return DEFAULT_OVERHEAD_BYTES if on_gpu else float(measurement.baseline_memory_bytes)


@dataclass(frozen=True)
class BatchChoice:
    """The micro-batch `auto_batch_size` chose, what the planner said of it and the peak measured when it was tried."""

    batch_size: int
    gradient_accumulation: int
    planned_peak_bytes: float
    measured_peak_bytes: float
    budget_bytes: float
    calibration: float
    slack_bytes: float = 0.0

    def to_json(self) -> dict:
        return asdict(self)


def choose_batch(session, budget_bytes: float = 0.0) -> BatchChoice:
    """The largest micro-batch dividing the effective batch (batch_size x gradient_accumulation) that fits the budget
    (the device's memory unless given), accumulation making up the rest.

    The planner, calibrated by a few measured steps (`calibrate_memory`), proposes
    the largest micro-batch it plans within the budget; one step on the epoch's longest batch then measures it,
    and a smaller one is tried while the measured peak is over the budget (or the device runs out of memory), so
    the choice never rests on the plan alone. The weights and the random state are put back afterwards: the run
    trains as if these steps had never been taken."""
    config = session.config
    effective = config.batch_size * config.gradient_accumulation
    budget = budget_bytes or device_memory_bytes(session.device)
    calibration = calibrate_memory(session)
    proposed = largest_fitting_batch(calibration, effective, budget)
    context = DEFAULT_OVERHEAD_BYTES if session.device.type == "cuda" else 0.0  # a CUDA peak leaves out context and slack
    tried = []
    for micro in (size for size in range(proposed.batch_size, 0, -1) if effective % size == 0):
        with weights_kept(session.model):
            try:
                peak = _measured(session, micro, effective // micro, 1, 1).peak_memory_bytes + context
            except torch.OutOfMemoryError:
                peak = math.inf
        if peak <= budget:
            return BatchChoice(micro, effective // micro, planned_peak(calibration, micro, effective), peak, budget, calibration.factor, calibration.slack_bytes)
        tried.append(f"{micro} ({peak / GIB:.2f} GiB)")
    raise ValueError(
        f"auto_batch_size: no micro-batch fits the budget of {budget / GIB:.2f} GiB as measured (peaks: {', '.join(tried)}); "
        f"enable gradient_checkpointing, lower max_length (longest sample now {calibration.longest.max_length} tokens) or raise memory_budget_gib"
    )


def _measured(session, micro: int, accumulation: int, warmup: int, steps: int) -> StepMeasurement:
    """Steps at this micro-batch, the epoch's longest batch among the warm-up ones."""
    config = replace(session.config, batch_size=micro, gradient_accumulation=accumulation)
    return measure_steps(session.model, session.processor, session.train.samples, config, session.device, session.dtype, session.packed, steps, warmup)


@contextmanager
def weights_kept(model):
    """The trained weights and the random state as they were before the block, gradients cleared, memory freed."""
    trained = [parameter for parameter in model.parameters() if parameter.requires_grad]
    weights = [parameter.detach().clone() for parameter in trained]
    random_state = torch.random.get_rng_state()
    try:
        yield
    finally:
        with torch.no_grad():
            for parameter, saved in zip(trained, weights, strict=True):
                parameter.copy_(saved)
                parameter.grad = None
        torch.random.set_rng_state(random_state)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def largest_fitting_batch(calibration: MemoryCalibration, effective: int, budget: float) -> BatchChoice:
    """The largest divisor of `effective` whose planned peak, at the longest padded sample, is within `budget`."""
    for micro in (size for size in range(effective, 0, -1) if effective % size == 0):
        planned = planned_peak(calibration, micro, effective)
        if planned <= budget:
            return BatchChoice(micro, effective // micro, planned, math.nan, budget, calibration.factor, calibration.slack_bytes)
    raise ValueError(
        f"auto_batch_size: even one sample per micro-batch is planned at {planned / GIB:.2f} GiB, over the budget of "
        f"{budget / GIB:.2f} GiB; enable gradient_checkpointing, lower max_length (longest sample now {calibration.longest.max_length} "
        "tokens) or raise memory_budget_gib"
    )


def planned_peak(calibration: MemoryCalibration, micro: int, effective: int) -> float:
    return calibration.estimate(replace(calibration.longest, batch_size=micro, gradient_accumulation=effective // micro)).total


def device_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory())
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _model_bytes(model) -> int:
    """The weights and buffers in memory: the planner counts them itself, so the measured baseline leaves them out
    (subtracted twice, they would shrink the activation factor and the plan would under-promise larger batches)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(tensor.numel() * tensor.element_size() for tensor in {id(t): t for t in tensors}.values())


def _resident_bytes() -> int:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def projection_markdown(projections: list[ScaleProjection], measurement: StepMeasurement) -> str:
    head = (
        f"Measured on {measurement.device} ({measurement.dtype}): {measurement.steps} steps after {measurement.warmup_steps} "
        f"warm-up, {measurement.seconds_fixed_per_step:.3f} s + {measurement.seconds_per_padded_token * 1e3:.3f} ms per padded "
        f"token a step, so {measurement.seconds_per_step:.2f} s/step over the epoch; start-up {measurement.startup_seconds:.1f} s, "
        f"{measurement.real_tokens_per_second:,.0f} real tokens/s, pad {measurement.pad_fraction:.1%}, "
        f"waiting for data {measurement.data_wait_share:.1%} of the step time, peak memory {measurement.peak_memory_bytes / 2**30:.2f} GiB.\n\n"
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
    memory_slack_bytes: float
    memory_budget_bytes: float
    memory_rows: list
    max_length: int
    """The run's `max_length`, resolved (the model's context when the setting is 0)."""
    samples_left_out: int
    """Train and validation samples longer than `max_length`: left out of training, not cut."""

    def to_json(self, config: TrainConfig) -> dict:
        return {
            "base_model": described(config.base_model),
            "max_length": self.max_length,
            "samples_left_out": self.samples_left_out,
            "config": config.to_json(),
            "measurement": self.measurement.to_json(),
            "projections": [asdict(p) for p in self.projections],
            "render_models_per_second": self.render_models_per_second,
            "memory_calibration": self.memory_calibration,
            "memory_slack_bytes": self.memory_slack_bytes,
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
) -> TrainingPlan:
    """`scales` lists (name, train models) of every configured scale, this one included."""
    config = session.config
    calibration = calibrate_memory(session)  # before the larger steps, whose memory a CPU process may keep
    measurement = measure_steps(session.model, session.processor, session.train.samples, config, session.device, session.dtype, session.packed, steps, warmup)
    train_models = dict(scales)[scale]
    per_model = len(session.train.samples) / train_models
    projections = project_scales(measurement, config, per_model, (scale, train_models), scales, render_models_per_second)
    budget = config.memory_budget_gib * GIB or device_memory_bytes(session.device)
    left_out = len(session.train.too_long) + len(session.val.too_long)
    return TrainingPlan(measurement, projections, render_models_per_second, calibration.factor, calibration.slack_bytes, budget, memory_rows(calibration, budget), config.max_length, left_out)


RENDER_SAMPLE_MODELS = 12
"""Models of the partition rendered now to measure the render rate of larger scales."""


def plan_partition(
    config: TrainConfig, partition_dir: Path, corpus_root: Path, scale: str, steps: int, warmup: int, workers: int = 0
) -> TrainingPlan:
    """The plan for one partition folder: the scales its corpus can fill, a render-rate measurement, the timed steps."""
    manifest = pd.read_parquet(partition_dir / MANIFEST)
    corpus = Corpus.open(corpus_root)
    files = [model_path(corpus.root, model_id) for model_id in manifest[manifest.selected].id[:RENDER_SAMPLE_MODELS]]
    rate = render_rate(files, workers)
    session = open_session(config, partition_dir, partition_dir / "training_plan_model")
    return make_plan(session, steps, warmup, scale, scales_of(corpus, manifest, scale), rate)
