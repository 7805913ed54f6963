"""One owner for a scale's folder: the names of its files, the lock a step holds while it writes them, and the swap
that publishes the training data whole.

`train.json`, `val.json` and `images/` are links through `.conversations/current`, itself a link to one complete
generation of the data (`files.published_files`). A new generation is written beside the current one and published by one rename of that link,
so a reader (and a kill at any instant) sees either the previous complete data or the new complete data, never a
train.json whose images are gone.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cad_pipeline.files import published_files

MANIFEST = "manifest.parquet"
RENDER_INDEX = "renders.parquet"
TRAIN_JSON = "train.json"
VAL_JSON = "val.json"
IMAGES = "images"
PLAN = "training_plan.json"
ADAPTER_FOLDER = "lora_adapter"
EVALUATION_FOLDER = "evaluation"
GENERATIONS = ".conversations"
DATA_NAMES = (TRAIN_JSON, VAL_JSON, IMAGES)


class PartitionBusy(Exception):
    """Another process is writing the same step of the same partition."""


@dataclass(frozen=True)
class PartitionFolder:
    root: Path

    @property
    def scale(self) -> str:
        return self.root.name

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def render_index(self) -> Path:
        return self.root / RENDER_INDEX

    @property
    def train_json(self) -> Path:
        return self.root / TRAIN_JSON

    @property
    def val_json(self) -> Path:
        return self.root / VAL_JSON

    @property
    def images(self) -> Path:
        return self.root / IMAGES

    @property
    def plan(self) -> Path:
        return self.root / PLAN

    @property
    def adapter(self) -> Path:
        return self.root / ADAPTER_FOLDER

    @property
    def evaluation(self) -> Path:
        return self.root / EVALUATION_FOLDER

    @contextmanager
    def writing(self, step: str) -> Iterator[None]:
        """Hold this partition's lock for `step` while the block runs. A second writer of the same step fails at once,
        naming the holder; the lock is the kernel's (flock), so it goes with its holder, however that ends."""
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(self.root / f".{step}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 400, 0).decode(errors="replace").strip() or "another process"
                raise PartitionBusy(
                    f"{step} of scale {self.scale} ({self.root}) is being written by {holder}; wait for it to finish or stop it"
                ) from None
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
            yield
        finally:
            os.close(descriptor)

    def new_data(self):
        """A context: an empty folder for a new generation of train.json, val.json and images/; when the block
        succeeds it becomes the partition's data in one rename, and older generations are deleted. A block that
        fails, or a writer killed in it, leaves the current data as it was."""
        return published_files(self.root, DATA_NAMES, GENERATIONS)
