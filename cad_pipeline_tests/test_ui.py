"""End to end through a real `dagster dev` on a small generated corpus: the asset graph as the UI reads it, the whole
graph launched through the GraphQL API, Materialize clicked in Chromium, and a backfill of two scales under the gpu pool.

The tests share one server; each materializes what it needs, reusing what another test has already materialized.
"""

import os
import shutil
import urllib.parse
from pathlib import Path

import pytest

from cad_pipeline.cad.sample_corpus import write_corpus
from cad_pipeline_tests.ui_server import ASSET_JOB, LOCATION, DagsterDev, dagster_dev

SCALES = ("10", "20", "full")
SMALLEST, SECOND = SCALES[0], SCALES[1]
SAMPLE_MODELS = 60
TRAINING = {"max_steps": 3, "batch_size": 2, "validation_samples": 4, "learning_rate": 3e-3, "checkpoint_every": 2, "image_contrast": 0.0}
"""Orchestration, not learning, is under test here: without the image-contrast term a step costs half as much."""
PLAN = {**TRAINING, "measure_steps": 2, "warmup_steps": 1}
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}
"""One process for a run's steps instead of one per step: a minute less on 2 cores. The clicked run and the backfill
keep the UI's default multiprocess executor."""
WHOLE_GRAPH_CONFIG = {
    **IN_PROCESS,
    "ops": {
        "training_plan": {"config": PLAN},
        "lora_adapter": {"config": TRAINING},
        "evaluation": {"config": {"sample_limit": 3, "max_new_tokens": 24, "generation_batch_size": 3}},
    }
}
GROUPS = {
    "deepcad_corpus": "data",
    "cad_subset": "data",
    "rendered_views": "data",
    "conversations": "data",
    "training_plan": "training",
    "lora_adapter": "training",
    "evaluation": "evaluation",
}
GPU_ASSETS = {"training_plan", "lora_adapter", "evaluation"}
DATA_ASSETS = [name for name, group in GROUPS.items() if group == "data"]
WARN_CHECKS = {"validation_loss_fell", "adapter_beats_base", "uses_image"}
"""Model-quality checks: recorded on every run, allowed to fail after three training steps."""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPOSITORY = {"repositoryLocationName": LOCATION, "repositoryName": "__repository__"}

ASSET_NODES = """{ assetNodes { assetKey { path } groupName description kinds pools
  owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
  partitionKeysByDimension { partitionKeys }
  assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
  instance { poolConfig { poolGranularity defaultPoolLimit } } }"""
AUTOMATION = """query($repository: RepositorySelector!) {
  schedulesOrError(repositorySelector: $repository) { ... on Schedules { results { name cronSchedule scheduleState { status } } } }
  sensorsOrError(repositorySelector: $repository) { ... on Sensors { results { name sensorState { status } } } } }"""
LAUNCH_RUN = """mutation($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""
LAUNCH_BACKFILL = """mutation($params: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $params) { __typename
  ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }"""
MATERIALIZATIONS = """query($key: AssetKeyInput!, $partitions: [String!]) { assetOrError(assetKey: $key) { ... on Asset {
  assetMaterializations(partitions: $partitions, limit: 1) { runId partition metadataEntries { label __typename
    ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue } ... on MarkdownMetadataEntry { mdStr }
    ... on PathMetadataEntry { path } ... on UrlMetadataEntry { url } } }
  definition { assetChecksOrError { ... on AssetChecks { checks { name blocking
    executionForLatestMaterialization { runId status evaluation { success severity } } } } } } } } }"""
RUN_EVENTS = """query($id: ID!) { logsForRun(runId: $id, limit: 5000) { ... on EventConnection { events { __typename
  ... on MessageEvent { message stepKey } } } } }"""


@pytest.fixture(scope="module")
def ui(tmp_path_factory) -> DagsterDev:
    root = tmp_path_factory.mktemp("ui")
    write_corpus(root / "deepcad", SAMPLE_MODELS, 4)
    environment = {
        "CAD_PIPELINE_DATA": str(root / "data"),
        "CAD_PIPELINE_CORPUS": str(root / "deepcad"),
        "CAD_PIPELINE_SCALES": ",".join(SCALES),
    }
    with dagster_dev(root / "dagster_home", environment) as server:
        yield server


def test_the_asset_graph_reads_as_the_pipeline(ui):
    data = ui.graphql(ASSET_NODES)
    nodes = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert {name: node["groupName"] for name, node in nodes.items()} == GROUPS
    for name, node in nodes.items():
        assert len(node["description"]) > 100, f"{name} needs a description a reader can follow the pipeline by"
        assert node["kinds"] and all(owner.get("team", "").startswith("cad-") for owner in node["owners"]) and node["owners"], name
        assert node["pools"] == (["gpu"] if name in GPU_ASSETS else []), name
        partitions = [key for dimension in node["partitionKeysByDimension"] for key in dimension["partitionKeys"]]
        assert partitions == ([] if name == "deepcad_corpus" else list(SCALES)), name
    assert data["instance"]["poolConfig"] == {"poolGranularity": "op", "defaultPoolLimit": 1}
    blocking = {check["name"] for node in nodes.values() for check in node["assetChecksOrError"]["checks"] if check["blocking"]}
    assert blocking == {"no_split_leak", "format_valid", "images_present", "answers_not_empty", "failed_share"}

    automation = ui.graphql(AUTOMATION, {"repository": REPOSITORY})
    schedules = {s["name"]: (s["cronSchedule"], s["scheduleState"]["status"]) for s in automation["schedulesOrError"]["results"]}
    sensors = {s["name"]: s["sensorState"]["status"] for s in automation["sensorsOrError"]["results"]}
    assert schedules == {"nightly_scales": ("0 2 * * *", "STOPPED")}
    assert sensors == {"corpus_changes": "RUNNING"}


def test_whole_graph_for_the_smallest_scale_launched_through_graphql(ui):
    run_id, run = _launch(ui, list(GROUPS), SMALLEST, WHOLE_GRAPH_CONFIG)
    assert {step["stepKey"]: step["status"] for step in run["stepStats"]} == {name: "SUCCESS" for name in GROUPS}

    latest = {name: _latest(ui, name, None if name == "deepcad_corpus" else SMALLEST) for name in GROUPS}
    for name, asset in latest.items():
        [materialization] = asset["assetMaterializations"]
        assert materialization["runId"] == run_id, name
        for check in asset["definition"]["assetChecksOrError"]["checks"]:
            execution = check["executionForLatestMaterialization"]
            assert execution["runId"] == run_id, f"{name}.{check['name']} did not run with its asset"
            if check["name"] not in WARN_CHECKS:
                assert execution["status"] == "SUCCEEDED", f"{name}.{check['name']}: {execution}"
            else:
                assert execution["evaluation"]["severity"] == "WARN", check

    metadata = {name: _metadata(asset["assetMaterializations"][0]) for name, asset in latest.items()}
    assert metadata["cad_subset"]["train_models"] == 10
    views = metadata["rendered_views"]
    assert views["models"] == 10 + metadata["cad_subset"]["validation_models"] and views["failed"] == 0 and views["seconds"] > 0
    assert "data:image/png;base64," in views["gallery"]
    assert metadata["conversations"]["train_samples"] == 3 * 10 - 3 * metadata["conversations"]["dropped_models"]
    assert metadata["training_plan"]["seconds_per_step"] > 0
    adapter = metadata["lora_adapter"]
    assert adapter["steps"] == 3 and "data:image/png;base64," in adapter["loss_curve"] and adapter["mlflow_run"].startswith("http")
    assert Path(adapter["adapter"]).is_dir()
    assert metadata["evaluation"]["samples"] == 3 and Path(metadata["evaluation"]["per_sample"]).is_file()


@pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed (apt-get install chromium)")
def test_materialize_clicked_in_chromium_runs_to_success(ui, tmp_path):
    """The user's path: the lineage of `conversations` with its upstream, Materialize all, one partition, Launch."""
    from playwright.sync_api import expect, sync_playwright

    assert CHROMIUM, "Debian's chromium is not installed: apt-get install chromium (.ci/run does)"
    selection = urllib.parse.quote('+key:"conversations"')
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{ui.url}/asset-groups~{selection}/")
            for name in ("deepcad_corpus", "cad_subset", "rendered_views", "conversations"):
                expect(page.get_by_role("button", name=name).first).to_be_visible()
            page.screenshot(path=tmp_path / "lineage.png")
            page.get_by_role("button", name="Materialize all…").click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_text("Launch runs to materialize 4 assets")).to_be_visible()
            dialog.get_by_text("Select a partition or create one").click()
            page.keyboard.type(SECOND)
            page.get_by_text("Select all (1)").click()
            dialog.get_by_text("Launch runs to materialize 4 assets").click()  # closes the partition list
            expect(page.get_by_text("Select all (1)")).to_be_hidden()
            dialog.get_by_role("button", name="Launch 1 run").click()
            expect(page.get_by_text("Launched run")).to_be_visible()
            page.get_by_text("View", exact=True).click()
            expect(page.get_by_text("Success", exact=True).first).to_be_visible(timeout=600_000)
            page.screenshot(path=tmp_path / "run.png")
            run_id = page.url.rstrip("/").split("/")[-1]
            expect(page.get_by_text("4 assets")).to_be_visible()
        finally:
            browser.close()
    [materialization] = _latest(ui, "conversations", SECOND)["assetMaterializations"]
    assert materialization["runId"] == run_id and materialization["partition"] == SECOND
    assert _metadata(materialization)["train_samples"] > 0


def test_backfill_of_two_scales_runs_one_gpu_step_at_a_time(ui):
    """With both scales' conversations in place, both runs ask for the gpu pool at once."""
    for scale in (SMALLEST, SECOND):
        if not _latest(ui, "conversations", scale)["assetMaterializations"]:
            _launch(ui, DATA_ASSETS, scale, IN_PROCESS)
    params = {
        "partitionNames": [SMALLEST, SECOND],
        "assetSelection": [{"path": ["training_plan"]}],
        "runConfigData": {"ops": {"training_plan": {"config": PLAN}}},
    }
    launched = ui.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    backfill = ui.wait_for_backfill(launched["backfillId"], timeout=900)
    assert backfill["status"] == "COMPLETED_SUCCESS", backfill
    runs = {_tag(run, "dagster/partition"): run["runId"] for run in backfill["runs"]}
    assert set(runs) == {SMALLEST, SECOND}
    steps = []
    for scale, run_id in runs.items():
        run = ui.wait_for_run(run_id, timeout=60)
        [step] = run["stepStats"]
        assert run["status"] == "SUCCESS" and step["stepKey"] == "training_plan", run
        steps.append((step["startTime"], step["endTime"], run["creationTime"]))
        assert _latest(ui, "training_plan", scale)["assetMaterializations"][0]["runId"] == run_id
    (first_start, first_end, _), (second_start, second_end, second_created) = sorted(steps)
    assert second_created < first_end, "both runs were launched while the first trained, so they competed for the pool"
    assert first_end <= second_start, f"training_plan steps overlapped: {sorted(steps)}"


def _launch(ui: DagsterDev, names: list[str], partition: str, run_config: dict) -> tuple[str, dict]:
    """Run the named assets and all their checks for one partition through GraphQL; (run id, run) once it succeeded."""
    nodes = [node for node in ui.graphql(ASSET_NODES)["assetNodes"] if "/".join(node["assetKey"]["path"]) in names]
    params = {
        "selector": {
            **REPOSITORY,
            "jobName": ASSET_JOB,
            "assetSelection": [node["assetKey"] for node in nodes],
            "assetCheckSelection": [
                {"assetKey": node["assetKey"], "name": check["name"]} for node in nodes for check in node["assetChecksOrError"]["checks"]
            ],
        },
        "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}]},
        "runConfigData": run_config,
    }
    launched = ui.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    run = ui.wait_for_run(run_id, timeout=900)
    assert run["status"] == "SUCCESS", _failure_messages(ui, run_id)
    return run_id, run


def _latest(ui: DagsterDev, name: str, partition: str | None) -> dict:
    variables = {"key": {"path": [name]}, "partitions": [partition] if partition else None}
    return ui.graphql(MATERIALIZATIONS, variables)["assetOrError"]


def _metadata(materialization: dict) -> dict:
    values = {}
    for entry in materialization["metadataEntries"]:
        value = next((entry[field] for field in ("intValue", "floatValue", "mdStr", "path", "url") if field in entry), None)
        values[entry["label"]] = value
    return values


def _tag(run: dict, key: str) -> str | None:
    return next((tag["value"] for tag in run["tags"] if tag["key"] == key), None)


def _failure_messages(ui: DagsterDev, run_id: str) -> str:
    events = ui.graphql(RUN_EVENTS, {"id": run_id})["logsForRun"]["events"]
    failures = [f"{event.get('stepKey')}: {event.get('message')}" for event in events if "Failure" in event["__typename"]]
    return "\n".join(failures) + "\n" + ui.log_tail()
