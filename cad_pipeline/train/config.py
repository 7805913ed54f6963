"""One training configuration, read by the Dagster config, the CLI flags and the MLflow params alike."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from cad_pipeline.options import option


@dataclass(frozen=True)
class TrainConfig:
    base_model: str = option(
        "tiny",
        "'tiny' (a ~10M-parameter LLaVA built from configs, tokenizer trained on the answers), a local transformers "
        "image-text-to-text folder, or a local TinyLLaVA/OpenECAD checkpoint folder",
    )
    tinyllava_language_model: str = option("", "TinyLLaVA checkpoints: local folder of the language model its config names")
    tinyllava_vision_tower: str = option("", "TinyLLaVA checkpoints: local folder of the vision tower its config names")
    tinyllava_tokenizer: str = option("", "TinyLLaVA checkpoints: local tokenizer folder its config names")
    epochs: int = option(1, "passes over the training samples")
    max_steps: int = option(0, "stop after this many optimizer steps (0: no limit)")
    batch_size: int = option(4, "samples per micro-batch")
    gradient_accumulation: int = option(1, "micro-batches per optimizer step")
    learning_rate: float = option(2e-4, "peak learning rate of the cosine schedule")
    warmup_ratio: float = option(0.03, "share of the optimizer steps spent warming the learning rate up from 0")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0: off)")
    lora_rank: int = option(16, "LoRA rank")
    lora_alpha: int = option(32, "LoRA alpha (scale = alpha / rank)")
    lora_dropout: float = option(0.05, "dropout on the LoRA input")
    lora_vision: bool = option(False, "also put LoRA on the vision tower's linear layers (OpenECAD's recipe does)")
    max_length: int = option(2048, "samples longer than this many tokens (image tokens included) are left out, not cut")
    validation_samples: int = option(0, "validation samples whose loss is measured before training and after each epoch (0: all)")
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass: less memory, ~30% slower")
    packing: str = option("auto", "'auto' (pack samples into one row where FlashAttention is available), 'on' or 'off'")
    dtype: str = option("auto", "'auto' (bf16 on CUDA where supported, else fp32), 'bf16', 'fp16' or 'fp32'")
    device: str = option("auto", "'auto' (cuda, then mps, then cpu), or a torch device name")
    seed: int = option(0, "seed of the model's random parts, the LoRA initialisation, dropout and the sample order")
    checkpoint_every: int = option(50, "save a resumable checkpoint every this many optimizer steps (0: only at the end)")
    threads: int = option(0, "CPU threads torch uses (0: torch's default)")

    def to_json(self) -> dict:
        return asdict(self)



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
