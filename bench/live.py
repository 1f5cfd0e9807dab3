"""Live cameras on this machine: how far behind the source the clips and alerts are, what a camera costs,
and how many real-time cameras one machine follows (issue 17).

    python bench/live.py                                      # the default table (about 30 min)
    python bench/live.py --minutes 2 --cases tiny:320x180:1   # a quick look

Every case publishes the generator's footage (with anomalies) in real time with Debian's ffmpeg
(``-re``, stream copy, 2-s HLS segments, a 3-segment sliding window, program date-time) into a
folder served over HTTP on 127.0.0.1, once per camera, and runs the real job (``run_watch``: one
Ray actor per camera, ``--cpus-per-watcher`` 2/cameras) with a random-init checkpoint of the
preset (the cost of scoring does not depend on training), reference embeddings of 2 minutes of
normal footage and the fusion score, for ``--minutes`` of stream. The watchers start first; the
cameras start publishing once their actors are up, so every second of the stream is offered
while a watcher follows it (what is measured is following, not start-up).

Columns, per case (a case is preset : frame size : cameras):
- clip lag p50 / p95: from the end of a second at the source (the playlist's program date-time)
  to its row being committed, over every second of every camera (the seconds of each watcher's
  first commit, which waited for the start-up, left out); a segment's seconds can only be cut
  once the segment is published, so a segment's first second waits about one segment (2 s);
- alert lag p50 / p95: from the end of an event's first anomalous second to its alert line (the
  events of the start-up commit left out);
- CPU per stream-second: CPU time of a watcher process (decode, JPEG, model, scoring) per second
  committed, the mean over cameras, and its share of one core;
- behind at the end: the largest lag of any camera's last commit. A case keeps up when that stays
  within a segment + 3 s and every camera committed all but the last few seconds;
- watcher RSS: the largest resident memory of a watcher process once it had committed its first
  minute, and at the end (flat memory: the two agree).
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402

from pipelines.live.config import WatchConfig  # noqa: E402
from pipelines.live.job import run_watch  # noqa: E402
from pipelines.runtime.cluster import start_local_ray  # noqa: E402
from pipelines.synthetic import SyntheticConfig, generate  # noqa: E402
from pipelines.train.checkpoint import write_random_init  # noqa: E402

SEGMENT_SECONDS = 2
STARTUP_SECONDS = 15.0  # the watchers' actors load their model before the cameras start publishing
DEFAULT_CASES = "tiny:320x180:1,tiny:320x180:2,tiny:320x180:4,tiny:320x180:6,small:320x180:1,small:320x180:2,tiny:1280x720:1"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def checkpoint_of(preset: str, work: Path) -> Path:
    """A random-init checkpoint of ``preset`` (what the watcher loads)."""
    path = work / f"run-{preset}" / "checkpoint_step000000000"
    return path if path.exists() else write_random_init(path.parent, preset)


def footage(size: str, minutes: float, work: Path) -> tuple[Path, Path]:
    """(the live footage with anomalies, 2 min of normal footage as 2-s TS segments) at ``size``."""
    w, h = (int(x) for x in size.split("x"))
    live = work / f"live-{size}-{minutes:g}"
    if not (live / "train.mp4").exists():
        generate(SyntheticConfig(out=live, minutes=minutes, seed=2, size=(w, h), views=("train",), rate_scale=5.0))
    normal = work / f"normal-{size}"
    segments = normal / "segments"
    if not segments.exists():
        generate(SyntheticConfig(out=normal, minutes=2.0, seed=10, size=(w, h), views=("train",), rate_scale=5.0,
                                 anomalies=False))
        segments.mkdir()
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(normal / "train.mp4"), "-c", "copy", "-f", "segment",
                        "-segment_time", str(SEGMENT_SECONDS), "-segment_format", "mpegts",
                        str(segments / "seg%05d.ts")], check=True)
    return live / "train.mp4", segments


def reference_of(preset: str, size: str, segments: Path, checkpoint: Path, work: Path) -> Path:
    """Reference embeddings of the normal footage, written by the watcher itself."""
    clips = work / f"ref-{preset}-{size}"
    embeddings = Path(f"{clips}-embeddings")
    if not embeddings.exists():
        summary = run_watch(WatchConfig(sources=(str(segments),), streams=("normal",), clips=str(clips),
                                        checkpoint=str(checkpoint), settle_seconds=1.0, duration=60.0),
                            show_progress=False)
        assert summary.streams[0]["committed_until"] >= 110, summary.format()
    return embeddings


def percentiles(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    return float(np.percentile(values, 50)), float(np.percentile(values, 95))


def run_case(preset: str, size: str, cameras: int, minutes: float, work: Path) -> dict:
    video, segments = footage(size, minutes, work)
    checkpoint = checkpoint_of(preset, work)
    reference = reference_of(preset, size, segments, checkpoint, work)
    case = work / f"case-{preset}-{size}-{cameras}-{time.time_ns()}"
    www = case / "www"
    www.mkdir(parents=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    alerts = case / "alerts.jsonl"
    config = WatchConfig(sources=tuple(f"{base}/cam{i}/live.m3u8" for i in range(cameras)), clips=str(case / "clips"),
                         checkpoint=str(checkpoint), reference=str(reference), alerts=str(alerts), score="fusion",
                         knn_exclusion=10, poll_seconds=0.5, cpus_per_watcher=min(1.0, 2.0 / cameras),
                         backoff_seconds=0.5, backoff_max=0.5, duration=minutes * 60 + 60, stall_seconds=60)
    result: list = []
    job = threading.Thread(target=lambda: result.append(run_watch(config, show_progress=False)), daemon=True)
    job.start()  # the watchers wait for their playlists (retrying every 0.5 s) while their actors start
    time.sleep(STARTUP_SECONDS)
    publishers = []
    for i in range(cameras):
        folder = www / f"cam{i}"
        folder.mkdir()
        publishers.append(subprocess.Popen(
            ["ffmpeg", "-v", "error", "-re", "-i", str(video), "-c", "copy", "-f", "hls", "-hls_time",
             str(SEGMENT_SECONDS), "-hls_list_size", "3", "-hls_flags", "delete_segments+program_date_time",
             "-hls_segment_filename", str(folder / "seg%05d.ts"), str(folder / "live.m3u8")]))
    try:
        job.join(minutes * 60 + 120)
    finally:
        for p in publishers:
            p.kill()
        server.shutdown()
    summary = result[0]
    clip_lags = [capture for s in summary.streams for t, _, capture in s["lags"]
                 if capture is not None and t >= (s["startup_until"] or 0)]
    last = [s["lags"][-1][2] for s in summary.streams if s["lags"] and s["lags"][-1][2] is not None]
    alert_lags = []
    startup = {s["stream_id"]: s["startup_until"] or 0 for s in summary.streams}
    for line in (json.loads(x) for x in alerts.read_text().splitlines()) if alerts.exists() else []:
        if line["kind"] == "start" and line["start_time"] and line["start"] >= startup[line["stream_id"]]:
            first_end = dt.datetime.fromisoformat(line["start_time"]).timestamp() + 1.0
            alert_lags.append(dt.datetime.fromisoformat(line["emitted_at"]).timestamp() - first_end)
    committed = [s["seconds_committed"] for s in summary.streams]
    cpu = [s["cpu_seconds"] / max(1, s["seconds_committed"]) for s in summary.streams]
    rss = ([s["rss_mb_after_minute"] for s in summary.streams if s["rss_mb_after_minute"]],
           [s["rss_mb"] for s in summary.streams])
    shutil.rmtree(case, ignore_errors=True)
    return {"case": f"{preset} {size} x{cameras}", "clip": percentiles(clip_lags), "alert": percentiles(alert_lags),
            "alerts": len(alert_lags), "cpu": float(np.mean(cpu)), "behind": max(last) if last else float("nan"),
            "rss": (max(rss[0]) if rss[0] else float("nan"), max(rss[1])), "committed": min(committed), "expected": int(minutes * 60), "gaps": sum(s["gap_seconds"] for s in summary.streams)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=3.0, help="stream minutes per case (the first case: --first-minutes)")
    parser.add_argument("--first-minutes", type=float, default=10.0, help="the first case runs this long (p50/p95 over it)")
    parser.add_argument("--cases", default=DEFAULT_CASES, help="comma-separated preset:WxH:cameras")
    parser.add_argument("--work", type=Path, default=None, help="where footage and checkpoints are kept (default: a temp dir)")
    parser.add_argument("--write-results", action="store_true", help="also write the table into bench/RESULTS.md")
    args = parser.parse_args(argv)
    if shutil.which("ffmpeg") is None:
        raise SystemExit("bench/live.py publishes with Debian's ffmpeg: make system-deps")
    work = args.work or Path(tempfile.mkdtemp(prefix="epg-live-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    start_local_ray(num_cpus=2)
    report = Printed()
    report("| case | stream min | committed s (min over cameras) | gaps s | clip lag p50 / p95 s | alert lag p50 / p95 s "
           "(alerts) | CPU s per stream-s | behind at the end s | watcher RSS MB after 1 min / at the end | keeps up |")
    report("|---|---:|---:|---:|---|---|---:|---:|---|---|")
    for i, spec in enumerate(c for c in args.cases.split(",") if c):
        preset, size, cameras = spec.split(":")
        minutes = args.first_minutes if i == 0 else args.minutes
        r = run_case(preset, size, int(cameras), minutes, work)
        keeps = r["behind"] <= SEGMENT_SECONDS + 3 and r["committed"] >= r["expected"] - 10
        report(f"| {r['case']} | {minutes:g} | {r['committed']} of {r['expected']} | {r['gaps']} | {r['clip'][0]:.1f} / "
               f"{r['clip'][1]:.1f} | {r['alert'][0]:.1f} / {r['alert'][1]:.1f} ({r['alerts']}) | {r['cpu']:.3f} | "
               f"{r['behind']:.1f} | {r['rss'][0]:.0f} / {r['rss'][1]:.0f} | {'yes' if keeps else 'no'} |", flush=True)
    report(f"\nSegments {SEGMENT_SECONDS} s; goal: p95 alert lag <= {SEGMENT_SECONDS + 3} s, >= 4 real-time 320x180 "
           "cameras with the tiny preset.")
    if args.write_results:
        update_results("Live cameras", report.text, command_line(__file__, sys.argv[1:]))


if __name__ == "__main__":
    main()
