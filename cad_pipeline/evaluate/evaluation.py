"""A trained adapter evaluated on its partition's validation samples: code generated from each picture, built through
the safe interpreter and scored against the ground-truth model, beside the same evaluation of the base model alone.

Everything a report needs is written to one folder: the answers as they are generated, the per-sample table, the
aggregates with their protocols, the gallery; the aggregates are also logged to MLflow as a child of the run that
trained the adapter. Generation runs within its budgets: samples it had no time for are cut, listed and left out of
the scores, and a rerun generates just those.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException

from cad_pipeline.dataset.corpus import model_path
from cad_pipeline.evaluate.answers import ANSWERS_FILE, AnswersFile, generation_fingerprint
from cad_pipeline.evaluate.code_scores import extract_code
from cad_pipeline.evaluate.config import EvaluationConfig
from cad_pipeline.evaluate.gallery import DrawJob, draw_row, draw_row_failed, gallery_png
from cad_pipeline.evaluate.generate import END_TOKEN, TIME, TOKEN_LIMIT, Answer, generate_answers
from cad_pipeline.evaluate.score import PROTOCOLS, SampleScore, ScoreJob, score_job, score_job_failed
from cad_pipeline.files import atomic_write_bytes, atomic_write_parquet, published_files
from cad_pipeline.parallel import map_in_sandboxes
from cad_pipeline.partition import EVALUATION_FOLDER, IMAGES, MANIFEST, VAL_JSON
from cad_pipeline.render.batch import image_owner
from cad_pipeline.train.data import first_views_first, prepare_samples, question_and_answer, read_records
from cad_pipeline.train.image_use import ImageUse, distinct_answer_share, measure_image_use, model_of_image
from cad_pipeline.train.loop import validation_loss
from cad_pipeline.train.model import TrainedModel, load_trained
from cad_pipeline.train.run import RUN_FILE
from cad_pipeline.train.tracking import Tracking

ADAPTER, BASE = "adapter", "base"
SAMPLES_FILE = "samples.parquet"
AGGREGATES_FILE = "aggregates.json"
GALLERY_FILE = "gallery.png"
RESULT_FILES = (SAMPLES_FILE, GALLERY_FILE, AGGREGATES_FILE, ANSWERS_FILE)
RESULT_VERSIONS = ".results"
"""The evaluation's files are links through `.results/current`, one version of them published whole."""
SCORE_CHUNK = 4
"""Answers per worker task: small, so a slow solid holds up few others."""
CUT = "cut"
"""The stop reason of a sample that was never generated: the overall generation budget ran out before its batch."""
CUT_SCORES = SampleScore(
    "", False, f"{CUT}: not generated within the overall generation budget", curve_accuracy=math.nan, loop_accuracy=math.nan
).metrics()
"""The scores of a cut sample: none, as it was not evaluated."""

AGGREGATES = {
    "samples": ("count", None, 1, "validation samples evaluated"),
    "samples_cut": ("cut", None, 1, "validation samples not generated: the overall generation budget ran out first; left out of every other number"),
    "stopped_end_token": ("stopped", END_TOKEN, 1, "answers that ended with the model's end token"),
    "stopped_token_limit": ("stopped", TOKEN_LIMIT, 1, "answers stopped at max_new_tokens"),
    "stopped_time": ("stopped", TIME, 1, "answers stopped unfinished when their batch ran out of its time budget"),
    "invalid_ratio_pct": ("invalid", None, 100, "percent of samples with no python block, rejected code or no solid (DeepCAD, CAD-Recode: IR)"),
    "command_accuracy_pct": ("mean", "command_accuracy", 100, PROTOCOLS["command_accuracy"] + "; mean over valid samples, percent"),
    "parameter_accuracy_pct": ("mean", "parameter_accuracy", 100, PROTOCOLS["parameter_accuracy"] + "; mean over valid samples, percent"),
    "chamfer_deepcad_median_x1e3": ("median", "chamfer_deepcad", 1e3, PROTOCOLS["chamfer_deepcad"] + "; median over valid samples, x10^3 (as DeepCAD reports)"),
    "chamfer_deepcad_mean_x1e3": ("mean", "chamfer_deepcad", 1e3, PROTOCOLS["chamfer_deepcad"] + "; mean over valid samples, x10^3"),
    "chamfer_cad_recode_median_x1e3": ("median", "chamfer_cad_recode", 1e3, PROTOCOLS["chamfer_cad_recode"] + "; median over valid samples, x10^3"),
    "chamfer_cad_recode_mean_x1e3": ("mean", "chamfer_cad_recode", 1e3, PROTOCOLS["chamfer_cad_recode"] + "; mean over valid samples, x10^3 (as CAD-Recode reports)"),
    "chamfer_deepcad_paired_median_x1e3": ("median", "chamfer_deepcad_paired", 1e3, PROTOCOLS["chamfer_deepcad_paired"] + "; median over valid samples, x10^3"),
    "chamfer_cad_recode_paired_median_x1e3": ("median", "chamfer_cad_recode_paired", 1e3, PROTOCOLS["chamfer_cad_recode_paired"] + "; median over valid samples, x10^3"),
    "iou_mean_pct": ("mean", "iou", 100, PROTOCOLS["iou"] + "; mean over valid samples, percent (as CAD-Recode reports)"),
    "iou_median_pct": ("median", "iou", 100, PROTOCOLS["iou"] + "; median over valid samples, percent"),
    "curve_accuracy_pct": ("mean_all", "curve_accuracy", 1, PROTOCOLS["curve_accuracy"] + "; mean over all samples, invalid ones included"),
    "loop_accuracy_pct": ("mean_all", "loop_accuracy", 1, PROTOCOLS["loop_accuracy"] + "; mean over all samples, invalid ones included"),
}  # fmt: skip
"""Aggregate name -> (statistic, per-sample column or stop reason, factor, protocol written next to the number)."""
COUNTS = ("count", "cut")
"""Statistics that count samples, so the adapter - base change means nothing for them."""


@dataclass(frozen=True)
class EvaluationSample:
    id: str
    model_id: str
    record: dict
    truth_file: Path
    truth_code: str


@dataclass(frozen=True)
class EvaluationResult:
    aggregates: dict[str, dict[str, float]]
    """Variant -> aggregate name -> value (NaN where no sample was valid)."""
    validation_loss: dict[str, float]
    gallery: list[tuple[str, str]]
    """(rank, sample id) of the gallery's rows: best, median and worst of the adapter's samples."""
    out_dir: Path
    run_id: str
    run_url: str
    adapter_run_id: str | None
    seconds: dict[str, float]
    cut_samples: dict[str, list[str]]
    """Variant -> ids of the samples the overall generation budget left no time for."""
    image_use: ImageUse | None
    """The adapter's loss on the evaluated samples with their own images against shuffled images."""
    distinct_answer_share: float
    """Distinct answers of the adapter over distinct models among the samples it answered."""

    @property
    def variants(self) -> list[str]:
        return list(self.aggregates)

    @property
    def stop_reasons(self) -> dict[str, dict[str, int]]:
        """Variant -> stop reason -> answers that ended for it."""
        stopped = [(name, reason) for name, (statistic, reason, *_) in AGGREGATES.items() if statistic == "stopped"]
        return {variant: {reason: int(values[name]) for name, reason in stopped} for variant, values in self.aggregates.items()}

    def markdown(self) -> str:
        return aggregates_markdown(self.aggregates)

    @property
    def gallery_path(self) -> Path:
        return self.out_dir / GALLERY_FILE


def evaluation_samples(partition_dir: Path, corpus_root: Path, limit: int) -> list[EvaluationSample]:
    """The partition's validation samples, at most `limit` (0: all), taken across models: every model's first view
    before any model's second, so a small limit still covers many models."""
    records = read_records(partition_dir / VAL_JSON)
    manifest = pd.read_parquet(partition_dir / MANIFEST)
    owner = image_owner(manifest[manifest.selected].id)
    chosen = []
    for record in records:
        model_id = owner(record["image"])
        if model_id is None:
            raise ValueError(
                f"{partition_dir / 'val.json'}: record {record['id']} shows {record['image']}, an image of no model in "
                f"{partition_dir / MANIFEST}; materialize conversations for this scale again"
            )
        truth_code = extract_code(question_and_answer(record)[1])
        if truth_code is None:
            raise ValueError(f"{partition_dir / 'val.json'}: record {record['id']} has no python block in its answer")
        chosen.append(EvaluationSample(record["id"], model_id, record, model_path(corpus_root, model_id), truth_code))
    chosen = first_views_first(chosen, lambda sample: sample.model_id)
    return chosen[:limit] if limit else chosen


def evaluate_adapter(
    adapter_dir: Path,
    partition_dir: Path,
    corpus_root: Path,
    config: EvaluationConfig,
    executor: Executor,
    tracking: Tracking,
    run_name: str,
    tags: dict[str, str],
    out_dir: Path,
    log: Callable[[str], None] = print,
) -> EvaluationResult:
    samples = evaluation_samples(partition_dir, corpus_root, config.sample_limit)
    if not samples:
        raise ValueError(f"{partition_dir / 'val.json'} has no validation samples to evaluate")
    variants = [ADAPTER, BASE] if config.baseline else [ADAPTER]
    stored = AnswersFile(out_dir / ANSWERS_FILE, generation_fingerprint(adapter_dir, config))
    if stored.restarted:
        log(f"{stored.path} was written for another adapter or other generation settings: started anew")
    answers, losses, seconds, image_use = generate(load_trained(adapter_dir), samples, partition_dir / IMAGES, config, variants, log, stored)
    cut = {variant: [sample.id for sample, answer in zip(samples, answers[variant], strict=True) if answer is None] for variant in variants}
    answered = [(sample.model_id, answer.text) for sample, answer in zip(samples, answers[ADAPTER]) if answer is not None]
    answer_share = distinct_answer_share([text for _, text in answered], [model for model, _ in answered])
    log(
        f"image use: distinct answers for {answer_share:.0%} of the models"
        + (f", shuffled-image loss {image_use.shuffled_image_loss:.4f} against {image_use.true_image_loss:.4f} (gap {image_use.gap_nats:+.4f} nats)" if image_use else "")
    )
    started = time.perf_counter()
    table = score_answers(samples, answers, executor, config.score_timeout)
    seconds["scoring"] = time.perf_counter() - started
    aggregates = aggregate(table)
    log(f"scored {len(table)} answers in {seconds['scoring']:.1f} s; invalid " + ", ".join(f"{v} {aggregates[v]['invalid_ratio_pct']:.1f}%" for v in variants))
    gallery = gallery_samples(table)
    protocols = {name: spec[-1] for name, spec in AGGREGATES.items()}
    image_figures = {**(image_use.to_json() if image_use else {}), "distinct_answer_share": answer_share}
    report = {
        "aggregates": aggregates, "validation_loss": losses, "protocols": protocols, "seconds": seconds, "cut_samples": cut, "image_use": image_figures,
    }  # fmt: skip
    with published_files(out_dir, RESULT_FILES, RESULT_VERSIONS) as folder:  # the results whole, or the last ones
        atomic_write_parquet(table, folder / SAMPLES_FILE)
        atomic_write_bytes(folder / GALLERY_FILE, draw_gallery(gallery, samples, answers, executor, config.score_timeout))
        atomic_write_bytes(folder / AGGREGATES_FILE, json.dumps(report, indent=1).encode())
        os.replace(stored.path.resolve(), folder / ANSWERS_FILE)  # the answers go with the results they made
    params = {**config.to_json(), "adapter": str(adapter_dir), "partition_dir": str(partition_dir), "samples": len(samples)}
    figures = {f"{ADAPTER}.{name}": value for name, value in image_figures.items() if name != "samples"}
    run_id, run_url, adapter_run_id = log_evaluation(tracking, adapter_dir, run_name, tags, params, aggregates, losses, figures, out_dir)
    return EvaluationResult(aggregates, losses, gallery, out_dir, run_id, run_url, adapter_run_id, seconds, cut, image_use, answer_share)


def generate(
    trained: TrainedModel,
    samples: list[EvaluationSample],
    images: Path,
    config: EvaluationConfig,
    variants: list[str],
    log: Callable[[str], None],
    stored: AnswersFile,
) -> tuple[dict[str, list[Answer | None]], dict[str, float], dict[str, float], ImageUse | None]:
    """Answers of each variant (None where the overall generation budget, shared by the variants, ran out first), the
    validation loss of both (per answer token, over the samples that fit the training's max_length; the base is the
    model before fine-tuning, `TrainedModel.as_base`), and the adapter's loss with the images shuffled among them."""
    answers, losses, seconds = {}, {}, {}
    budget_left = config.generation_budget or math.inf
    settings = trained.config
    records = [sample.record for sample in samples]
    prepared = prepare_samples(records, images, trained.processor, settings.max_length).samples
    for variant in (ADAPTER, BASE):
        with trained.as_base() if variant == BASE else nullcontext(trained.model) as model:
            losses[variant] = validation_loss(model, prepared, trained.processor, settings, trained.device, trained.dtype, packed=False)
            if variant == ADAPTER:
                image_use = measure_image_use(
                    lambda shown: validation_loss(model, shown, trained.processor, settings, trained.device, trained.dtype, packed=False),
                    prepared, [model_of_image(sample.image) for sample in prepared], losses[variant],
                )  # fmt: skip
            if variant in variants:
                answers[variant], spent = answer_samples(model, trained, samples, images, config, variant, stored, budget_left, log)
                seconds[f"generation_{variant}"] = spent
                budget_left -= spent
        log(f"{variant}: validation loss {losses[variant]:.4f} on the evaluated samples")
    return answers, losses, seconds, image_use


def answer_samples(
    model,
    trained: TrainedModel,
    samples: list[EvaluationSample],
    images: Path,
    config: EvaluationConfig,
    variant: str,
    stored: AnswersFile,
    budget: float,
    log: Callable[[str], None],
) -> tuple[list[Answer | None], float]:
    """The variant's answer to every sample, None where `budget` seconds ran out first, and the seconds it took: the
    answers `stored` holds are kept, the missing ones generated by `model` (with the trained processor on the trained
    device) and appended to it batch by batch."""
    started = time.perf_counter()
    kept = stored.answers(variant)
    missing = [sample.record for sample in samples if sample.id not in kept]
    generated = generate_answers(
        model, trained.processor, missing, images, config.max_new_tokens, config.generation_batch_size, trained.device,
        config.generation_batch_budget or math.inf, budget, partial(stored.append, variant),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    cut = len(missing) - len(generated)
    log(
        f"{variant}: {len(generated)} generated in {seconds:.1f} s, {len(samples) - len(missing)} kept from {stored.path}"
        + (f", {cut} cut: the overall generation budget of {config.generation_budget:g} s is spent" if cut else "")
    )
    answered = kept | {record["id"]: answer for record, answer in zip(missing, generated)}
    return [answered.get(sample.id) for sample in samples], seconds


def draw_gallery(
    gallery: list[tuple[str, str]], samples: list[EvaluationSample], answers: dict[str, list[Answer | None]], executor: Executor, timeout: float
) -> bytes:
    """One row per gallery sample: the truth, then each variant's prediction (crossed out where it was cut)."""
    position = {sample.id: index for index, sample in enumerate(samples)}
    jobs = [
        DrawJob(str(samples[position[sample_id]].truth_file), tuple(_code(of_variant[position[sample_id]]) for of_variant in answers.values()))
        for _, sample_id in gallery
    ]
    return gallery_png(map_in_sandboxes(executor, draw_row, jobs, draw_row_failed, timeout, 1))


def score_answers(samples: list[EvaluationSample], answers: dict[str, list[Answer | None]], executor: Executor, timeout: float) -> pd.DataFrame:
    """Every answer built and scored in a worker's sandbox, so code that hangs or crashes OpenCASCADE costs one sample.
    A cut sample (None) keeps its row, with stop reason `cut` and no scores."""
    rows, jobs = [], []
    for variant, of_variant in answers.items():
        for sample, answer in zip(samples, of_variant, strict=True):
            head = {"variant": variant, "sample_id": sample.id, "model_id": sample.model_id, "image": sample.record["image"]}
            if answer is None:
                rows.append((head, CUT_SCORES, {"stop_reason": CUT, "new_tokens": 0, "generation_seconds": 0.0, "answer": None, "code": None}))
                continue
            code = extract_code(answer.text)
            generation = {"stop_reason": answer.stop_reason, "new_tokens": answer.new_tokens, "generation_seconds": answer.seconds}
            rows.append((head, None, {**generation, "answer": answer.text, "code": code}))
            jobs.append(ScoreJob(sample.id, str(sample.truth_file), sample.truth_code, code))
    scores = iter(map_in_sandboxes(executor, score_job, jobs, score_job_failed, timeout, SCORE_CHUNK))
    return pd.DataFrame([{**head, **(next(scores).metrics() if metrics is None else metrics), **rest} for head, metrics, rest in rows])


def aggregate(table: pd.DataFrame) -> dict[str, dict[str, float]]:
    """Every aggregate of each variant over its evaluated samples; cut samples are only counted."""
    result = {}
    for variant, all_rows in table.groupby("variant", sort=False):
        cut = all_rows.stop_reason == CUT
        rows = all_rows[~cut]
        valid = rows[rows.valid]
        values = {}
        for name, (statistic, column, factor, _) in AGGREGATES.items():
            if statistic == "count":
                value = float(len(rows))
            elif statistic == "cut":
                value = float(cut.sum())
            elif statistic == "stopped":
                value = float((rows.stop_reason == column).sum())
            elif statistic == "invalid":
                value = 1.0 - len(valid) / len(rows) if len(rows) else math.nan
            elif statistic == "mean_all":
                value = float(rows[column].mean())
            elif len(valid):
                series = valid[column].astype(float)
                value = float(series.median() if statistic == "median" else series.mean())
            else:
                value = math.nan
            values[name] = value * factor
        result[variant] = values
    return result


def aggregates_markdown(aggregates: dict[str, dict[str, float]]) -> str:
    variants = list(aggregates)
    compared = ADAPTER in aggregates and BASE in aggregates
    header = ["metric", *variants, *(["adapter - base"] if compared else []), "protocol"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, (*_, protocol) in AGGREGATES.items():
        cells = [_number(aggregates[v][name]) for v in variants]
        if compared:
            cells.append(_number(aggregates[ADAPTER][name] - aggregates[BASE][name]) if _compared(name) else "")
        escaped = protocol.replace("|", r"\|")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {escaped} |")
    return "\n".join(lines)


def gallery_samples(table: pd.DataFrame) -> list[tuple[str, str]]:
    """Best, median and worst of the adapter's evaluated samples: valid ones by IoU, then DeepCAD Chamfer; invalid
    ones last."""
    rows = table[(table.variant == ADAPTER) & (table.stop_reason != CUT)]
    ranked = sorted(
        rows.itertuples(),
        key=lambda row: (not row.valid, -(row.iou if row.valid else 0.0), row.chamfer_deepcad if row.valid else 0.0, row.sample_id),
    )
    picks = {"best": ranked[0], "median": ranked[(len(ranked) - 1) // 2], "worst": ranked[-1]}
    seen, gallery = set(), []
    for rank, row in picks.items():
        if row.sample_id not in seen:
            seen.add(row.sample_id)
            gallery.append((rank, row.sample_id))
    return gallery


def log_evaluation(
    tracking: Tracking, adapter_dir: Path, run_name: str, tags: dict[str, str], params: dict, aggregates: dict, losses: dict, figures: dict, out_dir: Path
) -> tuple[str, str, str | None]:
    """A run in the adapter's experiment, nested under the run that trained it (and tagged on it), when that run
    is in this store; else a run in the configured experiment."""
    client = tracking.client()
    adapter_run = _adapter_run(client, adapter_dir)
    experiment = adapter_run.info.experiment_id if adapter_run else tracking.experiment_id(client)
    links = {"mlflow.parentRunId": adapter_run.info.run_id, "adapter_run_id": adapter_run.info.run_id} if adapter_run else {}
    run_id = client.create_run(experiment, run_name=run_name, tags={**tags, **links}).info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(f"{variant}.{name}", value, now, 0) for variant, values in aggregates.items() for name, value in values.items() if math.isfinite(value)]
    metrics += [Metric(f"{variant}.validation_loss", value, now, 0) for variant, value in losses.items() if math.isfinite(value)]
    metrics += [Metric(name, value, now, 0) for name, value in figures.items() if math.isfinite(value)]
    if ADAPTER in aggregates and BASE in aggregates:
        metrics += [
            Metric(f"change.{name}", aggregates[ADAPTER][name] - aggregates[BASE][name], now, 0)
            for name in AGGREGATES
            if _compared(name) and math.isfinite(aggregates[ADAPTER][name] - aggregates[BASE][name])
        ]
    client.log_batch(run_id, metrics=metrics, params=[Param(key, str(value)) for key, value in params.items()])
    for name in (SAMPLES_FILE, AGGREGATES_FILE, GALLERY_FILE):
        client.log_artifact(run_id, str(out_dir / name))
    client.set_terminated(run_id)
    if adapter_run:
        client.set_tag(adapter_run.info.run_id, "evaluation_run_id", run_id)
    return run_id, tracking.run_url(experiment, run_id), adapter_run.info.run_id if adapter_run else None


def _adapter_run(client, adapter_dir: Path):
    record = adapter_dir / RUN_FILE
    if not record.is_file():
        return None
    try:
        return client.get_run(json.loads(record.read_text())["run_id"])
    except MlflowException:
        return None


def _compared(name: str) -> bool:
    return AGGREGATES[name][0] not in COUNTS


def _code(answer: Answer | None) -> str | None:
    return None if answer is None else extract_code(answer.text)


def _number(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:,.0f}" if value == int(value) and abs(value) >= 1 else f"{value:.4g}"
