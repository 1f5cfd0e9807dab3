"""Ingest videos into clips Parquet (DESIGN §3.1).

Local:    python jobs/ingest.py --input videos/ --output clips/
Cluster:  ray job submit --working-dir . -- python jobs/ingest.py --input s3://bucket/cams/ --output s3://bucket/clips/
Exit code 0 when every input was ingested (or already was), 1 when any
failed (the summary and each stream's manifest.json say why), 2 for bad
arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout / ray working dir

from pipelines.ingest.config import FRAME_BACKENDS, FRAME_SKIP_MODES, IngestConfig  # noqa: E402
from pipelines.ingest.job import run_ingest  # noqa: E402
from pipelines.media.sources import InputError  # noqa: E402
from pipelines.runtime.cli import add_output_option, add_ray_options  # noqa: E402
from pipelines.runtime.lock import OutputInUse  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = IngestConfig.default_of
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", "-i", nargs="+", required=True, help="files, directories, globs or URIs")
    add_output_option(parser, "clips root (local path or URI)")
    parser.add_argument("--overwrite", action="store_true", help="redo streams that are already complete")
    parser.add_argument("--frame-backend", choices=FRAME_BACKENDS, default=d("frame_backend"))
    parser.add_argument("--no-fallback", action="store_true", help="do not hand failed windows to the other backend")
    parser.add_argument("--crop-size", type=int, default=d("crop_size"))
    parser.add_argument("--window-seconds", type=int, default=d("window_seconds"))
    parser.add_argument("--shard-rows", type=int, default=d("shard_rows"))
    parser.add_argument("--jpeg-quality", type=int, default=d("jpeg_quality"))
    parser.add_argument("--decode-threads", type=int, default=d("decode_threads"))
    parser.add_argument("--frame-skip", choices=FRAME_SKIP_MODES, default=d("frame_skip"),
                        help="frames the decoder may leave out: none (exact), nonref (frames no other frame refers "
                             "to, most B-frames), nonkey (keyframes only); pyav backend")
    parser.add_argument("--frame-skip-tolerance", type=float, default=d("frame_skip_tolerance"),
                        help="with --frame-skip: source frames a target's frame may be shown before it; a window "
                             "beyond it is decoded again in full")
    parser.add_argument("--decode-timeout", type=float, default=d("decode_timeout"),
                        help="seconds one window's decode (or one file's inspection) may take before its process is "
                             "stopped and the window fails, named (0: no bound)")
    add_ray_options(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = IngestConfig(
            crop_size=args.crop_size,
            window_seconds=args.window_seconds,
            shard_rows=args.shard_rows,
            jpeg_quality=args.jpeg_quality,
            frame_backend=args.frame_backend,
            fallback_backend=not args.no_fallback,
            decode_threads=args.decode_threads,
            frame_skip=args.frame_skip,
            frame_skip_tolerance=args.frame_skip_tolerance,
            decode_timeout=args.decode_timeout,
        )
    except ValueError as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = run_ingest(
            args.input, args.output, config, overwrite=args.overwrite, show_progress=not args.quiet,
            ray_address=args.address,
        )
    except (InputError, OutputInUse) as exc:
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the output's storage failed mid-run (a full disk): what was committed stays
        print(f"ingest: error: {exc}", file=sys.stderr)
        return 1
    print(summary.format())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
