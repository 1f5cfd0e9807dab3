"""A two-node Ray cluster on this machine, driven like a real one: `ray start
--head` plus a second `ray start --address` node, then `ray job submit` of
ingest and a short pretrain. Only the Ray processes this test started are
stopped (each `ray start --block` owns its node and ends it on SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.multinode

RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_nodes(address: str, count: int, env: dict, timeout: float = 120.0) -> None:
    script = "import ray, sys; ray.init(address=sys.argv[1]); print(len([n for n in ray.nodes() if n['Alive']]))"
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = subprocess.run([sys.executable, "-c", script, address], capture_output=True, text=True, env=env)
        if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        time.sleep(0.5)  # each try is a new process that connects (seconds)
    raise TimeoutError(f"{count} Ray nodes did not come up at {address}")


@pytest.fixture
def two_node_cluster(tmp_path):
    # The job's `python` is found on PATH: put this environment's first, as an activated venv does.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PATH": path}
    env.pop("RAY_ADDRESS", None)
    gcs, dashboard = free_port(), free_port()
    common = ["--block", "--num-cpus", "1", "--disable-usage-stats"]

    def own_ports() -> list[str]:
        # Each node's agents get ports of their own: the defaults (e.g. 52365) may be
        # held by another Ray on this machine (the test session's own local Ray).
        return ["--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
                "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port())]

    head = subprocess.Popen(
        [RAY, "start", "--head", "--port", str(gcs), "--dashboard-port", str(dashboard), "--include-dashboard=true",
         "--dashboard-host", "127.0.0.1", *own_ports(), *common],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    nodes = [head]
    try:
        address = f"127.0.0.1:{gcs}"
        wait_for_nodes(address, 1, env)
        worker = subprocess.Popen(
            [RAY, "start", "--address", address, *own_ports(), *common],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        nodes.append(worker)
        wait_for_nodes(address, 2, env)
        yield f"http://127.0.0.1:{dashboard}", env
    finally:
        for proc in reversed(nodes):  # only our own nodes: each --block process stops its node
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in nodes:  # a graceful stop takes ~30 s; the test needs only that nothing is left
            try:
                proc.wait(timeout=1)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        # `ray start` records its head in this file and only `ray stop` (which would stop
        # every Ray on the machine) removes it; a stale entry would make a later plain
        # ray.init() try to join the dead cluster.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.exists() and current.read_text().strip().endswith(f":{gcs}"):
            current.unlink()


def submit(dashboard: str, env: dict, *entrypoint: str) -> subprocess.CompletedProcess:
    """`ray job submit`, retried while the head's job agent is still starting
    (the submission is refused before anything runs, so a retry is safe)."""
    cmd = [RAY, "job", "submit", "--address", dashboard, "--working-dir", str(REPO), "--", "python", *entrypoint]
    for _ in range(24):
        done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
        if "No available agent to submit job" not in done.stdout + done.stderr:
            return done
        time.sleep(5)
    return done


def test_ingest_and_pretrain_through_ray_job_submit_on_two_nodes(two_node_cluster, tmp_path):
    from pipelines.synthetic import SyntheticConfig, generate

    dashboard, env = two_node_cluster
    generate(SyntheticConfig(out=tmp_path / "videos", minutes=1.0, seed=2, size=(160, 90), fps=5.0,
                             views=("train", "similar"), rate_scale=4.0))
    clips, run_dir = tmp_path / "clips", tmp_path / "runs" / "tiny"

    ingest = submit(dashboard, env, "jobs/ingest.py", "--quiet", "--crop-size", "32", "--input",
                    str(tmp_path / "videos"), "--output", str(clips))
    assert ingest.returncode == 0, ingest.stdout[-3000:] + ingest.stderr[-3000:]
    assert "2 ingested" in ingest.stdout
    for view in ("train", "similar"):
        assert json.loads((clips / f"stream_id={view}" / "manifest.json").read_text())["status"] == "complete"

    pretrain = submit(dashboard, env, "jobs/pretrain.py", "--clips", str(clips), "--run-dir", str(run_dir),
                      "--preset", "tiny", "--crop-size", "32", "--workers", "1", "--cpus-per-worker", "0.5",
                      "--batch-size", "16", "--epochs", "1", "--stop-after-steps", "3", "--checkpoint-every", "3",
                      "--log-every", "1")
    assert pretrain.returncode == 0, pretrain.stdout[-3000:] + pretrain.stderr[-3000:]
    assert (run_dir / "config.json").exists()
    steps = (run_dir / "metrics" / "steps.csv").read_text().splitlines()
    assert len(steps) == 1 + 3  # header + 3 steps
    assert list(run_dir.glob("checkpoint_*"))
