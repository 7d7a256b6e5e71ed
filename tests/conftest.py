import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets: ``HLRM_DATA_DIR``, else ``../shared/data``; skip if neither exists."""
    path = Path(os.environ.get("HLRM_DATA_DIR", DEFAULT_DATA_DIR))
    if not path.is_dir():
        pytest.skip(f"datasets not found at {path}; set HLRM_DATA_DIR")
    return path
