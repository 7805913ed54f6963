"""Peak-memory planner for single-GPU training, LoRA or full: which (micro-batch, accumulation, length, checkpointing) fit.

The model is the one in the training reference (training.md, A.3 "Memory estimation (single GPU, LoRA)"):

    M ~= W + O + A + L + C

* W, weights = total_parameters * weight_bytes, frozen and trained alike.
* O, optimizer state = trainable_parameters * 16 bytes: fp32 master copy (4) + fp32 gradient (4) + Adam m and v (4 + 4).
  With LoRA the trainable parameters are the adapters and the connector; in full mode they are every parameter (the
  vision tower's unless it is frozen), so O is then the largest term.
* A, activations kept for backward. T = batch_size * max_length is the number of *padded* tokens in the micro-batch:
  the padded length, not the mean length, decides an out-of-memory error.
  * Without checkpointing, A = T * layers * k * hidden. k is Korthikanti et al. 2022 (arXiv 2205.05198) eq. 6, in
    bytes per hidden element and layer at 16-bit. The attention block and the two norms keep 15 (11 + 4). The gated
    (SwiGLU) MLP keeps 2 for its input and 8 * intermediate / hidden for gate, activated gate, up and product.
    So k = 17 + 8 * intermediate / hidden, which is the reference's 45 at intermediate = 3.5 * hidden.
    Qwen2, Llama, OpenELM and Gemma have a gated MLP. An ungated one such as Phi-2's (k = 34 at 4 * hidden) is
    overestimated at k = 49.
  * With full checkpointing, A = T * layers * hidden * activation_bytes (the layer inputs) + T * k * hidden (one
    layer recomputed during backward).
  * k is scaled by activation_bytes / 2, so fp32 activations cost twice the 16-bit bytes.
  * Attention is assumed to be flash or memory-efficient SDPA. Eager attention would add the reference's
    T * layers * 5 * heads * max_length bytes for the attention probabilities; this model leaves that term out.
    A padded micro-batch of several samples adds its attention mask, batch * max_length^2 elements, per layer
    (`padding_mask_bytes`).
  * When the vision tower is trained (LoRA on it, or full training), each image adds image_tokens * vision_layers * 34 * vision_hidden
    bytes at 16-bit. 34 is the GPT-style k: SigLIP and CLIP have an ungated GELU MLP of about 4 * hidden. The tower
    is counted without checkpointing, as in the reference's worked example. That is conservative if the trainer
    checkpoints the tower too. A frozen tower runs under no_grad and keeps nothing. Where the real model is at
    hand, what its vision path keeps per image is counted instead (`vision_bytes_per_image`): the formula misses a
    convolutional tower by a factor of six (the tiny model's keeps 7.8 MB per image, the formula says 1.25).
* L, logits for the answer positions only = T * answer_fraction * vocab * (activation_bytes + 4 + 4): the logits,
  their fp32 upcast for the loss, and the gradient. The training loop computes logits only where labels are kept.
* C, a fixed overhead: CUDA context, allocator slack and runtime. The reference gives 1-2 GB; the default is 1.5 GiB.

Gradient accumulation does not change peak memory. Each micro-batch frees its activations before the next one runs,
and the gradients it adds to already live in O. Accumulation only appears in the effective batch.

The analytic A + L is only accurate to a factor. One measured peak calibrates it: `calibrate` returns the factor that
makes the model reproduce that peak, and `estimate_memory` multiplies A + L by it.

`overhead` is a parameter of `calibrate` and `fitting_configurations` as well as of `estimate_memory`. A peak read
as CPU RSS or from torch.cuda.max_memory_allocated holds no CUDA context, so it is calibrated with overhead=0, and the
plan for a GPU budget then uses the default. For the same reason `fitting_configurations` takes the `answer_fraction`
that the calibration used.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import product

GIB = 2**30
DEFAULT_OVERHEAD_BYTES = 1.5 * GIB
DEFAULT_ANSWER_FRACTION = 0.5
OPTIMIZER_BYTES_PER_TRAINABLE = 16
VISION_BYTES_PER_ELEMENT_LAYER = 34
LOGIT_UPCAST_AND_GRAD_BYTES = 4 + 4
PLAN_MARGIN = 0.08
"""Share of the modelled total a calibrated plan adds for what varies between steps of the same size, of which the
few calibration steps see one draw: on this project's 2-core CPU the resident peak of one and the same batch
(8 samples of 1,209 tokens, checkpointed) read from 2.20 to 2.48 GiB over seven runs, and over 16 configurations
(1-8 samples, the median and the longest length, checkpointing on and off) the calibrated model without a
margin lay from 0.935 to 1.034 of the measured peaks in one run (`cad-pipeline bench memory`)."""
# A measured factor outside this range means the measurement is not what the model assumes (see `calibrate`).
CALIBRATION_RANGE = (0.5, 4.0)


@dataclass(frozen=True)
class ModelShape:
    """What the memory model needs to know about a model; filled from the real model by the caller.

    `heads` is not used by the estimate. It would only enter through the eager-attention term, which this model
    leaves out.
    """

    total_parameters: int
    trainable_parameters: int  # LoRA + connector, or every parameter in full mode
    layers: int  # language-model decoder layers
    hidden: int  # language-model hidden size
    intermediate: int  # MLP intermediate size
    heads: int
    vocab: int
    image_tokens: int  # tokens the vision tower works on per image (Qwen2-VL: its patches, before the merger)
    vision_layers: int
    vision_hidden: int
    vision_trained: bool  # vision tower trained (LoRA or full): its activations are kept
    weight_bytes: float  # bytes per frozen weight (4 fp32, 2 bf16/fp16)
    activation_bytes: float  # bytes per activation element (same rule)
    padding_mask_bytes: float = 0.0
    """Bytes per element of the (batch, 1, length, length) attention mask a padded micro-batch of several samples
    makes, which every decoder layer keeps for backward: the dtype's size where the model pads (measured on CPU:
    one float32 copy per layer, 89 MiB for 4 samples of 1,209 tokens in the tiny model's 4 layers); 0 where samples
    are packed, which needs no mask."""
    vision_bytes_per_image: float | None = None
    """What the vision path keeps for backward per image, counted on the real model (`plan.vision_saved_bytes`);
    None: the ViT formula from the layers, tokens and width."""


@dataclass(frozen=True)
class TrainShape:
    batch_size: int
    gradient_accumulation: int
    max_length: int  # tokens per sample INCLUDING image tokens, the padded length
    gradient_checkpointing: bool
    answer_fraction: float = DEFAULT_ANSWER_FRACTION  # share of positions whose logits are computed

    def __post_init__(self):
        if self.batch_size < 1 or self.gradient_accumulation < 1 or self.max_length < 1:
            raise ValueError(f"batch size, accumulation and max length must be positive: {self}")
        if not 0.0 < self.answer_fraction <= 1.0:
            raise ValueError(f"answer_fraction must be in (0, 1]: {self.answer_fraction}")

    @property
    def effective_batch(self) -> int:
        """Samples per optimizer step."""
        return self.batch_size * self.gradient_accumulation


@dataclass(frozen=True)
class MemoryEstimate:
    """Peak-memory terms in bytes."""

    weights: float
    optimizer: float
    activations: float
    logits: float
    overhead: float
    slack: float = 0.0
    margin: float = 0.0

    @property
    def total(self) -> float:
        return self.weights + self.optimizer + self.activations + self.logits + self.overhead + self.slack + self.margin

    def to_json(self) -> dict:
        """Whole bytes per term and the total, for asset metadata."""
        terms = {
            "weights": self.weights,
            "optimizer": self.optimizer,
            "activations": self.activations,
            "logits": self.logits,
            "overhead": self.overhead,
            "slack": self.slack,
            "margin": self.margin,
            "total": self.total,
        }
        return {name: round(value) for name, value in terms.items()}


def _decoder_layer_bytes_per_token(model: ModelShape) -> float:
    """k * hidden: what one decoder layer keeps per token for backward (Korthikanti eq. 6, gated MLP)."""
    k = 17 + 8 * model.intermediate / model.hidden
    return k * model.hidden * model.activation_bytes / 2


def _activation_bytes(model: ModelShape, train: TrainShape) -> float:
    tokens = train.batch_size * train.max_length
    one_layer = tokens * _decoder_layer_bytes_per_token(model)
    mask = train.batch_size * train.max_length**2 * model.padding_mask_bytes if train.batch_size > 1 else 0.0
    if train.gradient_checkpointing:  # the mask passed to the checkpointed layers, and the recomputed layer's copy
        language = tokens * model.layers * model.hidden * model.activation_bytes + one_layer + 2 * mask
    else:
        language = model.layers * (one_layer + mask)
    if model.vision_bytes_per_image is not None:
        return language + train.batch_size * model.vision_bytes_per_image
    if not model.vision_trained:
        return language
    per_image = (
        model.image_tokens
        * model.vision_layers
        * VISION_BYTES_PER_ELEMENT_LAYER
        * model.vision_hidden
        * model.activation_bytes
        / 2
    )
    return language + train.batch_size * per_image


def _logit_bytes(model: ModelShape, train: TrainShape) -> float:
    answer_positions = train.batch_size * train.max_length * train.answer_fraction
    return answer_positions * model.vocab * (model.activation_bytes + LOGIT_UPCAST_AND_GRAD_BYTES)


def estimate_memory(
    model: ModelShape,
    train: TrainShape,
    calibration: float = 1.0,
    overhead: float = DEFAULT_OVERHEAD_BYTES,
    slack: float = 0.0,
    margin: float = 0.0,
) -> MemoryEstimate:
    """Peak bytes of one training step.

    `calibration` multiplies the activation and logits terms, the only ones the analytic model is unsure of.
    `overhead` is a fixed bytes term (runtime, CUDA context); `slack` what measured steps held beyond every
    modelled term (see `fit_calibration`); `margin` a share of all of them added on top (see `PLAN_MARGIN`).
    """
    estimate = MemoryEstimate(
        weights=model.total_parameters * model.weight_bytes,
        optimizer=model.trainable_parameters * OPTIMIZER_BYTES_PER_TRAINABLE,
        activations=calibration * _activation_bytes(model, train),
        logits=calibration * _logit_bytes(model, train),
        overhead=overhead,
        slack=slack,
    )
    return replace(estimate, margin=margin * estimate.total)


def calibrate(
    model: ModelShape,
    measured: TrainShape,
    measured_peak_bytes: float,
    baseline_bytes: float = 0.0,
    *,
    overhead: float = DEFAULT_OVERHEAD_BYTES,
) -> float:
    """The activation factor with which `estimate_memory(model, measured, factor, overhead)` reproduces the peak.

    It solves measured_peak - baseline = weights + optimizer + factor * (activations + logits) + overhead.
    Pass both raw readings; the baseline is subtracted here, so callers cannot subtract it twice or forget it.
    The baseline is the memory in use before the model was loaded: process RSS on CPU, 0 for
    torch.cuda.max_memory_allocated after reset_peak_memory_stats.

    The factor is clamped to CALIBRATION_RANGE. Below 0.5 the measurement missed most activations: the peak was
    read before backward, the baseline was too large, or the overhead was counted twice. Above 4 it holds something
    the model does not have: eager attention probabilities, leaked tensors, or another configuration. Extrapolating
    such a factor to other batch sizes and lengths would be wrong by the same amount. A clamped factor no longer
    reproduces the peak; callers can detect that by comparing against the range.
    """
    fixed, scaled = _fixed_and_scaled(model, measured, overhead)
    return _clamped((measured_peak_bytes - baseline_bytes - fixed) / scaled)


def _fixed_and_scaled(model: ModelShape, train: TrainShape, overhead: float) -> tuple[float, float]:
    """(weights + optimizer + overhead, activations + logits): the terms calibration leaves alone and the ones it scales."""
    uncalibrated = estimate_memory(model, train, 1.0, overhead)
    return uncalibrated.weights + uncalibrated.optimizer + uncalibrated.overhead, uncalibrated.activations + uncalibrated.logits


def _clamped(factor: float) -> float:
    low, high = CALIBRATION_RANGE
    return min(max(factor, low), high)


MIN_SIZE_SPREAD = 1.2
"""The largest measured step must model at least this many times the smallest's activations for a slope to be fitted."""


def fit_calibration(
    model: ModelShape,
    steps: Sequence[tuple[TrainShape, float]],
    baseline_bytes: float = 0.0,
    *,
    overhead: float = DEFAULT_OVERHEAD_BYTES,
) -> tuple[float, float]:
    """(factor, slack bytes) with which `estimate_memory` is at or above the peak of every measured step.

    One step's peak cannot tell activations from what a step holds regardless of its size (allocator slack,
    autograd's bookkeeping, the optimizer's first allocation), and a factor fitted to it alone carries that
    constant into every larger batch (measured on CPU: 17% over at 8 samples from a 1-sample calibration). So the
    factor is the slope of the steps' peaks against their modelled activations and logits, and the slack is the
    largest peak the slope leaves unexplained: the plan lies on or above every measured step, and the slope
    alone decides how it grows. Steps too alike in size for a slope give the single-step factor for the
    largest peak and no slack.
    """
    sizes, held = [], []
    for train, peak in steps:
        fixed, scaled = _fixed_and_scaled(model, train, overhead)
        sizes.append(scaled)
        held.append(peak - baseline_bytes - fixed)
    if min(sizes) * MIN_SIZE_SPREAD > max(sizes):
        train, peak = max(steps, key=lambda step: step[1])
        return calibrate(model, train, peak, baseline_bytes, overhead=overhead), 0.0
    factor = _clamped(statistics.linear_regression(sizes, held).slope)
    return factor, max(0.0, max(bytes_held - factor * size for size, bytes_held in zip(sizes, held)))


def _usefulness_order(row: tuple[TrainShape, MemoryEstimate]):
    train, estimate = row
    return (
        train.gradient_checkpointing,
        -train.effective_batch,
        -train.max_length,
        -train.batch_size,
        estimate.total,
    )


def fitting_configurations(
    model: ModelShape,
    budget_bytes: float,
    calibration: float,
    *,
    batch_sizes=(1, 2, 4, 8, 16),
    accumulations=(1, 2, 4, 8),
    max_lengths=(1024, 2048, 3072, 4096),
    checkpointing=(False, True),
    answer_fraction: float = DEFAULT_ANSWER_FRACTION,
    overhead: float = DEFAULT_OVERHEAD_BYTES,
    slack: float = 0.0,
    margin: float = 0.0,
) -> list[tuple[TrainShape, MemoryEstimate]]:
    """Every configuration of the grid whose estimated total is at most the budget, most useful first.

    Rows are ordered by these keys, in turn:
    1. Checkpointing off before on. Checkpointing recomputes the forward pass, which costs up to +50 % step time
       for LoRA.
    2. Larger effective batch first.
    3. Longer max length first: fewer samples are truncated or dropped.
    4. Larger micro-batch first: fewer accumulation steps for the same effective batch keep the GPU busier.
    5. Less memory first: more headroom.
    """
    rows = []
    for checkpointed, max_length, batch_size, accumulation in product(
        checkpointing, max_lengths, batch_sizes, accumulations
    ):
        train = TrainShape(batch_size, accumulation, max_length, checkpointed, answer_fraction)
        estimate = estimate_memory(model, train, calibration, overhead, slack, margin)
        if estimate.total <= budget_bytes:
            rows.append((train, estimate))
    return sorted(rows, key=_usefulness_order)


MEMORY_TABLE_HEADER = (
    "| batch | accumulation | effective batch | max length | checkpointing "
    "| weights GiB | optimizer GiB | activations GiB | logits GiB | overhead GiB | total GiB | fits |"
)


def memory_table_markdown(rows: list[tuple[TrainShape, MemoryEstimate]], budget_bytes: float, limit: int = 20) -> str:
    """A markdown table of the first `limit` rows. A caption line gives the budget and how many rows are shown."""
    lines = [
        f"Budget {budget_bytes / GIB:.2f} GiB: {min(len(rows), limit)} of {len(rows)} configurations shown.",
        "",
        MEMORY_TABLE_HEADER,
        "|" + "---|" * (MEMORY_TABLE_HEADER.count("|") - 1),
    ]
    for train, estimate in rows[:limit]:
        terms = (
            estimate.weights,
            estimate.optimizer,
            estimate.activations,
            estimate.logits,
            estimate.overhead,
            estimate.total,
        )
        cells = [
            str(train.batch_size),
            str(train.gradient_accumulation),
            str(train.effective_batch),
            str(train.max_length),
            "on" if train.gradient_checkpointing else "off",
            *(f"{value / GIB:.2f}" for value in terms),
            "yes" if estimate.total <= budget_bytes else "no",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
