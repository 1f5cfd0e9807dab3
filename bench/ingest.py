"""Ingest throughput against decode-only of the same file, in one run.

    python bench/ingest.py                       # 10- and 60-minute 1280x720 30 fps streams
    python bench/ingest.py --minutes 10          # only the 10-minute stream
    python bench/ingest.py --minutes 10 --gops bframes --backends pyav --skips nonref nonkey

For each stream (made once by the synthetic generator and cached under
--cache), on the same cores and in the same run:
- decode-only anchor: PyAV decodes every video and audio frame of the file
  (codec threads on all cores), nothing else (the `ffmpeg -i F -f null -`
  equivalent; the ffmpeg binary is timed too when it is installed: Debian's
  ``ffmpeg`` package, ``make bench-deps``);
- ingest with each frame backend: the real Ray Data pipeline (probe, window
  decode, crops, JPEG, log-mel, Parquet) on a local Ray with all cores;
- ingest with each frame skip of --skips (PyAV: ``IngestConfig.frame_skip``), against
  the same full decode-only anchor, with the furthest any frame was shown before its
  target and the windows decoded again in full.
Streams come in two GOP structures (--gops): ``generator`` is the synthetic generator's
720p encoding (x264 ultrafast: I and P frames only, as many NVRs write), ``bframes`` the
same footage re-encoded by the ffmpeg CLI with x264 veryfast (3 B-frames, B-pyramid,
keyframe every 2 s). The structure each file really has is measured and printed.
Each ingest run is paired with a decode-only run just before it (--repeat
pairs per backend; the host's speed drifts, so single runs mislead); prints
footage seconds per wall second, the median ratio ingest / decode-only
(target <= 1.3; with a frame skip, target <= 0.7) and its range, and peak memory: the anchor's RSS, and the
peak of the sum of all Ray worker RSS during ingest (target: flat from 10 to 60 minutes).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import av  # noqa: E402
import psutil  # noqa: E402
import ray  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402

from pipelines.ingest.config import FRAME_SKIP_MODES, IngestConfig  # noqa: E402
from pipelines.ingest.job import run_ingest  # noqa: E402
from pipelines.runtime.cluster import start_local_ray  # noqa: E402
from pipelines.synthetic import SyntheticConfig, generate  # noqa: E402

DECODE_ONLY = """
import resource, sys, time, av
t0 = time.perf_counter()
with av.open(sys.argv[1]) as c:
    c.streams.video[0].thread_type = "AUTO"
    for frame in c.decode(video=0, audio=0):
        pass
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def stream_for(minutes: float, cache: Path, gop: str = "generator") -> Path:
    folder = cache / f"720p30-{minutes:g}min"
    video = folder / "train.mp4"
    if not video.exists():
        print(f"generating {minutes:g} min of 1280x720 30 fps footage into {folder} ...", flush=True)
        generate(SyntheticConfig(out=folder, minutes=minutes, seed=1, size=(1280, 720), fps=30.0, views=("train",)))
    if gop == "generator":
        return video
    reencoded = folder / "train-bframes.mp4"
    if not reencoded.exists():
        if shutil.which("ffmpeg") is None:
            raise SystemExit("--gops bframes re-encodes with the ffmpeg CLI: install Debian's ffmpeg (make bench-deps)")
        print(f"re-encoding {video} with B-frames ...", flush=True)
        partial = folder / ".train-bframes.partial.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-c:v", "libx264", "-preset", "veryfast",
                        "-crf", "26", "-bf", "3", "-b_strategy", "0", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
                        "-c:a", "copy", str(partial)], check=True)
        partial.rename(reencoded)
    return reencoded


def gop_structure(video: Path, frames: int = 600) -> str:
    """Picture types of the first ``frames`` frames, the keyframe interval, and the share no frame refers to."""
    kinds: dict[int, int] = {}
    keys = []
    with av.open(str(video)) as container:
        for i, frame in zip(range(frames), container.decode(video=0)):
            kinds[int(frame.pict_type)] = kinds.get(int(frame.pict_type), 0) + 1
            if frame.key_frame:
                keys.append(i)
    with av.open(str(video)) as container:
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        until = frames / float(stream.average_rate) - 1e-3
        referenced = 0
        for frame in container.decode(stream):
            if frame.time is not None and frame.time > until:
                break
            referenced += 1
    total = sum(kinds.values())
    names = {1: "I", 2: "P", 3: "B"}
    shares = ", ".join(f"{names.get(k, k)} {100 * n / total:.0f}%" for k, n in sorted(kinds.items()))
    interval = statistics.median(b - a for a, b in zip(keys, keys[1:])) if len(keys) > 1 else total
    return (f"keyframe every {interval:g} frames; {shares}; frames no other frame refers to: "
            f"{100 * (1 - referenced / total):.0f}%")


def decode_only(video: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of a fresh process decoding the file
    (the process reports its own peak: this driver's other children, e.g. a
    stopped Ray, must not count)."""
    done = subprocess.run([sys.executable, "-c", DECODE_ONLY, str(video)], capture_output=True, text=True, check=True)
    seconds, peak_kb = done.stdout.split()
    return float(seconds), int(peak_kb) / 1024


def ffmpeg_decode(video: Path) -> float | None:
    if shutil.which("ffmpeg") is None:
        return None
    t0 = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-f", "null", "-"], check=True)
    return time.perf_counter() - t0


def _raylet() -> psutil.Process:
    """This run's raylet: its children are this run's workers (not those of
    any other Ray on the machine)."""
    node = ray._private.worker._global_node
    return psutil.Process(node.all_processes["raylet"][0].process.pid)


class WorkerMemory:
    """Samples, in the background, the summed RSS of this Ray's worker processes
    and the largest single worker's RSS."""

    def __init__(self, interval: float = 0.2):
        self.interval, self.peak, self.peak_one, self._stop = interval, 0.0, 0.0, threading.Event()
        self._raylet = _raylet()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            sizes = []
            for proc in self._raylet.children(recursive=True):
                try:
                    if " ".join(proc.cmdline()).startswith("ray::"):
                        sizes.append(proc.memory_info().rss / 2**20)
                except psutil.Error:
                    continue
            self.peak = max(self.peak, sum(sizes))
            self.peak_one = max([self.peak_one, *sizes])
            self._stop.wait(self.interval)

    def __enter__(self) -> "WorkerMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def fresh_ray(backend: str, warm: Path, work: Path) -> None:
    """A new local Ray per measurement, warmed up on a short file cut into
    twice as many windows as there are CPUs, so every worker has imported
    librosa/numba before the timed run; no state (e.g. decord's per-worker
    reader cache) is carried over from an earlier measurement."""
    if ray.is_initialized():
        ray.shutdown()
    cpus = os.cpu_count() or 1
    start_local_ray(num_cpus=cpus)
    ingest(warm, backend, work, window_seconds=max(1, 30 // (2 * cpus)))


# Frame skip tolerance in source frames: nonref as the library's default (the exact frame or the one
# before it); keyframes only for very low target rates, so up to a keyframe interval (2 s at 30 fps).
SKIP_TOLERANCE = {"none": 1.0, "nonref": 1.0, "nonkey": 60.0}


def ingest(video: Path, backend: str, work: Path, window_seconds: int = 60, skip: str = "none"):
    """Wall s, peak summed worker RSS, peak single worker RSS, clips, and the summary (frame offsets)."""
    out = work / f"clips-{backend}-{skip}-{video.parent.name}"
    shutil.rmtree(out, ignore_errors=True)
    config = IngestConfig(frame_backend=backend, fallback_backend=False, window_seconds=window_seconds, frame_skip=skip,
                          frame_skip_tolerance=SKIP_TOLERANCE[skip])
    with WorkerMemory() as memory:
        summary = run_ingest([str(video)], str(out), config, show_progress=False)
    if not summary.ok:
        raise SystemExit(summary.format())
    shutil.rmtree(out, ignore_errors=True)
    return summary.wall_seconds, memory.peak, memory.peak_one, summary.clips, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--backends", nargs="+", default=["pyav", "decord"])
    parser.add_argument("--skips", nargs="*", default=["nonref", "nonkey"], choices=[s for s in FRAME_SKIP_MODES if s != "none"],
                        help="frame skips measured with pyav beside the full decode")
    parser.add_argument("--gops", nargs="+", default=["generator", "bframes"], choices=["generator", "bframes"])
    parser.add_argument("--repeat", type=int, default=3, help="paired (decode-only, ingest) runs per backend")
    parser.add_argument("--cache", type=Path, default=Path("out/bench"))
    parser.add_argument("--write-results", action="store_true", help="also write the printed summary into its section of bench/RESULTS.md")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")

    cpus = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    warm = stream_for(0.5, args.cache)
    variants = [(backend, "none") for backend in args.backends] + [("pyav", skip) for skip in args.skips]

    rows, structures = [], {}
    for minutes in args.minutes:
        for gop in args.gops:
            video = stream_for(minutes, args.cache, gop)
            structures[gop] = gop_structure(video)
            seconds = minutes * 60
            stream = f"{minutes:g} min {gop}"
            anchors: list[tuple[float, float]] = []
            measured = []
            for backend, skip in variants:
                fresh_ray(backend, warm, work)
                runs = []
                for _ in range(args.repeat):
                    # Each ingest run is paired with a decode-only run just before it,
                    # so a change in machine speed (shared host) moves both alike.
                    anchor_s, anchor_mb = decode_only(video)
                    anchors.append((anchor_s, anchor_mb))
                    wall, peak, peak_one, clips, summary = ingest(video, backend, work, skip=skip)
                    assert clips == int(seconds), (clips, seconds)
                    runs.append((wall, wall / anchor_s, peak, peak_one, summary))
                measured.append((backend, skip, runs))
            anchor_s = statistics.median(a for a, _ in anchors)
            anchor_mb = max(mb for _, mb in anchors)
            rows.append((stream, "decode-only (PyAV)", anchor_s, seconds / anchor_s, 1.0, "", anchor_mb, anchor_mb, ""))
            ff = ffmpeg_decode(video)
            if ff is not None:
                nan = float("nan")
                rows.append((stream, "decode-only (ffmpeg)", ff, seconds / ff, ff / anchor_s, "", nan, nan, ""))
            for backend, skip, runs in measured:
                wall = statistics.median(r[0] for r in runs)
                ratios = [r[1] for r in runs]
                spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
                peak, peak_one = max(r[2] for r in runs), max(r[3] for r in runs)
                summary = runs[-1][4]
                offset = "" if skip == "none" else (f"≤ {1000 * summary.max_frame_offset:.0f} ms, "
                                                    f"{summary.windows_decoded_in_full} full")
                what = f"ingest ({backend})" if skip == "none" else f"ingest ({backend}, {skip})"
                rows.append((stream, what, wall, seconds / wall, statistics.median(ratios), spread, peak, peak_one, offset))

    report = Printed()
    report(f"\ningest vs decode-only, 1280x720 30 fps H.264 + AAC, {cpus} CPU(s), same run, {args.repeat} paired run(s)")
    for gop, structure in structures.items():
        report(f"GOP of '{gop}' footage: {structure}")
    header = (f"{'stream':<18} {'what':<24} {'wall s':>8} {'footage s/s':>12} {'x decode':>9} {'range':>10} {'peak MB':>9} "
              f"{'1 proc MB':>9}  frames behind target")
    report(header)
    for stream, what, wall, rate, ratio, spread, mb, one, offset in rows:
        report(f"{stream:<18} {what:<24} {wall:8.1f} {rate:12.1f} {ratio:9.2f} {spread:>10} {mb:9.0f} {one:9.0f}  {offset}")
    report("wall s: median; x decode: median of the paired ratios (range: lowest-highest), against the full decode-only")
    report("peak MB: decode-only = that process's max RSS; ingest = peak of the summed RSS of this Ray's")
    report("worker processes (all 'ray::' children of its raylet); 1 proc MB = the largest single worker")
    report("frames behind target: the furthest a frame was shown before its target, and the windows decoded again in full")
    report("frame skip tolerance, source frames: " + ", ".join(f"{k} {v:g}" for k, v in SKIP_TOLERANCE.items() if k != "none"))
    shutil.rmtree(work, ignore_errors=True)
    ray.shutdown()
    if args.write_results:
        update_results("Ingest throughput against decode-only", report.text, command_line(__file__, sys.argv[1:]))


if __name__ == "__main__":
    main()
