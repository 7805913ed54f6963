"""A processor for Qwen2-VL-style models, whose image takes as many tokens as its patch grid has merged cells.

transformers' own `Qwen2VLProcessor` cannot be built without torchvision (it insists on a video processor), so the
preset pairs the real image processor (`Qwen2VLImageProcessorPil`: dynamic resolution, 14 px patches, 2 x 2 merge)
with this: it expands each image placeholder to `t * h * w / merge**2` tokens from the image's `image_grid_thw`, and
marks them in `mm_token_type_ids`, which the model needs to place its 3D rotary positions (M-RoPE).
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BatchFeature


class GridProcessor:
    model_input_names = ["input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw"]

    def __init__(self, image_processor, tokenizer, image_token: str, chat_template: str):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.image_token = image_token
        self.image_token_id = tokenizer.convert_tokens_to_ids(image_token)
        self.chat_template = chat_template

    def image_tokens(self, grid_thw: torch.Tensor) -> int:
        """Language-model tokens of one image: its patches, merged `merge_size` x `merge_size`."""
        return int(grid_thw.prod()) // self.image_processor.merge_size**2

    def __call__(self, text: str | list[str], images: list, return_tensors: str = "pt", padding: bool = False) -> BatchFeature:
        text = [text] if isinstance(text, str) else text
        pixels = self.image_processor(images, return_tensors=return_tensors)
        grids = iter(pixels["image_grid_thw"])
        expanded = []
        for prompt in text:
            pieces = prompt.split(self.image_token)
            expanded.append(pieces[0] + "".join(self.image_token * self.image_tokens(next(grids)) + piece for piece in pieces[1:]))
        tokens = self.tokenizer(expanded, padding=padding, return_tensors=return_tensors)
        return BatchFeature({**tokens, "mm_token_type_ids": token_types(tokens["input_ids"], self.image_token_id), **pixels})

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, tokenize=False, add_generation_prompt=add_generation_prompt)

    def save_pretrained(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(folder)
        self.image_processor.save_pretrained(folder)


def token_types(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """1 at image positions, 0 at text: the modality of each token, as Qwen2-VL's rotary positions read it."""
    return (input_ids == image_token_id).to(torch.int32)
