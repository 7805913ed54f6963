"""Executors for per-model work (build, render, sample)."""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


PR_SET_PDEATHSIG = 1
"""prctl option: the signal this process gets when its parent ends."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def process_pool(workers: int = 0) -> ProcessPoolExecutor:
    """A local pool on all cores by default.

    Workers are spawned, not forked: the parent (a Dagster step, a CLI with progress threads) may
    hold threads and locks that a forked child would inherit in an unusable state, and a crash in
    OpenCASCADE then stays inside a worker.
    """
    return ProcessPoolExecutor(
        max_workers=workers or available_cores(),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=die_with_parent,
        initargs=(os.getpid(),),
    )


def die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when `parent` ends, however it ends (kill -9 included), so no worker outlives
    the run and goes on writing. Linux only (prctl PR_SET_PDEATHSIG); elsewhere a no-op. A parent already gone before
    the request took effect ends this process at once."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:
        os._exit(1)


@contextmanager
def per_model_executor(kind: str = "local", workers: int = 0, dask_address: str = "") -> Iterator[Executor]:
    """Where per-model work runs: a local process pool, or a dask.distributed cluster at `dask_address`."""
    if kind == "local":
        with process_pool(workers) as pool:
            yield pool
    elif kind == "dask":
        if not dask_address:
            raise ValueError("executor 'dask' needs the scheduler address (for example tcp://10.0.0.5:8786)")
        from distributed import Client

        with Client(dask_address) as client:
            yield client.get_executor()
    else:
        raise ValueError(f"unknown executor {kind!r}; use 'local' or 'dask'")


@dataclass(frozen=True)
class Isolated:
    """What became of one item run in a sandbox: its result, or why there is none."""

    result: Any = None
    failure: str | None = None
    """None when the item finished; else 'timeout' or 'crash'."""
    detail: str = ""


def map_in_sandboxes(
    executor: Executor,
    function: Callable[[Any], Any],
    jobs: list,
    failed: Callable[[Any, Isolated], Any],
    timeout: float,
    chunk: int,
    progress: Callable[[int], None] | None = None,
) -> list:
    """`function` over jobs on the executor, in order, each job in a sandbox (see `isolated_map`); a job that hangs
    or crashes gives `failed(job, isolated)` instead. Jobs go in chunks, so each task's sandbox serves several."""
    chunks = [jobs[start : start + chunk] for start in range(0, len(jobs), chunk)]
    results = []
    for done in executor.map(_sandboxed_chunk, chunks, [function] * len(chunks), [failed] * len(chunks), [timeout] * len(chunks)):
        results.extend(done)
        if progress:
            progress(len(done))
    return results


def _sandboxed_chunk(jobs: list, function: Callable[[Any], Any], failed: Callable[[Any, Isolated], Any], timeout: float) -> list:
    return [
        isolated.result if isolated.failure is None else failed(job, isolated)
        for job, isolated in zip(jobs, isolated_map(function, jobs, timeout))
    ]


def isolated_map(function: Callable[[Any], Any], items: list, timeout: float) -> Iterator[Isolated]:
    """Run `function` over items in this process's sandbox for it, in order, one `Isolated` per item.

    An item that takes longer than `timeout` seconds has its sandbox killed; an item whose sandbox
    dies (a segfault in native code) is reported as a crash. Either way a fresh sandbox carries on
    with the next item, so one bad model costs one result, not the batch.
    """
    sandbox = _SANDBOXES.get(function)
    if sandbox is None:
        sandbox = _SANDBOXES[function] = Sandbox(function)
    for item in items:
        yield sandbox.run(item, timeout)


class Sandbox:
    """A forked child process that applies one function to the items sent to it.

    Forked once and kept, so it inherits the imported libraries and costs nothing per item; it is
    replaced only after it hangs or dies. It is forked with os.fork rather than multiprocessing,
    which refuses children to daemonic processes such as dask's workers.
    """

    def __init__(self, function: Callable[[Any], Any]):
        self._function = function
        self._start()

    def run(self, item: Any, timeout: float) -> Isolated:
        if self._reap(block=False) is not None:
            self._restart()
        self._connection.send(item)
        if not self._connection.poll(timeout):
            self._restart()
            return Isolated(failure="timeout", detail=f"no result after {timeout:g} s; the worker was killed")
        try:
            return Isolated(result=self._connection.recv())
        except EOFError:
            detail = f"the worker died (exit code {self._reap(block=True)})"
            self._restart()
            return Isolated(failure="crash", detail=detail)

    def _start(self) -> None:
        self._connection, child_end = multiprocessing.Pipe(duplex=True)
        self._exit_code: int | None = None
        parent = os.getpid()
        self._pid = os.fork()
        if self._pid == 0:
            die_with_parent(parent)
            self._connection.close()
            _serve(self._function, child_end)
        child_end.close()

    def _reap(self, block: bool) -> int | None:
        """The child's exit code once it has ended (negative: the signal that ended it), else None."""
        if self._exit_code is None:
            pid, status = os.waitpid(self._pid, 0 if block else os.WNOHANG)
            if pid:
                self._exit_code = os.waitstatus_to_exitcode(status)
        return self._exit_code

    def _restart(self) -> None:
        if self._reap(block=False) is None:
            os.kill(self._pid, signal.SIGKILL)
            self._reap(block=True)
        self._connection.close()
        self._start()


_SANDBOXES: dict[Callable[[Any], Any], Sandbox] = {}


def _serve(function: Callable[[Any], Any], connection) -> None:
    """The sandbox's whole life: it leaves with os._exit, never returning into the parent's code."""
    code = 0
    try:
        while True:
            try:
                item = connection.recv()
            except EOFError:
                break
            connection.send(function(item))
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)
