"""Faults the pipeline must survive or refuse: steps that would ship nothing, failure rates above the share a user
allows, store entries truncated, replaced by garbage, unsealed or edited, and runs killed at any point."""

import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import dagster as dg
import pandas as pd
import psutil
import pytest
import torch

from cad_pipeline.defs.conversations import ConversationConfig, conversations
from cad_pipeline.defs.data import cad_subset, deepcad_corpus
from cad_pipeline.defs.failures import failed_share_check
from cad_pipeline.defs.render import rendered_views
from cad_pipeline.defs.resources import PipelineSettings
from cad_pipeline.evaluate.answers import ANSWERS_FILE
from cad_pipeline.evaluate.evaluation import AGGREGATES_FILE, GALLERY_FILE, SAMPLES_FILE
from cad_pipeline.partition import PartitionBusy, PartitionFolder
from cad_pipeline.render.batch import decoded_size
from cad_pipeline.train.model import load_trained
from cad_pipeline.train.run import ADAPTER_NAME, LOSS_CURVE_FILE, RUN_FILE

def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    [failure] = [event for event in result.all_events if event.is_step_failure]
    error, messages = failure.step_failure_data.error, []
    while error:
        messages.append(error.message)
        error = error.cause
    return " | ".join(messages)


def test_a_render_step_that_draws_nothing_fails_with_the_reasons(tmp_path):
    """Every model times out: the step fails naming why, and writes no index for training to read."""
    settings = PipelineSettings(data_root=str(tmp_path), sample_models=40, workers=1)
    assert dg.materialize([deepcad_corpus, cad_subset], resources={"settings": settings}, partition_key="full").success
    hopeless = PipelineSettings(data_root=str(tmp_path), sample_models=40, workers=1, model_timeout=1e-4)
    result = dg.materialize([rendered_views], resources={"settings": hopeless}, partition_key="full", raise_on_error=False)
    assert not result.success
    message = _failure_message(result)
    assert re.search(r"no drawing was produced \((timeout|crash): \d+", message), message
    assert not (tmp_path / "partitions" / "full" / "renders.parquet").exists()


def test_conversations_that_keep_no_sample_fail_instead_of_writing_an_empty_train_json(tmp_path):
    settings = PipelineSettings(data_root=str(tmp_path), sample_models=40, workers=1)
    assets = [deepcad_corpus, cad_subset, rendered_views, conversations]
    assert dg.materialize(assets[:3], resources={"settings": settings}, partition_key="full").success
    result = dg.materialize(
        [conversations],
        resources={"settings": settings},
        partition_key="full",
        run_config=dg.RunConfig({"conversations": ConversationConfig(token_budget=1)}),
        raise_on_error=False,
    )
    assert not result.success
    assert re.search(r"no training sample was produced \(over_token_budget: \d+\)", _failure_message(result))
    assert not (tmp_path / "partitions" / "full" / "train.json").exists()


@pytest.mark.parametrize(("failed", "passed"), [(5, True), (6, False)])
def test_the_failed_share_check_blocks_above_the_allowed_share(failed, passed):
    check = failed_share_check("rendered_views", {"timeout": failed - 1, "occ_failure": 1}, 100, 0.05)
    assert check.passed is passed and check.metadata["failed_share"].value == pytest.approx(failed / 100)
    assert check.description == f"{failed}.0% of 100 models failed (allowed: 5.0%)"


def _sealed_entries(store, kind: str, suffix: str) -> list:
    return sorted(path for path in (store / kind).rglob(f"*{suffix}") if not path.name.endswith(".seal"))


def _repaired(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    return result.asset_materializations_for_node(asset)[0].metadata["store_repaired"].value


def test_damaged_stored_reports_are_rebuilt_counted_and_never_copied_into_the_manifest(tmp_path):
    settings = PipelineSettings(data_root=str(tmp_path), sample_models=30, workers=1)
    first = dg.materialize([deepcad_corpus, cad_subset], resources={"settings": settings}, partition_key="full")
    manifest = pd.read_parquet(tmp_path / "partitions" / "full" / "manifest.parquet")
    emptied, edited, *_ = _sealed_entries(settings.store_path, "reports", ".json")
    emptied.write_text("{}")
    report = json.loads(edited.read_text())
    edited.write_text(json.dumps({**report, "volume": 1.0}))
    again = dg.materialize([cad_subset], resources={"settings": settings}, partition_key="full")
    assert first.success and again.success and _repaired(again, "cad_subset") == {"reports": 2}
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "partitions" / "full" / "manifest.parquet").drop(columns="reused"), manifest.drop(columns="reused")
    )
    assert json.loads(edited.read_text()) == report, "the rebuilt entry replaced the edited one"
    assert _repaired(dg.materialize([cad_subset], resources={"settings": settings}, partition_key="full"), "cad_subset") == {"reports": 0}


def test_damaged_stored_images_are_redrawn_counted_and_every_shipped_image_decodes(tmp_path):
    settings = PipelineSettings(data_root=str(tmp_path), sample_models=30, workers=1)
    assert dg.materialize([deepcad_corpus, cad_subset, rendered_views], resources={"settings": settings}, partition_key="full").success
    truncated, garbage, unsealed, swapped, *_ = _sealed_entries(settings.store_path, "renders", ".png")
    originals = {path: path.read_bytes() for path in (truncated, garbage, unsealed, swapped)}
    truncated.write_bytes(originals[truncated][:200])
    garbage.write_bytes(os.urandom(len(originals[garbage])))
    unsealed.with_name(unsealed.name + ".seal").unlink()
    swapped.write_bytes(originals[garbage])  # another model's valid drawing
    again = dg.materialize([rendered_views], resources={"settings": settings}, partition_key="full")
    assert again.success and _repaired(again, "rendered_views") == {"renders": 4}
    for path, data in originals.items():
        assert path.read_bytes() == data, f"{path} was drawn again as it was"
    [check] = [e for e in again.get_asset_check_evaluations() if e.check_name == "renders_complete"]
    assert check.passed
    truncated.write_bytes(originals[truncated][:200])
    assert decoded_size(truncated) is None and struct.unpack(">II", truncated.read_bytes()[16:24]) == (512, 512), "its header alone looks whole"


def test_damaged_stored_answers_are_rebuilt_so_train_json_ships_the_true_code(tmp_path):
    settings = PipelineSettings(data_root=str(tmp_path), sample_models=30, workers=1)
    assets = [deepcad_corpus, cad_subset, rendered_views, conversations]
    assert dg.materialize(assets, resources={"settings": settings}, partition_key="full").success
    train_json = tmp_path / "partitions" / "full" / "train.json"
    shipped = train_json.read_text()
    garbage, replaced, donor, *_ = _sealed_entries(settings.store_path, "answers", ".json")
    garbage.write_bytes(b"\x00not json")
    other_code = json.loads(donor.read_text())["code"]  # valid code, of another model
    replaced.write_text(json.dumps({**json.loads(replaced.read_text()), "code": other_code}))
    again = dg.materialize([conversations], resources={"settings": settings}, partition_key="full")
    assert again.success and _repaired(again, "conversations") == {"answers": 2}
    assert train_json.read_text() == shipped


KILLED_WRITER = '''
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from cad_pipeline.dataset.conversations import ConversationSet, publish_conversations
from cad_pipeline.partition import PartitionFolder

root, image = Path(sys.argv[1]), sys.argv[2]


def images():
    for index in range(1000):
        if index == 5:
            print("writing", flush=True)
            time.sleep(60)  # killed here, half way through the new generation
        yield (f"m{index}", "front", image)


result = ConversationSet(train=[{"id": "m0_front", "image": "m0_front.png"}], train_models={f"m{i}" for i in range(1000)})
with PartitionFolder(root).writing("conversations"):
    publish_conversations(PartitionFolder(root), result, images())
'''


def _data_is_whole(partition: PartitionFolder) -> list:
    """The records of train.json and val.json, once every image they name is there."""
    records = json.loads(partition.train_json.read_text()) + json.loads(partition.val_json.read_text())
    assert all(decoded_size(partition.images / record["image"]) for record in records)
    return records


def test_a_writer_killed_while_publishing_leaves_the_previous_data_whole_and_the_next_one_cleans_up(tmp_path):
    settings = PipelineSettings(data_root=str(tmp_path), sample_models=30, workers=1)
    assert dg.materialize([deepcad_corpus, cad_subset, rendered_views, conversations], resources={"settings": settings}, partition_key="full").success
    partition = PartitionFolder(tmp_path / "partitions" / "full")
    before = _data_is_whole(partition)
    image = str(sorted(partition.images.iterdir())[0].resolve())
    (tmp_path / "killed_writer.py").write_text(KILLED_WRITER)
    writer = subprocess.Popen([sys.executable, str(tmp_path / "killed_writer.py"), str(partition.root), image], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    with pytest.raises(PartitionBusy, match=rf"conversations of scale full .* is being written by pid {writer.pid} on "):
        with partition.writing("conversations"):
            pass
    writer.kill()
    writer.wait()
    assert _data_is_whole(partition) == before
    assert len(list((partition.root / ".conversations").iterdir())) == 3, "current, its generation, the killed one's"
    again = dg.materialize([conversations], resources={"settings": settings}, partition_key="full")
    assert again.success and _data_is_whole(partition) == before
    assert len(list((partition.root / ".conversations").iterdir())) == 2, "the killed writer's half is gone"


def test_a_second_materialization_of_a_partition_being_written_fails_naming_the_holder(tmp_path):
    settings = PipelineSettings(data_root=str(tmp_path), sample_models=30, workers=1)
    assert dg.materialize([deepcad_corpus, cad_subset], resources={"settings": settings}, partition_key="full").success
    with PartitionFolder(tmp_path / "partitions" / "full").writing("rendered_views"):
        busy = dg.materialize([rendered_views], resources={"settings": settings}, partition_key="full", raise_on_error=False)
    assert not busy.success
    assert re.search(rf"rendered_views of scale full .* is being written by pid {os.getpid()} on .* since ", _failure_message(busy))
    assert dg.materialize([rendered_views], resources={"settings": settings}, partition_key="full").success


CLI = Path(sys.executable).with_name("cad-pipeline")
SMALL_RUN = (
    "--max-steps", "4", "--batch-size", "2", "--validation-samples", "2", "--checkpoint-every", "1", "--plan-steps", "2",
    "--plan-warmup", "1", "--sample-limit", "2", "--max-new-tokens", "24", "--image-contrast", "0",
)  # fmt: skip
REDONE = {
    "cad_subset": ("store/reports",),
    "rendered_views": ("store/renders", "partitions/10/renders.parquet"),  # the index names the store's files
    "conversations": ("store/answers",),
    "lora_adapter": ("partitions/10/lora_adapter/checkpoints",),
}
"""What to delete so that a step does its work again instead of reusing it."""
PUBLISHING = {
    "cad_subset": ".manifest.parquet.*.tmp",
    "rendered_views": ".renders.parquet.*.tmp",
    "conversations": ".conversations/*",
    "training_plan": ".training_plan.json.*.tmp",
    "lora_adapter": "lora_adapter/.adapter.versions/*",
    "evaluation": "evaluation/.results/*",
}
"""What appears in the partition folder when a step starts writing its output: the kill then lands while it publishes."""
VERSIONED = ("conversations", "lora_adapter", "evaluation")
"""Steps whose output is written as a version in a folder of its own, long enough to be killed half way."""


def _run_steps(environment: dict, *args: str, kill: Callable[[subprocess.Popen], None] | None = None) -> None:
    """Run `cad-pipeline materialize --scale 10`. `kill(run)` runs beside the run from the first step's start line in
    its log; after the run ends no process of its session may outlive it by more than a few seconds."""
    command = [str(CLI), "materialize", "--scale", "10", *SMALL_RUN, *args]
    run = subprocess.Popen(command, env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    killer = threading.Thread(target=kill, args=(run,)) if kill else None
    for line in run.stderr:
        if killer and killer.ident is None and "Started execution of step" in line:
            killer.start()
    run.wait(timeout=600)
    if killer:
        killer.join()
    deadline = time.monotonic() + 10
    while (left := [p for p in psutil.process_iter() if _session(p.pid) == run.pid]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes outlived the killed run: {[p.pid for p in left]}"
    assert kill or run.returncode == 0, f"materialize {' '.join(args)} exited {run.returncode}"


def _step_seconds(home: Path) -> dict[str, float]:
    """Each finished step of the latest run in the instance at `home` and its duration, as Dagster recorded it."""
    with dg.DagsterInstance.local_temp(tempdir=str(home)) as instance:
        latest = instance.get_runs(limit=1)[0]
        return {step.step_key: step.end_time - step.start_time for step in instance.get_run_step_stats(latest.run_id) if step.end_time}


def _kill_after(seconds: float) -> Callable[[subprocess.Popen], None]:
    def kill(run: subprocess.Popen) -> None:
        time.sleep(seconds)
        run.kill()

    return kill


def _kill_when_publishing(folder: Path, pattern: str) -> Callable[[subprocess.Popen], None]:
    before = set(folder.glob(pattern))

    def kill(run: subprocess.Popen) -> None:
        while run.poll() is None:
            if set(folder.glob(pattern)) - before:
                run.kill()
                return
            time.sleep(0.002)

    return kill


def _session(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except ProcessLookupError:
        return None


def _whole_outputs(partition: PartitionFolder) -> dict:
    """What a user reads from each output: every one there is whole (tables read, images decode, the trained model
    loads, the evaluation's files agree with each other)."""
    outputs = {"manifest": pd.read_parquet(partition.manifest).drop(columns="reused")}
    if partition.render_index.exists():
        outputs["renders"] = pd.read_parquet(partition.render_index)
        assert all(decoded_size(Path(image)) for image in outputs["renders"]["image"])
    outputs["data"] = _data_is_whole(partition)
    json.loads(partition.plan.read_text())
    adapter = partition.adapter / ADAPTER_NAME
    with torch.no_grad():
        load_trained(adapter)
    assert json.loads((adapter / RUN_FILE).read_text())["run_id"] and decoded_size(adapter / LOSS_CURVE_FILE)
    evaluation = partition.evaluation
    header, *answers = [json.loads(line) for line in (evaluation / ANSWERS_FILE).read_text().splitlines()]
    samples = pd.read_parquet(evaluation / SAMPLES_FILE)
    assert {(a["variant"], a["sample_id"]) for a in answers} == set(zip(samples["variant"], samples["sample_id"])), "results of one version"
    assert header["fingerprint"] and len(samples) and json.loads((evaluation / AGGREGATES_FILE).read_text())
    assert decoded_size(evaluation / GALLERY_FILE)
    return outputs


def test_kills_at_several_points_of_each_asset_leave_every_output_whole_and_the_next_run_finishes(tmp_path):
    environment = {**os.environ, "CAD_PIPELINE_DATA": str(tmp_path), "CAD_PIPELINE_SCALES": "10", "DAGSTER_HOME": str(tmp_path / "home")}
    assert subprocess.run([CLI, "sample", "--out", tmp_path / "deepcad", "--models", "30", "--seed", "3"], capture_output=True).returncode == 0
    _run_steps(environment)
    clean = _step_seconds(tmp_path / "home")
    partition = PartitionFolder(tmp_path / "partitions" / "10")
    reference = _whole_outputs(partition)
    for asset, published in PUBLISHING.items():
        for kill_at in ("a third in", "publishing"):
            for path in REDONE.get(asset, ()):
                (tmp_path / path).unlink() if (tmp_path / path).is_file() else shutil.rmtree(tmp_path / path, ignore_errors=True)
            before = set(partition.root.glob(published))
            kill = _kill_after(0.3 * clean[asset]) if kill_at == "a third in" else _kill_when_publishing(partition.root, published)
            _run_steps(environment, "--select", asset, kill=kill)
            outputs = _whole_outputs(partition)
            pd.testing.assert_frame_equal(outputs["manifest"], reference["manifest"])
            assert outputs["data"] == reference["data"], f"training data changed after a kill {kill_at} {asset}"
        if asset in VERSIONED:
            assert set(partition.root.glob(published)) - before, f"{asset}: the last kill landed while it published"
        if not partition.render_index.exists():
            _run_steps(environment, "--select", asset)
    _run_steps(environment)
    outputs = _whole_outputs(partition)
    pd.testing.assert_frame_equal(outputs["manifest"], reference["manifest"])
    pd.testing.assert_frame_equal(outputs["renders"], reference["renders"])
    assert outputs["data"] == reference["data"]
