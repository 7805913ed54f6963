"""Answers a model generates for conversation records: the same chat prompt as in training, greedy by default.

Generation always ends: a batch that runs past its time budget stops every row where it is, and no batch starts
once the batches together have spent the overall budget. Each answer says why it ended.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from cad_pipeline.train.data import open_images, prompt_text, question_and_answer

END_TOKEN, TOKEN_LIMIT, TIME = "end_token", "token_limit", "time"
STOP_REASONS = (END_TOKEN, TOKEN_LIMIT, TIME)
"""Why an answer ended: the model produced its end token, max_new_tokens were generated, or its batch ran out of time."""


@dataclass(frozen=True)
class Answer:
    stop_reason: str
    """One of STOP_REASONS."""
    new_tokens: int
    """Tokens generated, the end token included."""
    seconds: float
    """Seconds its whole batch took."""
    text: str


@torch.no_grad()
def generate_answers(
    model,
    processor,
    records: list[dict],
    image_folder: Path,
    max_new_tokens: int,
    batch_size: int,
    device,
    batch_budget: float = math.inf,
    budget: float = math.inf,
    on_batch: Callable[[list[dict], list[Answer]], None] | None = None,
) -> list[Answer]:
    """One answer per record, in order. A batch stops every row once it has run `batch_budget` seconds; no batch
    starts once the batches together have run `budget` seconds, so the records left get no answer and the list is
    that much shorter. `on_batch` receives each batch's records and answers as soon as the batch ends. Prompts are
    padded on the left so every row continues at its end."""
    tokenizer = processor.tokenizer
    tokenizer.padding_side = "left"
    model.eval()
    answers: list[Answer] = []
    spent = 0.0
    for start in range(0, len(records), batch_size):
        if spent >= budget:
            break
        started = time.perf_counter()
        chunk = records[start : start + batch_size]
        prompts = [prompt_text(processor, question_and_answer(record)[0]) for record in chunk]
        images = open_images([image_folder / record["image"] for record in chunk])
        inputs = processor(text=prompts, images=images, padding=True, return_tensors="pt").to(device)
        output = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            max_time=None if math.isinf(batch_budget) else batch_budget,
            do_sample=False,
            use_cache=True,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        seconds = time.perf_counter() - started
        spent += seconds
        batch = [_answer(row, tokenizer, max_new_tokens, seconds) for row in output[:, inputs["input_ids"].shape[1] :]]
        if on_batch:
            on_batch(chunk, batch)
        answers.extend(batch)
    return answers


def _answer(tokens: torch.Tensor, tokenizer, max_new_tokens: int, seconds: float) -> Answer:
    """One row of a batch's new tokens: a row that ends early is padded after its end token, and its text stops
    before it; a row without one ran until max_new_tokens, or until the time budget stopped the whole batch."""
    ends = (tokens == tokenizer.eos_token_id).nonzero()
    if len(ends):
        count = int(ends[0]) + 1
        return Answer(END_TOKEN, count, seconds, tokenizer.decode(tokens[: count - 1], skip_special_tokens=True))
    reason = TOKEN_LIMIT if len(tokens) == max_new_tokens else TIME
    return Answer(reason, len(tokens), seconds, tokenizer.decode(tokens, skip_special_tokens=True))
