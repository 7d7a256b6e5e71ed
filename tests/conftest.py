import os
import tempfile
from pathlib import Path

import pytest

# What `import hlrm` does for the library (hlrm/threads.py), done before torch starts OpenMP:
# spinning worker threads made small scoring tests 100x slower on the shared 2-core machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

torch.set_num_threads(2)

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real datasets: ``HLRM_DATA_DIR``, else ``../shared/data``; skip if neither exists."""
    path = Path(os.environ.get("HLRM_DATA_DIR", DEFAULT_DATA_DIR))
    if not path.is_dir():
        pytest.skip(f"datasets not found at {path}; set HLRM_DATA_DIR")
    return path


# The factorised relation scorers measure their tile sizes on first use (hlrm.models.tiling):
# tests use the fixed default (scores do not depend on it) and never touch the user's cache;
# tests/test_relation_scoring.py turns the measurement on in a temporary cache.
os.environ.setdefault("HLRM_AUTOTUNE", "0")
TEST_CACHE = Path(tempfile.gettempdir()) / f"hlrm-tests-{os.getuid()}"
os.environ.setdefault("HLRM_CACHE_DIR", str(TEST_CACHE))
