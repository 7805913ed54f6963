"""The `cad-pipeline` command as a user runs it: output, exit codes and files."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

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
