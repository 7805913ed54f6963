"""Answers a model generates for conversation records: the same chat prompt as in training, greedy by default."""

from __future__ import annotations

from pathlib import Path

import torch

from cad_pipeline.train.data import open_images, prompt_text, question_and_answer


@torch.no_grad()
def generate_answers(model, processor, records: list[dict], image_folder: Path, max_new_tokens: int, batch_size: int, device) -> list[str]:
    """One decoded answer per record, in order. Prompts are padded on the left so every row continues at its end."""
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    model.eval()
    answers = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        prompts = [prompt_text(processor, question_and_answer(record)[0]) for record in chunk]
        images = open_images([image_folder / record["image"] for record in chunk])
        inputs = processor(text=prompts, images=images, padding=True, return_tensors="pt").to(device)
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        answers.extend(tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True))
    return answers
