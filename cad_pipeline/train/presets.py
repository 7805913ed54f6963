"""The shapes of the real models users fine-tune, built from configs with random weights: plans and benchmarks of
those models on any machine, without downloading them.

A preset has the real model's decoder and vision tower sizes, image tokens, context and vocabulary size; its
tokenizer is a byte-level BPE trained on the partition's texts with digits split one by one (as the Llama, Gemma,
Phi and Qwen tokenizers split them), padded with unused entries to the real vocabulary size, so the logits cost
what the real model's cost and answers take about as many tokens. Its weights are random, so it learns nothing
worth keeping: every figure made with one is labelled `preset:NAME (random weights)`, and training one is refused
unless asked for explicitly.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GemmaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PhiConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen3Config,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
)
from transformers.models.qwen2_vl.configuration_qwen2_vl import Qwen2VLTextConfig
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from cad_pipeline.train.grid_processor import GridProcessor
from cad_pipeline.train.tiny import CHAT_TEMPLATE, IMAGE_TOKEN, SPECIAL_TOKENS

PREFIX = "preset:"
TRAINED_VOCABULARY = 8192
"""Entries the BPE learns from the texts before the padding to the real size: enough for code, quick to train."""

SIGLIP_SO400M = {
    "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
    "image_size": 384, "patch_size": 14,
}  # fmt: skip
"""google/siglip-so400m-patch14-384, the tower of OpenECAD's SigLIP models: 729 patch tokens."""

QWEN2_VL_TOWER = {
    "depth": 32, "embed_dim": 1280, "num_heads": 16, "mlp_ratio": 4, "hidden_size": 1536, "patch_size": 14,
    "spatial_merge_size": 2, "temporal_patch_size": 2,
}  # fmt: skip
"""Qwen2-VL-2B's vision tower (675M): 14 px patches at the image's own resolution, merged 2 x 2 into one token each
by its connector (`merger`); `hidden_size` is the merger's output, the language model's width."""
QWEN2_VL_PIXELS = {"min_pixels": 56 * 56, "max_pixels": 14 * 14 * 4 * 16384}
"""Qwen2-VL-2B-Instruct's preprocessor bounds: a 512 x 512 render is resized to 504 x 504, 1,296 patches, 324 tokens."""
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"


@dataclass(frozen=True)
class Preset:
    name: str
    mimics: str
    text_config: type
    text: dict
    context: int
    """The context the real model trains with (OpenECAD's `model_max_length`, or the model's own)."""
    vision: dict
    vision_feature_layer: int = -2
    family: str = "llava"
    """'llava' (SigLIP tower, MLP connector, fixed image tokens) or 'qwen2_vl' (dynamic resolution, M-RoPE)."""


PRESETS = {
    preset.name: preset
    for preset in (
        Preset(
            "openecad-0.89b",
            "OpenECAD/TinyLLaVA-OpenELM-450M-SigLIP-0.89B: OpenELM-450M as a Qwen2-style decoder (20 layers, width 1536; "
            "OpenELM's per-layer heads and MLP widths averaged: 24 heads of 64, 6 KV heads, MLP 3456), Llama-2 vocabulary",
            Qwen2Config,
            {"vocab_size": 32000, "hidden_size": 1536, "intermediate_size": 3456, "num_hidden_layers": 20,
             "num_attention_heads": 24, "num_key_value_heads": 6, "tie_word_embeddings": True},
            2048,
            SIGLIP_SO400M,
        ),  # fmt: skip
        Preset(
            "tinyllava-gemma-siglip-2.4b",
            "TinyLLaVA-Gemma-SigLIP-2.4B (OpenECAD 2.4B): gemma-2b (18 layers, width 2048, MLP 16384, 8 heads of 256, 1 KV head)",
            GemmaConfig,
            {"vocab_size": 256000, "hidden_size": 2048, "intermediate_size": 16384, "num_hidden_layers": 18,
             "num_attention_heads": 8, "num_key_value_heads": 1, "head_dim": 256, "tie_word_embeddings": True},
            2048,
            SIGLIP_SO400M,
        ),  # fmt: skip
        Preset(
            "tinyllava-phi2-siglip-3.1b",
            "TinyLLaVA-Phi-2-SigLIP-3.1B (OpenECAD 3.1B): phi-2 (32 layers, width 2560, MLP 10240, 32 heads; its lm_head "
            "bias left out, 51,200 parameters)",
            PhiConfig,
            {"vocab_size": 51200, "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 32,
             "num_attention_heads": 32, "num_key_value_heads": 32, "partial_rotary_factor": 0.4, "tie_word_embeddings": False},
            3072,
            SIGLIP_SO400M,
        ),  # fmt: skip
        Preset(
            "qwen2-vl-2b",
            "Qwen2-VL-2B: Qwen2-1.5B's decoder (28 layers, width 1536, MLP 8960, 12 heads, 2 KV heads, M-RoPE) and its own "
            "675M vision tower at dynamic resolution (324 image tokens for a 512 px render)",
            Qwen2VLTextConfig,
            {"vocab_size": 151936, "hidden_size": 1536, "intermediate_size": 8960, "num_hidden_layers": 28,
             "num_attention_heads": 12, "num_key_value_heads": 2, "tie_word_embeddings": True,
             "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]}},
            32768,
            QWEN2_VL_TOWER,
            family="qwen2_vl",
        ),  # fmt: skip
        Preset(
            "decoder-8b",
            "an 8B decoder for planning: Qwen3-8B's shape (36 layers, width 4096, MLP 12288, 32 heads, 8 KV heads) with the "
            "SigLIP-so400m tower",
            Qwen3Config,
            {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
             "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "tie_word_embeddings": False},
            32768,
            SIGLIP_SO400M,
        ),  # fmt: skip
    )
}


def preset_name(base_model: str) -> str | None:
    """The preset a `base_model` setting names, or None for 'tiny' and folders."""
    if not base_model.startswith(PREFIX):
        return None
    name = base_model[len(PREFIX) :]
    if name not in PRESETS:
        raise ValueError(f"unknown preset {base_model!r}: the presets are {', '.join(PREFIX + known for known in PRESETS)}")
    return name


def label(name: str) -> str:
    return f"{PREFIX}{name} (random weights, built from configs)"


def described(base_model: str) -> str:
    """A `base_model` setting as figures show it: a preset with its label, anything else as given."""
    name = preset_name(base_model)
    return label(name) if name else base_model


def preset_tokenizer(texts: Iterable[str], vocab_size: int, extra_special: tuple[str, ...] = ()) -> PreTrainedTokenizerFast:
    """BPE on the texts with single digits, then unused entries up to `vocab_size` (never produced, since no merge
    leads to them), so the embedding and the output head have the real model's size."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TRAINED_VOCABULARY, special_tokens=[*SPECIAL_TOKENS, *extra_special], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer)
    saved = json.loads(tokenizer.to_str())
    vocab = saved["model"]["vocab"]
    if len(vocab) > vocab_size:
        raise ValueError(f"the texts need {len(vocab)} tokens, more than the preset's vocabulary of {vocab_size}")
    vocab.update({f"<unused_{index}>": index for index in range(len(vocab), vocab_size)})
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(json.dumps(saved)),
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        chat_template=CHAT_TEMPLATE,
    )


def build_preset(name: str, texts: Iterable[str], dtype: torch.dtype, device: torch.device | str = "cpu", seed: int = 0):
    """The model (random weights, or none at all on the `meta` device: shapes only) and its processor."""
    preset = PRESETS[name]
    model_class, config, processor = (_qwen2_vl if preset.family == "qwen2_vl" else _llava)(preset, texts)
    torch.manual_seed(seed)
    with torch.device(device):
        model = model_class(config).to(dtype)
    model.generation_config.pad_token_id = processor.tokenizer.pad_token_id
    model.generation_config.eos_token_id = processor.tokenizer.eos_token_id
    return model, processor


def _text_config(preset: Preset, tokenizer: PreTrainedTokenizerFast):
    return preset.text_config(
        **preset.text,
        max_position_embeddings=preset.context,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        use_cache=False,
    )


def _llava(preset: Preset, texts: Iterable[str]):
    tokenizer = preset_tokenizer(texts, preset.text["vocab_size"])
    vision = SiglipVisionConfig(**preset.vision)
    config = LlavaConfig(
        vision_config=vision,
        text_config=_text_config(preset, tokenizer),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="full",
        vision_feature_layer=preset.vision_feature_layer,
        image_seq_length=(vision.image_size // vision.patch_size) ** 2,
        projector_hidden_act="gelu",
        tie_word_embeddings=preset.text["tie_word_embeddings"],
    )
    processor = LlavaProcessor(
        image_processor=SiglipImageProcessorPil(size={"height": vision.image_size, "width": vision.image_size}),
        tokenizer=tokenizer,
        patch_size=vision.patch_size,
        vision_feature_select_strategy="full",
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=0,
        chat_template=CHAT_TEMPLATE,
    )
    return LlavaForConditionalGeneration, config, processor


def _qwen2_vl(preset: Preset, texts: Iterable[str]):
    """The image placeholder between vision start and end markers, as Qwen2-VL's chat template puts it."""
    tokenizer = preset_tokenizer(texts, preset.text["vocab_size"], (VISION_START, VISION_END))
    token = tokenizer.convert_tokens_to_ids
    config = Qwen2VLConfig(
        text_config=_text_config(preset, tokenizer),
        vision_config=preset.vision,
        image_token_id=token(IMAGE_TOKEN),
        video_token_id=token("<pad>"),
        vision_start_token_id=token(VISION_START),
        vision_end_token_id=token(VISION_END),
        tie_word_embeddings=preset.text["tie_word_embeddings"],
    )
    image_processor = Qwen2VLImageProcessorPil(
        patch_size=preset.vision["patch_size"], merge_size=preset.vision["spatial_merge_size"],
        temporal_patch_size=preset.vision["temporal_patch_size"], **QWEN2_VL_PIXELS,
    )  # fmt: skip
    template = CHAT_TEMPLATE.replace(IMAGE_TOKEN, VISION_START + IMAGE_TOKEN + VISION_END)
    return Qwen2VLForConditionalGeneration, config, GridProcessor(image_processor, tokenizer, IMAGE_TOKEN, template)
