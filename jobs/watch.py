"""Live cameras: follow HLS playlists, RTSP streams or NVR segment folders; clips, embeddings and alerts as they happen.

Local:    python jobs/watch.py --source http://127.0.0.1:8080/cam1/live.m3u8 --clips data/live-clips \\
              --checkpoint runs/epg1 --reference data/embeddings --alerts data/alerts.jsonl --metrics-port 9108
Cluster:  ray job submit --working-dir . -- python jobs/watch.py --source rtsp://cam1/stream \\
              --source /mnt/nvr/cam2 --clips /shared/live-clips --checkpoint /shared/runs/epg1 \\
              --reference /shared/embeddings --alerts /shared/alerts.jsonl --webhook https://ops.example/hook
One Ray actor per --source. The clips of stream <id> grow under <clips>/stream_id=<id>/ (manifest status
"live", committed_until, gaps), the embeddings under --embeddings (default <clips>-embeddings), and every
anomalous event gives a "start" line in --alerts (and a POST to --webhook) and an "end" line. Stop with Ctrl-C
(or SIGTERM, or --duration); the same command resumes after the last committed second. Exit code 0 when every
watcher stopped cleanly or its source ended, 1 when one failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout / ray working dir

from pipelines.downstream.anomaly_job import SCORES  # noqa: E402
from pipelines.live.config import WatchConfig, WatchError  # noqa: E402
from pipelines.live.job import run_watch  # noqa: E402
from pipelines.runtime.cli import add_ray_options  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = WatchConfig.default_of
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", action="append", required=True,
                   help="an HLS playlist URL, an rtsp:// URL or a directory of rolling segment files (repeatable)")
    p.add_argument("--stream", action="append", default=None,
                   help="stream id of each --source, in order (default: from the URL or directory name)")
    p.add_argument("--clips", required=True, help="clips root the live streams are appended to")
    p.add_argument("--checkpoint", default=d("checkpoint"), help="checkpoint or run directory: embed each second")
    p.add_argument("--embeddings", default=d("embeddings"), help="embeddings root (default <clips>-embeddings)")
    p.add_argument("--reference", default=d("reference"), help="embeddings root of normal footage: fits the threshold")
    p.add_argument("--alerts", default=d("alerts"), help="JSON lines file the alerts are appended to")
    p.add_argument("--webhook", default=d("webhook"), help="URL each alert line is POSTed to")
    p.add_argument("--score", choices=SCORES, default=d("score"), help="anomaly score, as jobs/anomaly.py")
    p.add_argument("--sigma", type=float, default=d("sigma"), help="threshold = mean + sigma * std on the reference")
    p.add_argument("--knn-k", type=int, default=d("knn_k"))
    p.add_argument("--knn-exclusion", type=int, default=d("knn_exclusion"))
    p.add_argument("--poll-seconds", type=float, default=d("poll_seconds"))
    p.add_argument("--shard-seconds", type=int, default=d("shard_seconds"), help="seconds per merged Parquet file")
    p.add_argument("--commit-margin", type=float, default=d("commit_margin"))
    p.add_argument("--settle-seconds", type=float, default=d("settle_seconds"),
                   help="directory: the newest file counts as complete after this long unchanged")
    p.add_argument("--stall-seconds", type=float, default=d("stall_seconds"),
                   help="no new segment for this long: reconnect")
    p.add_argument("--backoff-seconds", type=float, default=d("backoff_seconds"))
    p.add_argument("--backoff-max", type=float, default=d("backoff_max"))
    p.add_argument("--rtsp-segment-seconds", type=float, default=d("rtsp_segment_seconds"))
    p.add_argument("--crop-size", type=int, default=d("crop_size"), help="clips without --checkpoint")
    p.add_argument("--cpus-per-watcher", type=float, default=d("cpus_per_watcher"),
                   help="Ray CPUs per source's actor (e.g. 0.5: two cameras per core)")
    p.add_argument("--metrics-port", type=int, default=d("metrics_port"),
                   help="serve Prometheus metrics on 127.0.0.1:PORT (0: a free port)")
    p.add_argument("--duration", type=float, default=d("duration"), help="stop after this many seconds")
    add_ray_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = WatchConfig(
            sources=tuple(args.source), streams=tuple(args.stream or ()), clips=args.clips,
            checkpoint=args.checkpoint, embeddings=args.embeddings, reference=args.reference, alerts=args.alerts,
            webhook=args.webhook, score=args.score, sigma=args.sigma, knn_k=args.knn_k,
            knn_exclusion=args.knn_exclusion, poll_seconds=args.poll_seconds, shard_seconds=args.shard_seconds,
            commit_margin=args.commit_margin, settle_seconds=args.settle_seconds, stall_seconds=args.stall_seconds,
            backoff_seconds=args.backoff_seconds, backoff_max=args.backoff_max,
            rtsp_segment_seconds=args.rtsp_segment_seconds, crop_size=args.crop_size,
            cpus_per_watcher=args.cpus_per_watcher, metrics_port=args.metrics_port, duration=args.duration)
    except WatchError as exc:
        print(f"watch: error: {exc}", file=sys.stderr)
        return 2
    summary = run_watch(config, ray_address=args.address, show_progress=not args.quiet)
    print(summary.format())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
