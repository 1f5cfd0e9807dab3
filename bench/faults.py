"""Faults on purpose, many times: killed Ray workers and killed drivers of ingest, scoring and pretraining, and
what survives (issue 18).

    python bench/faults.py                           # 5 seeds of each fault of each job (about 40 min)
    python bench/faults.py --jobs ingest --seeds 2 --write-results

The tests cause each fault once (tests/pipelines/ingest/test_killed_driver.py,
tests/pipelines/score/test_killed_scoring.py, tests/pipelines/train/test_pretrain.py,
tests/pipelines/runtime/test_{lock,full_disk,damaged_data}.py); this runs them at seeded random moments,
each job against an undisturbed run of the same command measured in the same run. Every job runs as a user
runs it (``jobs/<job>.py``, its own local Ray) on the generator's 3 cameras (30 s each, 320x180):

- ingest (5-s windows); scoring: ``jobs/embed.py --videos`` with a random-init tiny checkpoint (5-s
  windows); pretraining: ``jobs/pretrain.py`` on the undisturbed ingest's clips (tiny preset, 1 worker,
  3 epochs of 12 steps, a checkpoint every 4 steps, ``--max-failures 1``).
- killed worker: at a random moment once the job's workers run (ingest: a map task's worker; scoring: a
  model actor once it is built, which decodes its windows too; pretraining: the training worker once
  steps run), one gets SIGKILL. Ray
  retries the task, replaces the actor, or Ray Train restarts the worker from its last checkpoint; the run
  must exit 0 with the undisturbed output.
- killed driver: the job and its local Ray get SIGKILL (the process group) at a random moment; every
  manifest left must be valid JSON and a complete stream whole (pretraining: the latest checkpoint loads);
  rerunning the same command must exit 0 with the undisturbed output.

"Output equal": every stream's rows (ingest, scoring), or the final parameters and the per-step losses
(pretraining), equal the undisturbed run's to the bit. Columns: runs, runs whose output is equal, rows lost
or duplicated (steps for pretraining), the wall time of the faulted run and of the rerun against the
undisturbed run's.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402

from pipelines.ingest.clips_dataset import read_stream  # noqa: E402
from pipelines.synthetic import SyntheticConfig, generate  # noqa: E402
from pipelines.train.checkpoint import write_random_init  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VIEWS = ("train", "similar", "challenging")  # the generator's three cameras, one stream each
SECONDS = 30


@dataclass
class Job:
    """One job as the bench runs it: its command, which of its processes are workers, how outputs compare."""

    name: str
    command: Callable[[Path], list[str]]
    is_worker: Callable[[str], bool]
    compare: Callable[[Path, Path], tuple[bool, int]]  # (output equal to the undisturbed one, rows/steps wrong)
    between: Callable[[Path], bool]  # what a reader finds after a killed driver is valid
    kill_window: tuple[float, float]  # a driver is killed this many seconds after its start
    working: Callable[[Path], bool] = lambda output: True  # the job's work is under way (a worker may be killed)
    worker_delay: tuple[float, float] = (0.0, 3.0)  # a worker is killed this long after the work is under way


def launch(command: list[str]) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    return subprocess.Popen([sys.executable, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, start_new_session=True)


def timed(command: list[str]) -> tuple[int, float, str]:
    began = time.monotonic()
    job = launch(command)
    text = job.communicate(timeout=1800)[0]
    return job.returncode, time.monotonic() - began, text


def workers_of(job: subprocess.Popen, is_worker: Callable[[str], bool]) -> list[psutil.Process]:
    found = []
    for process in psutil.Process(job.pid).children(recursive=True):
        try:
            if is_worker(process.name()):
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def streams_equal(read: Callable[[Path, str], object], rows_of: Callable[[object], list[int]]):
    def compare(output: Path, clean: Path) -> tuple[bool, int]:
        same, wrong = True, 0
        for view in VIEWS:
            try:
                got, want = read(output, view), read(clean, view)
                same &= got.equals(want)
                t = rows_of(got)
            except (FileNotFoundError, ValueError, KeyError):
                t, same = [], False
            wrong += abs(len(t) - SECONDS) + (len(t) - len(set(t)))
        return same, wrong
    return compare


def manifests_valid(output: Path) -> bool:
    for manifest in output.glob("stream_id=*/manifest.json"):
        try:
            data = json.loads(manifest.read_text())
            files = {p.name for p in manifest.parent.glob("*.parquet")}
            if files != (set(data["files"]) if data["status"] == "complete" else set()):
                return False
        except (ValueError, KeyError):
            return False
    return True


def checkpoint_loads(run_dir: Path) -> bool:
    from pipelines.score.model import resolve_checkpoint
    from pipelines.train.checkpoint import load_model

    if not any(run_dir.glob("checkpoint_step*")):
        return True  # killed before its first checkpoint: nothing to read yet
    try:
        load_model(str(resolve_checkpoint(str(run_dir))))
        return True
    except Exception:  # noqa: BLE001 - any failure to read it back
        return False


def pretraining_equal(output: Path, clean: Path) -> tuple[bool, int]:
    import torch

    def losses(run: Path) -> list[tuple[int, str]]:
        with (run / "metrics" / "steps.csv").open(newline="") as handle:
            return [(int(float(r["step"])), r["loss"]) for r in csv.DictReader(handle)]

    final = sorted(clean.glob("checkpoint_step*_end_of_epoch*"))[-1].name
    try:
        got, want = torch.load(output / final / "model.pt"), torch.load(clean / final / "model.pt")
        same = got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        steps, reference = losses(output), losses(clean)
    except (FileNotFoundError, OSError, RuntimeError):
        return False, len(losses(clean))
    wrong = abs(len(steps) - len(reference)) + (len(steps) - len({s for s, _ in steps}))
    return same and steps == reference, wrong


def jobs(work: Path, videos: list[Path], checkpoint: Path) -> dict[str, Job]:
    from pipelines.score.embeddings import read_embeddings

    inputs = list(map(str, videos))
    return {
        "ingest": Job(
            "ingest",
            lambda out: [str(REPO / "jobs" / "ingest.py"), "--quiet", "--crop-size", "32", "--window-seconds", "5",
                         "--output", str(out), "--input", *inputs],
            lambda name: name.startswith("ray::Map(") and "inspect" not in name,
            streams_equal(lambda root, view: read_stream(str(root), view), lambda t: t.column("t").to_pylist()),
            manifests_valid, (4.0, 15.0)),
        "scoring": Job(
            "scoring",
            lambda out: [str(REPO / "jobs" / "embed.py"), "--quiet", "--window-seconds", "5", "--rows-per-file", "10",
                         "--checkpoint", str(checkpoint), "--output", str(out), "--videos", *inputs],
            lambda name: "ClipEmbedder" in name and not name.endswith("__init__"),  # a model actor once built
            streams_equal(lambda root, view: _embeddings_of(read_embeddings(str(root)), view),
                          lambda t: t.column("t").to_pylist()),
            manifests_valid, (8.0, 20.0)),
        "pretraining": Job(
            "pretraining",
            lambda out: [str(REPO / "jobs" / "pretrain.py"), "--clips", str(work / "ingest-undisturbed"),
                         "--run-dir", str(out), "--preset", "tiny", "--epochs", "3", "--batch-size", "16",
                         "--workers", "1", "--checkpoint-every", "4", "--max-failures", "1"],
            lambda name: name.startswith("ray::RayTrainWorker"),
            pretraining_equal, checkpoint_loads, (15.0, 60.0),
            # once steps run: a worker killed while Ray Train starts its group leaks that group's placement
            # group (Ray 2.60), and on 2 CPUs the restarted run then waits forever for its data tasks
            working=lambda run: (run / "metrics" / "steps.csv").is_file(), worker_delay=(0.0, 8.0)),
    }


def _embeddings_of(embeddings, view: str):
    """One stream's rows of an embeddings dataset as an Arrow table (for equality)."""
    import pyarrow as pa

    keep = embeddings.stream_id == view
    if not keep.any():
        raise ValueError(f"no rows of {view}")
    return pa.table({"t": embeddings.t[keep], "v": list(embeddings.v[keep]), "a": list(embeddings.a[keep]),
                     "av_dist": embeddings.av_dist[keep]})


def killed_worker(job: Job, work: Path, clean: Path, rng: random.Random) -> dict:
    output = work / f"{job.name}-worker-{rng.random():.6f}"
    began = time.monotonic()
    process = launch(job.command(output))
    delay, first_seen, killed = rng.uniform(*job.worker_delay), None, ""
    while process.poll() is None and not killed:
        workers = workers_of(process, job.is_worker)
        if workers and first_seen is None and job.working(output):
            first_seen = time.monotonic()
        if first_seen is not None and time.monotonic() - first_seen >= delay and workers:
            victim = rng.choice(workers)
            try:
                killed = victim.name()
                victim.kill()
            except psutil.NoSuchProcess:
                killed = ""
        time.sleep(0.05)
    process.communicate(timeout=1800)
    same, wrong = job.compare(output, clean)
    return {"ok": process.returncode == 0 and same and bool(killed), "wrong": wrong, "killed": killed,
            "wall": time.monotonic() - began, "rerun": 0.0}


def killed_driver(job: Job, work: Path, clean: Path, rng: random.Random) -> dict:
    output = work / f"{job.name}-driver-{rng.random():.6f}"
    began = time.monotonic()
    process = launch(job.command(output))
    deadline = began + rng.uniform(*job.kill_window)
    while process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = process.poll() is None
    if killed:
        os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    wall = time.monotonic() - began
    valid = job.between(output)
    code, rerun, _ = timed(job.command(output))
    same, wrong = job.compare(output, clean)
    return {"ok": code == 0 and same and valid, "wrong": wrong, "killed": "driver" if killed else "(ended first)",
            "wall": wall, "rerun": rerun}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="runs of each fault")
    parser.add_argument("--jobs", default="ingest,scoring,pretraining",
                        help="comma-separated: ingest, scoring, pretraining")
    parser.add_argument("--write-results", action="store_true", help="also write the table into bench/RESULTS.md")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="epg-faults-"))
    footage = generate(SyntheticConfig(out=work / "videos", minutes=SECONDS / 60, seed=3, size=(320, 180),
                                       views=VIEWS))
    videos = [footage.videos[view] for view in VIEWS]
    checkpoint = write_random_init(work / "model")  # scoring faults do not depend on the weights
    chosen = jobs(work, videos, checkpoint)
    names = [name.strip() for name in args.jobs.split(",")]
    if "pretraining" in names and "ingest" not in names:
        names.insert(0, "ingest")  # pretraining reads the undisturbed ingest's clips
    report = Printed()
    report(f"Each job as a user runs it (its own local Ray) on {len(VIEWS)} cameras x {SECONDS} s (320x180), each "
           f"fault at a seeded random moment, {args.seeds} seeds:")
    report("")
    report("| job | fault | how | runs | output equal to the undisturbed run | rows (steps) lost or duplicated | "
           "undisturbed wall s | faulted run wall s (mean) | rerun wall s (mean) | rerun / undisturbed |")
    report("|---|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        job = chosen[name]
        clean = work / f"{name}-undisturbed"
        code, anchor, text = timed(job.command(clean))
        assert code == 0, text[-3000:]
        for fault, how, run in (("killed Ray worker", "SIGKILL of a worker, random moment", killed_worker),
                                ("killed driver", "SIGKILL of the job's process group, random moment", killed_driver)):
            tried = [run(job, work, clean, random.Random(seed)) for seed in range(args.seeds)]
            runs = [r for r in tried if r["killed"] and r["killed"] != "(ended first)"]
            if len(runs) < len(tried):
                print(f"    {len(tried) - len(runs)} run(s) ended before the fault came: not counted", file=sys.stderr)
            if not runs:
                continue
            rerun = [r["rerun"] for r in runs if r["rerun"]]
            mean = sum(rerun) / len(rerun) if rerun else 0.0
            reran = f"{mean:.1f} | {mean / anchor:.2f}x" if rerun else "(none needed) | -"
            report(f"| {name} | {fault} | {how} | {len(runs)} | {sum(r['ok'] for r in runs)} | "
                   f"{sum(r['wrong'] for r in runs)} | {anchor:.1f} | {sum(r['wall'] for r in runs) / len(runs):.1f} | "
                   f"{reran} |", flush=True)
            print("   ", [r["killed"] for r in runs], file=sys.stderr)
    if args.write_results:
        update_results("Faults", report.text, command_line(__file__, sys.argv[1:]))


if __name__ == "__main__":
    main()
