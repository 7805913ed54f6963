"""The base model to fine-tune, from local folders only, and the LoRA adapter put on it."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging as transformers_logging

from cad_pipeline.train.config import TrainConfig, resolve_device, resolve_dtype
from cad_pipeline.train.tinyllava import TinyLlavaParts, is_tinyllava_checkpoint, load_tinyllava
from cad_pipeline.train.tiny import write_tiny_model

TRAIN_CONFIG_FILE = "train_config.json"
TINY_BASE_FOLDER = "base_model"
"""Where a run keeps the tiny base model it built, beside its adapter."""
CONNECTOR_NAMES = ("multi_modal_projector",)
"""The connector between vision tower and language model, trained in full as TinyLLaVA and OpenECAD do."""

transformers_logging.disable_progress_bar()


@dataclass
class BaseModel:
    model: torch.nn.Module
    processor: object
    source: str
    """Where it came from, for the run's params: 'tiny (built)', or the folder."""
    attention: str


def flash_attention_available(device: torch.device) -> bool:
    return device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None


def load_base_model(config: TrainConfig, device: torch.device, dtype: torch.dtype, work_dir: Path, texts: Iterable[str]) -> BaseModel:
    """`texts` train the tiny model's tokenizer; a real base model ignores them."""
    attention = "flash_attention_2" if flash_attention_available(device) and dtype != torch.float32 else "sdpa"
    if config.base_model == "tiny":
        folder, source = write_tiny_model(texts, work_dir / TINY_BASE_FOLDER, seed=config.seed), "tiny (built from configs)"
    else:
        folder, source = Path(config.base_model), config.base_model
        if not folder.is_dir():
            raise FileNotFoundError(
                f"base model folder {folder} does not exist: give 'tiny' or a local model folder (nothing is downloaded)"
            )
    if is_tinyllava_checkpoint(folder):
        parts = TinyLlavaParts(
            checkpoint=folder,
            language_model=_optional_path(config.tinyllava_language_model),
            vision_tower=_optional_path(config.tinyllava_vision_tower),
            tokenizer=_optional_path(config.tinyllava_tokenizer),
        )
        model, processor = load_tinyllava(parts, dtype=dtype)
    else:
        model = AutoModelForImageTextToText.from_pretrained(folder, local_files_only=True, dtype=dtype, attn_implementation=attention)
        processor = AutoProcessor.from_pretrained(folder, local_files_only=True)
    model.config.use_cache = False
    if hasattr(model.config, "text_config"):
        model.config.text_config.use_cache = False
    return BaseModel(model.to(device), processor, source, attention)


@dataclass
class TrainedAdapter:
    model: PeftModel
    processor: object
    config: TrainConfig
    """The settings it was trained with."""
    device: torch.device
    dtype: torch.dtype


def load_adapter(adapter_dir: Path) -> TrainedAdapter:
    """A trained adapter on its base model, on the device and in the dtype its settings resolve to here. The tiny
    base model is the one saved beside the adapter (it was built for that run); any other is the folder named."""
    settings_file = adapter_dir / TRAIN_CONFIG_FILE
    if not settings_file.is_file():
        raise FileNotFoundError(f"{adapter_dir} is not a trained adapter: {TRAIN_CONFIG_FILE} is missing (train one with `cad-pipeline train`)")
    config = TrainConfig(**json.loads(settings_file.read_text()))
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    base_config = replace(config, base_model=str(adapter_dir.parent / TINY_BASE_FOLDER)) if config.base_model == "tiny" else config
    base = load_base_model(base_config, device, dtype, adapter_dir.parent, [])
    model = PeftModel.from_pretrained(base.model, adapter_dir, local_files_only=True).to(device)
    return TrainedAdapter(model.eval(), base.processor, config, device, dtype)


def lora_targets(model: torch.nn.Module, vision: bool) -> list[str]:
    """Every linear layer of the language model (not its output head), and of the vision tower when asked."""
    scopes = ("language_model", "vision_tower") if vision else ("language_model",)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and any(f"{scope}." in f"{name}." for scope in scopes) and "lm_head" not in name
    ]


def add_lora(model: torch.nn.Module, config: TrainConfig) -> PeftModel:
    targets = lora_targets(model, config.lora_vision)
    if not targets:
        raise ValueError("the base model has no linear layers under 'language_model': LoRA needs a LLaVA-style model")
    connector = [name for name in CONNECTOR_NAMES if any(path.rsplit(".", 1)[-1] == name for path, _ in model.named_modules())]
    lora = LoraConfig(
        r=config.lora_rank,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=targets,
        modules_to_save=connector or None,
        bias="none",
    )
    torch.manual_seed(config.seed)
    return get_peft_model(model, lora)


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def _optional_path(value: str) -> Path | None:
    return Path(value) if value else None
