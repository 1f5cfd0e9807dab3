"""The live watcher on real sources started by the tests: ffmpeg publishing HLS in real time into a folder
served over HTTP on 127.0.0.1, ffmpeg's segment muxer writing rolling files, a local webhook server, and the
job through a real local Ray with its Prometheus endpoint. Live clips are compared with the clips real ingest
cuts from the same footage as a file."""

from __future__ import annotations

import functools
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import psutil
import pytest

from pipelines.ingest.clips_dataset import complete_stream_files, read_stream
from pipelines.ingest.clip_table import clips_schema
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.job import run_ingest
from pipelines.live.alerts import AlertTracker
from pipelines.live.appender import LiveAppender
from pipelines.live.config import WatchConfig, WatchError, default_stream_id, redacted, scrubbed
from pipelines.live.sources import RtspSource, Segment
from pipelines.live.timeline import StreamTimeline
from pipelines.live.watcher import StreamWatcher
from pipelines.media.info import inspect_video
from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import STATUS_LIVE, StreamManifest
from pipelines.score.embeddings import read_embeddings
from pipelines.synthetic import SyntheticConfig, generate
from tests.conftest import REPO
from tests.models import tiny_checkpoint
from tests.pipelines.runtime.test_cluster import is_loopback, listening

sys.path.insert(0, str(REPO / "jobs"))
import watch as watch_cli  # noqa: E402

CROP = 32  # ModelConfig.tiny's
SECONDS = 40
ANOMALIES = ("glass_break", "scream", "speeding_car")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, with python3-gi: runs GStreamer's RTSP server (make system-deps)


# -- footage and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """40 s of the generator's street with anomalies (mp4 + labels), 90 s of normal footage, 2-s TS segments."""
    root = tmp_path_factory.mktemp("live")
    live = generate(SyntheticConfig(out=root / "live", minutes=SECONDS / 60, seed=2, size=(160, 90), views=("train",),
                                    rate_scale=20.0))
    reference = generate(SyntheticConfig(out=root / "ref", minutes=1.5, seed=10, size=(160, 90), views=("train",),
                                         rate_scale=20.0, anomalies=False))
    return {"root": root, "video": live.videos["train"], "labels": live.labels, "reference": reference.videos["train"]}


def segments_of(video: Path, folder: Path, container: str = "mpegts", suffix: str = "ts") -> list[Path]:
    """The video as ffmpeg's segment muxer writes it (stream copy, 2-s pieces), like an NVR."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-c", "copy", "-f", "segment", "-segment_time", "2",
                    "-segment_format", container, str(folder / f"seg%05d.{suffix}")], check=True, timeout=60)
    return sorted(folder.iterdir())


@pytest.fixture(scope="module")
def ingested(footage, ray_local):
    """The same footage ingested as one file, the way jobs/ingest.py does."""
    out = footage["root"] / "ingested"
    summary = run_ingest([str(footage["video"])], str(out), IngestConfig(crop_size=CROP, window_seconds=20),
                         show_progress=False)
    assert summary.ok, summary.format()
    return read_stream(str(out), "train")


def assert_same_clips(live, ingested, seconds, audio_near: frozenset[int] = frozenset()) -> None:
    """Live rows == ingest's rows on these seconds: same frames (byte for byte) and flags; log-mels within the
    AAC decoder's noise substitution, whose random state depends on where decoding began (a few hundredths of
    a dB on average). The ``audio_near`` seconds border a gap: the AAC frames across the border are missing,
    so only most of their log-mel bins must agree."""
    rows = ingested.filter(np.isin(ingested.column("t").to_numpy(), list(seconds)))
    assert live.column("t").to_pylist() == rows.column("t").to_pylist() == list(seconds)
    assert live.column("frames").to_pylist() == rows.column("frames").to_pylist()
    a = np.asarray(live.column("logmel").to_pylist(), np.float32)
    b = np.asarray(rows.column("logmel").to_pylist(), np.float32)
    exact = ~np.isin(list(seconds), list(audio_near))
    assert np.abs(a - b)[exact].mean(axis=1).max() < 0.25, np.abs(a - b).mean(axis=1)
    if not exact.all():
        assert (np.abs(a - b)[~exact] < 1.0).mean() > 0.8, np.abs(a - b).mean(axis=1)
    for flag in ("has_audio", "has_video"):
        assert live.column(flag).to_pylist() == rows.column(flag).to_pylist()


def drain(config: WatchConfig, index: int = 0, steps: int | None = None) -> StreamWatcher:
    """Step a watcher in this process until its source has nothing new (or ``steps`` steps), then close it."""
    watcher = StreamWatcher(config, index)
    for _ in range(steps or 1000):
        if watcher.step() == 0 and steps is None:
            time.sleep(0.05)
            if watcher.step() == 0:
                break
    if steps is None:
        watcher.ended = True  # a recording that stopped: its last file is complete
        watcher.step()
    watcher.close()
    return watcher


def manifest_of(root: Path, stream_id: str) -> StreamManifest:
    return StreamManifest.load(OutputStore(str(root)), stream_id)


def dir_config(source: Path, clips: Path, **options) -> WatchConfig:
    return WatchConfig(sources=(str(source),), clips=str(clips), crop_size=CROP, settle_seconds=0.01, **options)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (a CDN for ffmpeg's HLS output)."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def publish_hls(video: Path, folder: Path, seconds: float, endlist: bool = True) -> subprocess.Popen:
    """ffmpeg publishing ``video`` in real time as a live HLS playlist: a 3-segment sliding window, old
    segments deleted, program date-time tags."""
    folder.mkdir(parents=True, exist_ok=True)
    flags = "delete_segments+program_date_time" + ("" if endlist else "+omit_endlist")
    return subprocess.Popen(
        ["ffmpeg", "-v", "error", "-re", "-i", str(video), "-t", str(seconds), "-c", "copy", "-f", "hls",
         "-hls_time", "2", "-hls_list_size", "3", "-hls_flags", flags,
         "-hls_segment_filename", str(folder / "seg%05d.ts"), str(folder / "live.m3u8")])


def follow(watcher: StreamWatcher) -> threading.Thread:
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    return thread


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


# -- rolling segment files -----------------------------------------------------------------


def test_rolling_segments_give_the_clips_of_ingest_and_a_restart_resumes(footage, ingested, tmp_path):
    """An NVR folder filled in two halves, a watcher stopped in between: every second once, as ingest cut it."""
    pieces = segments_of(footage["video"], tmp_path / "all")
    watched, clips = tmp_path / "cam7", tmp_path / "clips"
    watched.mkdir()
    half = len(pieces) // 2
    for piece in pieces[:half]:
        shutil.copy(piece, watched)
    first = drain(dir_config(watched, clips), steps=3)
    stopped_at = manifest_of(clips, "cam7").committed_until
    assert 0 < stopped_at < SECONDS
    assert read_stream(str(clips), "cam7").column("t").to_pylist() == list(range(stopped_at))  # readers: committed only
    for piece in pieces[half:]:
        shutil.copy(piece, watched)
    second = drain(dir_config(watched, clips))
    assert second.stats.seconds_committed == SECONDS - stopped_at and first.stats.seconds_committed == stopped_at

    manifest = manifest_of(clips, "cam7")
    assert manifest.status == STATUS_LIVE and manifest.committed_until == SECONDS
    assert manifest.gaps == [] and manifest.errors == [] and manifest.rows == SECONDS
    assert_same_clips(read_stream(str(clips), "cam7"), ingested, range(SECONDS))
    assert len(complete_stream_files(str(clips))) == len(manifest.files) >= 1
    assert not list((clips / "stream_id=cam7").glob(".tmp-*"))


def test_a_corrupt_segment_fails_that_segment_only(footage, ingested, tmp_path):
    pieces = segments_of(footage["video"], tmp_path / "cam8")
    broken = pieces[5]
    written = broken.stat()
    broken.write_bytes(b"\x00garbage" * 5000)  # damaged as it was written: in its place in the write order
    os.utime(broken, ns=(written.st_atime_ns, written.st_mtime_ns))
    clips = tmp_path / "clips"
    drain(dir_config(tmp_path / "cam8", clips))
    manifest = manifest_of(clips, "cam8")
    assert manifest.committed_until == SECONDS
    assert len(manifest.errors) == 1 and broken.name in manifest.errors[0], manifest.errors
    assert len(manifest.gaps) == 1 and broken.name in manifest.gaps[0]["reason"]
    gap = range(manifest.gaps[0]["start"], manifest.gaps[0]["end"])
    assert 2 <= len(gap) <= 3 and 9 <= gap[0] <= 11, manifest.gaps  # the segment's two seconds (and the one it splits)
    kept = [t for t in range(SECONDS) if t not in gap]
    assert_same_clips(read_stream(str(clips), "cam8"), ingested, kept, frozenset({gap[0] - 1, gap[-1] + 1}))


def test_two_corrupt_segments_are_each_named_in_their_own_gap(footage, tmp_path):
    pieces = segments_of(footage["video"], tmp_path / "cam3")
    for broken in (pieces[5], pieces[9]):
        written = broken.stat()
        broken.write_bytes(b"\x00garbage" * 5000)
        os.utime(broken, ns=(written.st_atime_ns, written.st_mtime_ns))
    clips = tmp_path / "clips"
    drain(dir_config(tmp_path / "cam3", clips))
    gaps = manifest_of(clips, "cam3").gaps
    assert len(gaps) == 2 and gaps[0]["end"] < gaps[1]["start"], gaps
    assert pieces[5].name in gaps[0]["reason"] and pieces[9].name in gaps[1]["reason"], gaps


def feed(watcher: StreamWatcher, pieces: list[Path], folder: Path, steps: int = 3) -> None:
    """Copy the files into the watched folder one at a time, as an NVR writes them, the watcher looking after each."""
    for piece in pieces:
        shutil.copy(piece, folder)
        for _ in range(steps):
            time.sleep(0.02)
            watcher.step()


def test_a_corrupt_newest_file_is_read_once_while_older_ones_are_held(footage, tmp_path):
    pieces = segments_of(footage["video"], tmp_path / "all")
    pieces[5].write_bytes(b"\x00garbage" * 5000)
    watched = tmp_path / "cam4"
    watched.mkdir()
    watcher = StreamWatcher(dir_config(watched, tmp_path / "clips"), 0)
    feed(watcher, pieces[:6], watched, steps=5)  # the corrupt file is the newest for 5 looks
    assert watcher.chain and watcher.stats.segment_failures == 1 and watcher.stats.segments == 6
    feed(watcher, pieces[6:], watched)
    watcher.ended = True
    watcher.step()
    watcher.close()
    manifest = manifest_of(tmp_path / "clips", "cam4")
    assert watcher.stats.segment_failures == 1 and len(manifest.errors) == 1 and len(manifest.gaps) == 1
    assert manifest.committed_until == SECONDS


def test_a_file_that_grows_after_it_was_read_is_not_read_again(footage, ingested, tmp_path):
    """The NVR pauses longer than settle_seconds in the middle of a file, then writes the rest of it: the
    watcher has cut what it read; the rest is said in the manifest's errors, never cut again as new seconds."""
    pieces = segments_of(footage["video"], tmp_path / "all")
    watched, clips = tmp_path / "cam5", tmp_path / "clips"
    watched.mkdir()
    watcher = StreamWatcher(dir_config(watched, clips), 0)
    feed(watcher, pieces[:5], watched)
    data = pieces[5].read_bytes()
    head = len(data) // 2 // 188 * 188  # whole TS packets
    (watched / pieces[5].name).write_bytes(data[:head])
    for _ in range(3):
        time.sleep(0.02)
        watcher.step()
    assert watcher._newest().endswith(pieces[5].name)
    with open(watched / pieces[5].name, "ab") as out:
        out.write(data[head:])
    feed(watcher, pieces[6:], watched)
    watcher.ended = True
    watcher.step()
    watcher.close()
    manifest = manifest_of(clips, "cam5")
    assert len(manifest.errors) == 1 and pieces[5].name in manifest.errors[0] and "grew" in manifest.errors[0]
    assert len(manifest.live["epochs"]) == 1 and len(manifest.gaps) == 1, manifest.gaps
    gap = range(manifest.gaps[0]["start"], manifest.gaps[0]["end"])
    assert 1 <= len(gap) <= 2 and 10 <= gap[0] <= 11, gap  # the half never read
    kept = [t for t in range(SECONDS) if t not in gap]
    assert_same_clips(read_stream(str(clips), "cam5"), ingested, kept, frozenset({gap[0] - 1, gap[-1] + 1}))


class Killed(Exception):
    """Stands for SIGKILL at a chosen point (what was committed stays, nothing after it happens)."""


def test_a_watcher_killed_right_after_a_new_epoch_resumes_without_duplicates(footage, tmp_path):
    """A recorder restarted half-way (its clock starts again): a watcher killed just after committing the
    old clock's last seconds resumes to exactly the rows of a watcher that was never stopped."""
    pieces = segments_of(footage["video"], tmp_path / "all")
    half = len(pieces) // 2
    subprocess.run(["ffmpeg", "-v", "error", "-i", "concat:" + "|".join(map(str, pieces[half:])), "-c", "copy",
                    str(tmp_path / "second-half.ts")], check=True, timeout=60)  # its clock starts at 0 again
    again = segments_of(tmp_path / "second-half.ts", tmp_path / "again")
    source = tmp_path / "cam6"
    source.mkdir()
    for piece in pieces[:half] + again:
        shutil.copy(piece, source / f"{len(list(source.iterdir())):03d}-{piece.name}")
    whole = drain(dir_config(source, tmp_path / "whole"))
    assert len(manifest_of(tmp_path / "whole", "cam6").live["epochs"]) == 2

    clips = tmp_path / "clips"
    killed = StreamWatcher(dir_config(source, clips), 0)

    def kill_after_closing_cut() -> None:  # the old clock's seconds are committed; its files not yet let go
        raise Killed

    killed._release_all = kill_after_closing_cut
    with pytest.raises(Killed):
        for _ in range(10):
            killed.step()
    assert 0 < manifest_of(clips, "cam6").committed_until < whole.stats.committed_until
    drain(dir_config(source, clips))
    resumed, expected = read_stream(str(clips), "cam6"), read_stream(str(tmp_path / "whole"), "cam6")
    assert_same_clips(resumed, expected, expected.column("t").to_pylist())


# -- HLS over HTTP, in real time -----------------------------------------------------------


def test_live_hls_followed_in_real_time_across_a_watcher_restart(footage, ingested, http_folder):
    """ffmpeg publishes 12 s in real time; the watcher is stopped after a few seconds and started again."""
    folder, base = http_folder
    clips = folder.parent / "clips"
    config = WatchConfig(sources=(f"{base}/cam1/live.m3u8",), clips=str(clips), crop_size=CROP, poll_seconds=0.3,
                         duration=60)
    began = time.time()
    publisher = publish_hls(footage["video"], folder / "cam1", 12)
    try:
        first = StreamWatcher(config, 0)
        assert first.stream_id == "cam1"
        thread = follow(first)
        wait_for(lambda: first.stats.committed_until >= 4, 30, "4 committed seconds")
        first.stop()
        thread.join(20)
        second = StreamWatcher(config, 0)
        report = second.run()
        assert publisher.wait(30) == 0
    finally:
        publisher.kill()
    assert report["state"] == "ended"
    manifest = manifest_of(clips, "cam1")
    assert manifest.committed_until == 12 and manifest.gaps == [] and manifest.errors == []
    assert_same_clips(read_stream(str(clips), "cam1"), ingested, range(12))
    # Wall clock from the playlist's program date-time: t = 0 was published when ffmpeg started.
    assert abs(manifest.live["epochs"][0]["wall_origin"] - began) < 3.0
    stats = second.report()
    lags = [capture for t, _, capture in stats["lags"] if t >= stats["startup_until"]]
    assert lags and max(lags) < 2 + 3  # each second's row within a segment and 3 s of its end at the source


def test_a_source_outage_and_restart_is_a_gap_never_invented_frames(footage, ingested, http_folder):
    """The publisher stops for a few seconds and starts again from the beginning (its clock and sequence
    numbers restart): the outage is a gap of about its length, the new footage is cut exactly."""
    folder, base = http_folder
    clips = folder.parent / "clips"
    config = WatchConfig(sources=(f"{base}/cam2/live.m3u8",), clips=str(clips), crop_size=CROP, poll_seconds=0.3,
                         duration=60, stall_seconds=60)
    watcher = StreamWatcher(config, 0)
    thread = follow(watcher)
    publisher = publish_hls(footage["video"], folder / "cam2", 6, endlist=False)
    try:
        assert publisher.wait(30) == 0
        time.sleep(4)
        publisher = publish_hls(footage["video"], folder / "cam2", 6)
        assert publisher.wait(30) == 0
        thread.join(30)
    finally:
        publisher.kill()
        watcher.stop()
    assert watcher.stats.state == "ended", watcher.stats
    manifest = manifest_of(clips, "cam2")
    assert len(manifest.live["epochs"]) == 2 and len(manifest.gaps) == 1, manifest.gaps
    gap = manifest.gaps[0]
    assert gap["start"] == 6 and 3 <= gap["end"] - gap["start"] <= 9, gap
    table = read_stream(str(clips), "cam2")
    t = table.column("t").to_pylist()
    assert t == list(range(6)) + list(range(gap["end"], gap["end"] + 6))
    assert_same_clips(table.slice(0, 6), ingested, range(6))
    again = table.slice(6).to_pydict()
    assert again["frames"] == ingested.slice(0, 6).column("frames").to_pylist()


def test_the_http_server_going_away_is_retried_and_what_expired_meanwhile_is_a_gap(footage, ingested, tmp_path):
    """The HTTP server stops while ffmpeg keeps publishing (a 3-segment window: 6 s); 10 s later it is back on the
    same port. The watcher retries without stopping, records the expired seconds as a gap, and cuts the rest."""
    folder = tmp_path / "www"
    folder.mkdir()
    port = free_port()

    def serve() -> ThreadingHTTPServer:
        server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(_Quiet, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    server = serve()
    clips = tmp_path / "clips"
    watcher = StreamWatcher(WatchConfig(sources=(f"http://127.0.0.1:{port}/cam9/live.m3u8",), clips=str(clips),
                                        crop_size=CROP, poll_seconds=0.3, backoff_seconds=0.5, backoff_max=1.0,
                                        duration=60), 0)
    publisher = publish_hls(footage["video"], folder / "cam9", 24)
    thread = follow(watcher)
    try:
        wait_for(lambda: watcher.stats.committed_until >= 4, 30, "4 committed seconds")
        server.shutdown()
        server.server_close()
        time.sleep(10)
        assert thread.is_alive() and watcher.stats.state == "retrying" and watcher.stats.reconnects >= 3
        server = serve()
        assert publisher.wait(30) == 0
        thread.join(30)
    finally:
        publisher.kill()
        watcher.stop()
        server.shutdown()
        server.server_close()
    assert watcher.stats.state == "ended", watcher.stats
    manifest = manifest_of(clips, "cam9")
    assert manifest.committed_until == 24 and len(manifest.gaps) == 1, manifest.gaps
    gap = range(manifest.gaps[0]["start"], manifest.gaps[0]["end"])
    assert 2 <= len(gap) <= 8, gap  # 10 s away, 6 s of it still in the playlist when the server came back
    kept = [t for t in range(24) if t not in gap]
    assert_same_clips(read_stream(str(clips), "cam9"), ingested, kept, frozenset({gap[0] - 1, gap[-1] + 1}))


# -- RTSP from a real RTSP server ------------------------------------------------------------


@pytest.fixture
def rtsp_stream(footage, tmp_path):
    """GStreamer's RTSP server on 127.0.0.1 serving 14 s of the footage re-encoded without B-frames (as IP
    cameras stream: over RTP, B-frames carry no decode time, so they cannot be remuxed); the file too."""
    video = tmp_path / "camera.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(footage["video"]), "-t", "14", "-c:v", "libx264", "-preset",
                    "ultrafast", "-bf", "0", "-g", "10", "-c:a", "copy", str(video)], check=True, timeout=60)
    port = free_port()
    server = subprocess.Popen([SYSTEM_PYTHON, str(Path(__file__).with_name("rtsp_server.py")), str(video), str(port),
                               "/cam6"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        yield f"rtsp://127.0.0.1:{port}/cam6", video
    finally:
        server.kill()
        server.wait()


def test_rtsp_stream_remuxed_by_ffmpeg_gives_the_clips_of_the_file(rtsp_stream, ray_local, tmp_path):
    url, video = rtsp_stream
    url = url.replace("rtsp://", "rtsp://viewer:s3cret@")  # a camera URL with a password (not asked for here)
    summary = run_ingest([str(video)], str(tmp_path / "ingested"), IngestConfig(crop_size=CROP), show_progress=False)
    assert summary.ok, summary.format()
    ingested = read_stream(str(tmp_path / "ingested"), "camera")
    clips = tmp_path / "clips"
    watcher = StreamWatcher(WatchConfig(sources=(url,), clips=str(clips), crop_size=CROP, poll_seconds=0.3,
                                        settle_seconds=1.0, duration=60), 0)
    assert watcher.stream_id == "127.0.0.1_cam6"
    thread = follow(watcher)
    try:
        wait_for(lambda: watcher.stats.committed_until >= 8, 40, "8 committed seconds")
    finally:
        watcher.stop()
        thread.join(20)
    live = read_stream(str(clips), watcher.stream_id)
    manifest = (clips / f"stream_id={watcher.stream_id}" / "manifest.json").read_text()
    assert "rtsp://viewer:***@127.0.0.1" in manifest and "s3cret" not in manifest + json.dumps(watcher.report())
    t = live.column("t").to_pylist()
    assert t == list(range(t[0], t[0] + len(t))) and len(t) >= 8
    # t = 0 is the first frame the watcher could decode (the camera's stream joins at a keyframe): the live
    # seconds are the file's from some whole second on, frame for frame.
    frames = ingested.column("frames").to_pylist()
    offset = next(k for k in range(4) if frames[t[0] + k] == live.column("frames")[0].as_py())
    assert_same_clips(live, ingested.slice(t[0] + offset, len(t)).set_column(
        1, "t", pa.array(t, pa.int32())), t, frozenset({t[0], t[-1]}))


# -- embeddings and alerts -----------------------------------------------------------------


def test_each_ffmpeg_run_of_an_rtsp_source_starts_a_new_clock(footage, tmp_path):
    """A reconnect's first segment is a discontinuity (the camera's clock may have restarted while away), so it
    opens an epoch by the wall clock instead of being taken for a jump forward on the old one."""
    pieces = segments_of(footage["video"], tmp_path / "all")
    spool = tmp_path / "spool"
    for run, names in (("run-000000000000001", pieces[:2]), ("run-000000000000002", pieces[2:4])):
        (spool / run).mkdir(parents=True)
        for piece in names:
            shutil.copy(piece, spool / run)

    def polled(after: str) -> list[Segment]:  # a watcher started with this resume key (two looks: the last settles)
        source = RtspSource("rtsp://127.0.0.1:1/none", str(spool), 2.0, settle_seconds=0.0)
        first = source.poll(after)
        return first + source.poll(first[-1].key if first else after)

    found = polled("")
    assert [(s.name.split("/")[0][-1], s.discontinuity) for s in found] == [
        ("1", False), ("1", False), ("2", True), ("2", False)]
    assert [s.discontinuity for s in polled(found[0].key)] == [False, True, False]  # had read the old run's first
    assert [s.discontinuity for s in polled(found[1].key)] == [True, False]


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_alerts_start_within_two_seconds_of_a_labelled_anomaly(footage, tmp_path):
    """Reference embeddings of normal footage (written by the watcher itself), then a stream with glass breaks:
    an alert line starts within 2 s of each audible anomaly onset, ends later, and reaches the webhook."""
    checkpoint = tiny_checkpoint(tmp_path / "run")
    segments_of(footage["reference"], tmp_path / "normal")
    segments_of(footage["video"], tmp_path / "cam3")
    drain(dir_config(tmp_path / "normal", tmp_path / "ref-clips"))  # clips only, then the checkpoint is added:
    drain(dir_config(tmp_path / "normal", tmp_path / "ref-clips", checkpoint=str(checkpoint)))  # embeds them
    reference = read_embeddings(str(tmp_path / "ref-clips-embeddings"))
    assert reference.streams == ["normal"] and len(reference) == 90

    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    alerts = tmp_path / "alerts.jsonl"
    try:
        watcher = drain(dir_config(tmp_path / "cam3", tmp_path / "clips", checkpoint=str(checkpoint),
                                   reference=str(tmp_path / "ref-clips-embeddings"),  # the default score
                                   knn_exclusion=10, alerts=str(alerts),
                                   webhook=f"http://127.0.0.1:{hook.server_port}/alert"))
    finally:
        hook.shutdown()
        hook.server_close()
    lines = [json.loads(line) for line in alerts.read_text().splitlines()]
    starts = [line for line in lines if line["kind"] == "start"]
    ends = {line["start"]: line for line in lines if line["kind"] == "end"}
    labels = pq.read_table(footage["labels"]).to_pandas()
    audible = labels[labels.label.isin(ANOMALIES) & labels.audible].t.to_numpy()
    onsets = [int(t) for t in audible if t - 1 not in audible]
    assert onsets, "the footage has audible anomalies"
    for onset in onsets:
        assert any(abs(a["start"] - onset) <= 2 for a in starts), (onset, [a["start"] for a in starts])
    for a in starts:
        assert a["stream_id"] == "cam3" and a["score"] > a["threshold"] and a["start_time"]
        assert a["start"] in ends and ends[a["start"]]["end"] > a["start"]
    assert watcher.stats.alerts == len(starts) and _Hook.received == lines
    embeddings = read_embeddings(str(tmp_path / "clips-embeddings"))
    assert embeddings.t.tolist() == list(range(SECONDS))
    clips = read_stream(str(tmp_path / "clips"), "cam3", columns=["t", "logmel"])  # the spectrum: each clip's log-mel
    heard = {int(t): np.asarray(m, np.float32).reshape(128, -1).mean(axis=1)  # over time, as batch scoring stores it
             for t, m in zip(clips["t"].to_pylist(), clips["logmel"].to_numpy(zero_copy_only=False))}
    np.testing.assert_allclose(embeddings.spectrum, np.stack([heard[t] for t in embeddings.t.tolist()]), rtol=1e-5, atol=1e-4)


# -- the job through Ray, metrics, arguments -------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_watch_job_runs_an_actor_per_source_and_serves_metrics(footage, ray_local, tmp_path):
    segments_of(footage["video"], tmp_path / "cam4")
    segments_of(footage["reference"], tmp_path / "cam5")
    port = free_port()
    clips = tmp_path / "clips"
    codes = []
    args = ["--source", str(tmp_path / "cam4"), "--source", str(tmp_path / "cam5"), "--clips", str(clips),
            "--crop-size", str(CROP), "--settle-seconds", "1", "--duration", "15", "--metrics-port", str(port),
            "--quiet"]
    job = threading.Thread(target=lambda: codes.append(watch_cli.main(args)), daemon=True)
    job.start()

    def scraped() -> str:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
                return response.read().decode()
        except OSError:
            return ""

    wait_for(lambda: 'epg_live_committed_until_seconds{stream="cam5"} 89.0' in scraped(), 60, "cam5's metrics")
    text = scraped()
    # This process and its Ray (the watchers' actors) listen on 127.0.0.1 only: the metrics endpoint too.
    sockets = listening(psutil.Process())
    assert ("127.0.0.1", port) in {(a, p) for _, a, p in sockets} and any(n == "raylet" for n, _, _ in sockets)
    assert not [s for s in sockets if not is_loopback(s[1])], f"listening beyond 127.0.0.1: {sorted(sockets)}"
    assert 'epg_live_committed_until_seconds{stream="cam4"} 39.0' in text or \
        'epg_live_committed_until_seconds{stream="cam4"} 40.0' in text
    assert 'epg_live_gap_seconds{stream="cam4"} 0.0' in text and "epg_live_lag_seconds" in text
    job.join(90)
    assert codes == [0]
    for stream, seconds in (("cam4", SECONDS), ("cam5", 90)):
        assert read_stream(str(clips), stream).column("t").to_pylist()[: seconds - 1] == list(range(seconds - 1))


def test_watch_bad_arguments_exit_2_naming_them(tmp_path, capsys):
    assert watch_cli.main(["--source", "ftp://cam/x", "--clips", str(tmp_path)]) == 2
    assert "ftp://cam/x" in capsys.readouterr().err
    assert watch_cli.main(["--source", str(tmp_path), "--clips", str(tmp_path), "--alerts", "a.jsonl"]) == 2
    assert "--reference" in capsys.readouterr().err
    with pytest.raises(WatchError, match="--stream"):
        WatchConfig(sources=("a", "b"), streams=("x",), clips="c")


# -- pieces ------------------------------------------------------------------------------


def test_a_live_stream_saved_with_a_password_resumes_and_forgets_it(tmp_path):
    """A manifest written before passwords were redacted holds the raw URL: the watcher of the same camera
    resumes it (the redacted URLs agree) and saves it without the password."""
    raw = "rtsp://viewer:s3cret@10.0.0.5/stream1"
    config = IngestConfig(crop_size=CROP)
    StreamManifest("cam", raw, STATUS_LIVE, config.output_hash(), config.to_dict(), committed_until=7).save(
        OutputStore(str(tmp_path)))
    appender = LiveAppender(str(tmp_path), "cam", redacted(raw), config.output_hash(), config.to_dict(),
                            clips_schema(config), config.compression, 600)
    assert appender.committed_until == 7 and appender.manifest.source == "rtsp://viewer:***@10.0.0.5/stream1"
    appender.commit(None, 9, [{"start": 7, "end": 9, "reason": "test"}], {})
    assert "s3cret" not in (tmp_path / "stream_id=cam" / "manifest.json").read_text()


def test_stream_ids_from_sources():
    assert default_stream_id("http://h:8080/cams/gate/index.m3u8") == "gate"
    assert default_stream_id("https://h/x/north.m3u8") == "north"
    assert default_stream_id("rtsp://10.0.0.5:554/stream1") == "10.0.0.5_stream1"
    assert default_stream_id("/mnt/nvr/cam 2/") == "cam_2"
    assert default_stream_id("http://10.0.0.7/index.m3u8") == "10.0.0.7"
    with pytest.raises(WatchError, match="10.0.0.7"):
        WatchConfig(sources=("http://10.0.0.7/live.m3u8", "http://10.0.0.7/index.m3u8"), clips="c")


def test_alert_tracker_opens_once_closes_on_a_quiet_second_or_a_gap_and_resumes():
    tracker = AlertTracker("s", threshold=1.0)
    lines = tracker.update([0, 1, 2, 3, 4], [0.5, 2.0, 3.0, 1.5, 0.2], lambda t: 100.0 + t)
    assert [(x["kind"], x["start"], x["end"]) for x in lines] == [("start", 1, None), ("end", 1, 4)]
    assert lines[1]["peak_t"] == 2 and lines[1]["peak_score"] == 3.0 and lines[0]["start_time"].startswith("1970")
    assert tracker.update([5], [2.0], lambda t: None)[0]["kind"] == "start"
    resumed = AlertTracker("s", 1.0, tracker.state())  # a restarted watcher: no second start
    assert resumed.update([6], [5.0], lambda t: None) == []
    assert [(x["kind"], x["end"]) for x in resumed.update([9], [0.0], lambda t: None)] == [("end", 7)]  # gap 7-8


def test_a_restarted_clock_opens_an_epoch_after_the_wall_clock_gap(footage):
    info = inspect_video(str(footage["video"]))
    timeline = StreamTimeline()
    first = timeline.place(Segment(0, "a", "a", 2.0, program_time=1000.0), info, 0.0, "a", resuming=True)
    assert first.first_whole_second == 0
    later = timeline.place(Segment(1, "b", "b", 2.0, program_time=1050.0, discontinuity=True), info, first.end, "b",
                           resuming=False)
    assert later.epoch is not first.epoch and later.first_whole_second == 50  # 50 s of wall clock later
    assert later.epoch.wall_clock(50) == pytest.approx(1050.0)
    # A resumed watcher reading the segment that opened the epoch again keeps it there (no new epoch).
    again = StreamTimeline.from_state(timeline.to_state())
    reread = again.place(Segment(1, "b", "b", 2.0, program_time=1050.0, discontinuity=True), info, 51.0, "b",
                         resuming=True)
    assert reread.first_whole_second == 50 and len(again.epochs) == 2
    # An NVR that writes each file from 0 again: each file follows the one before, not on top of it.
    nvr = StreamTimeline()
    one = nvr.place(Segment(-1, "1", "1", arrived=1000.0 + info.duration), info, 0.0, "1", resuming=True)
    two = nvr.place(Segment(-1, "2", "2", arrived=1000.0 + 2 * info.duration), info, one.end, "2", resuming=False)
    assert two.first_whole_second == math.ceil(one.end - 1e-3)


def test_an_mpegts_clock_that_wraps_after_26_hours_stays_in_its_epoch(footage):
    info = inspect_video(str(footage["video"]))
    wrap = 2**33 / 90_000
    epoch = StreamTimeline().place(Segment(0, "a", "a"), replace(info, wrap_seconds=wrap), 0.0, "a", True).epoch
    assert epoch.seconds(epoch.origin + 20 * 3600, near=20 * 3600) == pytest.approx(20 * 3600)
    assert epoch.seconds((epoch.origin + 30 * 3600) % wrap, near=30 * 3600 - 2) == pytest.approx(30 * 3600)


def test_a_camera_password_is_scrubbed_as_written_and_percent_decoded():
    source = "rtsp://admin:p%40ss%3Aw0rd@10.0.0.7:554/stream1"
    assert redacted(source) == "rtsp://admin:***@10.0.0.7:554/stream1"
    said = "rtsp://admin:p@ss:w0rd@10.0.0.7:554/stream1: 401 Unauthorized (password p%40ss%3Aw0rd)"
    assert scrubbed(said, source) == "rtsp://admin:***@10.0.0.7:554/stream1: 401 Unauthorized (password ***)"
    assert scrubbed("no password here", "rtsp://cam/stream") == "no password here"
