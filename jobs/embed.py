"""Batch scoring: clips Parquet or raw videos -> embeddings Parquet (DESIGN §3.2).

Local:    python jobs/embed.py --clips data/clips --checkpoint runs/epg1 --output data/embeddings
Videos:   python jobs/embed.py --videos day/*.mp4 --checkpoint runs/epg1 --output data/embeddings
Cluster:  ray job submit --working-dir . -- python jobs/embed.py --clips s3://bucket/clips \\
              --checkpoint /shared/runs/epg1 --output s3://bucket/embeddings --actors 4 --gpus-per-actor 1
--checkpoint is a checkpoint directory or a run directory (its latest checkpoint). Rerunning skips
streams already scored with the same checkpoint and inputs. Exit code 0 when every stream was
scored (or already was), 1 when any stream failed (the summary and its manifest.json say why),
2 for bad arguments or input (nothing is written then).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout / ray working dir

from pipelines.ingest.config import FRAME_BACKENDS, FRAME_SKIP_MODES  # noqa: E402
from pipelines.media.sources import InputError  # noqa: E402
from pipelines.runtime.cli import add_output_option, add_ray_options, add_skip_bad_shards_option  # noqa: E402
from pipelines.runtime.lock import OutputInUse  # noqa: E402
from pipelines.score.config import EmbedConfig, EmbedError  # noqa: E402
from pipelines.score.job import run_embed  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = EmbedConfig.default_of
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--clips", help="clips root written by jobs/ingest.py (path or URI)")
    source.add_argument("--videos", nargs="+", help="video files, directories, globs or URIs (decoded, never written as clips)")
    p.add_argument("--checkpoint", required=True, help="checkpoint directory, or run directory (latest checkpoint)")
    add_output_option(p, "embeddings root (path or URI)")
    p.add_argument("--overwrite", action="store_true", help="score again streams already complete, and replace another model's")
    p.add_argument("--actors", type=int, default=d("actors"), help="model actors (one GPU each with --gpus-per-actor 1); 0: as many as the cluster holds")
    p.add_argument("--gpus-per-actor", type=float, default=d("gpus_per_actor"))
    p.add_argument("--cpus-per-actor", type=float, default=d("cpus_per_actor"))
    p.add_argument("--batch-size", type=int, default=d("batch_size"), help="clips per model call")
    p.add_argument("--rows-per-file", type=int, default=d("rows_per_file"))
    p.add_argument("--clips-per-task", type=int, default=d("clips_per_task"), help="clips: rows read and decoded per task")
    p.add_argument("--window-seconds", type=int, default=d("window_seconds"), help="videos: seconds per decode task")
    p.add_argument("--frame-backend", choices=FRAME_BACKENDS, default=d("frame_backend"), help="videos")
    p.add_argument("--jpeg-quality", type=int, default=d("jpeg_quality"), help="videos: as the clips were ingested")
    p.add_argument("--raw-crops", action="store_true",
                   help="videos: hand the crops to the model without ingest's JPEG round trip (faster; the embeddings "
                        "then differ slightly from those of the same video ingested and scored)")
    p.add_argument("--frame-skip", choices=FRAME_SKIP_MODES, default=d("frame_skip"),
                   help="videos: frames the decoder may leave out (none, nonref, nonkey; as jobs/ingest.py)")
    p.add_argument("--frame-skip-tolerance", type=float, default=d("frame_skip_tolerance"),
                   help="videos: source frames a target's frame may be shown before it (as jobs/ingest.py)")
    p.add_argument("--decode-timeout", type=float, default=d("decode_timeout"),
                   help="videos: seconds one window's decode may take before its process is stopped and the window "
                        "fails, named (0: no bound; as jobs/ingest.py)")
    add_skip_bad_shards_option(p, d("skip_bad_shards"), "streams (clips input)")
    add_ray_options(p)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = EmbedConfig(
            batch_size=args.batch_size, actors=args.actors, cpus_per_actor=args.cpus_per_actor,
            gpus_per_actor=args.gpus_per_actor, rows_per_file=args.rows_per_file, clips_per_task=args.clips_per_task,
            window_seconds=args.window_seconds,
            frame_backend=args.frame_backend, jpeg_quality=args.jpeg_quality, frame_skip=args.frame_skip,
            frame_skip_tolerance=args.frame_skip_tolerance, jpeg_round_trip=not args.raw_crops,
            skip_bad_shards=args.skip_bad_shards, decode_timeout=args.decode_timeout,
        )
        summary = run_embed(args.checkpoint, args.output, clips=args.clips, videos=args.videos, settings=settings,
                            overwrite=args.overwrite, show_progress=not args.quiet, ray_address=args.address)
    except (EmbedError, InputError, OutputInUse) as exc:
        print(f"embed: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output's storage failed mid-run (a full disk): what was committed stays
        print(f"embed: error: {exc}", file=sys.stderr)
        return 1
    print(summary.format())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
