import os
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REAL_SAMPLES = FIXTURES / "deepcad_samples"


@pytest.fixture(scope="session", autouse=True)
def isolated_dagster_home(tmp_path_factory):
    """Tests never touch the user's data/dagster_home, which `make` exports but only `make run` creates."""
    home = tmp_path_factory.mktemp("dagster_home")
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    yield home
    if previous is None:
        os.environ.pop("DAGSTER_HOME", None)
    else:
        os.environ["DAGSTER_HOME"] = previous


@pytest.fixture(scope="session")
def real_samples_dir() -> Path:
    return REAL_SAMPLES
