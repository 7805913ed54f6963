"""The corpus fingerprint, the sensor that re-observes a changed corpus, and the nightly schedule over the scales."""

import os
import shutil
from datetime import datetime, timezone

import dagster as dg
import pytest
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin

from cad_pipeline.cad.sample_corpus import write_corpus
from cad_pipeline.dataset.corpus import SPLIT_FILE, Corpus, CorpusError, corpus_fingerprint
from cad_pipeline.definitions import load_definitions
from cad_pipeline.defs.automation import corpus_changes, keys_to_materialize, nightly_scales
from cad_pipeline.defs.data import deepcad_corpus
from cad_pipeline.defs.resources import PipelineSettings

SCALES = ["1k", "10k", "100k", "full"]
CHAIN = ["cad_subset", "rendered_views", "conversations", "training_plan", "lora_adapter", "evaluation"]
"""The assets of one scale, parents first; each has the one before it (the first: deepcad_corpus) as parent."""
NIGHT = datetime(2025, 3, 4, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "deepcad"
    write_corpus(root, 4, seed=0)
    return root


def _first_model(root):
    return next((root / "cad_json").glob("*/*.json"))


def test_fingerprint_is_the_same_for_the_same_files_wherever_they_lie(corpus, tmp_path):
    copy = shutil.copytree(corpus, tmp_path / "copy", copy_function=shutil.copy2)
    fingerprint = corpus_fingerprint(corpus)
    files = [corpus / SPLIT_FILE, *(corpus / "cad_json").glob("*/*.json")]
    assert (fingerprint.files, fingerprint.bytes) == (5, sum(path.stat().st_size for path in files))
    assert len(fingerprint.digest) == 16
    assert corpus_fingerprint(corpus) == fingerprint == corpus_fingerprint(copy)


def test_fingerprint_changes_with_a_new_model_a_changed_model_or_an_edited_split(corpus):
    seen = {corpus_fingerprint(corpus).digest}
    model = _first_model(corpus)
    (corpus / "cad_json" / "0001").mkdir()
    shutil.copy2(model, corpus / "cad_json" / "0001" / "00010000.json")
    seen.add(corpus_fingerprint(corpus).digest)
    model.write_bytes(model.read_bytes() + b" ")
    seen.add(corpus_fingerprint(corpus).digest)
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    seen.add(corpus_fingerprint(corpus).digest)
    split = corpus / SPLIT_FILE
    split.write_text(split.read_text().replace("train", "train "))
    seen.add(corpus_fingerprint(corpus).digest)
    assert len(seen) == 5


def test_fingerprint_ignores_files_that_are_not_the_corpus(corpus):
    before = corpus_fingerprint(corpus)
    (corpus / "README.txt").write_text("notes")
    (corpus / "cad_json" / "index.json").write_text("{}")
    (_first_model(corpus).parent / "preview.png").write_bytes(b"png")
    (corpus / "renders" / "0000").mkdir(parents=True)
    (corpus / "renders" / "0000" / "00000000.json").write_text("{}")
    assert corpus_fingerprint(corpus) == before


def test_describe_counts_files_and_missing_split_ids_from_the_same_scan_as_the_fingerprint(corpus):
    opened = Corpus.open(corpus)
    removed = _first_model(corpus)
    removed_id = f"{removed.parent.name}/{removed.stem}"
    removed.unlink()
    facts = opened.describe()
    listed = sum(facts["split_sizes"].values())
    assert facts["files_on_disk"] == listed - 1 == len(list(corpus.glob("cad_json/*/*.json")))
    split_of_removed = next(split for split, ids in opened.splits.items() if removed_id in ids)
    assert facts["missing_files"] == {split: int(split == split_of_removed) for split in opened.splits}
    assert facts["fingerprint"] == corpus_fingerprint(corpus)


def test_fingerprint_of_a_missing_folder_says_where_to_point_the_pipeline(tmp_path):
    with pytest.raises(CorpusError, match=r"missing does not exist.*CAD_PIPELINE_CORPUS"):
        corpus_fingerprint(tmp_path / "missing")


def test_keys_to_materialize_takes_the_outdated_and_everything_below_them():
    parents = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": ["c"]}
    in_order = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5}
    assert keys_to_materialize(parents, in_order) == []
    assert keys_to_materialize(parents, {**in_order, "c": 6}) == ["d", "e"]
    assert keys_to_materialize(parents, {**in_order, "a": 6}) == ["b", "c", "d", "e"]
    assert keys_to_materialize(parents, {**in_order, "b": None}) == ["b", "d"]
    assert keys_to_materialize(parents, dict.fromkeys(parents)) == ["a", "b", "c", "d", "e"]


def _corpus_tick(instance, settings, cursor=None):
    context = dg.build_sensor_context(instance=instance, resources={"settings": settings}, cursor=cursor)
    return corpus_changes(context), context.cursor


def test_sensor_rematerializes_the_corpus_only_after_its_files_changed(corpus, tmp_path):
    settings = PipelineSettings(data_root=str(tmp_path), corpus_dir=str(corpus))
    with dg.instance_for_test() as instance:
        result, cursor = _corpus_tick(instance, settings)
        assert isinstance(result, dg.SkipReason) and "never been materialized" in result.skip_message
        assert cursor is None

        assert dg.materialize([deepcad_corpus], instance=instance, resources={"settings": settings}).success
        original = corpus_fingerprint(corpus).digest
        result, cursor = _corpus_tick(instance, settings)
        assert isinstance(result, dg.SkipReason) and original in result.skip_message
        assert cursor == original

        added = corpus / "cad_json" / "0001" / "00010000.json"
        added.parent.mkdir()
        shutil.copy(_first_model(corpus), added)
        changed = corpus_fingerprint(corpus).digest
        request, cursor = _corpus_tick(instance, settings, cursor)
        assert isinstance(request, dg.RunRequest) and request.run_key.startswith(f"{changed}-after-")
        assert cursor == changed
        again, _ = _corpus_tick(instance, settings, cursor)
        assert again.run_key == request.run_key, "a change not yet taken in asks for the same, deduplicated run"

        assert dg.materialize([deepcad_corpus], instance=instance, resources={"settings": settings}).success
        assert isinstance(_corpus_tick(instance, settings)[0], dg.SkipReason)
        added.unlink()
        reverted, cursor = _corpus_tick(instance, settings)
        assert reverted.run_key.startswith(f"{original}-after-") and cursor == original

        gone = PipelineSettings(data_root=str(tmp_path), corpus_dir=str(tmp_path / "gone"))
        result, _ = _corpus_tick(instance, gone)
        assert isinstance(result, dg.SkipReason) and "gone does not exist" in result.skip_message


@pytest.fixture(scope="module")
def defs() -> dg.Definitions:
    return load_definitions()


def _nightly(defs, instance):
    repository = defs.get_repository_def()
    context = dg.build_schedule_context(instance=instance, scheduled_execution_time=NIGHT, repository_def=repository)
    return repository.get_schedule_def("nightly_scales")(context)


def _requested(result) -> dict[str, list[str]]:
    return {request.partition_key: [key.to_user_string() for key in request.asset_selection] for request in result}


def _materialize(instance, names, scale=None):
    for name in names:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=name, partition=None if name == "deepcad_corpus" else scale))


def test_nightly_schedule_requests_each_scale_once_smallest_first(defs):
    with dg.instance_for_test() as instance:
        result = _nightly(defs, instance)
        assert _requested(result) == {"1k": ["deepcad_corpus", *CHAIN], "10k": CHAIN, "100k": CHAIN, "full": CHAIN}
        assert [request.partition_key for request in result] == SCALES
        assert [request.tags for request in result] == [
            {"cad_pipeline/nightly": "true", "dagster/priority": priority} for priority in ("0", "-1", "-2", "-3")
        ]
        assert [request.run_key for request in result] == [f"nightly-{scale}-2025-03-04" for scale in SCALES]


def test_nightly_schedule_reruns_what_is_older_than_its_parent(defs):
    with dg.instance_for_test() as instance:
        _materialize(instance, ["deepcad_corpus", *CHAIN], "1k")
        result = _nightly(defs, instance)
        assert _requested(result) == {"10k": CHAIN, "100k": CHAIN, "full": CHAIN}
        assert result[0].tags["dagster/priority"] == "-1"

        for scale in SCALES[1:]:
            _materialize(instance, CHAIN, scale)
        result = _nightly(defs, instance)
        assert isinstance(result, dg.SkipReason) and result.skip_message == "every scale is up to date"

        _materialize(instance, ["conversations"], "1k")
        assert _requested(_nightly(defs, instance)) == {"1k": ["training_plan", "lora_adapter", "evaluation"]}
        _materialize(instance, ["rendered_views"], "1k")
        assert _requested(_nightly(defs, instance)) == {"1k": CHAIN[2:]}

        _materialize(instance, ["deepcad_corpus"])
        assert _requested(_nightly(defs, instance)) == dict.fromkeys(SCALES, CHAIN)


def _add_run_of_scale(instance, scale: str, status: dg.DagsterRunStatus) -> None:
    """A run as the UI or a schedule leaves it in the run storage; a queued run must name the job it came from."""
    origin = RemoteJobOrigin(
        repository_origin=RemoteRepositoryOrigin(
            code_location_origin=RegisteredCodeLocationOrigin(location_name="cad_pipeline"), repository_name="__repository__"
        ),
        job_name="__ASSET_JOB",
    )
    instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", status=status, remote_job_origin=origin, tags={"dagster/partition": scale}))


def test_nightly_schedule_leaves_a_scale_with_a_run_in_progress_alone(defs):
    with dg.instance_for_test() as instance:
        _materialize(instance, ["deepcad_corpus", *CHAIN], "1k")
        _add_run_of_scale(instance, "10k", dg.DagsterRunStatus.QUEUED)
        _add_run_of_scale(instance, "100k", dg.DagsterRunStatus.STARTED)
        _add_run_of_scale(instance, "full", dg.DagsterRunStatus.FAILURE)
        assert _requested(_nightly(defs, instance)) == {"full": CHAIN}
        _materialize(instance, CHAIN, "full")
        result = _nightly(defs, instance)
        assert result.skip_message == "10k, 100k already have a run in progress; every other scale is up to date"


def test_nightly_schedule_is_opt_in_and_the_sensor_watches_only_the_corpus(defs):
    repository = defs.get_repository_def()
    assert nightly_scales.default_status == dg.DefaultScheduleStatus.STOPPED
    assert (nightly_scales.cron_schedule, nightly_scales.execution_timezone) == ("0 2 * * *", "UTC")
    assert repository.get_job(nightly_scales.job_name).asset_layer.selected_asset_keys == repository.asset_graph.materializable_asset_keys
    assert corpus_changes.default_status == dg.DefaultSensorStatus.RUNNING
    assert corpus_changes.minimum_interval_seconds == 300
    assert repository.get_job(corpus_changes.job_name).asset_layer.selected_asset_keys == {deepcad_corpus.key}
