"""The Dagster assets materialized for real on a small generated corpus."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from PIL import Image

from cad_pipeline.cad.build import build_solid
from cad_pipeline.cad.measure import measure
from cad_pipeline.cad.openecad.interpreter import interpret
from cad_pipeline.dataset.corpus import corpus_fingerprint
from cad_pipeline.dataset.tokens import open_token_counter
from cad_pipeline.defs.conversations import ConversationConfig, conversations
from cad_pipeline.defs.data import cad_subset, deepcad_corpus
from cad_pipeline.defs.evaluation import evaluation
from cad_pipeline.defs.render import RenderConfig, rendered_views
from cad_pipeline.defs.resources import MlflowSettings, PipelineSettings
from cad_pipeline.defs.training import lora_adapter, training_plan
from cad_pipeline.train.image_use import CLEAR_GAP_NATS, VARIED_ANSWERS

CLI = str(Path(sys.executable).with_name("cad-pipeline"))
DATA_ASSETS = "deepcad_corpus,cad_subset,rendered_views,conversations"
SAMPLE_MODELS = 60


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> PipelineSettings:
    """Default corpus folder missing, so the first materialization generates the sample corpus."""
    root = tmp_path_factory.mktemp("data")
    return PipelineSettings(data_root=str(root), sample_models=SAMPLE_MODELS, workers=2)


@pytest.fixture(scope="module")
def mlflow_settings(tmp_path_factory) -> MlflowSettings:
    return MlflowSettings(tracking_dir=str(tmp_path_factory.mktemp("mlflow")))


@pytest.fixture
def own_settings(tmp_path) -> PipelineSettings:
    """A data folder of this test alone, for tests that assert what a first materialization does."""
    return PipelineSettings(data_root=str(tmp_path / "data"), sample_models=SAMPLE_MODELS, workers=2)


TRAINING = {"max_steps": 3, "batch_size": 2, "validation_samples": 4, "learning_rate": 3e-3, "checkpoint_every": 2, "validation_every": 1, "keep_best": True}
TRAINING_RUN_CONFIG = {"ops": {"training_plan": {"config": {**TRAINING, "measure_steps": 2, "warmup_steps": 1}}, "lora_adapter": {"config": TRAINING}}}


def _full_partition(settings: PipelineSettings) -> Path:
    """The `full` partition with its training data, materialized here unless another test of this module did."""
    partition = Path(settings.data_root) / "partitions" / "full"
    if not (partition / "train.json").is_file():
        assert dg.materialize([deepcad_corpus, cad_subset, rendered_views, conversations], resources={"settings": settings}, partition_key="full").success
    return partition


def _trained_adapter(settings: PipelineSettings, mlflow_settings: MlflowSettings) -> Path:
    """The `full` partition's trained model, trained here unless another test of this module did."""
    adapter = _full_partition(settings) / "lora_adapter" / "adapter"
    if not (adapter / "train_config.json").is_file():
        result = dg.materialize(
            [training_plan, lora_adapter], resources={"settings": settings, "mlflow": mlflow_settings}, partition_key="full", run_config=TRAINING_RUN_CONFIG
        )  # fmt: skip
        assert result.success
    return adapter


def test_corpus_is_generated_on_first_use_and_described(own_settings):
    settings = own_settings
    result = dg.materialize([deepcad_corpus], resources={"settings": settings})
    assert result.success
    materialization = result.asset_materializations_for_node("deepcad_corpus")[0]
    metadata = materialization.metadata
    assert metadata["generated_sample_corpus"].value is True
    fingerprint = corpus_fingerprint(settings.corpus_path)
    assert fingerprint.files == SAMPLE_MODELS + 1
    assert materialization.tags["dagster/data_version"] == metadata["fingerprint"].value == fingerprint.digest
    assert metadata["files_on_disk"].value == SAMPLE_MODELS
    sizes = [metadata[split].value for split in ("train", "validation", "test")]
    assert sum(sizes) == SAMPLE_MODELS and min(sizes) >= 1
    again = dg.materialize([deepcad_corpus], resources={"settings": settings})
    assert again.asset_materializations_for_node("deepcad_corpus")[0].metadata["generated_sample_corpus"].value is False


def test_full_scale_subset_materializes_with_manifest_and_passing_checks(settings):
    result = dg.materialize([deepcad_corpus, cad_subset], resources={"settings": settings}, partition_key="full")
    assert result.success
    metadata = result.asset_materializations_for_node("cad_subset")[0].metadata
    manifest = pd.read_parquet(metadata["manifest"].value)
    train = manifest[manifest.selected & (manifest.split == "train")]
    validation = manifest[manifest.selected & (manifest.split == "validation")]
    assert metadata["train_models"].value == len(train) > 0
    assert metadata["validation_models"].value == len(validation) == min(len(train) // 10, (manifest.split == "validation").sum())
    assert train.valid.all() and (train.volume > 0).all()
    assert (train.bbox_max_x >= train.bbox_min_x).all()
    assert metadata["models_per_second"].value > 0
    checks = {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}
    assert checks == {"subset_size": True, "no_split_leak": True, "nested_in_smaller_scales": True}


def test_rendered_views_draw_every_selected_model_once_and_reuse_them(own_settings):
    settings = own_settings
    assets = [deepcad_corpus, cad_subset, rendered_views]
    first = dg.materialize(assets, resources={"settings": settings}, partition_key="full")
    assert first.success
    metadata = first.asset_materializations_for_node("rendered_views")[0].metadata
    manifest = pd.read_parquet(first.asset_materializations_for_node("cad_subset")[0].metadata["manifest"].value)
    n_selected = int(manifest.selected.sum())
    assert (metadata["rendered"].value, metadata["reused"].value, metadata["failed"].value) == (n_selected, 0, 0)
    index = pd.read_parquet(metadata["index"].value)
    assert len(index) == 3 * n_selected and set(index.view) == {"front", "top", "right"}
    assert all(Path(image).is_file() for image in index.image)
    assert "data:image/png;base64," in metadata["gallery"].value
    checks = {evaluation.check_name: evaluation.passed for evaluation in first.get_asset_check_evaluations()}
    assert checks["renders_complete"] is True
    again = dg.materialize(assets, resources={"settings": settings}, partition_key="full")
    metadata = again.asset_materializations_for_node("rendered_views")[0].metadata
    assert (metadata["rendered"].value, metadata["reused"].value) == (0, n_selected)


def _load_like_tinyllava(data_path: Path, image_folder: Path) -> list[tuple[Image.Image, str, str]]:
    """TinyLLaVA Factory's custom fine-tuning loader, from its documented format: a JSON list; `image` opened from
    `--image_folder`; turns alternate starting with the human, whose turn carries `<image>`; OpenECAD's inference
    script takes the code from the first ```python block of the answer."""
    samples = []
    for record in json.loads(data_path.read_text()):
        image = Image.open(image_folder / record["image"]).convert("RGB")
        roles = [turn["from"] for turn in record["conversations"]]
        assert roles[0] == "human" and roles == ["human", "gpt"] * (len(roles) // 2)
        assert "<image>" in record["conversations"][0]["value"]
        code = re.search(r"```python(.*?)```", record["conversations"][1]["value"], re.DOTALL).group(1)
        samples.append((image, record["id"], code))
    return samples


def test_conversations_load_in_tinyllava_format_and_every_answer_rebuilds(settings):
    result = dg.materialize([deepcad_corpus, cad_subset, rendered_views, conversations], resources={"settings": settings}, partition_key="full")
    assert result.success
    metadata = result.asset_materializations_for_node("conversations")[0].metadata
    checks = {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations() if evaluation.asset_key.path == ["conversations"]}
    assert checks == {name: True for name in ("round_trip", "format_valid", "images_present", "no_split_leak", "answers_not_empty", "failed_share")}
    manifest = pd.read_parquet(result.asset_materializations_for_node("cad_subset")[0].metadata["manifest"].value)
    selected = manifest[manifest.selected]
    image_folder = Path(metadata["image_folder"].value)
    train = _load_like_tinyllava(Path(metadata["train_json"].value), image_folder)
    val = _load_like_tinyllava(Path(metadata["val_json"].value), image_folder)
    assert len(train) == 3 * (selected.split == "train").sum() - 3 * metadata["dropped_models"].value + 3 * (selected.split != "train").sum() - len(val)
    assert {image.size for image, _, _ in train + val} == {(512, 512)}
    assert metadata["train_samples"].value == len(train) and metadata["val_samples"].value == len(val) > 0
    by_model = {}
    for _, sample_id, code in train + val:
        by_model.setdefault(sample_id.rsplit("_", 1)[0], set()).add(code)
    assert all(len(codes) == 1 for codes in by_model.values())  # every view of a model has the same answer
    volumes = dict(zip(selected.id.str.replace("/", "_"), selected.volume))
    for model, codes in list(by_model.items())[:5]:
        rebuilt = measure(build_solid(interpret(codes.pop())))
        assert rebuilt.volume == pytest.approx(volumes[model], rel=1e-4)
    percentiles = metadata["answer_length_percentiles"].value
    assert 0 < percentiles["tokens"]["p50"] <= percentiles["tokens"]["p100"] <= 3072
    assert "Of course, here are the codes:" in metadata["examples"].value
    assert metadata["samples_over_max_length"].value["max_length"] == 2048
    short = 64 + percentiles["tokens"]["p50"] * 3 // 4
    tight = dg.materialize(
        [deepcad_corpus, cad_subset, rendered_views, conversations],
        resources={"settings": settings},
        partition_key="full",
        run_config=dg.RunConfig({"conversations": ConversationConfig(token_budget=percentiles["tokens"]["p50"], max_length=short, image_tokens=64)}),
    )
    tight_metadata = tight.asset_materializations_for_node("conversations")[0].metadata
    dropped = tight_metadata["dropped_by_reason"].value
    assert 0 < dropped["over_token_budget"] < len(by_model)
    assert tight_metadata["answers_reused"].value == len(selected)
    counter = open_token_counter("cl100k_base")
    over = {}
    for split in ("train", "val"):
        records = json.loads(Path(tight_metadata[f"{split}_json"].value).read_text())
        lengths = [sum(counter.count(turn["value"].removeprefix("<image>\n")) for turn in r["conversations"]) + 64 for r in records]
        over[split] = sum(length > short for length in lengths)
    assert tight_metadata["samples_over_max_length"].value == {"max_length": short, "image_tokens": 64, **over}
    assert 0 < over["train"] < tight_metadata["train_samples"].value


def test_training_plan_and_lora_adapter_record_one_mlflow_run_and_a_model_that_reloads_exactly(settings, mlflow_settings):
    """The tiny base model trains in full (train_mode auto), and keeps the weights of its best validation loss."""
    import torch
    from mlflow.tracking import MlflowClient

    from cad_pipeline.train.model import load_trained

    mlflow = mlflow_settings
    result = dg.materialize(
        [deepcad_corpus, cad_subset, rendered_views, conversations, training_plan, lora_adapter],
        resources={"settings": settings, "mlflow": mlflow},
        partition_key="full",
        run_config=TRAINING_RUN_CONFIG,
    )
    assert result.success
    plan = result.asset_materializations_for_node("training_plan")[0].metadata
    projections = plan["projections"].value
    assert "| full |" in projections and "| 1k |" not in projections, "a scale the 60-model corpus cannot fill is not planned"
    assert plan["seconds_per_step"].value > 0 and "| batch | accumulation |" in plan["memory_plan"].value
    saved_plan = json.loads(Path(plan["plan"].value).read_text())
    [full] = saved_plan["projections"]
    measured = saved_plan["measurement"]
    assert full["epoch_seconds"] == pytest.approx(measured["startup_seconds"] + full["steps_per_epoch"] * measured["seconds_per_step"])
    assert full["steps_per_epoch"] == -(-full["train_samples"] // 2) and full["run_steps"] == 3

    metadata = result.asset_materializations_for_node("lora_adapter")[0].metadata
    client = MlflowClient(tracking_uri=mlflow.tracking(settings).tracking_uri)
    run = client.get_run(metadata["mlflow_run_id"].value)
    assert run.info.status == "FINISHED"
    assert run.data.tags["dagster_run_id"] == result.run_id and run.data.tags["partition"] == "full"
    assert run.data.params["train_mode_resolved"] == "full" and run.data.params["base_model_source"].startswith("tiny")
    assert run.data.params["trained_parts"] == "language_model: full, connector: full, vision_tower: full"
    by_part = [int(run.data.params[f"trainable_parameters_{part}"]) for part in ("language_model", "connector", "vision_tower")]
    assert min(by_part) > 0 and sum(by_part) == int(run.data.params["trainable_parameters"]) == int(run.data.params["total_parameters"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [1, 2, 3]
    for name in ("learning_rate", "real_tokens_per_second", "pad_fraction", "peak_memory_bytes"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 3
    validations = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in validations] == [0, 1, 2, 3]
    best = min(validations, key=lambda m: m.value)
    assert run.data.metrics["best_val_loss"] == best.value and run.data.metrics["best_step"] == best.step
    assert metadata["best_step"].value == best.step and metadata["validation_loss_after"].value == pytest.approx(best.value, abs=1e-4)
    assert metadata["train_mode"].value == "full"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)} | {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert {"loss_curve.png", "adapter/model.safetensors", "adapter/config.json", "adapter/train_config.json", "adapter/tokenizer.json", "adapter/base_model", "adapter/run.json", "adapter/loss_curve.png"} <= artifacts
    assert metadata["mlflow_run"].value.endswith(run.info.run_id) and "data:image/png;base64," in metadata["loss_curve"].value
    assert metadata["planned_over_measured"].value > 0
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "validation_loss_fell"]
    assert check.severity == dg.AssetCheckSeverity.WARN
    assert check.passed == (metadata["validation_loss_after"].value < metadata["validation_loss_before"].value)
    gap = run.data.metrics["image_loss_gap_nats_after"]
    assert gap == pytest.approx(run.data.metrics["image_loss_shuffled_after"] - run.data.metrics["image_loss_true_after"])
    assert run.data.metrics["image_loss_true_after"] == pytest.approx(best.value) and "image_loss_gap_nats_before" in run.data.metrics
    assert metadata["image_loss_gap_nats_after"].value == pytest.approx(gap, abs=1e-4) and "image_loss_gap_nats_before" in metadata
    [uses] = [e for e in result.get_asset_check_evaluations() if e.check_name == "uses_image"]
    assert uses.severity == dg.AssetCheckSeverity.WARN and uses.passed == (gap > CLEAR_GAP_NATS)

    adapter = Path(metadata["adapter"].value)
    reloaded = load_trained(adapter)
    assert reloaded.config.train_mode == "full"
    best_weights = torch.load(next((adapter.parent / "checkpoints").rglob(f"best-{best.step}.pt")), weights_only=False)["trainable"]
    parameters = dict(reloaded.model.named_parameters())
    assert len(best_weights) == len(parameters) and all(torch.equal(parameters[name], value) for name, value in best_weights.items())


def test_evaluation_scores_adapter_and_base_and_logs_under_the_training_run(settings, mlflow_settings):
    """On the `full` partition's trained model (the training test's, or trained here). Its overall generation budget
    is spent by the adapter's first batch of three: the adapter's fourth sample and all of the base's are cut, and the
    evaluation still materializes with what was generated."""
    import torch
    from mlflow.tracking import MlflowClient

    from cad_pipeline.evaluate.evaluation import evaluation_samples
    from cad_pipeline.train.config import TrainConfig
    from cad_pipeline.train.data import prepare_samples
    from cad_pipeline.train.loop import validation_loss
    from cad_pipeline.train.model import load_base_model, resolved_max_length

    limit = 4
    _trained_adapter(settings, mlflow_settings)
    result = dg.materialize(
        [evaluation],
        resources={"settings": settings, "mlflow": mlflow_settings},
        partition_key="full",
        run_config={
            "ops": {"evaluation": {"config": {"sample_limit": limit, "max_new_tokens": 24, "generation_batch_size": 3, "generation_budget": 1e-6}}}
        },
    )
    assert result.success
    metadata = result.asset_materializations_for_node("evaluation")[0].metadata
    table = pd.read_parquet(metadata["per_sample"].value)
    assert len(table) == 2 * limit and table.groupby("variant").size().to_dict() == {"adapter": limit, "base": limit}
    adapter_rows, base_rows = table[table.variant == "adapter"], table[table.variant == "base"]
    assert list(adapter_rows.sample_id) == list(base_rows.sample_id)
    assert adapter_rows.model_id.nunique() == limit, "a small limit takes one view of each of several models"
    assert list(adapter_rows.stop_reason == "cut") == [False, False, False, True] and (base_rows.stop_reason == "cut").all()
    generated = adapter_rows[adapter_rows.stop_reason != "cut"]
    assert set(generated.stop_reason) <= {"end_token", "token_limit"} and (generated.new_tokens <= 24).all()
    assert (generated.new_tokens[generated.stop_reason == "token_limit"] == 24).all() and (generated.generation_seconds > 0).all()
    for row in table.itertuples():
        if row.valid:
            assert row.failure is None and 0.0 <= row.iou <= 1.0 and row.chamfer_deepcad >= 0.0
        else:
            assert row.failure.split(":")[0] in {"no_code", "code_rejected", "no_solid", "cut"} and pd.isna(row.iou)
    expected_invalid = 100.0 * (~generated.valid).sum() / 3
    assert metadata["samples"].value == 3 and metadata["samples_cut"].value == 1
    assert metadata["invalid_ratio_pct"].value == pytest.approx(expected_invalid)
    cut_ids = {"adapter": list(adapter_rows.sample_id[3:]), "base": list(base_rows.sample_id)}
    stops = {"adapter": {reason: int((generated.stop_reason == reason).sum()) for reason in ("end_token", "token_limit", "time")}}
    assert metadata["cut_samples"].value == cut_ids
    assert metadata["stop_reasons"].value == {**stops, "base": {"end_token": 0, "token_limit": 0, "time": 0}}
    assert "| invalid_ratio_pct |" in metadata["aggregates"].value and "adapter - base" in metadata["aggregates"].value
    assert "| samples_cut | 1 | 4 |" in metadata["aggregates"].value
    assert "data:image/png;base64," in metadata["gallery"].value
    folder = Path(metadata["per_sample"].value).parent
    assert json.loads((folder / "aggregates.json").read_text())["cut_samples"] == cut_ids
    answers = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()[1:]]
    assert [(a["variant"], a["sample_id"], a["text"]) for a in answers] == [("adapter", row.sample_id, row.answer) for row in generated.itertuples()]

    client = MlflowClient(tracking_uri=mlflow_settings.tracking(settings).tracking_uri)
    run = client.get_run(metadata["mlflow_run_id"].value)
    training_run = json.loads((Path(settings.data_root) / "partitions" / "full" / "lora_adapter" / "adapter" / "run.json").read_text())
    assert run.info.status == "FINISHED" and run.info.experiment_id == training_run["experiment_id"]
    assert run.data.tags["mlflow.parentRunId"] == training_run["run_id"] and run.data.tags["dagster_run_id"] == result.run_id
    assert client.get_run(training_run["run_id"]).data.tags["evaluation_run_id"] == run.info.run_id
    assert run.data.metrics["adapter.invalid_ratio_pct"] == pytest.approx(expected_invalid)
    assert run.data.metrics["adapter.samples"] == 3 and run.data.params["sample_limit"] == str(limit)
    assert run.data.metrics["adapter.samples_cut"] == 1 and run.data.metrics["base.samples_cut"] == limit
    assert {reason: run.data.metrics[f"adapter.stopped_{reason}"] for reason in stops["adapter"]} == stops["adapter"]
    losses = {variant: run.data.metrics[f"{variant}.validation_loss"] for variant in ("adapter", "base")}
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"samples.parquet", "aggregates.json", "gallery.png"}
    [check] = [e for e in result.get_asset_check_evaluations() if e.check_name == "adapter_beats_base"]
    assert check.severity == dg.AssetCheckSeverity.WARN and check.passed == (losses["adapter"] < losses["base"])
    assert metadata["validation_loss_adapter"].value == pytest.approx(losses["adapter"], abs=1e-4)
    figures = json.loads((folder / "aggregates.json").read_text())["image_use"]
    assert figures["true_image_loss"] == pytest.approx(losses["adapter"])
    assert figures["image_loss_gap_nats"] == pytest.approx(figures["shuffled_image_loss"] - figures["true_image_loss"])
    answered = [(row.model_id, row.answer.strip()) for row in generated.itertuples()]
    share = len({answer for _, answer in answered}) / len({model for model, _ in answered})
    assert figures["distinct_answer_share"] == pytest.approx(min(1.0, share)) == run.data.metrics["adapter.distinct_answer_share"]
    assert metadata["distinct_answer_share"].value == pytest.approx(figures["distinct_answer_share"], abs=1e-4)
    [uses] = [e for e in result.get_asset_check_evaluations() if e.check_name == "uses_image"]
    assert uses.severity == dg.AssetCheckSeverity.WARN
    assert uses.passed == (figures["image_loss_gap_nats"] > CLEAR_GAP_NATS and figures["distinct_answer_share"] >= VARIED_ANSWERS)

    partition = Path(settings.data_root) / "partitions" / "full"
    config = TrainConfig(base_model=str(partition / "lora_adapter" / "base_model"))
    base = load_base_model(config, torch.device("cpu"), torch.float32, partition, [])
    config = resolved_max_length(config, base.model)
    records = [sample.record for sample in evaluation_samples(partition, settings.corpus_path, limit)]
    prepared = prepare_samples(records, partition / "images", base.processor, config.max_length).samples
    alone = validation_loss(base.model, prepared, base.processor, config, torch.device("cpu"), torch.float32, packed=False)
    assert losses["base"] == pytest.approx(alone, rel=1e-5), "the baseline is the base model as it was before training"


def test_evaluate_command_without_baseline_prints_what_its_budget_cut(settings, mlflow_settings, tmp_path, capsys, monkeypatch):
    """One sample a batch and a budget the first batch spends: the second sample is cut. The answers file carries the
    fingerprint the adapter still has after the run, so the same command run again resumes it."""
    from cad_pipeline.cli import main
    from cad_pipeline.evaluate.answers import generation_fingerprint
    from cad_pipeline.evaluate.config import EvaluationConfig

    monkeypatch.setenv("CAD_PIPELINE_CORPUS", str(settings.corpus_path))
    monkeypatch.setenv("CAD_PIPELINE_DATA", settings.data_root)
    adapter = _trained_adapter(settings, mlflow_settings)
    partition = adapter.parent.parent
    arguments = ["--partition", str(partition), "--sample-limit", "2", "--max-new-tokens", "8", "--no-baseline", "--out", str(tmp_path)]
    budgets = ["--generation-batch-size", "1", "--generation-budget", "1e-6"]
    assert main(["evaluate", "--adapter", str(adapter), *arguments, *budgets]) == 0
    printed = capsys.readouterr().out
    assert "| metric | adapter | protocol |" in printed and "MLflow run: http://localhost:5000/#/experiments/" in printed
    table = pd.read_parquet(tmp_path / "samples.parquet")
    assert list(table.variant) == ["adapter", "adapter"] and list(table.stop_reason == "cut") == [False, True]
    first_reason = table.stop_reason[0]
    counts = ", ".join(f"{reason} {int(reason == first_reason)}" for reason in ("end_token", "token_limit", "time"))
    assert f"stop reasons: adapter {counts}\n" in printed
    assert f"cut (the overall generation budget ran out; a rerun generates them): adapter 1: {table.sample_id[1]}\n" in printed
    assert (tmp_path / "gallery.png").read_bytes().startswith(b"\x89PNG")
    header, *answers = (tmp_path / "answers.jsonl").read_text().splitlines()
    assert [json.loads(line)["sample_id"] for line in answers] == [table.sample_id[0]]
    settings_used = EvaluationConfig(sample_limit=2, max_new_tokens=8, baseline=False, generation_batch_size=1, generation_budget=1e-6)
    assert json.loads(header)["fingerprint"] == generation_fingerprint(adapter, settings_used)


def test_bench_learn_trains_on_a_time_budget_evaluates_and_logs_one_mlflow_run(settings, capsys, monkeypatch):
    """Two steps of training (the budget leaves room for them and the validations on a busy machine; two models'
    views, so their images can be shuffled), three validation models evaluated; the JSON figures match the MLflow run."""
    from mlflow.tracking import MlflowClient

    from cad_pipeline.cli import main

    data = dg.materialize([deepcad_corpus, cad_subset, rendered_views, conversations], resources={"settings": settings}, partition_key="full")
    assert data.success
    monkeypatch.setenv("CAD_PIPELINE_CORPUS", str(settings.corpus_path))
    monkeypatch.setenv("CAD_PIPELINE_DATA", settings.data_root)
    partition = Path(settings.data_root) / "partitions" / "full"
    assert main(["bench", "learn", "--partition", str(partition), "--minutes", "2", "--max-steps", "2", "--validation-samples", "6", "--samples", "3", "--max-new-tokens", "16", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)

    expected = {
        "invalid_ratio_pct", "image_loss_gap_nats", "image_loss_gap_nats_before", "distinct_answer_share", "iou_median_pct",
        "chamfer_deepcad_median_x1e3", "chamfer_cad_recode_median_x1e3", "train_seconds", "steps", "epochs", "failure_reasons",
        "validations", "samples", "mlflow_run_url",
    }  # fmt: skip
    assert expected <= set(figures)
    assert figures["samples"] == 3 and figures["samples_cut"] == 0
    assert 0 <= figures["invalid_ratio_pct"] <= 100
    assert sum(figures["failure_reasons"].values()) == round(figures["invalid_ratio_pct"] * 3 / 100)
    assert set(figures["failure_reasons"]) <= {"no_code", "code_rejected", "no_solid"}
    first, *later = figures["validations"]
    assert (first["step"], first["epoch"], first["train_loss"]) == (0, 0.0, None)
    assert figures["steps"] == 2 and later[-1]["step"] == 2 and later[-1]["train_loss"] > 0
    for when in ("", "_before"):
        gap = figures[f"image_loss_shuffled{when}"] - figures[f"image_loss_true{when}"]
        assert figures[f"image_loss_gap_nats{when}"] == pytest.approx(gap)
    assert figures["image_loss_true_before"] == pytest.approx(first["validation_loss"])
    assert 0 < figures["distinct_answer_share"] <= 1 and figures["train_seconds"] > 0
    assert Path(figures["adapter"]) == partition / "bench_learn" / "adapter"

    client = MlflowClient(tracking_uri=MlflowSettings().tracking(settings).tracking_uri)  # the command's store: <data>/mlflow
    run = client.get_run(figures["mlflow_run_id"])
    assert figures["mlflow_run_url"].endswith(run.info.run_id) and run.data.tags["bench"] == "learn"
    assert run.data.metrics["bench.invalid_ratio_pct"] == pytest.approx(figures["invalid_ratio_pct"])
    assert run.data.metrics["bench.steps"] == figures["steps"] and run.data.metrics["bench.samples"] == 3
    assert run.data.params["max_minutes"] == "2.0" and run.data.params["keep_best"] == "True"
    evaluation = client.get_run(run.data.tags["evaluation_run_id"])
    assert evaluation.data.tags["mlflow.parentRunId"] == run.info.run_id and evaluation.data.tags["bench"] == "learn"
    assert evaluation.data.params["baseline"] == "False" and evaluation.data.params["sample_limit"] == "3"


def test_estimate_prints_the_projections_and_the_memory_plan(settings, capsys, monkeypatch):
    from cad_pipeline.cli import main

    partition = _full_partition(settings)
    monkeypatch.setenv("CAD_PIPELINE_CORPUS", str(settings.corpus_path))
    assert main(["estimate", "--partition", str(partition), "--plan-steps", "2", "--plan-warmup", "1", "--batch-size", "2", "--memory-budget-gib", "8"]) == 0
    printed = capsys.readouterr().out
    assert "s/step over the epoch" in printed and "| full |" in printed and "| 100k |" not in printed
    assert "Budget 8.00 GiB" in printed and "| batch | accumulation |" in printed


def test_grid_layout_makes_one_checked_image_per_model(settings):
    config = dg.RunConfig({"rendered_views": RenderConfig(layout="grid", size=256)})
    result = dg.materialize([deepcad_corpus, cad_subset, rendered_views], resources={"settings": settings}, partition_key="full", run_config=config)
    assert result.success
    metadata = result.asset_materializations_for_node("rendered_views")[0].metadata
    index = pd.read_parquet(metadata["index"].value)
    assert set(index.view) == {"grid"} and index.id.is_unique
    assert metadata["rendered"].value == len(index) > 0
    checks = {evaluation.check_name: evaluation.passed for evaluation in result.get_asset_check_evaluations()}
    assert checks["renders_complete"] is True


def test_scale_larger_than_the_corpus_fails_with_an_actionable_message(settings):
    result = dg.materialize([cad_subset], resources={"settings": settings}, partition_key="1k", raise_on_error=False)
    assert not result.success
    failure = next(event for event in result.all_events if event.is_step_failure)
    message = failure.step_failure_data.user_failure_data.description
    assert "1,000 train models" in message and "CAD_PIPELINE_CORPUS" in message


def test_headless_materialize_of_two_scales_keeps_them_nested(tmp_path):
    env = {**os.environ, "CAD_PIPELINE_DATA": str(tmp_path), "CAD_PIPELINE_SCALES": "10,20,full", "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    corpus = tmp_path / "deepcad"
    subprocess.run([CLI, "sample", "--out", corpus, "--models", "40", "--seed", "5"], check=True, capture_output=True, timeout=600)
    rendered_before, small_examined = set(), []
    for scale in ("10", "20"):
        result = subprocess.run([CLI, "materialize", "--scale", scale, "--select", DATA_ASSETS], env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert re.search(rf"^cad_subset\[{scale}\] +materialized +[\d.]+ +3/3 *$", result.stdout, re.M), "all three checks, nesting among them, passed"
        assert f"partitions/{scale}/manifest.parquet" in result.stdout
        reused = int(result.stdout.split("models_reused=")[1].split(",")[0])
        assert reused == 0 if scale == "10" else reused >= len(small_examined)
        rendered = int(result.stdout.split("rendered=")[1].split(",")[0])
        selected = set(pd.read_parquet(tmp_path / "partitions" / scale / "manifest.parquet").query("selected").id)
        assert rendered == len(selected - rendered_before) > 0, "each scale renders exactly the models that are new to it"
        rendered_before |= selected
        if scale == "10":
            small_examined = pd.read_parquet(tmp_path / "partitions" / "10" / "manifest.parquet").id.tolist()
    small, large = (pd.read_parquet(tmp_path / "partitions" / s / "manifest.parquet") for s in ("10", "20"))
    small_train = small.query("selected and split == 'train'").id.tolist()
    large_train = large.query("selected and split == 'train'").id.tolist()
    assert len(small_train) == 10 and len(large_train) == 20
    assert large_train[:10] == small_train
    unknown = subprocess.run([CLI, "materialize", "--scale", "5"], env=env, capture_output=True, text=True, timeout=600)
    assert unknown.returncode == 2 and "configured scales: 10, 20, full" in unknown.stderr


def test_killed_render_resumes_with_only_the_missing_images(tmp_path):
    """Kill a headless materialization (and its worker processes) while it renders, then run it again."""
    env = {**os.environ, "CAD_PIPELINE_DATA": str(tmp_path), "CAD_PIPELINE_SCALES": "full", "DAGSTER_HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    subprocess.run([CLI, "sample", "--out", tmp_path / "deepcad", "--models", "240", "--seed", "9"], check=True, capture_output=True, timeout=600)
    first = subprocess.Popen([CLI, "materialize", "--scale", "full", "--select", DATA_ASSETS], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    renders = tmp_path / "store" / "renders"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(renders.rglob("*.png"))) < 60:
        assert first.poll() is None, "the run ended before it could be killed"
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    views_by_model = {}
    for image in renders.rglob("*.png"):
        Image.open(image).verify()  # every image under its final name is whole
        views_by_model.setdefault(image.name.rsplit("_", 1)[0], set()).add(image.name.rsplit("_", 1)[1])
    complete = sum(views == {"front.png", "top.png", "right.png"} for views in views_by_model.values())
    assert complete > 0
    second = subprocess.run([CLI, "materialize", "--scale", "full", "--select", DATA_ASSETS], env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:]
    line = second.stdout.split("rendered_views[full]: ")[1].split("\n")[0]
    counts = dict(item.split("=") for item in line.split(", "))
    models, rendered, reused = int(counts["models"].replace(",", "")), int(counts["rendered"]), int(counts["reused"])
    assert reused == complete and rendered == models - complete > 0
