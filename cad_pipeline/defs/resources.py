import os
from pathlib import Path

import dagster as dg

from cad_pipeline.parallel import per_model_executor


class PipelineSettings(dg.ConfigurableResource):
    """Where the pipeline keeps its data and how much of the machine it uses."""

    data_root: str = "data"
    corpus_dir: str = ""
    """DeepCAD corpus folder (cad_json/ + train_val_test_split.json); empty means <data_root>/deepcad."""
    sample_models: int = 1300
    """Size of the sample corpus generated when the default corpus folder is missing (enough for `1k`)."""
    sample_seed: int = 0
    subset_seed: int = 0
    """Seed of the one fixed order in which every scale takes its models."""
    executor: str = "local"
    """Where per-model work runs: 'local' (a process pool) or 'dask' (a dask.distributed cluster)."""
    dask_address: str = ""
    """Scheduler address when executor is 'dask', e.g. tcp://10.0.0.5:8786."""
    workers: int = 0
    """Processes of the local pool; 0 uses every core."""
    model_timeout: float = 60.0
    """Seconds after which one model's rendering is given up (its process is killed) and recorded as failed."""

    @property
    def corpus_path(self) -> Path:
        return Path(self.corpus_dir) if self.corpus_dir else Path(self.data_root) / "deepcad"

    @property
    def generates_sample_corpus(self) -> bool:
        return not self.corpus_dir

    @property
    def store_path(self) -> Path:
        return Path(self.data_root) / "store"

    def partition_dir(self, scale: str) -> Path:
        return Path(self.data_root) / "partitions" / scale

    def open_executor(self):
        return per_model_executor(self.executor, self.workers, self.dask_address)


class MlflowSettings(dg.ConfigurableResource):
    """Where training and evaluation runs are recorded."""

    tracking_dir: str = ""
    """Folder of the sqlite store and artifacts; empty means <data_root>/mlflow."""
    experiment: str = "cad_pipeline"
    ui_url: str = "http://localhost:5000"
    """Where `mlflow ui` serves the store (make ui starts it), for the links in asset metadata."""

    def tracking(self, settings: PipelineSettings):
        from cad_pipeline.train.tracking import local_tracking  # mlflow loads only in the steps that track

        folder = Path(self.tracking_dir) if self.tracking_dir else Path(settings.data_root) / "mlflow"
        return local_tracking(folder, self.experiment, self.ui_url)


def settings_from_environment() -> PipelineSettings:
    return PipelineSettings(
        data_root=os.environ.get("CAD_PIPELINE_DATA", "data"),
        corpus_dir=os.environ.get("CAD_PIPELINE_CORPUS", ""),
        executor=os.environ.get("CAD_PIPELINE_EXECUTOR", "local"),
        dask_address=os.environ.get("CAD_PIPELINE_DASK_ADDRESS", ""),
    )


@dg.definitions
def resources() -> dg.Definitions:
    mlflow = MlflowSettings(ui_url=os.environ.get("CAD_PIPELINE_MLFLOW_UI", MlflowSettings.model_fields["ui_url"].default))
    return dg.Definitions(resources={"settings": settings_from_environment(), "mlflow": mlflow})
