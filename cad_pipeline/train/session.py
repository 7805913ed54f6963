"""Everything a training run, a plan or a benchmark starts from: the partition's samples and the model set up for its train mode."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from cad_pipeline.partition import IMAGES, TRAIN_JSON, VAL_JSON
from cad_pipeline.train.config import TrainConfig, resolve_device, resolve_dtype
from cad_pipeline.train.data import SampleSet, conversation_texts, first_views_first, positions_by_modality, prepare_samples, read_records
from cad_pipeline.train.image_use import model_of_image
from cad_pipeline.train.model import BaseModel, compile_layers, flash_attention_available, load_base_model, make_trainable, resolved_max_length



@dataclass
class TrainingSession:
    config: TrainConfig
    device: torch.device
    dtype: torch.dtype
    base: BaseModel
    model: torch.nn.Module
    train: SampleSet
    val: SampleSet
    packed: bool

    @property
    def processor(self):
        return self.base.processor


def open_session(config: TrainConfig, partition_dir: Path, work_dir: Path) -> TrainingSession:
    """The tiny base model's tokenizer learns from the train texts only, so validation stays unseen; the session's
    config has `max_length` resolved (the model's context when 0)."""
    for name in (TRAIN_JSON, VAL_JSON):
        if not (partition_dir / name).is_file():
            raise FileNotFoundError(f"{partition_dir / name} is missing: materialize `conversations` for this scale first")
    if config.threads:
        torch.set_num_threads(config.threads)
    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    train_records = read_records(partition_dir / TRAIN_JSON)
    val_records = read_records(partition_dir / VAL_JSON)
    if config.validation_samples:
        val_records = first_views_first(val_records, lambda record: model_of_image(Path(record["image"])))[: config.validation_samples]
    base = load_base_model(config, device, dtype, work_dir, conversation_texts(train_records))
    config = resolved_max_length(config, base.model)
    model = make_trainable(base.model, config)
    if config.compile:
        compile_layers(model)
    images = partition_dir / IMAGES
    train = prepare_samples(train_records, images, base.processor, config.max_length)
    val = prepare_samples(val_records, images, base.processor, config.max_length)
    if not train.samples:
        raise ValueError(f"{partition_dir / 'train.json'}: no sample fits max_length {config.max_length}; raise max_length")
    return TrainingSession(config, device, dtype, base, model, train, val, packs(config, device, base))


def packs(config: TrainConfig, device: torch.device, base: BaseModel) -> bool:
    """Whether batches are packed into one row: 'on', or 'auto' where FlashAttention runs the model. Never for a
    model that places its rotary positions by the image grid (Qwen2-VL's M-RoPE): restarting position ids per
    sample is what packing relies on, and those positions are computed by the model itself."""
    if positions_by_modality(base.processor):
        if config.packing == "on":
            raise ValueError(
                f"packing 'on' cannot pack {base.source}: it computes 3D rotary positions from each image's grid, which a packed "
                "row's restarting position ids would replace; set packing to 'auto' or 'off'"
            )
        return False
    return config.packing == "on" or (config.packing == "auto" and flash_attention_available(device) and base.attention == "flash_attention_2")
