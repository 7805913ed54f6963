"""The LoRA training loop: AdamW, cosine schedule with warmup, gradient accumulation, answer-only logits, resumable.

Loss is the mean cross-entropy over answer tokens of each optimizer step (token-weighted across
the micro-batches it accumulates). The model's trunk runs once per micro-batch and the output head
only at positions whose next token is an answer token, so prompt and image positions cost no
logits. A checkpoint holds the trainable weights, optimizer, schedule, every random generator and
the position in the data, so a run killed and resumed continues exactly where it stopped.
"""

from __future__ import annotations

import math
import random
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cad_pipeline.train.config import TrainConfig
from cad_pipeline.train.data import IGNORE, Batch, Sample, length_grouped_batches, packed_batch, padded_batch

CHECKPOINT_FILE = "state.pt"


@dataclass(frozen=True)
class StepRecord:
    step: int
    epoch: int
    loss: float
    learning_rate: float
    real_tokens_per_second: float
    """Non-pad tokens (image tokens included) per second of this step."""
    pad_fraction: float
    peak_memory_bytes: int
    seconds: float


@dataclass
class TrainState:
    """Everything a resumed run needs besides the model and optimizer objects."""

    step: int = 0
    epoch: int = 0
    next_batch: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    val_losses: list[tuple[int, float]] = field(default_factory=list)
    """(optimizer step, validation loss): before training, then after each epoch."""


@dataclass(frozen=True)
class TrainPlan:
    """How the samples fall into micro-batches and optimizer steps."""

    batches_per_epoch: int
    steps_per_epoch: int
    total_steps: int


def plan_steps(samples: int, config: TrainConfig) -> TrainPlan:
    batches = math.ceil(samples / config.batch_size)
    steps_per_epoch = math.ceil(batches / config.gradient_accumulation)
    total = steps_per_epoch * config.epochs
    return TrainPlan(batches, steps_per_epoch, min(total, config.max_steps) if config.max_steps else total)


def answer_loss(model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over answer tokens, and their count; logits only where a target exists."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(**batch.inputs, use_cache=False).last_hidden_state[:, :-1]
    targets = batch.labels[:, 1:]
    wanted = targets != IGNORE
    logits = base.get_output_embeddings()(hidden[wanted]).float()
    return F.cross_entropy(logits, targets[wanted], reduction="sum"), int(wanted.sum())


def make_batch(samples: list[Sample], processor, packed: bool) -> Batch:
    return packed_batch(samples, processor) if packed else padded_batch(samples, processor)


def cosine_with_warmup(total_steps: int, warmup_ratio: float) -> Callable[[int], float]:
    warmup = max(1, round(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def optimizer_and_schedule(model, config: TrainConfig, total_steps: int):
    """AdamW over the trainable parameters, and the cosine schedule with warmup over `total_steps`."""
    parameters = [parameter for parameter in model.parameters() if parameter.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.learning_rate, weight_decay=config.weight_decay)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_with_warmup(total_steps, config.warmup_ratio))


@torch.no_grad()
def validation_loss(model, samples: list[Sample], processor, config: TrainConfig, device, dtype, packed: bool) -> float:
    if not samples:
        return float("nan")
    model.eval()
    total, count = 0.0, 0
    order = sorted(range(len(samples)), key=lambda i: samples[i].length)
    for start in range(0, len(order), config.batch_size):
        batch = make_batch([samples[i] for i in order[start : start + config.batch_size]], processor, packed).to(device, dtype)
        loss, tokens = answer_loss(model, batch)
        total, count = total + float(loss), count + tokens
    model.train()
    return total / count


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def train(
    model,
    processor,
    train_samples: list[Sample],
    val_samples: list[Sample],
    config: TrainConfig,
    device: torch.device,
    dtype: torch.dtype,
    checkpoint_dir: Path,
    packed: bool = False,
    on_step: Callable[[StepRecord], None] | None = None,
    on_validation: Callable[[int, float], None] | None = None,
    stop_after: int | None = None,
) -> TrainState:
    """Train until the plan's last step (or `stop_after` steps, to simulate a kill), resuming from a checkpoint."""
    plan = plan_steps(len(train_samples), config)
    optimizer, schedule = optimizer_and_schedule(model, config, plan.total_steps)
    state = _resume(checkpoint_dir, model, optimizer, schedule, plan.total_steps) or TrainState()
    if not state.val_losses:
        _seed_everything(config.seed)
        state.val_losses.append((0, validation_loss(model, val_samples, processor, config, device, dtype, packed)))
        if on_validation:
            on_validation(0, state.val_losses[-1][1])
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    lengths = [sample.length for sample in train_samples]
    while state.step < plan.total_steps and state.epoch < config.epochs:
        batches = length_grouped_batches(lengths, config.batch_size, config.seed, state.epoch)
        while state.next_batch < len(batches) and state.step < plan.total_steps:
            group = batches[state.next_batch : state.next_batch + config.gradient_accumulation]
            record = optimizer_step(model, processor, optimizer, schedule, [[train_samples[i] for i in b] for b in group], config, device, dtype, packed, state)
            state.next_batch += len(group)
            state.step += 1
            state.steps.append(record)
            if on_step:
                on_step(record)
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                _save(checkpoint_dir, model, optimizer, schedule, state)
            if stop_after is not None and state.step >= stop_after:
                return state
        if state.next_batch >= len(batches):
            state.epoch, state.next_batch = state.epoch + 1, 0
            state.val_losses.append((state.step, validation_loss(model, val_samples, processor, config, device, dtype, packed)))
            if on_validation:
                on_validation(state.step, state.val_losses[-1][1])
    if state.val_losses[-1][0] != state.step:
        state.val_losses.append((state.step, validation_loss(model, val_samples, processor, config, device, dtype, packed)))
        if on_validation:
            on_validation(state.step, state.val_losses[-1][1])
    _save(checkpoint_dir, model, optimizer, schedule, state)
    return state


def optimizer_step(model, processor, optimizer, schedule, group, config, device, dtype, packed, state) -> StepRecord:
    started = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    targets = sum(len(sample.answer_ids) for samples in group for sample in samples)
    total_loss, real, padded = 0.0, 0, 0
    for samples in group:
        batch = make_batch(samples, processor, packed).to(device, dtype)
        loss, _ = answer_loss(model, batch)
        (loss / targets).backward()
        total_loss += float(loss.detach())
        real, padded = real + batch.real_tokens, padded + batch.padded_tokens
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
    learning_rate = schedule.get_last_lr()[0]
    optimizer.step()
    schedule.step()
    optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return StepRecord(
        step=state.step + 1,
        epoch=state.epoch,
        loss=total_loss / targets,
        learning_rate=learning_rate,
        real_tokens_per_second=real / seconds,
        pad_fraction=1.0 - real / padded,
        peak_memory_bytes=peak_memory_bytes(device),
        seconds=seconds,
    )


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().cpu().clone() for name, parameter in model.named_parameters() if parameter.requires_grad}


def _save(folder: Path, model, optimizer, schedule, state: TrainState) -> None:
    """Written beside the old checkpoint and swapped in by a rename, so a kill never leaves a half-written one."""
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f"{CHECKPOINT_FILE}.partial"
    torch.save(
        {
            "trainable": trainable_state(model),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": _rng_state(),
            "state": {**asdict(state), "steps": [asdict(record) for record in state.steps]},
        },
        partial,
    )
    partial.replace(folder / CHECKPOINT_FILE)


def _resume(folder: Path, model, optimizer, schedule, total_steps: int) -> TrainState | None:
    """The state of an unfinished run; a finished one is not resumed, so materializing again trains again."""
    path = folder / CHECKPOINT_FILE
    if not path.exists():
        return None
    saved = torch.load(path, weights_only=False)
    if saved["state"]["step"] >= total_steps:
        return None
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in saved["trainable"].items():
            parameters[name].copy_(value)
    optimizer.load_state_dict(saved["optimizer"])
    schedule.load_state_dict(saved["schedule"])
    _set_rng_state(saved["rng"])
    raw = saved["state"]
    return TrainState(
        step=raw["step"],
        epoch=raw["epoch"],
        next_batch=raw["next_batch"],
        steps=[StepRecord(**record) for record in raw["steps"]],
        val_losses=[tuple(pair) for pair in raw["val_losses"]],
    )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_state(saved: dict) -> None:
    random.setstate(saved["python"])
    np.random.set_state(saved["numpy"])
    torch.set_rng_state(saved["torch"])
    if saved["cuda"]:
        torch.cuda.set_rng_state_all(saved["cuda"])
