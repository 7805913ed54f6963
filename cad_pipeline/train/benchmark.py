"""Our training loop against a plain transformers `Trainer` on the same model, samples and settings, in one process.

The baseline is what a user writes first: random batches padded to the longest sample, the
model's own loss over full logits. Both start from identical weights and report real (non-pad)
tokens per second over the same number of timed optimizer steps, after the same warm-up.
"""

from __future__ import annotations

import gc
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

from cad_pipeline.partition import TRAIN_JSON
from cad_pipeline.train.config import (
    TrainConfig,
    resolve_device,
    resolve_dtype,
    resolved_image_contrast,
    resolved_train_mode,
    resolved_vision_learning_rate_scale,
)
from cad_pipeline.train.data import SampleSet, conversation_texts, padded_batch, prepare_samples, read_records
from cad_pipeline.train.flops import flop_model
from cad_pipeline.train.loop import peak_memory_bytes, release_freed_heap, reset_peak_memory, train
from cad_pipeline.train.loop import plan_steps as plan_steps_for
from cad_pipeline.train.plan import batch_shape, calibrate_memory, measure_batch, measure_steps, measured_train_shape, samples_near
from cad_pipeline.train.session import TrainingSession, open_session, packs
from cad_pipeline.train.model import TINY_BASE_FOLDER, add_lora, compile_layers, load_base_model, resolved_max_length
from cad_pipeline.train.tiny import write_tiny_model


@dataclass(frozen=True)
class LoopSpeed:
    real_tokens_per_second: float
    pad_fraction: float
    data_wait_share: float
    """Share of the timed steps' time the training thread spent waiting for batches (the Trainer: collating them)."""
    model_flops_per_second: float
    """Useful FLOPs (see `flops`) per second: real tokens/s times the drawn samples' mean FLOPs per real token."""
    peak_memory_bytes: int
    """The highest peak of the loop's steps (CPU: the process's resident set; CUDA: allocated bytes)."""

    def to_json(self, peak: float | None) -> dict:
        return {**asdict(self), "mfu": self.model_flops_per_second / peak if peak else None}


@dataclass(frozen=True)
class TrainerComparison:
    speeds: dict[str, LoopSpeed]
    device: torch.device
    dtype: torch.dtype
    packed: bool
    """Whether our loop packed its batches (the Trainer never does)."""
    flops_per_real_token: float
    planned_peak_bytes: float
    """The calibrated memory planner's peak for our loop's configuration, as `training_plan` would give it."""

    @property
    def ratio(self) -> float:
        return self.speeds["ours"].real_tokens_per_second / self.speeds["trainer"].real_tokens_per_second


def compare_with_trainer(
    partition_dir: Path,
    work_dir: Path,
    samples: int,
    steps: int,
    warmup: int,
    batch_size: int,
    threads: int = 0,
    base_model: str = "tiny",
    packing: str = "off",
    compile: bool = False,
) -> TrainerComparison:
    """Both loops put LoRA on the same base model: the tiny one (built once, so both start from the same weights), a
    folder or a preset (rebuilt from the same seed). `compile` compiles our loop's layers; the warm-up steps take the
    compile time."""
    if threads:
        torch.set_num_threads(threads)
    records = read_records(partition_dir / TRAIN_JSON)
    random.Random(0).shuffle(records)
    records = records[:samples]
    if base_model == "tiny":
        base_model = str(write_tiny_model(conversation_texts(records), work_dir / "bench_model"))
    config = TrainConfig(
        base_model=base_model, batch_size=batch_size, max_steps=warmup + steps, lora_dropout=0.0, checkpoint_every=0, packing=packing,
        compile=compile,
    )
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    speeds = {}
    for name in ("trainer", "ours"):
        base = load_base_model(config, device, dtype, work_dir, conversation_texts(records))
        config = resolved_max_length(config, base.model)
        model = add_lora(base.model, config)
        if name == "ours" and config.compile:
            compile_layers(model)
        prepared = prepare_samples(records, partition_dir / "images", base.processor, config.max_length).samples
        per_token = flop_model(model, base.processor, prepared[0], device, dtype).flops(prepared) / sum(s.length for s in prepared)
        packed = name == "ours" and packs(config, device, base)
        if name == "ours":
            measured = measure_steps(model, base.processor, prepared, config, device, dtype, packed, steps, warmup)
            session = TrainingSession(config, device, dtype, base, model, SampleSet(prepared, []), SampleSet([], []), packed)
            planned = calibrate_memory(session).estimate(measured_train_shape(measured, config)).total  # after: its steps slow the timed ones
            real, pad, wait, peak = measured.real_tokens_per_second, measured.pad_fraction, measured.data_wait_share, measured.peak_memory_bytes
        else:
            real, pad, wait, peak = _trainer_speed(model, base.processor, prepared, config, device, dtype, steps, warmup, work_dir)
        speeds[name] = LoopSpeed(real, pad, wait, real * per_token, peak)
    return TrainerComparison(speeds, device, dtype, packed, per_token, planned)


class _StepTimer(TrainerCallback):
    """Times the steps after the warm-up from the end of the step before, so the time the Trainer spends fetching and
    collating a batch counts, as it does in our loop."""

    def __init__(self, warmup: int):
        self.warmup, self.window, self.timed_steps = warmup, [0.0, 0.0], 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.window[0] = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.window[0] = time.perf_counter()
        elif state.global_step > self.warmup:
            self.window[1] = time.perf_counter()
            self.timed_steps += 1

    @property
    def seconds(self) -> float:
        return self.window[1] - self.window[0]


def _trainer_speed(model, processor, samples, config: TrainConfig, device, dtype, steps: int, warmup: int, work_dir: Path):
    sizes: list[tuple[int, int]] = []
    collating: list[tuple[float, float]] = []

    def collate(chosen):
        started = time.perf_counter()
        batch = padded_batch(chosen, processor)
        sizes.append((batch.real_tokens, batch.padded_tokens))
        collating.append((started, time.perf_counter() - started))
        return {**batch.inputs, "labels": batch.labels}

    arguments = TrainingArguments(
        output_dir=str(work_dir / "trainer_output"),
        per_device_train_batch_size=config.batch_size,
        max_steps=warmup + steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,  # a value below 1 is a share of the steps
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        remove_unused_columns=False,
        dataloader_num_workers=0,
        use_cpu=device.type == "cpu",
        seed=config.seed,
        disable_tqdm=True,
    )
    timer = _StepTimer(warmup)
    trainer = Trainer(model=model, args=arguments, train_dataset=_ListDataset(samples), data_collator=collate, callbacks=[timer])
    trainer.remove_callback(PrinterCallback)  # it prints the run's summary to stdout, where the figures go
    release_freed_heap()
    reset_peak_memory(device)
    trainer.train()
    timed = sizes[warmup : warmup + timer.timed_steps]
    real, padded = sum(real for real, _ in timed), sum(padded for _, padded in timed)
    waited = sum(seconds for started, seconds in collating if timer.window[0] <= started <= timer.window[1])
    return real / timer.seconds, 1.0 - real / padded, waited / timer.seconds, peak_memory_bytes(device)


class _ListDataset(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, index):
        return self.items[index]



@dataclass(frozen=True)
class ProjectionCheck:
    samples: int
    steps_per_epoch: int
    projected_epoch_seconds: float
    measured_epoch_seconds: float
    predicted_peak_bytes: float
    """The plan's calibrated memory estimate for this configuration, as `training_plan` reports it."""
    measured_peak_bytes: int
    """The highest peak of the epoch's steps (CPU: the process's resident set; CUDA: allocated bytes)."""

    @property
    def ratio(self) -> float:
        return self.projected_epoch_seconds / self.measured_epoch_seconds


def check_projection(partition_dir: Path, work_dir: Path, samples: int, plan_steps: int, plan_warmup: int, config: TrainConfig) -> ProjectionCheck:
    """Plan an epoch over `samples` training samples the way `training_plan` does, then train that epoch and time it."""
    session = open_session(replace(config, epochs=1, max_steps=0, checkpoint_every=0, validation_samples=1), partition_dir, work_dir)
    session = replace(session, train=replace(session.train, samples=session.train.samples[:samples]))
    chosen = session.train.samples
    calibration = calibrate_memory(session)
    measurement = measure_steps(session.model, session.processor, chosen, session.config, session.device, session.dtype, session.packed, plan_steps, plan_warmup)
    predicted = calibration.estimate(measured_train_shape(measurement, session.config))
    steps = plan_steps_for(len(chosen), session.config).steps_per_epoch
    built = str(work_dir / TINY_BASE_FOLDER) if session.config.base_model == "tiny" else session.config.base_model
    same_model = replace(  # the settings 'tiny' resolves, pinned: the built folder would resolve them as any named model
        session.config,
        base_model=built,
        train_mode=resolved_train_mode(session.config),
        image_contrast=resolved_image_contrast(session.config),
        vision_learning_rate_scale=resolved_vision_learning_rate_scale(session.config),
    )
    del session  # the planned model's memory would count in the trained one's peak
    gc.collect()
    fresh = open_session(same_model, partition_dir, work_dir)
    state = train(fresh.model, fresh.processor, chosen, fresh.val.samples, fresh.config, fresh.device, fresh.dtype, work_dir / "checkpoints", fresh.packed)
    projected = measurement.run_seconds(steps)
    measured_peak = max(record.peak_memory_bytes for record in state.steps)
    return ProjectionCheck(len(chosen), steps, projected, sum(record.seconds for record in state.steps), predicted.total, measured_peak)


@dataclass(frozen=True)
class MemoryCheck:
    """One configuration's planned peak against the peak of a real step at it."""

    batch_size: int
    padded_length: int
    gradient_checkpointing: bool
    predicted_peak_bytes: float
    measured_peak_bytes: int

    @property
    def ratio(self) -> float:
        return self.predicted_peak_bytes / self.measured_peak_bytes


MEMORY_CHECK_BATCHES = (1, 2, 4, 8)
MEMORY_CHECK_LENGTHS = (0.5, 1.0)
"""Quantiles of the training samples' lengths the checked batches are drawn at: the median and the longest."""


def check_memory(
    partition_dir: Path,
    work_dir: Path,
    config: TrainConfig,
    batch_sizes: tuple[int, ...] = MEMORY_CHECK_BATCHES,
    length_quantiles: tuple[float, ...] = MEMORY_CHECK_LENGTHS,
) -> tuple[float, float, list[MemoryCheck]]:
    """(factor, slack bytes, checks): the planner calibrated as `training_plan` calibrates it, then each
    (micro-batch, length, checkpointing) configuration measured as the calibration measures (`measure_batch`) on
    one batch of samples close in length, set beside the plan for that batch.

    The plan is only worth trusting if it is never below a measured peak, at every configuration it lists, with
    checkpointing on or off whichever the calibration used. Configurations run from the smallest up, checkpointed
    first, so that memory a CPU process keeps from a larger step cannot inflate a smaller one's reading."""
    session = open_session(replace(config, epochs=1, max_steps=0, checkpoint_every=0, validation_samples=1), partition_dir, work_dir)
    calibration = calibrate_memory(session)
    model, samples = session.model, session.train.samples
    checks = []
    for checkpointing in (True, False):
        if not checkpointing:
            model.gradient_checkpointing_disable()  # measure_steps turns it on where asked, never off
        for batch_size in sorted(batch_sizes):
            for quantile in sorted(length_quantiles):
                batch = samples_near(samples, quantile, batch_size)
                measured = measure_batch(session, batch, checkpointing)
                shape = batch_shape(batch, checkpointing)
                checks.append(MemoryCheck(batch_size, shape.max_length, checkpointing, calibration.estimate(shape).total, measured.peak_memory_bytes))
    return calibration.factor, calibration.slack_bytes, checks
