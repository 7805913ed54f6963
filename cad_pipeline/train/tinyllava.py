"""TinyLLaVA Factory checkpoints (OpenECAD's released models) as native transformers LLaVA models.

OpenECAD publishes TinyLLaVA Factory checkpoints: a config.json, weights and a tokenizer, but no modeling
code, and TinyLLaVA's own constructor downloads the tokenizer and image processor by hub name. The parts
are the ones `LlavaForConditionalGeneration` is made of, so we rebuild the checkpoint as that class from
local folders only, and the rest of the project treats it like any other image-text-to-text model:

* connector `mlp2x_gelu` (Linear, GELU, Linear) is `LlavaMultiModalProjector`;
* TinyLLaVA takes the vision tower's `hidden_states[vision_feature_layer]` and, with strategy `patch`, drops
  the first token even for SigLIP, which has no CLS token: LLaVA's strategy `default` does the same, so a
  SigLIP-so400m image gives 27*27 - 1 = 728 image tokens;
* TinyLLaVA splices the image features in where the prompt has the id -200; the native model wants an
  `<image>` token repeated once per feature, which the returned `LlavaProcessor` writes.

Differences callers must budget for: TinyLLaVA truncates each sequence to `tokenizer_model_max_length` after
inserting the image features, the native model does not truncate; and with `image_aspect_ratio: pad` TinyLLaVA
pads images to a square of the mean colour first, the processor resizes them instead (OpenECAD trains with
`square`, so its images are only resized).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import (
    CONFIG_MAPPING,
    AutoTokenizer,
    CLIPImageProcessorPil,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedConfig,
    PreTrainedTokenizerBase,
    SiglipImageProcessorPil,
)

TINYLLAVA_PROMPT = "{system} USER: <image>\n{question} ASSISTANT:"
# TinyLLaVA's `llama` conversation template (tinyllava/data/template/llama_template.py), which OpenECAD trains
# with; its `gemma` and `phi` templates differ only in the end-of-answer token. It trains on
# `TINYLLAVA_PROMPT + " " + answer + eos_token` and generates from the prompt as it is, ending in "ASSISTANT:".

_OPENECAD_SYSTEM = (
    "A conversation between a curious user and an artificial intelligence assistant. The user wants to create a 3D "
    "CAD project but only has a picture of the desired 3D geometry. The assistant, an expert mechanical part "
    "designer, provides detailed answers to the user's questions. The CAD project should be represented using "
    "OpenECAD style code in Python 3. Additionally, note that Curve (including Arc, Line, Circle) and Loop will "
    "automatically append to the Curves and Loops lists, respectively."
)
"""The system prompt OpenECAD's patch puts into TinyLLaVA's templates (OpenECAD_TinyLLaVA.patch)."""

_CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}"
    "{% set system = messages[0]['content'] if messages[0]['content'] is string else messages[0]['content'][0]['text'] %}"
    '{% else %}{% set system = "' + _OPENECAD_SYSTEM + '" %}{% endif %}'
    "{{ system }} "
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: "
    "{% for part in message['content'] %}{{ part['text'] }}{% endfor %}{{ eos_token }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
"""TINYLLAVA_PROMPT as the processor's chat template, turn by turn as TinyLLaVA joins them (`USER: ... ` then
`ASSISTANT: ...<eos>`), with OpenECAD's system prompt unless the conversation starts with a system message."""

_IMAGE_TOKEN = "<image>"

_LLAVA_EXACT_LANGUAGE_MODELS = ("llama", "qwen2", "gemma", "stablelm")
"""The LLM families TinyLLaVA Factory registers (tinyllava/model/llm/) whose causal-LM head is a bias-free linear
layer applied as is, so LLaVA's own `lm_head` computes the same logits."""

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")

_TRAINING_OUTPUT_FOLDERS = {
    "language_model": "language_model.",
    "vision_tower": "vision_tower._vision_tower.",
    "connector": "connector.",
}
"""TinyLLaVA's training output saves each part's state dict in its own folder; the prefix makes its keys the
whole model's, as in the released single-file checkpoints."""

_NATIVE_PREFIXES = (
    ("language_model.model.", "model.language_model."),
    ("language_model.lm_head.", "lm_head."),
    # transformers 5 dropped the `vision_model.` level of SigLIP and CLIP vision models.
    ("vision_tower._vision_tower.vision_model.", "model.vision_tower."),
    ("connector._connector.0.", "model.multi_modal_projector.linear_1."),
    ("connector._connector.2.", "model.multi_modal_projector.linear_2."),
)

_TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")


@dataclass(frozen=True)
class TinyLlavaParts:
    """Where each part of a TinyLLaVA checkpoint lives locally.

    The part folders stand in for the hub ids config.json names; they are read only for what the checkpoint
    itself lacks (a config.json without `text_config`, a checkpoint without tokenizer files, an image processor
    other than the one built from the vision config). None: take the part from the checkpoint.
    """

    checkpoint: Path
    language_model: Path | None = None
    vision_tower: Path | None = None
    tokenizer: Path | None = None


def is_tinyllava_checkpoint(path: Path) -> bool:
    """Whether `path` holds a TinyLLaVA Factory checkpoint, which `from_pretrained` cannot load."""
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and config.get("model_type") == "tinyllava"


def load_tinyllava(
    parts: TinyLlavaParts, dtype: torch.dtype = torch.float32
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """The checkpoint as a native LLaVA model and its processor, read from local files only."""
    checkpoint = Path(parts.checkpoint)
    config_file = checkpoint / "config.json"
    if not is_tinyllava_checkpoint(checkpoint):
        raise ValueError(
            f"{config_file} is missing or not a TinyLLaVA config (model_type 'tinyllava'); other models load with from_pretrained"
        )
    config = json.loads(config_file.read_text())
    if config.get("connector_type") != "mlp2x_gelu":
        raise ValueError(
            f"{config_file}: connector_type {config.get('connector_type')!r} has no LLaVA equivalent; "
            "LlavaForConditionalGeneration's projector is Linear-GELU-Linear, TinyLLaVA's 'mlp2x_gelu', the only one mapped"
        )
    if config.get("vision_feature_select_strategy", "patch") != "patch":
        raise ValueError(
            f"{config_file}: vision_feature_select_strategy {config['vision_feature_select_strategy']!r} is not supported; "
            "only TinyLLaVA's default 'patch' (drop the first token) is mapped"
        )
    text_config = _text_config(config, parts)
    vision_config = _vision_config(config, parts)
    tokenizer = _tokenizer(config, parts)
    is_clip = vision_config.model_type == "clip_vision_model"
    tower_tokens = (vision_config.image_size // vision_config.patch_size) ** 2 + (1 if is_clip else 0)
    llava_config = LlavaConfig(
        text_config=text_config,
        vision_config=vision_config,
        image_token_id=tokenizer.convert_tokens_to_ids(_IMAGE_TOKEN),
        image_seq_length=tower_tokens - 1,
        projector_hidden_act="gelu",
        vision_feature_layer=config.get("vision_feature_layer", -2),
        vision_feature_select_strategy="default",
        multimodal_projector_bias=True,
    )
    weights = _native_weights(_tinyllava_weights(checkpoint), checkpoint)
    model, loading = LlavaForConditionalGeneration.from_pretrained(
        None, config=llava_config, state_dict=weights, dtype=dtype, local_files_only=True, output_loading_info=True
    )
    problems = {kind: sorted(map(str, keys))[:5] for kind, keys in loading.items() if keys}
    if problems:
        raise ValueError(f"{checkpoint}: the weights do not fit the model its config.json describes ({problems}, up to 5 of each)")
    if len(tokenizer) > text_config.vocab_size:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    processor = LlavaProcessor(
        image_processor=_image_processor(config, vision_config, parts),
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy="default",
        image_token=_IMAGE_TOKEN,
        num_additional_image_tokens=1 if is_clip else 0,
        chat_template=_CHAT_TEMPLATE,
    )
    return model, processor


def _text_config(config: dict, parts: TinyLlavaParts) -> PreTrainedConfig:
    """The LLM config from config.json's `text_config`, which TinyLLaVA itself lets override the hub's config."""
    checkpoint = Path(parts.checkpoint)
    if config.get("text_config"):
        text, source = config["text_config"], checkpoint / "config.json"
    else:
        folder = _part_folder(
            [parts.language_model, _local(config.get("llm_model_name_or_path")), checkpoint / "language_model"],
            "config.json",
            f"{checkpoint / 'config.json'} has no text_config and names the language model "
            f"{config.get('llm_model_name_or_path')!r} (llm_model_name_or_path)",
            "language_model",
        )
        text, source = json.loads((folder / "config.json").read_text()), folder / "config.json"
    model_type = text.get("model_type")
    if model_type == "openelm":
        raise ValueError(
            f"{source}: the language model is OpenELM, which transformers has no native class for, so the checkpoint "
            "cannot become a LlavaForConditionalGeneration. Convert its language model to an architecture transformers "
            f"supports, or use a TinyLLaVA/OpenECAD checkpoint built on one ({', '.join(_LLAVA_EXACT_LANGUAGE_MODELS)}; "
            "OpenECAD's 2.4B model uses gemma)"
        )
    if model_type == "phi":
        raise ValueError(
            f"{source}: the language model is Phi, whose lm_head has a bias; LlavaForConditionalGeneration's lm_head has "
            "none, so every logit would be off. Use a TinyLLaVA/OpenECAD checkpoint built on "
            f"{', '.join(_LLAVA_EXACT_LANGUAGE_MODELS)} (OpenECAD's 2.4B model uses gemma)"
        )
    if model_type not in _LLAVA_EXACT_LANGUAGE_MODELS:
        raise ValueError(
            f"{source}: language model type {model_type!r} is not one this loader maps; the TinyLLaVA language models "
            f"LlavaForConditionalGeneration reproduces exactly are {', '.join(_LLAVA_EXACT_LANGUAGE_MODELS)}"
        )
    return CONFIG_MAPPING[model_type].from_dict(text)


def _vision_config(config: dict, parts: TinyLlavaParts) -> PreTrainedConfig:
    checkpoint = Path(parts.checkpoint)
    if config.get("vision_config"):
        vision, source = config["vision_config"], checkpoint / "config.json"
    else:
        folder = _part_folder(
            [parts.vision_tower, _local(_vision_name(config)), checkpoint / "vision_tower"],
            "config.json",
            f"{checkpoint / 'config.json'} has no vision_config and names the vision tower {_vision_name(config)!r} "
            "(vision_model_name_or_path)",
            "vision_tower",
        )
        vision, source = json.loads((folder / "config.json").read_text()), folder / "config.json"
    if vision.get("model_type") in ("siglip", "clip"):
        # A whole SigLIP/CLIP model folder: TinyLLaVA uses its vision half.
        vision = {"model_type": f"{vision['model_type']}_vision_model", **vision["vision_config"]}
    if vision.get("model_type") not in ("siglip_vision_model", "clip_vision_model"):
        raise ValueError(
            f"{source}: vision tower type {vision.get('model_type')!r} is not supported; only SigLIP and CLIP vision towers are"
        )
    return CONFIG_MAPPING[vision["model_type"]].from_dict(vision)


def _tokenizer(config: dict, parts: TinyLlavaParts) -> PreTrainedTokenizerBase:
    """The tokenizer as TinyLLaVA set it up for training, plus the `<image>` token the native model needs."""
    checkpoint = Path(parts.checkpoint)
    llm_name = config.get("llm_model_name_or_path")
    name = config.get("tokenizer_name_or_path") or llm_name
    candidates = [parts.tokenizer, checkpoint, _local(name)]
    if name == llm_name:
        candidates.append(parts.language_model)
    folder = next((Path(c) for c in candidates if c is not None and any((Path(c) / f).is_file() for f in _TOKENIZER_FILES)), None)
    if folder is None:
        raise FileNotFoundError(
            f"{checkpoint} has no tokenizer files ({', '.join(_TOKENIZER_FILES)}) and its config.json names the tokenizer "
            f"{name!r} (tokenizer_name_or_path), which is not a local folder: set TinyLlavaParts.tokenizer to a local "
            f"copy of {name} (nothing is downloaded)"
        )
    only_sentencepiece = (folder / "tokenizer.model").is_file() and not (folder / "tokenizer.json").is_file()
    if only_sentencepiece and find_spec("sentencepiece") is None:
        # Without it transformers falls back to reading tokenizer.model as a tiktoken file.
        raise ImportError(f"{folder} has only a SentencePiece tokenizer.model: reading it needs the sentencepiece package")
    tokenizer = AutoTokenizer.from_pretrained(
        folder,
        local_files_only=True,
        model_max_length=config.get("tokenizer_model_max_length", 2048),
        padding_side=config.get("tokenizer_padding_side", "right"),
    )
    if config.get("pad_token"):
        tokenizer.pad_token = config["pad_token"]
    tokenizer.add_special_tokens({"extra_special_tokens": [_IMAGE_TOKEN]}, replace_extra_special_tokens=False)
    return tokenizer


def _image_processor(config: dict, vision_config: PreTrainedConfig, parts: TinyLlavaParts):
    """The vision tower's own preprocessor_config.json when a local copy exists, else TinyLLaVA's hub default
    rebuilt from the vision config. The Pil variants need no torchvision."""
    processor_class = CLIPImageProcessorPil if vision_config.model_type == "clip_vision_model" else SiglipImageProcessorPil
    for folder in (parts.vision_tower, _local(_vision_name(config))):
        if folder is not None and (Path(folder) / "preprocessor_config.json").is_file():
            return processor_class.from_pretrained(folder, local_files_only=True)
    size = vision_config.image_size
    if processor_class is CLIPImageProcessorPil:
        return CLIPImageProcessorPil(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return SiglipImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def _vision_name(config: dict) -> str | None:
    """TinyLLaVA allows a `type:` prefix before the vision tower's name."""
    name = config.get("vision_model_name_or_path")
    return name.split(":")[-1] if name else None


def _local(name: str | None) -> Path | None:
    """A name from config.json as a folder, when it is one on this machine (TinyLLaVA also trains from local paths)."""
    return Path(name) if name and Path(name).is_dir() else None


def _part_folder(candidates: list[Path | None], needed_file: str, what: str, field: str) -> Path:
    for candidate in candidates:
        if candidate is not None and (Path(candidate) / needed_file).is_file():
            return Path(candidate)
    raise FileNotFoundError(
        f"{what}, and no local folder holds its {needed_file}: "
        f"set TinyLlavaParts.{field} to a local copy of it (nothing is downloaded)"
    )


def _tinyllava_weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    """Every weight under TinyLLaVA's module names, from either layout, with a LoRA adapter merged in."""
    whole = _first_file(checkpoint, _WEIGHT_FILES)
    if whole is not None:
        weights = _read_weights(whole)
    else:
        weights = {}
        for folder, prefix in _TRAINING_OUTPUT_FOLDERS.items():
            file = _first_file(checkpoint / folder, _WEIGHT_FILES)
            if file is None:
                raise FileNotFoundError(
                    f"{checkpoint} has neither whole-model weights ({', '.join(_WEIGHT_FILES)}) nor TinyLLaVA's "
                    f"training-output weights: {folder}/ holds none of them"
                )
            weights.update({prefix + key: value for key, value in _read_weights(file).items()})
    if (checkpoint / "adapter_config.json").is_file():
        weights = _merge_lora(weights, checkpoint)
    return weights


def _first_file(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / name for name in names if (folder / name).is_file()), None)


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    """One weights file, or all the shards its index names."""
    if file.name.endswith(".index.json"):
        shards = sorted(set(json.loads(file.read_text())["weight_map"].values()))
        return {key: value for shard in shards for key, value in _read_weights(file.parent / shard).items()}
    if file.suffix == ".safetensors":
        return load_file(file)
    return torch.load(file, map_location="cpu", weights_only=True)


def _merge_lora(weights: dict[str, torch.Tensor], checkpoint: Path) -> dict[str, torch.Tensor]:
    """Fold the adapter of a TinyLLaVA LoRA run into its base weights, as TinyLLaVA's loader does before inference:
    without it the model would be the one before fine-tuning."""
    config_file = checkpoint / "adapter_config.json"
    adapter_config = json.loads(config_file.read_text())
    if adapter_config.get("use_dora") or adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern"):
        raise ValueError(f"{config_file}: DoRA and per-module rank or alpha patterns are not supported; merge it with peft first")
    rank = adapter_config["r"]
    scale = adapter_config["lora_alpha"] / (math.sqrt(rank) if adapter_config.get("use_rslora") else rank)
    adapter_file = _first_file(checkpoint, ("adapter_model.safetensors", "adapter_model.bin"))
    if adapter_file is None:
        raise FileNotFoundError(f"{checkpoint} has {config_file.name} but no adapter_model.safetensors or adapter_model.bin")
    adapter = _read_weights(adapter_file)
    merged = {key.replace(".base_layer.", "."): value for key, value in weights.items()}
    for key, down in adapter.items():
        if ".lora_B." in key:
            continue
        if ".lora_A." not in key or not key.startswith("base_model.model."):
            raise ValueError(f"{adapter_file}: {key!r} is not a LoRA A or B matrix of TinyLLaVA's model; merge it with peft first")
        target = key.removeprefix("base_model.model.").split(".lora_A.")[0] + ".weight"
        if target not in merged:
            raise ValueError(f"{adapter_file}: {key!r} adapts {target!r}, which the base weights in {checkpoint} lack")
        up = adapter[key.replace(".lora_A.", ".lora_B.")]
        base = merged[target]
        merged[target] = (base.float() + scale * (up.float() @ down.float())).to(base.dtype)
    return merged


def _native_weights(weights: dict[str, torch.Tensor], checkpoint: Path) -> dict[str, torch.Tensor]:
    native, unknown = {}, []
    for key, value in weights.items():
        prefix = next(((old, new) for old, new in _NATIVE_PREFIXES if key.startswith(old)), None)
        if prefix is None:
            unknown.append(key)
        else:
            native[prefix[1] + key.removeprefix(prefix[0])] = value
    if unknown:
        raise ValueError(
            f"{checkpoint}: {len(unknown)} weights belong to no part LLaVA has (first: {sorted(unknown)[:5]}); "
            "only a language model, a vision tower under _vision_tower.vision_model and an mlp2x_gelu connector are mapped"
        )
    return native
