"""TinyLLaVA conversation records -> token ids with answer-only labels, batched by length.

Each record becomes the model's own chat prompt (with the image placeholder expanded to the
tokens the image fills) followed by the answer and the end-of-sequence token. Only answer tokens
carry labels, so prompt and image positions cost no logits. Batches group samples of similar
length, which removes most padding; where FlashAttention is available, samples are instead packed
into one row without any padding.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from cad_pipeline.train.grid_processor import token_types

IGNORE = -100
"""Label of positions that take no loss (prompt, image, padding): the value torch's cross-entropy skips."""
GROUP_BATCHES = 16
"""Batches per length-sorting window: long enough to find similar lengths, short enough to keep the order random."""


@dataclass(frozen=True)
class Sample:
    id: str
    image: Path
    prompt_ids: tuple[int, ...]
    answer_ids: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.prompt_ids) + len(self.answer_ids)


@dataclass(frozen=True)
class SampleSet:
    samples: list[Sample]
    too_long: list[str]
    """Ids of samples longer than the maximum length: dropped, not truncated, since a cut answer is wrong code."""


@dataclass
class Batch:
    inputs: dict[str, torch.Tensor]
    """What the model's forward takes: input_ids, attention_mask or position_ids, pixel_values and the like."""
    labels: torch.Tensor
    real_tokens: int
    padded_tokens: int
    answer_index: torch.Tensor | None = None
    """Flat indices (row-major over the batch's positions) of the positions whose next token is an answer token."""
    answer_targets: torch.Tensor | None = None
    """Those next tokens, in the same order. Both are worked out on the host when the batch is made, so the loss
    picks its positions without a device-to-host sync."""
    contrast: Batch | None = None
    """The same answers shown other models' pictures, for the image-contrast term."""

    def __post_init__(self):
        if self.answer_index is None:
            next_labels = torch.full_like(self.labels, IGNORE)
            next_labels[:, :-1] = self.labels[:, 1:]
            flat = next_labels.reshape(-1)
            self.answer_index = torch.nonzero(flat != IGNORE).flatten()
            self.answer_targets = flat[self.answer_index]

    @property
    def answer_tokens(self) -> int:
        return len(self.answer_targets)

    def to(self, device: torch.device, dtype: torch.dtype) -> Batch:
        """On CUDA through pinned memory without blocking, so the copy overlaps the work already queued."""
        moved = {key: _moved(value, device, dtype) for key, value in self.inputs.items()}
        return Batch(
            moved, _moved(self.labels, device, dtype), self.real_tokens, self.padded_tokens,
            _moved(self.answer_index, device, dtype), _moved(self.answer_targets, device, dtype),
            self.contrast.to(device, dtype) if self.contrast else None,
        )  # fmt: skip


def read_records(path: Path) -> list[dict]:
    records = json.loads(path.read_text())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of TinyLLaVA records, found {type(records).__name__}")
    return records


def first_views_first(items: list, model_of) -> list:
    """The items reordered so that every model's first view comes before any model's second (and so on), each round
    in the given order: a cut of the list then covers as many models as it can."""
    seen: dict[str, int] = {}
    ranked = []
    for position, item in enumerate(items):
        model = model_of(item)
        ranked.append((seen.get(model, 0), position, item))
        seen[model] = seen.get(model, 0) + 1
    return [item for *_, item in sorted(ranked, key=lambda entry: entry[:2])]


def question_and_answer(record: dict) -> tuple[str, str]:
    """The human question without its `<image>` line, and the gpt answer."""
    human, gpt = record["conversations"][0]["value"], record["conversations"][1]["value"]
    return human.replace("<image>", "").strip(), gpt


def conversation_texts(records: list[dict]):
    """Every question and answer: what the tiny model's tokenizer learns from, so that the prompt takes few tokens too."""
    for record in records:
        yield from question_and_answer(record)


def prepare_samples(records: list[dict], image_folder: Path, processor, max_length: int) -> SampleSet:
    """Token ids for every record, the prompt tokenized once per distinct question and image size (the size sets the
    image's tokens where the resolution is dynamic)."""
    if max_length < 1:
        raise ValueError(f"max_length {max_length}: resolve 0 to the model's context (`resolved_max_length`) before preparing samples")
    tokenizer = processor.tokenizer
    prompts: dict[tuple[str, tuple[int, int]], tuple[int, ...]] = {}
    samples, too_long = [], []
    for record in records:
        question, answer = question_and_answer(record)
        image = image_folder / record["image"]
        with Image.open(image) as opened:
            key = (question, opened.size)
        if key not in prompts:
            prompts[key] = tuple(_prompt_inputs(processor, question, [image])["input_ids"][0].tolist())
        answer_ids = (*tokenizer(answer, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id)
        sample = Sample(record["id"], image, prompts[key], answer_ids)
        if sample.length > max_length:
            too_long.append(sample.id)
        else:
            samples.append(sample)
    return SampleSet(samples, too_long)


def prompt_text(processor, question: str) -> str:
    """The model's chat prompt for one image and one question, ready for the answer to follow."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(messages, add_generation_prompt=True)


def _prompt_inputs(processor, question: str, images: list[Path]) -> dict:
    return processor(text=[prompt_text(processor, question)] * len(images), images=open_images(images), return_tensors="pt")


def image_inputs(processor, images: list[Path]) -> dict[str, torch.Tensor]:
    """Pixel tensors (and whatever else the image processor gives, such as image sizes) for a batch of images."""
    return dict(processor.image_processor(open_images(images), return_tensors="pt"))


def positions_by_modality(processor) -> bool:
    """Whether the model takes token types to place its rotary positions (Qwen2-VL's M-RoPE)."""
    return "mm_token_type_ids" in getattr(processor, "model_input_names", ())


def modality_inputs(processor, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The token types (image or text) for a processor whose model places its rotary positions by modality
    (Qwen2-VL's M-RoPE); nothing for the others."""
    if not positions_by_modality(processor):
        return {}
    return {"mm_token_type_ids": token_types(input_ids, processor.image_token_id)}


def open_images(paths: list[Path]) -> list[Image.Image]:
    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def padded_batch(samples: list[Sample], processor) -> Batch:
    """Samples padded on the right to the longest; labels only on answer tokens."""
    width = max(sample.length for sample in samples)
    pad = processor.tokenizer.pad_token_id
    input_ids = torch.full((len(samples), width), pad, dtype=torch.long)
    attention = torch.zeros((len(samples), width), dtype=torch.long)
    labels = torch.full((len(samples), width), IGNORE, dtype=torch.long)
    for row, sample in enumerate(samples):
        ids = sample.prompt_ids + sample.answer_ids
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention[row, : len(ids)] = 1
        labels[row, len(sample.prompt_ids) : len(ids)] = torch.tensor(sample.answer_ids)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention,
        **modality_inputs(processor, input_ids),
        **image_inputs(processor, [s.image for s in samples]),
    }
    real = sum(sample.length for sample in samples)
    return Batch(inputs, labels, real, width * len(samples))


def packed_batch(samples: list[Sample], processor) -> Batch:
    """All samples in one row without padding; position ids restart at each sample, which tells FlashAttention (and
    transformers' SDPA path) where each sample's attention ends. Needs `use_cache=False`."""
    ids, positions, labels = [], [], []
    for sample in samples:
        ids.extend(sample.prompt_ids + sample.answer_ids)
        positions.extend(range(sample.length))
        labels.extend([IGNORE] * len(sample.prompt_ids) + list(sample.answer_ids))
    inputs = {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([positions]),
        **image_inputs(processor, [s.image for s in samples]),
    }
    return Batch(inputs, torch.tensor([labels]), len(ids), len(ids))


def length_grouped_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """One epoch's batches: a seeded shuffle, sorted by length within windows of GROUP_BATCHES batches, then the
    batches shuffled; the longest batch goes first so that a memory overflow shows at the first step."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * GROUP_BATCHES
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda index: -lengths[index])
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    longest = max(range(len(batches)), key=lambda i: max(lengths[j] for j in batches[i]) * len(batches[i]), default=0)
    if batches:
        batches[0], batches[longest] = batches[longest], batches[0]
    return batches


def _moved(value, device: torch.device, dtype: torch.dtype):
    if not isinstance(value, torch.Tensor):
        return value
    if device.type == "cuda" and value.device.type == "cpu":
        value = value.pin_memory().to(device, non_blocking=True)
    return value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
