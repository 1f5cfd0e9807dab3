"""Faults on purpose, many times: killed Ray workers and killed drivers of ingest, and what survives (issue 18).

    python bench/faults.py                      # 5 seeds of each fault (about 10 min)
    python bench/faults.py --seeds 2 --write-results

The tests cause each fault once (tests/pipelines/ingest/test_killed_driver.py,
tests/pipelines/train/test_pretrain.py, tests/pipelines/runtime/test_{lock,full_disk,damaged_data}.py);
this runs the kill faults at seeded random moments, each against an undisturbed run of the same
inputs measured in the same run:

- killed worker: ``jobs/ingest.py`` on the generator's 3 cameras (30 s each); at a random moment once windows decode, one Ray
  worker running a map task gets SIGKILL. Ray retries the task; the run must exit 0 with the rows
  of the undisturbed run.
- killed driver: ``jobs/ingest.py`` and its local Ray get SIGKILL (the process group) at a random
  moment; every manifest left must be valid JSON, a complete stream's rows whole; rerunning the same
  command must exit 0 with the rows of the undisturbed run.

Columns: runs, runs whose output equals the undisturbed run's, rows lost or duplicated (must be 0),
the wall time of the faulted run and of the rerun against the undisturbed run's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402

from pipelines.ingest.clips_dataset import read_stream  # noqa: E402
from pipelines.synthetic import SyntheticConfig, generate  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VIEWS = ("train", "similar", "challenging")  # the generator's three cameras, one stream each
SECONDS = 30


def ingest(videos: list[Path], output: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"RAY_AUTH_MODE": "disabled"}
    command = [sys.executable, str(REPO / "jobs" / "ingest.py"), "--quiet", "--crop-size", "32", "--window-seconds",
               "5", "--output", str(output), "--input", *map(str, videos)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)


def timed(videos: list[Path], output: Path) -> tuple[int, float, str]:
    began = time.monotonic()
    job = ingest(videos, output)
    text = job.communicate(timeout=600)[0]
    return job.returncode, time.monotonic() - began, text


def map_workers(job: subprocess.Popen) -> list[psutil.Process]:
    """The job's Ray workers that run a map task now (decode windows, write shards)."""
    found = []
    for process in psutil.Process(job.pid).children(recursive=True):
        try:
            if process.name().startswith("ray::Map(") and "inspect" not in process.name():
                found.append(process)
        except psutil.NoSuchProcess:
            continue
    return found


def rows_against(output: Path, clean: Path) -> tuple[bool, int]:
    """(every stream equals the undisturbed run's, rows lost or duplicated)."""
    same, wrong = True, 0
    for view in VIEWS:
        try:
            got = read_stream(str(output), view).column("t").to_pylist()
            same &= read_stream(str(output), view).equals(read_stream(str(clean), view))
        except (FileNotFoundError, ValueError):
            got, same = [], False
        wrong += abs(len(got) - SECONDS) + (len(got) - len(set(got)))
    return same, wrong


def killed_worker(videos: list[Path], work: Path, clean: Path, rng: random.Random) -> dict:
    output = work / f"worker-{rng.random():.6f}"
    began = time.monotonic()
    job = ingest(videos, output)
    delay, first_seen, killed = rng.uniform(0.0, 1.5), None, ""  # the decode stage lasts a few seconds
    while job.poll() is None and not killed:
        workers = map_workers(job)
        if workers and first_seen is None:
            first_seen = time.monotonic()
        if first_seen is not None and time.monotonic() - first_seen >= delay and workers:
            victim = rng.choice(workers)
            try:
                killed = victim.name()
                victim.kill()
            except psutil.NoSuchProcess:
                killed = ""
        time.sleep(0.05)
    job.communicate(timeout=600)
    same, wrong = rows_against(output, clean)
    return {"ok": job.returncode == 0 and same and bool(killed), "wrong": wrong, "killed": killed,
            "wall": time.monotonic() - began, "rerun": 0.0}


def killed_driver(videos: list[Path], work: Path, clean: Path, rng: random.Random) -> dict:
    output = work / f"driver-{rng.random():.6f}"
    began = time.monotonic()
    job = ingest(videos, output)
    deadline = began + rng.uniform(4.0, 15.0)  # from Ray's start-up to the last shards
    while job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = job.poll() is None
    if killed:
        os.killpg(job.pid, signal.SIGKILL)
    job.communicate(timeout=60)
    wall = time.monotonic() - began
    valid = True
    for manifest in output.glob("stream_id=*/manifest.json"):
        try:
            status = json.loads(manifest.read_text())["status"]
            if status == "complete":
                stream = manifest.parent.name.split("=", 1)[1]
                valid &= read_stream(str(output), stream).column("t").to_pylist() == list(range(SECONDS))
        except (ValueError, KeyError):
            valid = False
    code, rerun, _ = timed(videos, output)
    same, wrong = rows_against(output, clean)
    return {"ok": code == 0 and same and valid, "wrong": wrong, "killed": "driver" if killed else "(ended first)",
            "wall": wall, "rerun": rerun}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="runs of each fault")
    parser.add_argument("--write-results", action="store_true", help="also write the table into bench/RESULTS.md")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="epg-faults-"))
    footage = generate(SyntheticConfig(out=work / "videos", minutes=SECONDS / 60, seed=3, size=(320, 180),
                                       views=VIEWS))
    videos = [footage.videos[view] for view in VIEWS]
    code, anchor, text = timed(videos, work / "clean")
    assert code == 0, text
    report = Printed()
    report(f"Undisturbed ingest of {len(VIEWS)} x {SECONDS} s (320x180, 5-s windows, own local Ray): {anchor:.1f} s")
    report("")
    report("| fault | how | runs | output equal to the undisturbed run | rows lost or duplicated | "
           "faulted run wall s (mean) | rerun wall s (mean) | rerun / undisturbed |")
    report("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, how, fault in (("killed Ray worker", "SIGKILL of a map task's worker, random moment", killed_worker),
                             ("killed driver", "SIGKILL of the job's process group, random moment", killed_driver)):
        tried = [fault(videos, work, work / "clean", random.Random(seed)) for seed in range(args.seeds)]
        runs = [r for r in tried if r["killed"] and r["killed"] != "(ended first)"]  # the job ended before the fault
        if len(runs) < len(tried):
            print(f"    {len(tried) - len(runs)} run(s) ended before the fault came: not counted", file=sys.stderr)
        if not runs:
            continue
        rerun = [r["rerun"] for r in runs if r["rerun"]]
        mean = sum(rerun) / len(rerun) if rerun else 0.0
        reran = f"{mean:.1f} | {mean / anchor:.2f}x" if rerun else "(none needed) | -"
        report(f"| {name} | {how} | {len(runs)} | {sum(r['ok'] for r in runs)} | {sum(r['wrong'] for r in runs)} | "
               f"{sum(r['wall'] for r in runs) / len(runs):.1f} | {reran} |", flush=True)
        print("   ", [r["killed"] for r in runs], file=sys.stderr)
    if args.write_results:
        update_results("Faults", report.text, command_line(__file__, sys.argv[1:]))


if __name__ == "__main__":
    main()
