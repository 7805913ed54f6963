"""The training loop (LoRA or full): AdamW, cosine schedule with warmup, gradient accumulation, answer-only logits,
validation during training, the best weights kept on request, a wall-clock budget, resumable, and for a model that
must learn to read its pictures, an image-contrast term (`contrasted_backward`).

Micro-batches (image decoding, preprocessing, padding) are made on a worker thread a few batches ahead, so the
training thread waits for data only when the worker falls behind; each step records that wait.

Loss is the mean cross-entropy over answer tokens of each optimizer step (token-weighted across
the micro-batches it accumulates). The model's trunk runs once per micro-batch and the output head
only at positions whose next token is an answer token, so prompt and image positions cost no
logits. A checkpoint holds the trainable weights, optimizer, every random generator, the position
in the data and the time spent, so a run killed and resumed continues exactly where it stopped.
The learning rate is a function of the step (or of the share of the time budget spent), so it
needs no state of its own.
"""

from __future__ import annotations

import ctypes
import functools
import math
import random
import resource
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from itertools import islice
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cad_pipeline.train.config import TrainConfig, resolved_image_contrast, resolved_vision_learning_rate_scale
from cad_pipeline.train.data import Batch, Sample, length_grouped_batches, packed_batch, padded_batch
from cad_pipeline.train.image_use import model_of_image, with_other_models_images
from cad_pipeline.train.model import part_of

CHECKPOINT_FILE = "state.pt"
BEST_FILE = "best-{step}.pt"
"""The trainable weights of the lowest validation loss so far (keep_best), named by their step."""


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
    data_wait_seconds: float = 0.0
    """Of `seconds`, the time the step waited for its micro-batches to be made."""


@dataclass(frozen=True)
class ValidationRecord:
    step: int
    """Optimizer steps taken when it was measured."""
    epoch: float
    """Epochs done by then, fractional within an epoch (2.5: halfway through the third)."""
    loss: float


@dataclass
class TrainState:
    """Everything a resumed run needs besides the model and optimizer objects."""

    step: int = 0
    epoch: int = 0
    next_batch: int = 0
    steps: list[StepRecord] = field(default_factory=list)
    validations: list[ValidationRecord] = field(default_factory=list)
    """Before training, every `validation_every` steps, after each epoch and after the last step."""
    elapsed_seconds: float = 0.0
    """Time spent in the training loop, validations included, summed over resumes: what `max_minutes` budgets."""
    finished: bool = False

    @property
    def best(self) -> ValidationRecord | None:
        """The lowest validation loss (the earliest of equal ones); None without validation samples."""
        return min((record for record in self.validations if math.isfinite(record.loss)), key=lambda record: record.loss, default=None)


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


def answer_loss(model: torch.nn.Module, batch: Batch, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over answer tokens (a device tensor: reading it is the caller's sync), and their count;
    logits only where a target exists, at positions the batch knew on the host. A 16-bit `dtype` computes under
    autocast, so fp32 trained weights (`model.with_fp32_masters`) and 16-bit frozen ones work together."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    device_type = batch.answer_index.device.type
    with torch.autocast(device_type, dtype=dtype, enabled=dtype in (torch.float16, torch.bfloat16)):
        hidden = base.model(**batch.inputs, use_cache=False).last_hidden_state
        chosen = hidden.reshape(-1, hidden.shape[-1]).index_select(0, batch.answer_index)
        logits = base.get_output_embeddings()(chosen)
    return F.cross_entropy(logits.float(), batch.answer_targets, reduction="sum"), batch.answer_tokens


def make_batch(samples: list[Sample], processor, packed: bool, contrast_pool: list[Sample] | None = None) -> Batch:
    """The micro-batch; with a `contrast_pool`, also its answers shown other models' pictures (`with_other_models_images`)."""
    made = packed_batch(samples, processor) if packed else padded_batch(samples, processor)
    if contrast_pool:
        shown = with_other_models_images(samples, contrast_pool, seed=",".join(sample.id for sample in samples))
        made.contrast = make_batch(shown, processor, packed)
    return made


def contrast_pool(samples: list[Sample], config: TrainConfig) -> list[Sample] | None:
    """The samples whose pictures the image-contrast term shows in place of each sample's own; None when it is off."""
    if not resolved_image_contrast(config):
        return None
    if len({model_of_image(sample.image) for sample in samples}) < 2:
        raise ValueError("image_contrast needs training pictures of at least two models; these samples all show one (set image_contrast to 0)")
    return samples


LOOKAHEAD = 2
"""Micro-batches made ahead of the one training: enough to hide one slow batch, few enough to bound host memory."""


def prefetched_batches(
    micro_batches: Iterable[list[Sample]], processor, packed: bool, contrast_pool: list[Sample] | None = None
) -> Iterator[tuple[Batch, float]]:
    """Each micro-batch made on a worker thread `LOOKAHEAD` batches ahead of its use, with the seconds the caller
    waited for it. Close the iterator (or exhaust it) to stop the worker."""
    pending: deque = deque()
    chosen = iter(micro_batches)
    with ThreadPoolExecutor(1, thread_name_prefix="batches") as worker:
        pending.extend(worker.submit(make_batch, samples, processor, packed, contrast_pool) for samples in islice(chosen, LOOKAHEAD))
        while pending:
            started = time.perf_counter()
            batch = pending.popleft().result()
            waited = time.perf_counter() - started
            pending.extend(worker.submit(make_batch, samples, processor, packed, contrast_pool) for samples in islice(chosen, 1))
            yield batch, waited


def warmup_cosine_by_step(step: int, total_steps: int, warmup_ratio: float) -> float:
    """The share of the peak rate at `step`: a linear warmup over `warmup_ratio` of the steps, then a cosine to 0."""
    warmup = max(1, round(total_steps * warmup_ratio)) if warmup_ratio > 0 else 0
    if step < warmup:
        return (step + 1) / warmup
    return _cosine((step - warmup) / max(1, total_steps - warmup))


def warmup_cosine_by_time(share_spent: float, warmup_ratio: float) -> float:
    """The same shape over the share of the time budget spent, so the rate reaches 0 as the budget runs out."""
    if share_spent < warmup_ratio:
        return share_spent / warmup_ratio
    return _cosine((share_spent - warmup_ratio) / (1.0 - warmup_ratio)) if warmup_ratio < 1 else 0.0


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def learning_rate_at(config: TrainConfig, total_steps: int, state: TrainState) -> float:
    """The rate of the next optimizer step: over the planned steps, or over the time budget when `max_minutes` is set."""
    if config.max_minutes:
        return config.learning_rate * warmup_cosine_by_time(state.elapsed_seconds / (60.0 * config.max_minutes), config.warmup_ratio)
    return config.learning_rate * warmup_cosine_by_step(state.step, total_steps, config.warmup_ratio)


def make_optimizer(model, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters in two groups, the language model's and the vision path's (tower and
    connector), each with its `rate_scale` of the rate `optimizer_step` sets. The fused kernel where torch has one
    (CPU and CUDA): one pass over all parameters instead of a loop of tensor ops, 3.6x (LoRA) to 6.5x (full) faster
    an optimizer step for the tiny model on 2 CPU cores, with the same update."""
    trainable = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    vision_scale = resolved_vision_learning_rate_scale(config)
    groups = [
        {"params": [parameter for name, parameter in trainable if (part_of(name) == "language_model") == is_language], "rate_scale": scale}
        for is_language, scale in ((True, 1.0), (False, vision_scale))
    ]
    fused = all(parameter.device.type in ("cpu", "cuda") for _, parameter in trainable)
    return torch.optim.AdamW([group for group in groups if group["params"]], lr=config.learning_rate, weight_decay=config.weight_decay, fused=fused)


@torch.no_grad()
def validation_loss(model, samples: list[Sample], processor, config: TrainConfig, device, dtype, packed: bool) -> float:
    if not samples:
        return float("nan")
    model.eval()
    total, count = torch.zeros((), device=device), 0
    order = sorted(range(len(samples)), key=lambda i: samples[i].length)
    micro_batches = ([samples[i] for i in order[start : start + config.batch_size]] for start in range(0, len(order), config.batch_size))
    for made, _ in prefetched_batches(micro_batches, processor, packed):
        loss, tokens = answer_loss(model, made.to(device, dtype), dtype)
        total, count = total + loss, count + tokens
    model.train()
    return float(total) / count


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak: CUDA's allocator statistics, or on Linux the process's resident high-water mark (writing 5
    to /proc/self/clear_refs), so each step reports its own peak rather than the largest since the process began."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        pass  # not Linux: the peak stays the process's own


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, looked up once; None where the C library has none."""
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_heap() -> None:
    """Hand memory the C allocator kept from earlier, larger steps back to the system, so a resident-set peak read
    afterwards is the next steps' own. Costly enough to stay out of the training loop: measurements call it."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)  # elsewhere freed memory stays resident until reused


def peak_memory_bytes(device: torch.device) -> int:
    """The peak since `reset_peak_memory`: allocated CUDA memory, or the resident set's high-water mark (VmHWM)."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
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
    on_validation: Callable[[ValidationRecord], None] | None = None,
    stop_after: int | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> TrainState:
    """Train until the plan's last step or the end of the time budget as `clock` measures it (or `stop_after` steps, to
    simulate a kill), resuming from a checkpoint. With keep_best the model ends with the weights of the lowest
    validation loss."""
    plan = plan_steps(len(train_samples), config)
    optimizer = make_optimizer(model, config)
    state = _resume(checkpoint_dir, model, optimizer) or TrainState()
    clock_start = clock() - state.elapsed_seconds

    def record_time() -> None:
        """The time spent so far, for the budget, the schedule and the checkpoint."""
        state.elapsed_seconds = clock() - clock_start

    def within_budget() -> bool:
        record_time()
        return not config.max_minutes or state.elapsed_seconds < 60.0 * config.max_minutes

    def validate() -> None:
        best = state.best
        loss = validation_loss(model, val_samples, processor, config, device, dtype, packed)
        record = ValidationRecord(state.step, state.epoch + state.next_batch / plan.batches_per_epoch, loss)
        state.validations.append(record)
        if config.keep_best and math.isfinite(loss) and (best is None or loss < best.loss):
            _write_atomically(checkpoint_dir / BEST_FILE.format(step=record.step), {"trainable": trainable_state(model)})
        if on_validation:
            on_validation(record)

    if not state.validations:
        _seed_everything(config.seed)
        validate()
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    lengths = [sample.length for sample in train_samples]
    pool = contrast_pool(train_samples, config)
    while state.step < plan.total_steps and state.epoch < config.epochs and within_budget():
        batches = [[train_samples[i] for i in batch] for batch in length_grouped_batches(lengths, config.batch_size, config.seed, state.epoch)]
        stream = prefetched_batches(batches[state.next_batch :], processor, packed, pool)
        while state.next_batch < len(batches) and state.step < plan.total_steps and within_budget():
            group = batches[state.next_batch : state.next_batch + config.gradient_accumulation]
            rate = learning_rate_at(config, plan.total_steps, state)
            record = optimizer_step(model, optimizer, rate, islice(stream, len(group)), answer_targets(group), config, device, dtype, state)
            state.next_batch += len(group)
            state.step += 1
            state.steps.append(record)
            if on_step:
                on_step(record)
            if config.validation_every and state.step % config.validation_every == 0 and state.next_batch < len(batches):
                validate()
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                record_time()
                _save(checkpoint_dir, model, optimizer, state, config.keep_best)
            if stop_after is not None and state.step >= stop_after:
                stream.close()
                return state
        stream.close()
        if state.next_batch >= len(batches):
            state.epoch, state.next_batch = state.epoch + 1, 0
            validate()
    if state.validations[-1].step != state.step:
        validate()
    record_time()
    state.finished = True
    _save(checkpoint_dir, model, optimizer, state, config.keep_best)
    if config.keep_best and state.best:
        _load_trainable(model, torch.load(checkpoint_dir / BEST_FILE.format(step=state.best.step), weights_only=False)["trainable"])
    return state


def answer_targets(group: list[list[Sample]]) -> int:
    """The answer tokens an optimizer step over these micro-batches predicts: what its summed loss is divided by."""
    return sum(len(sample.answer_ids) for samples in group for sample in samples)


def optimizer_step(model, optimizer, learning_rate, micro_batches: Iterable[tuple[Batch, float]], targets: int, config, device, dtype, state) -> StepRecord:
    """`micro_batches` (made ahead, with the seconds waited for each) are pulled as the step needs them.

    A micro-batch that carries a contrast batch (its answers shown other models' pictures) adds the image-contrast
    term (`contrasted_backward`)."""
    started = time.perf_counter()
    contrast_weight, margin = resolved_image_contrast(config), config.image_contrast_margin
    reset_peak_memory(device)
    total_loss, real, padded, waited = torch.zeros((), device=device), 0, 0, 0.0
    for made, wait in micro_batches:
        waited += wait
        batch = made.to(device, dtype)
        if batch.contrast is None:
            loss, _ = answer_loss(model, batch, dtype)
            (loss / targets).backward()
        else:
            loss = contrasted_backward(model, batch, dtype, contrast_weight, margin, targets)
        total_loss += loss.detach()
        real, padded = real + batch.real_tokens, padded + batch.padded_tokens
    if config.max_grad_norm:
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], config.max_grad_norm)
    for parameter_group in optimizer.param_groups:
        parameter_group["lr"] = learning_rate * parameter_group["rate_scale"]
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    step_loss = float(total_loss) / targets  # the step's one sync: its time then includes all of its device work
    seconds = time.perf_counter() - started
    return StepRecord(
        step=state.step + 1,
        epoch=state.epoch,
        loss=step_loss,
        learning_rate=learning_rate,
        real_tokens_per_second=real / seconds,
        pad_fraction=1.0 - real / padded,
        peak_memory_bytes=peak_memory_bytes(device),
        seconds=seconds,
        data_wait_seconds=waited,
    )


def contrasted_backward(model, batch: Batch, dtype, weight: float, margin: float, targets: int) -> torch.Tensor:
    """The answer loss plus `weight` x max(0, margin x tokens - (wrong-picture loss - true-picture loss)), back-propagated.

    While the wrong pictures explain the answers less than `margin` nats per token worse than the true ones, the term
    pulls the true loss down and pushes the wrong one up: only a model that reads its picture can do both. Whether it
    is on is decided from a forward pass without gradients first, so the two passes that back-propagate run one after
    the other and the step needs no more memory than without the term (and no host sync: the decision stays a
    device tensor). About 2.3 times the work of a plain micro-batch."""
    with torch.no_grad():
        wrong, _ = answer_loss(model, batch.contrast, dtype)
    loss, tokens = answer_loss(model, batch, dtype)
    on = weight * (wrong - loss.detach() < margin * tokens).float()
    ((1 + on) * loss / targets).backward()
    wrong, _ = answer_loss(model, batch.contrast, dtype)
    (-on * wrong / targets).backward()
    return loss


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: parameter.detach().cpu().clone() for name, parameter in model.named_parameters() if parameter.requires_grad}


def _save(folder: Path, model, optimizer, state: TrainState, keep_best: bool) -> None:
    """The checkpoint, then, with keep_best, every best-weights file but the one of its best step removed: a newer
    one may be left from a run killed after it, and replaying from this checkpoint writes that again when due."""
    _write_atomically(
        folder / CHECKPOINT_FILE,
        {"trainable": trainable_state(model), "optimizer": optimizer.state_dict(), "rng": _rng_state(), "state": asdict(state)},
    )
    if keep_best and state.best:
        kept = folder / BEST_FILE.format(step=state.best.step)
        for path in folder.glob(BEST_FILE.format(step="*")):
            if path != kept:
                path.unlink()


def _write_atomically(path: Path, payload: dict) -> None:
    """Written beside the old file and swapped in by a rename, so a kill never leaves a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.partial")
    torch.save(payload, partial)
    partial.replace(path)


def _resume(folder: Path, model, optimizer) -> TrainState | None:
    """The state of an unfinished run; a finished one is not resumed, so materializing again trains again."""
    path = folder / CHECKPOINT_FILE
    if not path.exists():
        return None
    saved = torch.load(path, weights_only=False)
    if saved["state"]["finished"]:
        return None
    _load_trainable(model, saved["trainable"])
    optimizer.load_state_dict(saved["optimizer"])
    _set_rng_state(saved["rng"])
    raw = saved["state"]
    return TrainState(
        **{
            **raw,
            "steps": [StepRecord(**record) for record in raw["steps"]],
            "validations": [ValidationRecord(**record) for record in raw["validations"]],
        }
    )


def _load_trainable(model, weights: dict[str, torch.Tensor]) -> None:
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in weights.items():
            parameters[name].copy_(value)


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
