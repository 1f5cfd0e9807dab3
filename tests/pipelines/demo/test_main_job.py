"""The main job (jobs/demo.py, pipelines/demo/) end to end on one minute of synthetic footage, its rerun,
and its report: self-contained HTML, checked in a headless browser (Debian's chromium, from `make system-deps`)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from PIL import Image

from pipelines.demo.config import DemoLayout, MainJobConfig
from pipelines.demo.job import MainResult, run_main
from pipelines.demo.stages import choose_query
from pipelines.ingest.clips_dataset import read_stream
from pipelines.score.embeddings import read_embeddings
from tests.conftest import REPO
from tests.pipelines.runtime.test_cluster import is_loopback, listening

sys.path.insert(0, str(REPO / "jobs"))
import demo as demo_cli  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
VIEWS = ("train", "similar", "challenging")
START = "2026-05-01T23:59:30"  # the minute crosses midnight: wall-clock times after it carry +1d
SECTIONS = ("pipeline", "pretrain", "anomaly", "search", "localize", "raw")
WALL_CLOCK = re.compile(r"^\d\d:[0-5]\d:[0-5]\d(\+1d)?$")


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> MainJobConfig:
    # seed 2 at 4x the event rate: glass breaking twice and a bus within the first minute
    return MainJobConfig(output=str(tmp_path_factory.mktemp("main") / "out"), minutes=1.0, seed=2, views=VIEWS,
                         preset="tiny", epochs=2, start_time=START, show_progress=False)


@dataclass
class UserRun:
    """``jobs/demo.py`` run as a user runs it (its own local Ray), and what it left: console, sockets, logs."""

    done: subprocess.CompletedProcess
    listened: set[tuple[str, str, int]]  # (process name, address, port) of every socket it listened on
    worker_logs: int  # worker log files of its Ray
    warned: list[str]  # the lines of those logs (and Ray Data's) that record a warning
    stages: list[dict]  # its stages.json, config.json and summary.txt, before the in-process runs rewrite them
    config: dict
    summaries: str


@pytest.fixture(scope="module")
def user_run(config) -> UserRun:
    """The module's first run of ``config`` through the command line, in a process of its own. The
    in-process runs below reuse its footage, clips, model and embeddings."""
    ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths have a length limit
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_DATA_LOGGING_CONFIG")}
    env |= {"RAY_AUTH_MODE": "disabled", "RAY_TMPDIR": str(ray_tmp)}
    out = Path(config.output)
    command = [sys.executable, str(REPO / "jobs" / "demo.py"), "--output", str(out), "--minutes", "1", "--seed", "2",
               "--preset", "tiny", "--epochs", "2", "--start-time", START]
    console = out.parent / "console"
    console.mkdir()
    try:
        # Its sockets are listed while it runs (ingest, pretraining, scoring and the downstream jobs in one
        # Ray). Output goes to files, so no pipe fills while the fixture polls.
        with open(console / "stdout", "wb") as out_file, open(console / "stderr", "wb") as err_file:
            job = subprocess.Popen(command, stdout=out_file, stderr=err_file, env=env)
            seen: set[tuple[str, str, int]] = set()
            deadline = time.monotonic() + 900
            while job.poll() is None and time.monotonic() < deadline:
                seen |= listening(psutil.Process(job.pid))
                time.sleep(1.0)  # a listing costs ~0.1 s of CPU: polled faster, it slows the run it watches
            if job.poll() is None:
                job.kill()
        done = subprocess.CompletedProcess(command, job.wait(), (console / "stdout").read_bytes(),
                                           (console / "stderr").read_bytes())
        # The output of every worker process (our tasks and actors) and Ray Data's log; Ray's own services
        # keep theirs apart.
        logs = [path for path in ray_tmp.glob("ray/session_*/logs/worker-*") if path.suffix in (".out", ".err")]
        workers = len(logs)
        logs += [path for path in ray_tmp.glob("ray/session_*/logs/ray-data/*.log")]
        warned = [f"{path.name}: {line}" for path in logs for line in path.read_text(errors="replace").splitlines()
                  if LOGGED_WARNING.search(line)]
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    stages = read_json(out / "stages.json") if (out / "stages.json").is_file() else []
    written = read_json(out / "config.json") if (out / "config.json").is_file() else {}
    summaries = (out / "summary.txt").read_text() if (out / "summary.txt").is_file() else ""
    return UserRun(done, seen, workers, warned, stages, written, summaries)


@pytest.fixture(scope="module")
def first_run(ray_local, config, user_run) -> MainResult:
    return run_main(config)


@pytest.fixture(scope="module")
def second_run(first_run, config) -> MainResult:
    return run_main(config)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def wall_clock(seconds: int) -> str:
    when = datetime.fromisoformat(START) + timedelta(seconds=seconds)
    return when.strftime("%H:%M:%S") + ("+1d" if when.date() > datetime.fromisoformat(START).date() else "")


def test_every_stage_writes_its_outputs(user_run, first_run, config):
    layout = DemoLayout(Path(config.output))
    names = ["generate", "ingest", "pretrain", "embed", "anomaly", "search", "localize", "report"]
    assert [s["name"] for s in user_run.stages] == names
    assert all(s["status"] == "ran" and s["seconds"] > 0 for s in user_run.stages)
    assert user_run.config == replace(config, show_progress=True).to_dict()  # the command line's defaults
    # the in-process run of the same config: the data stages reused, the downstream jobs and report again
    assert [s.name for s in first_run.stages] == names
    assert [s.status for s in first_run.stages] == ["reused"] * 4 + ["ran"] * 4
    assert read_json(layout.root / "config.json") == config.to_dict()
    assert [s["name"] for s in read_json(layout.root / "stages.json")] == [s.name for s in first_run.stages]

    # generate + ingest: three views of one minute, 60 one-second clips each at the preset's crop size
    assert all((layout.videos / f"{view}.mp4").stat().st_size > 10_000 for view in VIEWS)
    labels = pd.read_parquet(layout.labels)
    assert set(labels.stream_id) == set(VIEWS) and {"glass_break", "bus"} <= set(labels.label)
    clips = {view: read_stream(str(layout.clips), view) for view in VIEWS}
    assert all(table.num_rows == 60 for table in clips.values())

    # pretrain: a finished run of the chosen preset, with the mining diagnostics of the EPG epoch
    run = first_run.run_dir
    assert run.parent == layout.runs and run.name.startswith("tiny-epg-")
    assert first_run.checkpoint.parent == run and first_run.checkpoint.name.endswith("_end_of_epoch0002")
    epochs = pd.read_csv(run / "metrics" / "epochs.csv")
    assert len(epochs) == 2 and np.isfinite(epochs.loss).all()
    assert np.isnan(epochs.mined_label_precision[0]) and 0 <= epochs.mined_label_precision[1] <= 1
    assert read_json(run / "config.json")["config"]["labels"] == str(layout.labels.resolve())

    # embed: one row per clip, every view, the checkpoint's model
    emb = read_embeddings(str(layout.embeddings))
    assert len(emb) == sum(t.num_rows for t in clips.values())
    assert sorted(emb.streams) == sorted(VIEWS)
    assert emb.model.startswith(f"{run.name}/{first_run.checkpoint.name}@")
    assert np.isfinite(emb.v).all() and np.isfinite(emb.av_dist).all()

    # anomaly: threshold from the train view, wall-clock times, labels scored
    anomaly = read_json(layout.anomaly / "summary.json")
    assert anomaly["reference"] == ["train"] and anomaly["n_seconds"] == len(emb)
    assert anomaly["roc_auc"] is not None and 0 <= anomaly["roc_auc"] <= 1
    events = read_json(layout.anomaly / "events.json")["events"]
    assert len(events) == anomaly["n_events"] == first_run.summaries["anomaly"]["n_events"]
    for event in events:
        assert event["start_hhmmss"] == wall_clock(event["start"]) and WALL_CLOCK.match(event["end_hhmmss"])
    assert sorted(p.name for p in layout.anomaly.glob("timeline-*.png")) == sorted(f"timeline-{v}.png" for v in VIEWS)

    # search: the query is a labelled second of the similar view; hits are judged against the labels
    stream, t = first_run.query.split(":")
    query_labels = set(labels[(labels.stream_id == stream) & (labels.t == int(t))].label)
    assert stream == "similar" and "bus" in query_labels
    results = read_json(layout.search / "results.json")
    assert results["query"]["label"] is not None and results["query"]["time"] == wall_clock(int(t))
    assert 1 <= len(results["results"]) <= config.search_k
    assert all(r["relevant"] in (True, False) and WALL_CLOCK.match(r["time"]) for r in results["results"])
    assert (layout.search / "contact_sheet.png").stat().st_size > 10_000

    # localize: trained on train, scored on the two held-out views, with the baseline
    accuracy = read_json(layout.localize / "accuracy.json")
    for by_features in accuracy.values():
        for score in by_features.values():
            assert set(score["per_view"]) == {"similar", "challenging"}
            assert all(0 <= v["accuracy"] <= 1 and v["n_seconds"] == 60 for v in score["per_view"].values())
    assert set(read_json(layout.localize / "summary.json")["majority_baseline"]) == {"similar", "challenging"}
    assert first_run.report == layout.report / "index.html"


def test_report_is_self_contained_and_complete(first_run):
    page = first_run.report.read_text()
    for section in SECTIONS:
        assert f'<section id="{section}">' in page, section
    assert 'class="missing"' not in page
    assert "http://" not in page and "https://" not in page
    assert "<script" not in page and "<link" not in page and "url(" not in page
    sources = re.findall(r'<img[^>]*\bsrc="([^"]*)"', page)
    assert len(sources) == 1 + 3 + 1 + 1  # training curves, 3 timelines, contact sheet, accuracy chart
    for source in sources:
        assert source.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1])))
        assert image.format == "PNG" and image.width >= 600
    assert "wall-clock" in page and first_run.summaries["search"]["query"]["time"] in page
    links = re.findall(r'<a href="([^"]*)"', page)
    assert {"data/anomaly-events.json", "data/search-results.parquet", "data/localize-accuracy.json",
            "data/pretrain-epochs.csv", "data/labels.parquet"} <= set(links)
    for link in links:
        assert (first_run.report.parent / link).is_file(), link


def test_rerun_reuses_the_finished_stages(first_run, second_run):
    status = {s.name: s.status for s in second_run.stages}
    assert status == {"generate": "reused", "ingest": "reused", "pretrain": "reused", "embed": "reused",
                      "anomaly": "ran", "search": "ran", "localize": "ran", "report": "ran"}
    assert second_run.run_dir == first_run.run_dir and second_run.checkpoint == first_run.checkpoint
    assert second_run.query == first_run.query
    assert second_run.summaries["anomaly"]["threshold"] == first_run.summaries["anomaly"]["threshold"]
    assert "reused" in second_run.report.read_text()


@pytest.mark.browser
def test_report_renders_in_a_headless_browser(second_run, tmp_path):
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: run the project set-up (`make system-deps`, which apt-get installs "
                    f"chromium; `make test` runs it)")
    shot = tmp_path / "report.png"
    command = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2400", f"--screenshot={shot}",
               second_run.report.resolve().as_uri()]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-2000:]

    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2400)
    pixels = np.asarray(image).astype(np.int16)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 2_000  # plots, photos of the street, text
    header = pixels[:60].mean(axis=(0, 1))  # the dark header band (#17212b)
    assert (header < 60).all(), header
    page_background, white = np.array([0xEE, 0xF1, 0xF4]), np.array([255, 255, 255])
    plain = (np.abs(pixels - page_background).sum(axis=2) < 12) | (np.abs(pixels - white).sum(axis=2) < 12)
    assert plain.mean() < 0.85, plain.mean()  # cards, tables and plots cover a good share of the page
    below_header = pixels[200:].reshape(-1, 3)
    assert (np.abs(below_header - white).sum(axis=1) < 12).mean() > 0.2  # white section panels were drawn


def test_query_is_the_middle_of_the_first_preferred_event_seen_and_heard(tmp_path):
    rows = [("similar", t, "car", True, True) for t in range(5)]
    rows += [("similar", t, "emergency_vehicle", True, t >= 14) for t in range(10, 21)]  # siren heard before it is seen
    rows += [("similar", t, "emergency_vehicle", True, True) for t in range(40, 45)]
    rows += [("train", t, "bus", True, True) for t in range(5)]
    path = tmp_path / "labels.parquet"
    pd.DataFrame(rows, columns=["stream_id", "t", "label", "audible", "visible"]).to_parquet(path)
    embedded = {(s, t) for s in ("similar", "train", "challenging") for t in range(60)}
    assert choose_query(path, embedded) == ("similar", 17, "emergency_vehicle")
    assert choose_query(path, embedded - {("similar", t) for t in range(10, 50)}) == ("similar", 2, "car")
    assert choose_query(path, embedded, "challenging") == ("challenging", 30, "background")


@pytest.mark.parametrize("argv", [["--views", "train"], ["--views", "similar,challenging"], ["--minutes", "0"],
                                  ["--epochs", "0"], ["--batch-size", "3"], ["--start-time", "yesterday"]])
def test_bad_arguments_exit_2_before_anything_runs(argv, tmp_path, capsys):
    assert demo_cli.main(["--output", str(tmp_path / "out"), *argv]) == 2
    assert "demo: error: " in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# What a user's console shows: our lines only. Ray's own messages and Python warnings look like these.
NOT_OURS = re.compile(r"warn|INFO|ERROR|\(raylet\)|pid=|TrainingReport|Checkpoint successfully|streaming_executor|"
                      r"core_worker|Traceback|deprecat", re.IGNORECASE)
# The one Ray message left: Ray Data 2.60 logs it from the driver's core worker for every actor pool
# (it hands its map actors an actor handle; github ray-project/ray#57733, open). Not a fault of ours.
RAY_DATA_ACTOR_BUG = re.compile(r"core_worker\.cc:\d+: Actor with class name: 'MapWorker\(.*has constructor arguments in "
                                r"the object store and max_restarts > 0")
# A warning in a worker of the job's Ray, as its log files record it (workers' output stays there).
LOGGED_WARNING = re.compile(r"\w*Warning: |ArrowConversionError|falling back to serialize")


@pytest.mark.slow
def test_the_console_is_short_and_holds_no_warning_or_ray_message(user_run, config):
    """``jobs/demo.py`` at a small size, as a user runs it: fewer than 40 console lines, none a warning
    or a Ray internal message, the full summaries in summary.txt; no worker of its Ray logged a
    Python warning or a pickled column (their log files under RAY_TMPDIR); and it listens on
    127.0.0.1 only."""
    out, seen, done = Path(config.output), user_run.listened, user_run.done
    stdout, stderr = done.stdout.decode(), done.stderr.decode()  # bytes: text mode reads \r as \n
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in seen}, sorted(seen)
    assert not [s for s in seen if not is_loopback(s[1])], f"listening beyond 127.0.0.1: {sorted(seen)}"
    # Lines as a terminal shows them: a progress bar redraws itself in place with \r, so however
    # often it redrew, it is one line. Every redraw is still checked for foreign messages.
    console = (stdout + stderr).split("\n")
    drawn = [part for line in console for part in line.split("\r")]
    assert done.returncode == 0, "\n".join(drawn[-60:])
    assert len(console) < 40, "\n".join(drawn)
    assert not [part for part in drawn if NOT_OURS.search(RAY_DATA_ACTOR_BUG.sub("", part))], "\n".join(drawn)
    assert stdout.rstrip("\n").split("\n")[-1] == f"report: {(out / 'report' / 'index.html').resolve()}"
    assert any(line.startswith("[pretrain] epoch 2/2 done") for line in console)
    assert all(text in user_run.summaries
               for text in ("ingest summary", "embed summary", "anomaly:", "search:", "localize:"))
    assert user_run.worker_logs >= 4
    assert not user_run.warned, "\n".join(user_run.warned[:20])
