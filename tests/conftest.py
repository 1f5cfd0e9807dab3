"""Shared fixtures and markers: one real local Ray for the whole session, torch threads per test.

Markers (registered in pyproject.toml; ``make test`` runs every test, ``pytest -m "not slow"``
is the fast subset): ``ray`` is added to every test that uses the ``ray_local`` fixture, and
such tests are ``slow`` as well (a local Ray, real pipelines); ``browser`` (headless chromium)
and ``multinode`` (a second Ray node) mark themselves and are slow too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def shared_data_candidates() -> list[Path]:
    """Where ../shared/data may be: $EPG_SHARED_DATA, beside this checkout, or beside the local
    checkout this one was cloned from (a CI-style fresh clone in /tmp of a checkout that sits beside shared/)."""
    if "EPG_SHARED_DATA" in os.environ:
        return [Path(os.environ["EPG_SHARED_DATA"])]
    candidates = [REPO.parent / "shared" / "data"]
    origin = subprocess.run(["git", "-C", str(REPO), "remote", "get-url", "origin"], capture_output=True, text=True)
    if origin.returncode == 0 and "://" not in origin.stdout and Path(origin.stdout.strip()).is_dir():
        candidates.append(Path(origin.stdout.strip()).resolve().parent / "shared" / "data")
    return candidates


SHARED_DATA = next((path for path in shared_data_candidates() if path.is_dir()), None)


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray with 2 CPUs, started once (and stopped) by the tests."""
    import ray

    from pipelines.runtime.cluster import ensure_ray, start_local_ray

    started = not ray.is_initialized()
    if started:
        start_local_ray(num_cpus=2)
    ensure_ray()
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if SHARED_DATA is None:
        where = ", ".join(map(str, shared_data_candidates()))
        raise FileNotFoundError(f"shared data not found at {where}; set EPG_SHARED_DATA")
    return SHARED_DATA


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)
        if any(item.get_closest_marker(name) for name in ("ray", "browser", "multinode")):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(autouse=True)
def torch_threads(request: pytest.FixtureRequest):
    """Small models on a shared 2-core machine: one intra-op thread unless a test asks for more with
    ``@pytest.mark.torch_threads(n)`` (spin-waiting threads crawl on busy cores); restored after."""
    import torch

    marker = request.node.get_closest_marker("torch_threads")
    threads = torch.get_num_threads()
    torch.set_num_threads(marker.args[0] if marker else 1)
    yield
    torch.set_num_threads(threads)
