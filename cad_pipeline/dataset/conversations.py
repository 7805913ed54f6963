"""TinyLLaVA Factory conversations: a picture of a model, and OpenECAD v2 code that rebuilds it.

Records follow TinyLLaVA Factory's custom fine-tuning format (a JSON list of `id`, `image`
relative to `--image_folder`, `conversations` = human then gpt) with OpenECAD v2's training
wording: the human turn starts with `<image>`, the answer is `Of course, here are the codes:`
followed by the code in a python block, as OpenECAD's `json2dataset.py` writes them.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from cad_pipeline.dataset.answers import CodeAnswer
from cad_pipeline.dataset.tokens import TokenCounter
from cad_pipeline.files import atomic_write_bytes
from cad_pipeline.partition import IMAGES, TRAIN_JSON, VAL_JSON, PartitionFolder
from cad_pipeline.render.batch import image_file_name, link_images

IMAGE_PLACEHOLDER = "<image>\n"
QUESTIONS = {
    "per_view": (
        "<image>\nThis image is a view of a 3D model from a certain angle. "
        "Please try to use OpenECAD-style API to render this model."
    ),
    "grid": (
        "<image>\nThis image contains 4 views of a 3D model from a certain angle and three orthographic views. "
        "Please try to use OpenECAD-style API to render this model."
    ),
}
"""OpenECAD v2's `default` wording for one view per image, its `orthographic` wording for the 4-view grid."""
ANSWER_OPENING = "Of course, here are the codes:\n```python\n"
PERCENTILES = (50, 90, 99, 100)


def answer_text(code: str) -> str:
    return f"{ANSWER_OPENING}{code}```"


def conversation(sample_id: str, image: str, layout: str, code: str) -> dict:
    return {
        "id": sample_id,
        "image": image,
        "conversations": [{"from": "human", "value": QUESTIONS[layout]}, {"from": "gpt", "value": answer_text(code)}],
    }


@dataclass
class ConversationSet:
    train: list[dict] = field(default_factory=list)
    val: list[dict] = field(default_factory=list)
    dropped: dict[str, list[str]] = field(default_factory=dict)
    """Reason -> model ids left out."""
    answer_chars: list[int] = field(default_factory=list)
    answer_tokens: list[int] = field(default_factory=list)
    """One entry per kept model (each of its views shares the answer)."""
    train_models: set[str] = field(default_factory=set)
    val_models: set[str] = field(default_factory=set)
    text_tokens: dict[str, int] = field(default_factory=dict)
    """Record id -> tokens of its question (without the image placeholder) and its answer."""

    def left_out(self, max_length: int, image_tokens: int) -> dict[str, int]:
        """Samples per split longer than `max_length` in a model whose image takes `image_tokens` (the chat template's
        few tokens aside): what training that model at that length leaves out."""
        return {
            split: sum(self.text_tokens[record["id"]] + image_tokens > max_length for record in records)
            for split, records in (("train", self.train), ("val", self.val))
        }

    def drop(self, reason: str, model_id: str) -> None:
        self.dropped.setdefault(reason, []).append(model_id)

    @property
    def dropped_by_reason(self) -> dict[str, int]:
        return dict(Counter({reason: len(ids) for reason, ids in self.dropped.items()}).most_common())

    def length_percentiles(self) -> dict[str, dict[str, int]]:
        return {"chars": _percentiles(self.answer_chars), "tokens": _percentiles(self.answer_tokens)}


def build_conversations(
    models: list[tuple[str, str]],
    answers: dict[str, CodeAnswer],
    images: dict[str, list[str]],
    layout: str,
    tokens: TokenCounter,
    token_budget: int,
) -> ConversationSet:
    """One record per (model, image), models in subset order; a model is dropped, with its reason, when it has no
    image, no code, a code that does not rebuild it, or an answer over the token budget.

    models: (id, split) in subset order; images: model id -> its image view names (in view order).
    """
    result = ConversationSet()
    question_tokens = tokens.count(QUESTIONS[layout].removeprefix(IMAGE_PLACEHOLDER))
    for model_id, split in models:
        answer = answers.get(model_id)
        if answer is None or answer.code is None:
            result.drop("no_code", model_id)
            continue
        if not answer.round_trip:
            result.drop("round_trip_failed", model_id)
            continue
        views = images.get(model_id)
        if not views:
            result.drop("not_rendered", model_id)
            continue
        text = answer_text(answer.code)
        count = tokens.count(text)
        if count > token_budget:
            result.drop("over_token_budget", model_id)
            continue
        result.answer_chars.append(len(text))
        result.answer_tokens.append(count)
        records = result.train if split == "train" else result.val
        (result.train_models if split == "train" else result.val_models).add(model_id)
        for view in views:
            name = image_file_name(model_id, view)
            records.append(conversation(name.removesuffix(".png"), name, layout, answer.code))
            result.text_tokens[records[-1]["id"]] = question_tokens + count
    return result


def publish_conversations(partition: PartitionFolder, result: ConversationSet, images: Iterable[tuple[str, str, str]]) -> None:
    """train.json, val.json and images/ (the kept models' (id, view, store path) images, readable names linked to
    the store) as one new generation of the partition's data, published whole."""
    kept = result.train_models | result.val_models
    with partition.new_data() as folder:
        link_images((image for image in images if image[0] in kept), folder / IMAGES)
        for name, records in ((TRAIN_JSON, result.train), (VAL_JSON, result.val)):
            atomic_write_bytes(folder / name, json.dumps(records, indent=1).encode())


def format_problems(records: list[dict]) -> list[str]:
    """What keeps records from loading in TinyLLaVA Factory (or from teaching OpenECAD's answer format)."""
    problems = []
    for position, record in enumerate(records):
        where = f"record {position} ({record.get('id', 'no id') if isinstance(record, dict) else 'not an object'})"
        if not isinstance(record, dict) or set(record) != {"id", "image", "conversations"}:
            problems.append(f"{where}: keys must be exactly id, image, conversations")
            continue
        if not (isinstance(record["id"], str) and record["id"] and isinstance(record["image"], str) and record["image"]):
            problems.append(f"{where}: id and image must be non-empty strings")
        turns = record["conversations"]
        if not (isinstance(turns, list) and [turn.get("from") if isinstance(turn, dict) else None for turn in turns] == ["human", "gpt"]):
            problems.append(f"{where}: conversations must be one human turn then one gpt turn")
            continue
        if not (isinstance(turns[0].get("value"), str) and turns[0]["value"].startswith(IMAGE_PLACEHOLDER)):
            problems.append(f"{where}: the human turn must start with <image> and a newline")
        answer = turns[1].get("value")
        if not (isinstance(answer, str) and answer.startswith(ANSWER_OPENING) and answer.endswith("\n```")):
            problems.append(f"{where}: the answer must be the code in a python block after {ANSWER_OPENING.splitlines()[0]!r}")
    return problems


def _percentiles(values: list[int]) -> dict[str, int]:
    """Nearest-rank percentiles (p100 is the maximum)."""
    if not values:
        return {}
    ordered = sorted(values)
    return {f"p{p}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in PERCENTILES}
