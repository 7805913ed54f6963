"""Model FLOPs of training and the share of the device's peak they reach (MFU), so a throughput figure says how much
of the hardware the loop uses, not only how it compares with another loop.

Counted as PaLM counts them (Chowdhery et al. 2022, appendix B), extended to frozen weights and answer-only logits;
padding is not useful work and is never counted:
* a language-model weight (the embedding lookup excluded) does 2 FLOPs per token forward, 2 backward for its input's
  gradient (the connector before it trains, so every layer passes gradients back) and 2 for its own gradient when it
  trains: 6 per token trained, 4 frozen under LoRA;
* attention's two matmuls, forward and backward: 12 * layers * heads * head_dim FLOPs per token and position of the
  sample (the causal half counted too, as PaLM does);
* the output head at answer positions only, the only ones whose logits the loop computes: 2 * hidden * vocab forward,
  as much for its input's gradient and again if it trains;
* the vision tower and the connector once per image, their forward FLOPs counted by torch's `FlopCounterMode` on one
  image; a part's backward costs twice its forward when it trains, and the connector's input gradient is needed only
  when the tower trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from cad_pipeline.train.data import Sample, image_inputs
from cad_pipeline.train.model import CONNECTOR_NAMES, part_of

FORMULA = (
    "per sample: (4 + 2*trained) * LM weights * tokens + 12 * layers * heads * head_dim * tokens^2 "
    "+ (4 + 2*trained) * hidden * vocab * answer tokens + images * (tower forward * (1 + 2*trained) "
    "+ connector forward * (1 + trained + tower trained))"
)

PEAK_TFLOPS_16BIT = {
    "H200": 989.4,
    "H100 PCIe": 756.0,
    "H100": 989.4,
    "GH200": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
    "L4": 121.0,
    "A10G": 70.0,
    "RTX 4090": 165.2,
}
"""Dense bf16/fp16 tensor-core peaks (no sparsity) from the vendors' data sheets, by a part of the device name; the
first name the device's contains wins, so the more specific ones come first."""


@dataclass(frozen=True)
class FlopModel:
    weight_flops_per_token: float
    attention_flops_per_token_position: float
    head_flops_per_answer_token: float
    image_flops: float

    def sample_flops(self, sample: Sample) -> float:
        return (
            self.weight_flops_per_token * sample.length
            + self.attention_flops_per_token_position * sample.length**2
            + self.head_flops_per_answer_token * len(sample.answer_ids)
            + self.image_flops
        )

    def flops(self, samples: list[Sample]) -> float:
        return sum(self.sample_flops(sample) for sample in samples)


def flop_model(model: torch.nn.Module, processor, sample: Sample, device: torch.device, dtype: torch.dtype) -> FlopModel:
    """The model's FLOPs as it is set up to train (LoRA or full), the image part counted on `sample`'s image."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    text = base.config.text_config
    head = base.get_output_embeddings()
    embeddings = {id(base.get_input_embeddings().weight), id(head.weight)}
    weights = 0.0
    for name, parameter in model.named_parameters():
        if part_of(name) != "language_model" or id(parameter) in embeddings:
            continue
        weights += (6 if parameter.requires_grad else 4) * parameter.numel()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    tower_forward, connector_forward = _image_forward_flops(base, processor, sample, device, dtype)
    trains = _trained_parts(model)
    image = tower_forward * (1 + 2 * trains["vision_tower"]) + connector_forward * (1 + trains["connector"] + trains["vision_tower"])
    return FlopModel(
        weight_flops_per_token=weights,
        attention_flops_per_token_position=12.0 * text.num_hidden_layers * text.num_attention_heads * head_dim,
        head_flops_per_answer_token=(4 + 2 * head.weight.requires_grad) * head.weight.shape[0] * head.weight.shape[1],
        image_flops=image,
    )


def _trained_parts(model: torch.nn.Module) -> dict[str, bool]:
    trains = {"vision_tower": False, "connector": False, "language_model": False}
    for name, parameter in model.named_parameters():
        trains[part_of(name)] |= parameter.requires_grad
    return trains


def _image_forward_flops(base, processor, sample: Sample, device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """(tower, connector) forward FLOPs for one image: the whole image path counted, the connector's share being its
    linear layers' 2 FLOPs per weight and output token."""
    pixels = {
        name: value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
        for name, value in image_inputs(processor, [sample.image]).items()
    }
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        features = base.get_image_features(**pixels)
    features = features.pooler_output if hasattr(features, "pooler_output") else features
    tokens = sum(feature.reshape(-1, feature.shape[-1]).shape[0] for feature in features)
    connector = sum(
        module.weight.numel()
        for name, module in base.named_modules()
        if isinstance(module, torch.nn.Linear) and any(part in name.split(".") for part in CONNECTOR_NAMES)
    )
    connector_flops = 2.0 * connector * tokens
    return float(counter.get_total_flops()) - connector_flops, connector_flops


def peak_flops(device: torch.device, dtype: torch.dtype, override_tflops: float = 0.0) -> float | None:
    """The device's peak FLOP/s for the training dtype, or None where it is unknown (CPUs, fp32, devices not in the
    table): pass `override_tflops` then."""
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for part, tflops in PEAK_TFLOPS_16BIT.items() if part in name), None)
