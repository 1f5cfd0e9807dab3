"""A live watcher's memory over a long stream, without waiting for real time (issue 17).

    python bench/live_memory.py --minutes 90 --work WORK     # WORK: bench/live.py's --work (footage reused)

One ``StreamWatcher`` in this process (the tiny preset's random-init checkpoint, reference embeddings of
normal footage and the fusion score, as ``bench/live.py``) follows a folder into which the footage's
2-s MPEG-TS segments are linked one at a time, as an NVR writes them, but as fast as the watcher cuts
them; its resident memory is printed every 5 minutes of stream. Flat memory: the later rows agree.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from live import SEGMENT_SECONDS, checkpoint_of, footage, reference_of  # noqa: E402

from pipelines.live.config import WatchConfig  # noqa: E402
from pipelines.live.watcher import StreamWatcher, resident_mb  # noqa: E402
from pipelines.runtime.cluster import start_local_ray  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=90.0, help="stream minutes")
    parser.add_argument("--work", type=Path, default=None, help="where footage and checkpoints are kept")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    work = args.work or Path(tempfile.mkdtemp(prefix="epg-live-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    video, normal = footage("320x180", args.minutes, work)
    checkpoint = checkpoint_of("tiny", work)
    start_local_ray(num_cpus=2)  # the reference is written by the watch job
    reference = reference_of("tiny", "320x180", normal, checkpoint, work)
    run = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    segments, feed = run / "segments", run / "feed"
    segments.mkdir()
    feed.mkdir()
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-c", "copy", "-f", "segment", "-segment_time",
                    str(SEGMENT_SECONDS), "-segment_format", "mpegts", str(segments / "seg%06d.ts")], check=True)
    watcher = StreamWatcher(WatchConfig(sources=(str(feed),), clips=str(run / "clips"), checkpoint=str(checkpoint),
                                        reference=str(reference), alerts=str(run / "alerts.jsonl"), score="fusion",
                                        knn_exclusion=10, settle_seconds=0.01), 0)
    began, mark = time.monotonic(), 0
    print("| stream min | RSS MB | wall s |\n|---:|---:|---:|", flush=True)
    for segment in sorted(segments.iterdir()):
        os.link(segment, feed / segment.name)
        watcher.step()
        if watcher.stats.committed_until >= mark:
            print(f"| {watcher.stats.committed_until / 60:.0f} | {resident_mb():.0f} | {time.monotonic() - began:.0f} |",
                  flush=True)
            mark += 300
    watcher.ended = True
    watcher.step()
    watcher.close()
    print(f"end: {watcher.stats.committed_until} s committed, {watcher.stats.gap_seconds} s in gaps, "
          f"{watcher.stats.alerts} alerts, RSS {resident_mb():.0f} MB")
    shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
