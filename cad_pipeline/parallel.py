"""Executors for per-model work (build, render, sample)."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any


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
    return ProcessPoolExecutor(max_workers=workers or available_cores(), mp_context=multiprocessing.get_context("spawn"))


@dataclass(frozen=True)
class Isolated:
    """What became of one item run in a sandbox: its result, or why there is none."""

    result: Any = None
    failure: str | None = None
    """None when the item finished; else 'timeout' or 'crash'."""
    detail: str = ""


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
    replaced only after it hangs or dies.
    """

    def __init__(self, function: Callable[[Any], Any]):
        self._function = function
        self._start()

    def run(self, item: Any, timeout: float) -> Isolated:
        if not self._process.is_alive():
            self._restart()
        self._connection.send(item)
        if not self._connection.poll(timeout):
            self._restart()
            return Isolated(failure="timeout", detail=f"no result after {timeout:g} s; the worker was killed")
        try:
            return Isolated(result=self._connection.recv())
        except EOFError:
            self._process.join()
            detail = f"the worker died (exit code {self._process.exitcode})"
            self._restart()
            return Isolated(failure="crash", detail=detail)

    def _start(self) -> None:
        context = multiprocessing.get_context("fork")
        self._connection, child_end = context.Pipe(duplex=True)
        self._process = context.Process(target=_serve, args=(self._function, child_end), daemon=True)
        self._process.start()
        child_end.close()

    def _restart(self) -> None:
        if self._process.is_alive():
            self._process.kill()
        self._process.join()
        self._connection.close()
        self._start()


_SANDBOXES: dict[Callable[[Any], Any], Sandbox] = {}


def _serve(function: Callable[[Any], Any], connection) -> None:
    while True:
        try:
            item = connection.recv()
        except EOFError:
            return
        connection.send(function(item))
