"""Shared fixtures: one real local Ray for the whole test session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EPG_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(REPO))


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs, started once (and stopped) by the tests."""
    import ray

    from pipelines.ingest import WORKER_ENV, ensure_ray

    started = not ray.is_initialized()
    if started:
        # address="local": always a new local Ray, never a cluster some `ray start` left running.
        ray.init(address="local", num_cpus=2, include_dashboard=False, runtime_env={"env_vars": WORKER_ENV},
                 log_to_driver=False)
    ensure_ray()
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        raise FileNotFoundError(f"shared data not found at {SHARED_DATA}; set EPG_SHARED_DATA")
    return SHARED_DATA


@pytest.fixture
def one_torch_thread():
    """Small models on a shared machine: one intra-op thread avoids waiting on busy cores (restored after)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
