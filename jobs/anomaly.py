"""Anomaly detection on embeddings (DESIGN §5): threshold μ + σ-multiple of the std from reference footage, events, timelines.

Local:    python jobs/anomaly.py --embeddings data/emb --reference train --output reports/anomaly
          [--streams similar challenging] [--sigma 2] [--max-gap 0] [--labels data/synth/labels.parquet]
          [--start-time 2026-05-01T08:00:00 | --start-time cam1=2026-05-01T08:00:00 ...]
Cluster:  ray job submit --working-dir . -- python jobs/anomaly.py --embeddings s3://bucket/emb ...
Writes scores.parquet, events.parquet/.json, timeline-<stream>.png, summary.json and config.json
(see pipelines/downstream/anomaly_job.py). Exit code 0 when done, 2 for bad arguments or input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout / ray working dir

from pipelines.downstream.anomaly_job import SCORES, AnomalyJobConfig, format_summary, run_anomaly  # noqa: E402
from pipelines.downstream.clock import Clock, parse_start_time_args  # noqa: E402
from pipelines.runtime.cli import add_deprecated_alias, add_output_option, add_skip_bad_shards_option  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = AnomalyJobConfig.default_of
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", required=True, help="embeddings root written by jobs/embed.py (path or URI)")
    p.add_argument("--reference", nargs="+", required=True, metavar="STREAM", help="streams the threshold is fitted on")
    p.add_argument("--streams", nargs="+", default=[], metavar="STREAM", help="streams to score (default: all)")
    p.add_argument("--sigma", type=float, default=d("sigma"), help="threshold = mean + sigma * std of the reference scores")
    p.add_argument("--score", choices=SCORES, default=d("score"),
                   help="av_dist: D(v, a); knn_visual/knn_audio/knn_spectrum: distance to the nearest reference seconds "
                        "in the picture's or sound's embedding or the sound's spectrum; fusion: visual and audio; "
                        "fusion_visual_spectrum: visual and spectrum")
    p.add_argument("--knn-k", type=int, default=d("knn_k"), help="neighbours of the kNN scores")
    p.add_argument("--knn-exclusion", type=int, default=d("knn_exclusion"),
                   help="seconds of a query's own stream that are not its neighbours")
    p.add_argument("--clips", default=None, help="clips root: the loudness baseline (with --labels) of embeddings scored before "
                   "scoring stored each second's spectrum (others have it without --clips)")
    p.add_argument("--max-gap", type=int, default=d("max_gap"),
                   help="merge anomalous runs separated by at most this many normal seconds (0: contiguous only)")
    p.add_argument("--labels", default=None, help="labels table (Parquet/CSV) for ROC-AUC / AP and event recall")
    p.add_argument("--anomaly-classes", nargs="+", default=list(d("anomaly_classes")), metavar="CLASS",
                   help="label classes that count as anomalies (default: the synthetic anomaly classes)")
    p.add_argument("--start-time", action="append", default=[], metavar="[STREAM=]ISO8601",
                   help="recording start, for wall-clock times (once for all streams, or per stream)")
    p.add_argument("--no-plots", action="store_true", help="skip the timeline PNGs")
    add_skip_bad_shards_option(p, d("skip_bad_shards"), "embeddings files")
    add_output_option(p, "output directory (path or URI)")
    add_deprecated_alias(p, "--k", "--sigma")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = AnomalyJobConfig(
            embeddings=args.embeddings, output=args.output, reference=tuple(args.reference), streams=tuple(args.streams),
            sigma=args.sigma, score=args.score, knn_k=args.knn_k, knn_exclusion=args.knn_exclusion, clips=args.clips,
            max_gap=args.max_gap, labels=args.labels, anomaly_classes=tuple(args.anomaly_classes),
            start_times=parse_start_time_args(args.start_time), plots=not args.no_plots,
            skip_bad_shards=args.skip_bad_shards,
        )
        result = run_anomaly(config)
    except (ValueError, FileNotFoundError) as exc:  # DownstreamError, EmbeddingsError, LabelsError are ValueErrors
        print(f"anomaly: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(result, Clock(config.start_times)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
