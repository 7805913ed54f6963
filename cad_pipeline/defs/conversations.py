"""Conversations: TinyLLaVA train.json / val.json whose answers are OpenECAD v2 code proven to rebuild each model."""

import json
import time
from collections import defaultdict

import dagster as dg
import pandas as pd
import pydantic

from cad_pipeline.cad.measure import Measurements
from cad_pipeline.dataset.answers import code_answers
from cad_pipeline.dataset.conversations import ConversationSet, build_conversations, format_problems, publish_conversations
from cad_pipeline.dataset.corpus import model_path
from cad_pipeline.dataset.tokens import OPENECAD_TOKENIZER, open_token_counter
from cad_pipeline.defs.data import OWNERS
from cad_pipeline.defs.failures import DEFAULT_MAX_FAILED_SHARE, failed_share_check, failed_share_spec, require_output, store_repairs
from cad_pipeline.defs.partitions import scale_partitions, writes_partition
from cad_pipeline.defs.render import rendered_views
from cad_pipeline.defs.resources import PipelineSettings
from cad_pipeline.partition import PartitionFolder
from cad_pipeline.render.batch import decoded_size

CHECKS = {
    "round_trip": "Every selected model's code, read back by the safe interpreter, rebuilds its solid (volume and bbox).",
    "format_valid": "train.json and val.json are TinyLLaVA records: id, image, human turn with <image> first, then the code answer.",
    "images_present": "Every referenced image exists in the image folder and has the rendered size.",
    "no_split_leak": "No model has samples in both train.json and val.json.",
    "answers_not_empty": "Every answer holds code.",
}
BLOCKING = {"format_valid", "images_present", "no_split_leak", "answers_not_empty"}
"""Failures that would make training read broken or leaking data, so a run that includes training stops there.
A model that fails the round trip is left out of the data, so that check only reports."""


class ConversationConfig(dg.Config):
    tokenizer: str = OPENECAD_TOKENIZER
    """cl100k_base (what OpenECAD's dataset script counts with), or the local folder of your base model's tokenizer."""
    token_budget: int = pydantic.Field(default=3072, ge=1)
    """Answers longer than this many tokens are dropped (OpenECAD's create_datasets.sh uses 3072)."""
    examples: int = pydantic.Field(default=2, ge=0, le=50)
    """Conversations shown in the metadata."""
    max_length: int = pydantic.Field(default=2048, ge=1)
    """The context of the model you will train (OpenECAD's `model_max_length`): the metadata counts the samples longer
    than this, which that training leaves out."""
    image_tokens: int = pydantic.Field(default=729, ge=0)
    """Tokens one image takes in that model (729 for OpenECAD's SigLIP-so400m at 384 px)."""
    max_failed_share: float = pydantic.Field(default=DEFAULT_MAX_FAILED_SHARE, ge=0.0, le=1.0)
    """The blocking `failed_share` check fails above this share of models left out for a failure (no code, a failed
    round trip, no image); answers over the token budget are left out by choice and do not count."""


@dg.asset(
    group_name="data",
    kinds={"python", "json"},
    owners=OWNERS,
    partitions_def=scale_partitions,
    deps=[rendered_views],
    check_specs=[
        *(dg.AssetCheckSpec(name, asset="conversations", description=text, blocking=name in BLOCKING) for name, text in CHECKS.items()),
        failed_share_spec("conversations", "to become a conversation (answers over the token budget aside)"),
    ],
    description=(
        "TinyLLaVA Factory fine-tuning data: train.json and val.json with one conversation per rendered image, "
        "the answer being complete OpenECAD v2 code that rebuilds the model (checked by reading it back through the "
        "safe interpreter), and images/ with readable names linked to the render store."
    ),
)
@writes_partition
def conversations(context: dg.AssetExecutionContext, config: ConversationConfig, settings: PipelineSettings) -> dg.MaterializeResult:
    started = time.perf_counter()
    partition = PartitionFolder(settings.partition_dir(context.partition_key))
    manifest = pd.read_parquet(partition.manifest)
    selected = manifest[manifest.selected]
    renders = pd.read_parquet(partition.render_index)
    files = {model_id: model_path(settings.corpus_path, model_id) for model_id in selected.id}
    with settings.open_executor() as executor:
        answers = code_answers(files, _direct_measurements(selected), settings.store_path, executor, settings.model_timeout)
    views = defaultdict(list)
    for row in renders.itertuples():
        views[row.id].append(row.view)
    layout = renders.layout.iloc[0] if len(renders) else "per_view"
    result = build_conversations(
        list(zip(selected.id, selected.split)),
        {answer.id: answer for answer in answers.answers},
        views,
        layout,
        open_token_counter(config.tokenizer),
        config.token_budget,
    )
    require_output(len(result.train), "training sample", result.dropped_by_reason)
    publish_conversations(partition, result, ((row.id, row.view, row.image) for row in renders.itertuples()))
    failed = answers.failed_round_trip
    context.log.info(
        f"{context.partition_key}: {len(result.train):,} train and {len(result.val):,} val samples, "
        f"dropped {result.dropped_by_reason}, {len(failed)} models fail the round trip"
    )
    expected_size = int(renders["size"].iloc[0]) if len(renders) else 0
    return dg.MaterializeResult(
        metadata={
            "train_json": dg.MetadataValue.path(str(partition.train_json.absolute())),
            "val_json": dg.MetadataValue.path(str(partition.val_json.absolute())),
            "image_folder": dg.MetadataValue.path(str(partition.images.absolute())),
            "train_samples": len(result.train),
            "val_samples": len(result.val),
            "models": len(result.train_models | result.val_models),
            "dropped_models": sum(result.dropped_by_reason.values()),
            "dropped_by_reason": dg.MetadataValue.json(result.dropped_by_reason),
            "answers_written": len(answers.answers) - answers.reused,
            "answers_reused": answers.reused,
            "answer_length_percentiles": dg.MetadataValue.json(result.length_percentiles()),
            "tokenizer": config.tokenizer,
            "token_budget": config.token_budget,
            "samples_over_max_length": dg.MetadataValue.json(
                {"max_length": config.max_length, "image_tokens": config.image_tokens, **result.left_out(config.max_length, config.image_tokens)}
            ),
            "seconds": round(time.perf_counter() - started, 2),
            "examples": dg.MetadataValue.md(_examples_markdown(result, config.examples)),
            **store_repairs(context, "answers", answers.repaired),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="round_trip",
                passed=not failed,
                metadata={
                    "models_checked": len(answers.answers),
                    "failed": dg.MetadataValue.json({answer.id: answer.reason for answer in failed[:50]}),
                },
            ),
            _format_check(result),
            _images_check(result, partition.images, expected_size),
            dg.AssetCheckResult(
                check_name="no_split_leak",
                passed=not (result.train_models & result.val_models),
                metadata={"in_both": dg.MetadataValue.json(sorted(result.train_models & result.val_models)[:50])},
            ),
            _answers_check(result),
            failed_share_check(
                "conversations",
                {reason: count for reason, count in result.dropped_by_reason.items() if reason != "over_token_budget"},
                len(selected),
                config.max_failed_share,
            ),
        ],
    )


def _direct_measurements(selected: pd.DataFrame) -> dict[str, Measurements]:
    """Each model's directly built volume, area and bbox, as the subset measured them."""
    return {
        row.id: Measurements(
            row.volume, row.area, (row.bbox_min_x, row.bbox_min_y, row.bbox_min_z), (row.bbox_max_x, row.bbox_max_y, row.bbox_max_z)
        )
        for row in selected.itertuples()
    }


def _format_check(result: ConversationSet) -> dg.AssetCheckResult:
    problems = format_problems(result.train) + format_problems(result.val)
    ids = [record["id"] for record in result.train + result.val]
    duplicates = len(ids) - len(set(ids))
    if duplicates:
        problems.append(f"{duplicates} ids are used twice")
    return dg.AssetCheckResult(
        check_name="format_valid", passed=not problems, metadata={"records": len(ids), "problems": dg.MetadataValue.json(problems[:50])}
    )


def _images_check(result: ConversationSet, image_folder, size: int) -> dg.AssetCheckResult:
    """Decodes every referenced image whole, so a missing, truncated or wrong-size file fails the check."""
    bad = [record["image"] for record in result.train + result.val if decoded_size(image_folder / record["image"]) != (size, size)]
    return dg.AssetCheckResult(
        check_name="images_present",
        passed=not bad,
        metadata={"expected_size": size, "missing_or_wrong_size": dg.MetadataValue.json(bad[:50])},
    )


def _answers_check(result: ConversationSet) -> dg.AssetCheckResult:
    empty = [record["id"] for record in result.train + result.val if "add_extrude(" not in record["conversations"][1]["value"]]
    return dg.AssetCheckResult(check_name="answers_not_empty", passed=not empty, metadata={"empty": dg.MetadataValue.json(empty[:50])})


def _examples_markdown(result: ConversationSet, count: int) -> str:
    records = (result.train + result.val)[:count]
    if not records:
        return "no samples"
    return "\n\n".join(f"**{record['id']}**\n\n```json\n{json.dumps(record, indent=1)}\n```" for record in records)
