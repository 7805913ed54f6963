"""Per-model isolation: a model that hangs or crashes native code costs one result, never the batch; and no worker
outlives the process that started it."""

import ctypes
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from cad_pipeline import parallel
from cad_pipeline.render import batch
from cad_pipeline.render.batch import RenderSettings, render_models
from cad_pipeline_tests.conftest import REAL_SAMPLES

SAMPLES = ["00000007", "00000061", "00000330", "00809394"]


def _square_unless_bad(value: int) -> int:
    if value == 3:
        time.sleep(30)
    if value == 5:
        ctypes.string_at(0)  # reads address 0: a segfault, as a crashing native library would cause
    return value * value


def test_isolated_map_survives_a_hang_and_a_segfault():
    started = time.perf_counter()
    results = list(parallel.isolated_map(_square_unless_bad, list(range(8)), timeout=1.0))
    assert [r.result for r in results] == [0, 1, 4, None, 16, None, 36, 49]
    assert [r.failure for r in results] == [None, None, None, "timeout", None, "crash", None, None]
    assert "-11" in results[5].detail
    assert time.perf_counter() - started < 10


def _files() -> dict[str, Path]:
    return {name: REAL_SAMPLES / f"{name}.json" for name in SAMPLES}


def test_render_batch_carries_on_past_a_crashing_and_a_hanging_model(monkeypatch, tmp_path):
    real_draw = batch.draw_views

    def sabotaged_draw(shape, views, style):
        if sabotaged_draw.model == "00000330":
            ctypes.string_at(0)
        if sabotaged_draw.model == "00000061":
            time.sleep(30)
        return real_draw(shape, views, style)

    real_read = batch.read_bytes

    def remembering_read(raw, model_id):
        sabotaged_draw.model = model_id
        return real_read(raw, model_id)

    monkeypatch.setattr(parallel, "_SANDBOXES", {})  # sandboxes forked from here on carry the sabotage
    monkeypatch.setattr(batch, "draw_views", sabotaged_draw)
    monkeypatch.setattr(batch, "read_bytes", remembering_read)
    with ThreadPoolExecutor(1) as executor:
        result = render_models(_files(), RenderSettings(), tmp_path, executor, timeout=3.0)
    status = {outcome.id: outcome.status for outcome in result.outcomes}
    assert status == {"00000007": "rendered", "00000061": "failed", "00000330": "failed", "00809394": "rendered"}
    assert result.failed_by_reason == {"timeout": 1, "crash": 1}
    assert all(Path(image).is_file() for outcome in result.outcomes for image in outcome.images.values())


def test_interrupted_render_resumes_with_only_the_missing_images(tmp_path):
    with ThreadPoolExecutor(2) as executor:
        first = render_models(_files(), RenderSettings(), tmp_path, executor)
        lost = [first.outcomes[1], first.outcomes[3]]
        for outcome in lost:
            Path(outcome.images["top"]).unlink()  # as if the run was killed between two views
        second = render_models(_files(), RenderSettings(), tmp_path, executor)
    assert first.count("rendered") == 4
    assert {o.id for o in second.outcomes if o.status == "rendered"} == {o.id for o in lost}
    assert second.count("reused") == 2
    assert not list(tmp_path.rglob("*.tmp")), "a write left a temporary file behind"
    before = np.frombuffer(Path(first.outcomes[0].images["front"]).read_bytes(), dtype=np.uint8)
    assert before.size > 0


def test_dask_cluster_draws_the_same_files_as_the_local_pool(tmp_path):
    from distributed import LocalCluster

    with parallel.per_model_executor("local", workers=2) as pool:
        local = render_models(_files(), RenderSettings(), tmp_path / "local", pool)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with parallel.per_model_executor("dask", dask_address=cluster.scheduler_address) as executor:
            remote = render_models(_files(), RenderSettings(), tmp_path / "dask", executor)
    assert remote.count("rendered") == local.count("rendered") == len(SAMPLES)
    local_files = {p.relative_to(tmp_path / "local"): p.read_bytes() for p in (tmp_path / "local").rglob("*.png")}
    remote_files = {p.relative_to(tmp_path / "dask"): p.read_bytes() for p in (tmp_path / "dask").rglob("*.png")}
    assert local_files == remote_files and len(local_files) == 3 * len(SAMPLES)


def test_unknown_executor_or_missing_address_is_a_clear_error():
    with pytest.raises(ValueError, match="scheduler address"):
        with parallel.per_model_executor("dask"):
            pass
    with pytest.raises(ValueError, match="'local' or 'dask'"):
        with parallel.per_model_executor("ray"):
            pass


SLOW_WORK = '''
import sys
import time

from cad_pipeline.parallel import map_in_sandboxes, process_pool


def slow(item):
    time.sleep(120)
    return item


def failed(job, isolated):
    return None


if __name__ == "__main__":
    with process_pool(2) as pool:
        map_in_sandboxes(pool, slow, list(range(4)), failed, 300.0, 1)
'''


def test_pool_workers_and_their_sandboxes_die_within_seconds_of_a_killed_parent(tmp_path):
    """kill -9 of the process that owns the pool: neither its workers nor their sandboxes live on (they would go on
    building and writing, and hold a gigabyte between them)."""
    import psutil

    (tmp_path / "slow_work.py").write_text(SLOW_WORK)
    parent = subprocess.Popen([sys.executable, str(tmp_path / "slow_work.py")], cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(tmp_path)})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            descendants = psutil.Process(parent.pid).children(recursive=True)
            if sum(bool(child.children()) for child in psutil.Process(parent.pid).children()) == 2:  # two workers, each with its sandbox
                descendants = psutil.Process(parent.pid).children(recursive=True)
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"the pool and its sandboxes did not start: {descendants}")
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10
    alive = descendants
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.1)
    for process in alive:
        process.kill()
    assert not alive, f"still running 10 s after their parent was killed: {alive}"
