"""MLflow runs for training and evaluation, in a store that does not depend on the working directory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from cad_pipeline.train.loop import StepRecord, TrainState  # noqa: E402

STEP_METRICS = ("loss", "learning_rate", "real_tokens_per_second", "pad_fraction", "peak_memory_bytes", "data_wait_seconds")


@dataclass(frozen=True)
class Tracking:
    tracking_uri: str
    artifact_root: Path
    experiment: str
    ui_url: str
    """Where `mlflow ui` serves this store, for links in metadata."""

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.tracking_uri)

    def experiment_id(self, client: MlflowClient) -> str:
        """The experiment, created with its artifacts under `artifact_root` (sqlite stores otherwise use ./mlruns)."""
        found = client.get_experiment_by_name(self.experiment)
        if found is not None:
            return found.experiment_id
        location = (self.artifact_root / self.experiment).resolve().as_uri()
        return client.create_experiment(self.experiment, artifact_location=location)

    def run_url(self, experiment_id: str, run_id: str) -> str:
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"


def local_tracking(root: Path, experiment: str = "cad_pipeline", ui_url: str = "http://localhost:5000") -> Tracking:
    root.mkdir(parents=True, exist_ok=True)
    return Tracking(f"sqlite:///{(root / 'mlflow.db').resolve()}", root / "artifacts", experiment, ui_url)


def log_step(client: MlflowClient, run_id: str, record: StepRecord) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(name, float(getattr(record, name)), now, record.step) for name in STEP_METRICS]
    client.log_batch(run_id, metrics=metrics)


def loss_curve_png(state: TrainState, path: Path) -> Path:
    """Train and validation loss over the optimizer steps, the epochs on a second axis on top and as dotted lines
    where each one ends, and the lowest validation loss marked: a validation loss that rises while the train loss
    falls is overfitting."""
    figure, axis = plt.subplots(figsize=(7, 4), dpi=100)
    steps, validations, best = state.steps, state.validations, state.best
    axis.plot([r.step for r in steps], [r.loss for r in steps], label="train loss", linewidth=1.2)
    if validations:
        at_step, at_epoch = [r.step for r in validations], [r.epoch for r in validations]
        axis.plot(at_step, [r.loss for r in validations], "o-", label="validation loss", linewidth=1.2, markersize=3)
        for record in validations:
            if record.epoch > 0 and record.epoch == int(record.epoch):
                axis.axvline(record.step, color="grey", linestyle=":", linewidth=0.8)
        if len(validations) > 1:
            axis.set_xlim(0, at_step[-1])  # the step-to-epoch map is only known, and invertible, between the records
            epochs = axis.secondary_xaxis("top", functions=(lambda s: np.interp(s, at_step, at_epoch), lambda e: np.interp(e, at_epoch, at_step)))
            epochs.set_xlabel("epoch")
        if best:
            label = f"best validation {best.loss:.4f} (step {best.step}, epoch {best.epoch:.3g})"
            axis.plot([best.step], [best.loss], "*", color="crimson", markersize=12, label=label)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("cross-entropy per answer token")
    axis.grid(alpha=0.3)
    axis.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
