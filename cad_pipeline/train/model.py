"""The base model to fine-tune, from local folders only; what of it trains (a LoRA adapter, or every weight); the
trained model saved and loaded back exactly, with its base beside it for comparison."""

from __future__ import annotations

import importlib.util
import json
import shutil
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.utils import logging as transformers_logging

from cad_pipeline.files import published_folder
from cad_pipeline.train.config import TrainConfig, resolve_device, resolve_dtype, resolved_train_mode
from cad_pipeline.train.presets import build_preset, preset_name
from cad_pipeline.train.presets import label as preset_label
from cad_pipeline.train.tinyllava import TinyLlavaParts, is_tinyllava_checkpoint, load_tinyllava
from cad_pipeline.train.tiny import write_tiny_model

TRAIN_CONFIG_FILE = "train_config.json"
TINY_BASE_FOLDER = "base_model"
"""Where a run builds the tiny base model, beside its trained model; each saved trained model keeps a copy inside, so a
later run rebuilding the one beside it never changes the base of a model already saved."""
CONNECTOR_NAMES = ("multi_modal_projector", "merger")
"""The connector between vision tower and language model (LLaVA's projector, Qwen2-VL's patch merger, which sits
inside its tower), trained in full as TinyLLaVA and OpenECAD do."""
VISION_TOWER_NAMES = ("vision_tower", "visual")
"""The vision tower: LLaVA's `vision_tower`, Qwen2-VL's `visual` (its merger excepted)."""
PARTS = ("language_model", "connector", "vision_tower")
"""The parts of a LLaVA-style model, as the run's params report what trains."""

transformers_logging.disable_progress_bar()


@dataclass
class BaseModel:
    model: torch.nn.Module
    processor: object
    source: str
    """Where it came from, for the run's params and every figure: 'tiny (built from configs)', a preset's label
    (random weights), or the folder."""
    attention: str


def flash_attention_available(device: torch.device) -> bool:
    return device.type == "cuda" and importlib.util.find_spec("flash_attn") is not None


def load_base_model(config: TrainConfig, device: torch.device, dtype: torch.dtype, work_dir: Path, texts: Iterable[str]) -> BaseModel:
    """`texts` train the tiny model's and a preset's tokenizer; a real base model ignores them."""
    attention = "flash_attention_2" if flash_attention_available(device) and dtype != torch.float32 else "sdpa"
    preset = preset_name(config.base_model)
    if preset:
        model, processor = build_preset(preset, texts, dtype, device, seed=config.seed)
        return BaseModel(model, processor, preset_label(preset), attention)
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
class TrainedModel:
    model: torch.nn.Module
    """A peft model (lora) or the whole fine-tuned model (full), in eval mode."""
    processor: object
    config: TrainConfig
    """The settings it was trained with, train_mode resolved to 'lora' or 'full'."""
    device: torch.device
    dtype: torch.dtype
    folder: Path

    @contextmanager
    def as_base(self) -> Iterator[torch.nn.Module]:
        """The model before fine-tuning, to compare against: after LoRA the same model with its adapter switched
        off (LoRA layers and the trained connector alike, no second copy in memory); after full training the base
        weights, loaded as a second model for as long as the block runs."""
        if self.config.train_mode == "lora":
            with self.model.disable_adapter():
                yield self.model
            return
        base = load_base_model(_base_settings(self.config, self.folder), self.device, self.dtype, self.folder, [])
        yield base.model.eval()


def save_trained(
    model: torch.nn.Module, processor, config: TrainConfig, folder: Path, extras: Callable[[Path], object] = lambda version: None
) -> None:
    """The adapter (lora) or the whole model (full), the processor, the tiny base model it was trained from, and the
    settings with the train mode resolved, which `load_trained` reads; `extras(version)` adds what else belongs to the
    model (its run's records). Written as a new version of the folder, published whole (`published_folder`): it never
    mixes two kinds or two runs, and a kill while saving leaves the model saved before."""
    with published_folder(folder, folder.with_name(f".{folder.name}.versions")) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        if config.base_model == "tiny":
            shutil.copytree(folder.parent / TINY_BASE_FOLDER, staging / TINY_BASE_FOLDER)
        settings = replace(config, train_mode=resolved_train_mode(config))
        (staging / TRAIN_CONFIG_FILE).write_text(json.dumps(settings.to_json(), indent=1))
        extras(staging)


def load_trained(folder: Path) -> TrainedModel:
    """A model `save_trained` wrote, exactly as it was trained, on the device and in the dtype its settings resolve
    to here: the adapter on its base model, or the whole model. The tiny base model is the copy saved inside the
    folder (it was built for that run); any other is the folder the settings name."""
    settings_file = folder / TRAIN_CONFIG_FILE
    if not settings_file.is_file():
        raise FileNotFoundError(f"{folder} holds no trained model: {TRAIN_CONFIG_FILE} is missing (train one with `cad-pipeline train`)")
    settings = json.loads(settings_file.read_text())
    settings.setdefault("train_mode", "lora")  # written before full training existed, when every run was LoRA
    config = TrainConfig(**settings)
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    if config.train_mode == "lora":
        base = load_base_model(_base_settings(config, folder), device, dtype, folder, [])
        model, processor = PeftModel.from_pretrained(base.model, folder, local_files_only=True).to(device), base.processor
    else:
        whole = load_base_model(replace(config, base_model=str(folder)), device, dtype, folder.parent, [])
        model, processor = whole.model, whole.processor
    return TrainedModel(model.eval(), processor, resolved_max_length(config, model), device, dtype, folder)


def _base_settings(config: TrainConfig, folder: Path) -> TrainConfig:
    return replace(config, base_model=str(folder / TINY_BASE_FOLDER)) if config.base_model == "tiny" else config


def lora_targets(model: torch.nn.Module, vision: bool) -> list[str]:
    """Every linear layer of the language model (not its output head), and of the vision tower when asked."""
    parts = ("language_model", "vision_tower") if vision else ("language_model",)
    return [
        name
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and part_of(name) in parts and "lm_head" not in name
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


def make_trainable(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    """The model as its train mode trains it: wrapped with LoRA (lora), or with every parameter requiring gradients,
    the vision tower's unless `freeze_vision_tower` (full)."""
    if resolved_train_mode(config) == "lora":
        return with_fp32_masters(add_lora(model, config))
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(not (config.freeze_vision_tower and part_of(name) == "vision_tower"))
    return with_fp32_masters(model)


def compile_layers(model: torch.nn.Module, backend: str = "inductor") -> int:
    """Each layer of every `layers` stack (decoder, vision encoder) compiled in place, the number compiled: regional
    compilation, so one compiled graph serves all the layers of a stack, weights keep their names for saving and
    LoRA, and lengths that vary from batch to batch are compiled once, as dynamic shapes."""
    stacks = [module for name, module in model.named_modules() if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers"]
    for layer in (layer for stack in stacks for layer in stack):
        layer.compile(dynamic=True, backend=backend)
    return sum(len(stack) for stack in stacks)


def model_context(model: torch.nn.Module) -> int:
    """The longest sequence the language model takes: its config's `max_position_embeddings`."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.max_position_embeddings)


def resolved_max_length(config: TrainConfig, model: torch.nn.Module) -> TrainConfig:
    """The settings with `max_length` 0 replaced by the model's context."""
    return config if config.max_length else replace(config, max_length=model_context(model))


def with_fp32_masters(model: torch.nn.Module) -> torch.nn.Module:
    """Every trained weight in fp32, so its optimizer state is fp32 too and an update below 16-bit resolution (1e-4 on
    a weight of 1 in bf16) is kept; frozen weights stay as loaded, and the loop computes in 16 bits under autocast."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype in (torch.float16, torch.bfloat16):
            parameter.data = parameter.data.float()
    return model


def part_of(parameter_name: str) -> str:
    """The part a parameter (or module) belongs to: the connector, the vision tower, else the language model (head
    included)."""
    pieces = parameter_name.split(".")
    if any(name in pieces for name in CONNECTOR_NAMES):
        return "connector"
    if any(name in pieces for name in VISION_TOWER_NAMES):
        return "vision_tower"
    return "language_model"


def trainable_parameters(model: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)


def trainable_parameters_by_part(model: torch.nn.Module) -> dict[str, int]:
    counts = dict.fromkeys(PARTS, 0)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            counts[part_of(name)] += parameter.numel()
    return counts


def trained_parts(model: torch.nn.Module, config: TrainConfig) -> dict[str, str]:
    """How each part trains, read from the parameters that take gradients: 'lora r=16', 'full' or 'frozen'."""
    trainable = [name for name, parameter in model.named_parameters() if parameter.requires_grad]
    trained = {part_of(name) for name in trainable}
    with_lora = {part_of(name) for name in trainable if "lora_" in name}
    return {part: f"lora r={config.lora_rank}" if part in with_lora else "full" if part in trained else "frozen" for part in PARTS}


def _optional_path(value: str) -> Path | None:
    return Path(value) if value else None
