"""One training configuration, read by the Dagster config, the CLI flags and the MLflow params alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cad_pipeline.options import check_settings, option


@dataclass(frozen=True)
class TrainConfig:
    base_model: str = option(
        "tiny",
        "'tiny' (a ~7M-parameter LLaVA built from configs, tokenizer trained on the answers), a local transformers "
        "image-text-to-text folder, a local TinyLLaVA/OpenECAD checkpoint folder, or 'preset:NAME', a real model's shape "
        "with random weights for plans and benchmarks (openecad-0.89b, tinyllava-gemma-siglip-2.4b, "
        "tinyllava-phi2-siglip-3.1b, qwen2-vl-2b, decoder-8b)",
    )
    train_preset: bool = option(False, "train a 'preset:NAME' base model anyway: its weights are random, so only to measure the run")
    tinyllava_language_model: str = option("", "TinyLLaVA checkpoints: local folder of the language model its config names")
    tinyllava_vision_tower: str = option("", "TinyLLaVA checkpoints: local folder of the vision tower its config names")
    tinyllava_tokenizer: str = option("", "TinyLLaVA checkpoints: local tokenizer folder its config names")
    epochs: int = option(1, "passes over the training samples", minimum=1)
    max_steps: int = option(0, "stop after this many optimizer steps (0: no limit)", minimum=0)
    batch_size: int = option(4, "samples per micro-batch", minimum=1, maximum=65536)
    gradient_accumulation: int = option(1, "micro-batches per optimizer step", minimum=1, maximum=65536)
    auto_batch_size: bool = option(
        False,
        "train with the largest micro-batch the memory planner, calibrated by a few steps at one sample, says fits "
        "memory_budget_gib; it divides batch_size x gradient_accumulation, the effective batch, and accumulation makes up the rest",
    )
    memory_budget_gib: float = option(0.0, "memory the planner (the plan's table, auto_batch_size) plans for (0: the device's memory)", minimum=0.0)
    learning_rate: float = option(2e-4, "peak learning rate of the cosine schedule", minimum=0.0, maximum=10.0)
    warmup_ratio: float = option(0.03, "share of the optimizer steps spent warming the learning rate up from 0", minimum=0.0, maximum=1.0)
    weight_decay: float = option(0.0, "AdamW weight decay", minimum=0.0, maximum=10.0)
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: off)", minimum=0.0)
    train_mode: str = option(
        "auto",
        "'auto' (full for 'tiny', whose random weights LoRA cannot teach; lora otherwise), 'lora' (adapters on the "
        "language model, connector in full) or 'full' (language model, connector and vision tower)",
        choices=("auto", "lora", "full"),
    )
    freeze_vision_tower: bool = option(False, "full mode: keep the vision tower's weights as they are")
    vision_learning_rate_scale: float = option(
        0.0,
        "learning rate of the vision tower and connector as a share of learning_rate (0: 0.1 for 'tiny', 1 otherwise): "
        "trained from scratch at the decoder's rate, the vision path collapses into one constant the decoder ignores",
        minimum=0.0,
        maximum=10.0,
    )
    image_contrast: float = option(
        -1.0,
        "weight of the image-contrast term (-1: 1 for 'tiny', 0 otherwise; 0: off): each micro-batch is also shown "
        "other models' pictures, and their answer loss is pushed up until it exceeds the true pictures' by "
        "image_contrast_margin; it doubles the cost of a step",
        minimum=-1.0,
        maximum=100.0,
    )
    image_contrast_margin: float = option(0.5, "nats per answer token by which other models' pictures must explain an answer worse than its own", minimum=0.0, maximum=100.0)
    lora_rank: int = option(16, "LoRA rank", minimum=1, maximum=4096)
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / rank)", minimum=1, maximum=65536)
    lora_dropout: float = option(0.05, "dropout on the LoRA input", minimum=0.0, maximum=0.9)
    lora_vision: bool = option(False, "also put LoRA on the vision tower's linear layers (OpenECAD's recipe does)")
    max_length: int = option(
        0,
        "samples longer than this many tokens (image tokens included) are left out, not cut (0: the base model's context)",
        minimum=0,
        maximum=2**20,
    )
    validation_samples: int = option(0, "validation samples whose loss is measured before training, after each epoch and every validation_every steps (0: all)", minimum=0)
    validation_every: int = option(0, "also measure the validation loss every this many optimizer steps (0: only before training and after each epoch)", minimum=0)
    keep_best: bool = option(False, "save the weights of the lowest validation loss instead of the last ones")
    max_minutes: float = option(
        0.0,
        "wall-clock budget of the training loop, validations included (0: none): the learning-rate schedule runs over the "
        "budget instead of the steps and training stops when it is spent; the step under way and a last validation finish after it",
        minimum=0.0,
    )
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, about a third slower")
    compile: bool = option(False, "compile each decoder and vision-encoder layer with torch.compile (the first steps pay the compile time)")
    packing: str = option("auto", "'auto' (pack samples into one row where FlashAttention is available), 'on' or 'off'", choices=("auto", "on", "off"))
    dtype: str = option("auto", "'auto' (bf16 on CUDA where supported, else fp32), 'bf16', 'fp16' or 'fp32'", choices=("auto", "bf16", "fp16", "fp32"))
    device: str = option("auto", "'auto' (cuda, then mps, then cpu), or a torch device name")
    seed: int = option(0, "seed of the model's random parts, the LoRA initialisation, dropout and the sample order", minimum=0)
    checkpoint_every: int = option(50, "save a resumable checkpoint every this many optimizer steps (0: only at the end)", minimum=0)
    threads: int = option(0, "CPU threads torch uses (0: torch's default)", minimum=0, maximum=4096)

    def __post_init__(self):
        check_settings(self)

    def to_json(self) -> dict:
        return asdict(self)


def resolved_train_mode(config: TrainConfig) -> str:
    """'lora' or 'full'. LoRA learns a small change of weights that already work; on the tiny model's random
    weights there is nothing to change, so 'auto' trains it in full."""
    if config.train_mode == "auto":
        return "full" if config.base_model == "tiny" else "lora"
    return config.train_mode


def resolved_vision_learning_rate_scale(config: TrainConfig) -> float:
    """The vision path's share of the learning rate. A random vision tower and connector trained as fast as the
    decoder turn, within 50 steps, every picture into nearly the same large vector, which the decoder then uses as an
    attention sink; at a tenth of the rate they keep telling pictures apart while the decoder learns to read them."""
    if config.vision_learning_rate_scale:
        return config.vision_learning_rate_scale
    return 0.1 if config.base_model == "tiny" else 1.0


def resolved_image_contrast(config: TrainConfig) -> float:
    """The image-contrast term's weight. Trained from scratch on answers alone, a model learns the code's most typical
    program long before it reads a picture: drawings that differ in a few strokes barely move its loss, and no gradient
    tells it to look. The term gives it one; a pretrained vision-language model already reads, and pays double
    for nothing."""
    if config.image_contrast >= 0:
        return config.image_contrast
    return 1.0 if config.base_model == "tiny" else 0.0


def resolve_device(name: str):
    import torch  # here, so that reading a configuration (CLI flags) does not load torch

    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(name: str, device):
    import torch

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    if name not in dtypes:
        raise ValueError(f"dtype must be one of auto, {', '.join(dtypes)}; got {name!r}")
    return dtypes[name]
