"""A real `dagster dev` for end-to-end tests: its own DAGSTER_HOME, data root and free port, in its own process group."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
DAGSTER = Path(sys.executable).with_name("dagster")
LOCATION = "cad_pipeline"
ASSET_JOB = "__ASSET_JOB"
RUN_DONE = {"SUCCESS", "FAILURE", "CANCELED"}
BACKFILL_DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}

WORKSPACE_STATUS = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""
RUN_STATUS = """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status creationTime
  stepStats { stepKey status startTime endTime } } ... on PythonError { message } } }"""
BACKFILL_STATUS = """query($id: String!) { partitionBackfillOrError(backfillId: $id) { __typename
  ... on PartitionBackfill { status runs(limit: 50) { runId status tags { key value } } } ... on PythonError { message } } }"""


@dataclass(frozen=True)
class DagsterDev:
    url: str
    home: Path
    log: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            body = json.load(response)
        if body.get("errors"):
            raise AssertionError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_for_run(self, run_id: str, timeout: float) -> dict:
        return _poll(lambda: self.graphql(RUN_STATUS, {"id": run_id})["runOrError"], lambda run: run.get("status") in RUN_DONE, timeout, self)

    def wait_for_backfill(self, backfill_id: str, timeout: float) -> dict:
        return _poll(
            lambda: self.graphql(BACKFILL_STATUS, {"id": backfill_id})["partitionBackfillOrError"],
            lambda backfill: backfill.get("status") in BACKFILL_DONE,
            timeout,
            self,
        )

    def log_tail(self, characters: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-characters:]


@contextmanager
def dagster_dev(home: Path, environment: dict[str, str], startup_timeout: float = 240) -> Iterator[DagsterDev]:
    """Webserver, daemon and code server as `make ui` starts them, on the project's workspace.yaml and dagster.yaml."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(PROJECT / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    log = home / "dagster_dev.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=PROJECT,
            env={**os.environ, **environment, "DAGSTER_HOME": str(home)},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=_own_process_group,
        )
    server = DagsterDev(f"http://127.0.0.1:{port}", home, log)
    try:
        _wait_until_loaded(server, process, startup_timeout)
        yield server
    finally:
        _stop(process)


def _own_process_group() -> None:
    """A group of its own, so teardown reaches every child; default signal handling, which a parent that ignores
    SIGINT (a background shell) would otherwise pass on and leave `dagster dev` deaf to the stop signal."""
    os.setsid()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_loaded(server: DagsterDev, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"dagster dev exited with {process.returncode}:\n{server.log_tail()}")
        try:
            entries = server.graphql(WORKSPACE_STATUS)["workspaceOrError"]["locationEntries"]
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(1)
            continue
        errors = [entry["locationOrLoadError"] for entry in entries if entry["locationOrLoadError"]["__typename"] == "PythonError"]
        if errors:
            raise RuntimeError(f"the code location failed to load: {errors[0]['message']}")
        if entries and all(entry["loadStatus"] == "LOADED" for entry in entries):
            return
        time.sleep(1)
    raise TimeoutError(f"dagster dev did not load the code location within {timeout:.0f} s:\n{server.log_tail()}")


def _poll(read, done, timeout: float, server: DagsterDev) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = read()
        if done(state):
            return state
        time.sleep(2)
    raise TimeoutError(f"not finished within {timeout:.0f} s (last state {state}):\n{server.log_tail()}")


def _stop(process: subprocess.Popen) -> None:
    """SIGINT lets dagster dev stop its webserver, daemon and runs; whatever is left after 30 s is killed."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()
