"""Shared test setup: deterministic, offline, few threads (CI has 2 cores)."""

import os
from pathlib import Path

import pytest
import torch
from hypothesis import settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.manual_seed(0)

# property tests draw the same examples on every run (a red CI run reproduces); set
# HYPOTHESIS_PROFILE=explore to draw fresh ones while hunting for bugs
settings.register_profile("ci", derandomize=True, deadline=None)
settings.register_profile("explore", derandomize=False, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not present")
    return SHARED_DATA.resolve()


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    """Tests convert the bundled model into a session temp dir unless POLYLATE_CACHE is set."""
    if os.environ.get("POLYLATE_CACHE"):
        yield
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("POLYLATE_CACHE", str(tmp_path_factory.mktemp("polylate-cache")))
        yield
