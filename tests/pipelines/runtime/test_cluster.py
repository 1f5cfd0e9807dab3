"""The local Ray a job starts listens on 127.0.0.1 only (joining a cluster: tests/cluster/test_multinode.py)."""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time

import psutil
import pytest

from tests.conftest import REPO
from tests.jobs import local_job_env
from tests.media import Pattern, write_pattern


def listening(root: psutil.Process) -> set[tuple[str, str, int]]:
    """(process name, address, port) of every listening TCP socket of ``root`` and its descendants."""
    found = set()
    try:
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return found
    for process in processes:
        try:
            for connection in process.net_connections(kind="inet"):
                if connection.status == psutil.CONN_LISTEN:
                    found.add((process.name(), connection.laddr.ip, connection.laddr.port))
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1 on a dual-stack socket
    return (mapped or ip).is_loopback


@pytest.mark.slow
def test_a_jobs_local_ray_listens_on_loopback_only(tmp_path):
    """Run ``jobs/ingest.py`` without an address and list its process tree's sockets while it runs:
    GCS, raylet, workers and agents all listen, and every one of them on 127.0.0.1."""
    videos = [write_pattern(tmp_path / f"cam{k}.mp4", Pattern(seconds=8)) for k in range(2)]
    env = local_job_env()
    cmd = [sys.executable, str(REPO / "jobs" / "ingest.py"), "--quiet", "--crop-size", "32",
           "--output", str(tmp_path / "clips"), "--input", *map(str, videos)]
    job = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    root = psutil.Process(job.pid)
    seen: set[tuple[str, str, int]] = set()
    while job.poll() is None:
        seen |= listening(root)
        time.sleep(0.5)  # a listing costs ~0.1 s of CPU on a 2-core machine
    output = job.stdout.read()
    assert job.returncode == 0, output[-3000:]
    names = {name for name, _, _ in seen}
    assert {"gcs_server", "raylet"} <= names, f"the job's Ray was not seen listening: {sorted(seen)}"
    exposed = sorted(s for s in seen if not is_loopback(s[1]))
    assert not exposed, f"listening beyond 127.0.0.1: {exposed}"


ACTORS_THEN_MORE = """
import sys, time
sys.path.insert(0, {repo!r})
import ray
from pipelines.runtime.cluster import ensure_ray
ensure_ray()

@ray.remote(num_cpus=0)
class Idle:
    def ping(self) -> int:
        return 1

actors = []
for count in (18, 26):
    actors += [Idle.remote() for _ in range(count - len(actors))]
    ray.get([actor.ping.remote() for actor in actors])
    time.sleep(3)  # the raylet's warning reaches the driver through the GCS, asynchronously
    print("hosted", len(actors), flush=True)
"""
POOL_WARNING = "worker processes have been started on node"


@pytest.mark.slow
def test_a_local_ray_warns_of_a_worker_leak_but_not_of_rays_own_helpers():
    """18 actors, about what a 2-worker pretraining runs with Ray Train's and Ray Data's helpers, start
    on a job's local Ray without the raylet's "too many worker processes" line on the console; 8 more
    (a leak) get it."""
    script = ACTORS_THEN_MORE.format(repo=str(REPO))
    done = subprocess.run([sys.executable, "-u", "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, env=local_job_env(), timeout=300)
    output = done.stdout
    assert done.returncode == 0, output[-3000:]
    assert "hosted 18" in output and "hosted 26" in output, output[-3000:]
    before, after = output[:output.index("hosted 18")], output[output.index("hosted 18"):]
    assert POOL_WARNING not in before, output
    # The raylet counts its workers less 2 x max_io_workers (spill workers, none started here) and warns
    # from 4 x its startup concurrency (2) on: at 24 workers, which only the leak reaches.
    assert POOL_WARNING in after, output
