"""The `cad-pipeline` command as a user runs it: output, exit codes and files."""

import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from cad_pipeline.cli import RunProgress, asset_rows
from cad_pipeline_tests.conftest import REAL_SAMPLES

CLI = str(Path(sys.executable).with_name("cad-pipeline"))
EXPECTED = json.loads((REAL_SAMPLES / "expected.json").read_text())["models"]


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([CLI, *map(str, args)], capture_output=True, text=True, timeout=600, **kwargs)


def test_inspect_json_prints_the_documented_object_for_a_valid_model():
    result = _run("inspect", REAL_SAMPLES / "00001616.json", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert list(report) == ["id", "valid", "reason", "n_extrudes", "n_curves", "volume", "area", "bbox_min", "bbox_max"]
    facts = EXPECTED["00001616.json"]
    assert report["id"] == "00001616" and report["valid"] is True and report["reason"] is None
    assert (report["n_extrudes"], report["n_curves"]) == (facts["n_extrudes"], facts["n_curves"])
    assert report["volume"] == pytest.approx(facts["volume"], rel=1e-6)
    assert report["bbox_max"] == pytest.approx(facts["bbox_max"], abs=1e-9)


def test_inspect_rejected_model_exits_1_with_its_reason():
    result = _run("inspect", REAL_SAMPLES / "00000175.json", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False and "profiles" in report["reason"]
    assert report["volume"] is None and report["bbox_min"] is None


def test_inspect_usage_errors_exit_2(tmp_path):
    assert _run("inspect", tmp_path / "missing.json", "--json").returncode == 2
    assert _run("inspect").returncode == 2
    assert _run("inspect", REAL_SAMPLES / "00000007.json", "--bogus").returncode == 2


def test_inspect_human_output_names_the_model():
    result = _run("inspect", REAL_SAMPLES / "00000007.json")
    assert result.returncode == 0
    assert result.stdout.startswith("00000007: valid, 1 extrudes, 1 curves")


def test_render_folder_writes_readable_pngs_and_a_json_summary(tmp_path):
    result = _run("render", REAL_SAMPLES, "--out", tmp_path, "--views", "front, iso", "--size", "128")
    assert result.returncode == 1, "a rejected model makes the exit code 1"
    summary = json.loads(result.stdout)
    assert (summary["models"], summary["rendered"], summary["failed"]) == (12, 11, 1)
    assert summary["failed_by_reason"] == {"empty_profiles": 1}
    assert summary["failures"][0]["id"] == "00000175"
    pngs = sorted(path.name for path in tmp_path.glob("*.png"))
    assert len(pngs) == 22 and "00001616_iso.png" in pngs
    assert (tmp_path / "00001616_front.png").read_bytes()[16:24] == (128).to_bytes(4, "big") * 2
    again = json.loads(_run("render", REAL_SAMPLES / "00001616.json", "--out", tmp_path, "--views", "front,iso", "--size", "128").stdout)
    assert (again["rendered"], again["reused"]) == (0, 1)
    assert _run("render", REAL_SAMPLES, "--out", tmp_path, "--views", "side").returncode == 2
    grid = json.loads(_run("render", REAL_SAMPLES / "00001616.json", "--out", tmp_path / "grid", "--layout", "grid", "--size", "256").stdout)
    assert grid["rendered"] == 1
    assert [path.name for path in (tmp_path / "grid").glob("*.png")] == ["00001616_grid.png"]
    assert (tmp_path / "grid" / "00001616_grid.png").read_bytes()[16:24] == (256).to_bytes(4, "big") * 2


def test_bench_render_prints_models_per_minute():
    result = _run("bench", "render", "--corpus", REAL_SAMPLES / "00000007.json", "--seconds", "0.5", "--workers", "1")
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split("one core: ")[1].split()[0]) > 0
    assert "models/min" in result.stdout


def test_bench_build_prints_throughput_per_core():
    result = _run("bench", "build", "--corpus", REAL_SAMPLES, "--seconds", "0.5", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "12 models, 1 rejected" in result.stdout
    one_core = float(result.stdout.split("one core: ")[1].split()[0])
    assert one_core > 0


def test_code_then_exec_code_gives_the_inspect_report_of_the_model(tmp_path):
    code = _run("code", REAL_SAMPLES / "00001616.json")
    assert code.returncode == 0, code.stderr
    assert code.stdout.startswith("SketchPlane0 = add_sketchplane(") and code.stdout.count("add_extrude(") == 9
    program = tmp_path / "00001616.py"
    program.write_text(code.stdout)
    built = _run("exec-code", program, "--json")
    assert built.returncode == 0, built.stderr
    direct = json.loads(_run("inspect", REAL_SAMPLES / "00001616.json", "--json").stdout)
    report = json.loads(built.stdout)
    assert list(report) == list(direct) and report["valid"] is True
    assert report["volume"] == pytest.approx(direct["volume"], rel=1e-5)
    assert report["bbox_max"] == pytest.approx(direct["bbox_max"], abs=1e-6)


def test_exec_code_rejects_hostile_code_with_its_line_and_exit_1(tmp_path):
    sentinel = tmp_path / "pwned"
    program = tmp_path / "hostile.py"
    program.write_text(f"Loops0 = []\nx = __import__('os').system('touch {sentinel}')\n")
    result = _run("exec-code", program, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["valid"] is False and report["reason"].startswith("line 2:")
    assert not sentinel.exists()


def test_oversized_and_endless_inputs_are_refused_unread_and_long_names_are_quoted_short(tmp_path):
    """A file past the interpreter's limit and /dev/zero are refused at once (exit 2, one line); a 150k-character
    name is quoted by an excerpt, not echoed whole."""
    huge = tmp_path / "huge.py"
    huge.write_text("Loops0 = []\n" * 50_000)
    for path in (huge, "/dev/zero"):
        result = _run("exec-code", path)
        assert result.returncode == 2 and "larger than 200,000 bytes" in result.stderr and len(result.stderr) < 400, result.stderr
    result = _run("score", "--truth", "/dev/zero", "--code", huge)
    assert result.returncode == 2 and "larger than" in result.stderr and len(result.stderr) < 600, result.stderr
    long_name = tmp_path / "long_name.py"
    long_name.write_text(f"Loops0 = []\nCurves0 = {'x' * 150_000}\n")
    result = _run("exec-code", long_name, "--json")
    reason = json.loads(result.stdout)["reason"]
    assert result.returncode == 1 and reason.startswith("line 2:") and "'xxxx" in reason and len(reason) < 200
    assert reason.endswith("...(149,962 more characters)")  # the name and its quotes: 150,002 characters


def test_code_of_a_rejected_model_exits_1():
    result = _run("code", REAL_SAMPLES / "00000175.json")
    assert result.returncode == 1 and "profiles" in result.stderr and result.stdout == ""


def test_score_prints_every_metric_with_its_protocol_for_one_pair(tmp_path):
    truth = REAL_SAMPLES / "00000330.json"
    answer = tmp_path / "answer.txt"
    answer.write_text("Of course, here are the codes:\n```python\n" + _run("code", truth).stdout + "```")
    printed = _run("score", "--truth", truth, "--code", answer, "--json")
    assert printed.returncode == 0, printed.stderr
    result = json.loads(printed.stdout)
    assert result["valid"] and result["command_accuracy"] == 1.0 and result["iou"] == pytest.approx(1.0, abs=1e-5)
    assert "0.75 / max |bbox|" in result["protocols"]["chamfer_deepcad"]
    hostile = tmp_path / "hostile.py"
    hostile.write_text("__import__('os').system('touch pwned')\n")
    rejected = json.loads(_run("score", "--truth", truth, "--code", hostile, "--json", cwd=tmp_path).stdout)
    assert not rejected["valid"] and rejected["failure"].startswith("code_rejected") and not (tmp_path / "pwned").exists()
    assert _run("score", "--truth", tmp_path / "missing.json", "--code", hostile).returncode == 2


@pytest.fixture(scope="module")
def small_pipeline(tmp_path_factory) -> dict:
    """The environment of a data folder with its own Dagster instance and a 30-model corpus: scale 10 fits, 1k does not."""
    root = tmp_path_factory.mktemp("pipeline")
    (root / "home").mkdir()
    assert _run("sample", "--out", root / "deepcad", "--models", 30, "--seed", 3).returncode == 0
    return {**os.environ, "CAD_PIPELINE_DATA": str(root), "CAD_PIPELINE_SCALES": "10,1k,full", "DAGSTER_HOME": str(root / "home")}


def _summary_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table of `materialize`: asset -> [outcome, seconds, checks]."""
    lines = stdout.splitlines()
    header = next(index for index, line in enumerate(lines) if line.split() == ["asset", "outcome", "seconds", "checks"])
    rows = {}
    for line in lines[header + 2 :]:
        if not line:
            return rows
        asset, *cells = line.split(maxsplit=3)
        rows[asset] = cells
    return rows


def _log_lines(output: str) -> list[str]:
    """The run's log lines without their time of day."""
    return [line[9:] for line in output.splitlines() if re.match(r"\d\d:\d\d:\d\d ", line)]


def test_materialize_logs_each_step_then_tabulates_the_selected_assets(small_pipeline):
    result = _run("materialize", "--scale", "10", "--select", "deepcad_corpus,cad_subset", env=small_pipeline)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.match(r"\nrun [0-9a-f-]{36} succeeded in [\d.]+ s \(Dagster instance: .*/home\)\n", result.stdout)
    rows = _summary_rows(result.stdout)
    assert list(rows) == ["deepcad_corpus", "cad_subset[10]"]
    assert [outcome for outcome, _, _ in rows.values()] == ["materialized", "materialized"]
    assert all(float(seconds) > 0 for _, seconds, _ in rows.values())
    assert rows["cad_subset[10]"][2] == "3/3" and rows["deepcad_corpus"][2] == "-"
    assert "\n  cad_subset[10]: train_models=10, validation_models=1," in result.stdout
    assert "\n      -> " + small_pipeline["CAD_PIPELINE_DATA"] + "/partitions/10/manifest.parquet\n" in result.stdout
    lines = _log_lines(result.stderr)
    steps_in_order = [
        'deepcad_corpus: Started execution of step "deepcad_corpus".',
        "deepcad_corpus: corpus at ",
        'deepcad_corpus: Finished execution of step "deepcad_corpus"',
        'cad_subset: Started execution of step "cad_subset".',
        "cad_subset: 10: 10 train + 1 validation models",
        'cad_subset: Finished execution of step "cad_subset"',
    ]
    found = [next(index for index, line in enumerate(lines) if line.startswith(start)) for start in steps_in_order]
    assert found == sorted(found)
    assert "30 files" in lines[found[1]]
    assert lines[found[2]].endswith(" (1/2 assets done)") and lines[found[5]].endswith(" (2/2 assets done)")
    assert "\r" not in result.stderr, "piped output has no progress bar to redraw"
    assert " - dagster - " not in result.stderr, "Dagster's console logger is silenced: each line appears once"


def test_materialize_failure_exits_1_and_shows_the_downstream_asset_as_skipped(small_pipeline):
    result = _run("materialize", "--scale", "1k", "--select", "cad_subset,rendered_views", env=small_pipeline)
    assert result.returncode == 1
    assert result.stdout.startswith("\nrun ") and " FAILED in " in result.stdout.splitlines()[1]
    rows = _summary_rows(result.stdout)
    assert rows["cad_subset[1k]"][0] == "failed" and float(rows["cad_subset[1k]"][1]) > 0
    assert rows["rendered_views[1k]"] == ["skipped", "-", "-"]
    assert "\n  step cad_subset failed: scale 1k: this scale needs 1,000 train models but the corpus" in result.stdout
    lines = _log_lines(result.stderr)
    assert 'cad_subset: Execution of step "cad_subset" failed. (1/2 assets done)' in lines
    assert "    scale 1k: this scale needs 1,000 train models" in result.stderr
    assert any(line.startswith("rendered_views: Dependencies for step rendered_views failed") for line in lines)


def _three_assets_one_failing_a_blocking_check() -> dg.JobDefinition:
    @dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="measured", blocking=True), dg.AssetCheckSpec("small", asset="measured")])
    def measured(context: dg.AssetExecutionContext):
        context.log.info("measuring")
        time.sleep(2.1)  # long enough for the bar to show it running for a whole second
        return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="positive", passed=False), dg.AssetCheckResult(check_name="small", passed=True)])

    @dg.asset(deps=[measured])
    def downstream():
        pass

    @dg.asset(check_specs=[dg.AssetCheckSpec("present", asset="independent")])
    def independent():
        return dg.MaterializeResult(check_results=[dg.AssetCheckResult(check_name="present", passed=True)])

    return dg.Definitions(assets=[measured, downstream, independent]).resolve_implicit_global_asset_job_def()


def test_run_progress_follows_the_run_and_its_events_make_the_summary_rows():
    labels = {"measured": "measured", "downstream": "downstream", "independent": "independent"}
    run_id, out = str(uuid.uuid4()), io.StringIO()
    with dg.DagsterInstance.ephemeral() as instance, RunProgress(labels, "toy", out=out, bar=True) as progress:
        instance.add_event_listener(run_id, progress)
        result = _three_assets_one_failing_a_blocking_check().execute_in_process(instance=instance, run_id=run_id, raise_on_error=False)
    assert not result.success and progress.finished == 2
    rows = {label: cells for label, *cells in asset_rows(progress.entries, labels)}
    assert rows["measured"][0] == "failed" and 2.1 <= rows["measured"][1] < 10 and rows["measured"][2] == "1/2 (failed: positive)"
    assert rows["downstream"] == ["skipped", None, None]
    assert rows["independent"][0] == "materialized" and 0 < rows["independent"][1] < 2 and rows["independent"][2] == "1/1"
    written = out.getvalue()
    assert "measured running for 00:01" in written
    shown = [line.rsplit("\r", 1)[-1] for line in written.split("\n")]  # each line as a terminal leaves it
    lines = _log_lines("\n".join(shown))
    failed = next(index for index, line in enumerate(lines) if re.fullmatch(r'measured: Execution of step "measured" failed\. \([12]/3 assets done\)', line))
    assert lines.index("measured: measuring") < failed
    assert "downstream: Dependencies for step downstream failed: ['measured']. Not executing." in lines
    assert any(line.startswith("    dagster._core.errors.DagsterAssetCheckFailedError: 1 blocking asset check failed") for line in shown)
    assert shown[-2].startswith("toy: 2/3 assets |") and shown[-1] == "", "the bar stays, at two of three steps ended"


def test_two_first_runs_on_a_fresh_dagster_home_both_succeed_and_leave_it_usable(tmp_path):
    """Four at once: each would create and migrate the instance's storage (without the lock this breaks it: two alembic
    heads, or a failed migration); created under a lock, the instance stays whole and records all four runs."""
    corpus = tmp_path / "deepcad"
    assert _run("sample", "--out", corpus, "--models", 30, "--seed", 3).returncode == 0
    home = tmp_path / "home"
    home.mkdir()
    runs = []
    for name in ("a", "b", "c", "d"):
        environment = {**os.environ, "CAD_PIPELINE_DATA": str(tmp_path / name), "CAD_PIPELINE_CORPUS": str(corpus), "CAD_PIPELINE_SCALES": "10", "DAGSTER_HOME": str(home)}
        command = [CLI, "materialize", "--scale", "10", "--select", "deepcad_corpus"]
        runs.append(subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for run in runs:
        _, error = run.communicate(timeout=300)
        assert run.returncode == 0, error[-3000:]
    check = "import dagster as dg; instance = dg.DagsterInstance.get(); print(len(instance.get_runs()))"
    runs_recorded = subprocess.run([sys.executable, "-c", check], env={**os.environ, "DAGSTER_HOME": str(home)}, capture_output=True, text=True)
    assert runs_recorded.stdout.strip() == "4", runs_recorded.stderr[-2000:]
