from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REAL_SAMPLES = FIXTURES / "deepcad_samples"


@pytest.fixture(scope="session")
def real_samples_dir() -> Path:
    return REAL_SAMPLES
