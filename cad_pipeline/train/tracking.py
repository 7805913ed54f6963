"""MLflow runs for training and evaluation, in a store that does not depend on the working directory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from cad_pipeline.train.loop import StepRecord  # noqa: E402

STEP_METRICS = ("loss", "learning_rate", "real_tokens_per_second", "pad_fraction", "peak_memory_bytes")


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


def loss_curve_png(steps: list[StepRecord], val_losses: list[tuple[int, float]], path: Path) -> Path:
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    axis.plot([r.step for r in steps], [r.loss for r in steps], label="train loss", linewidth=1.2)
    if val_losses:
        axis.plot(*zip(*val_losses), "o-", label="validation loss", linewidth=1.2)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("cross-entropy per answer token")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path
