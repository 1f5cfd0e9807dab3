"""The main job on synthetic data: generate → ingest → pretrain EPG (CPU) → embed → anomaly, search, localize → report.

    python jobs/demo.py --output out/demo [--minutes 5] [--preset small] [--epochs 3] [--start-time 2026-05-01T08:00:00]

Prints one line per stage with its time, each job's summary, and last where the report is
(<out>/report/index.html). A rerun with the same --output reuses the finished stages.
The stages and decisions are described in pipelines/demo/.
Exit code 0 when done, 1 when a stage failed, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout / ray working dir

from pipelines.demo.config import MainJobConfig, MainJobError  # noqa: E402
from pipelines.demo.job import format_result, run_main  # noqa: E402
from pipelines.runtime.cli import add_deprecated_alias, add_output_option, add_ray_options  # noqa: E402
from pipelines.train.config import PAIRINGS, PRESETS  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = MainJobConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_output_option(p, "output folder (videos, clips, runs, embeddings, jobs, report)", required=False, default=d.output)
    p.add_argument("--minutes", type=float, default=d.minutes, help="minutes of synthetic footage per view")
    p.add_argument("--seed", type=int, default=d.seed, help="event timeline of the synthetic stream")
    p.add_argument("--rate-scale", type=float, default=d.rate_scale, help="event rate x the generator's default")
    p.add_argument("--views", default=",".join(d.views), help="comma-separated views (train and at least one more)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=d.preset, help="model size")
    p.add_argument("--pairing", choices=PAIRINGS, default=d.pairing)
    p.add_argument("--epochs", type=int, default=d.epochs, help="pretraining epochs (the first is the TPG warm-up)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="visual samples per step")
    p.add_argument("--start-time", default=None, metavar="ISO8601",
                   help="when the recording started: times in the outputs become wall-clock HH:MM:SS")
    add_ray_options(p)
    add_deprecated_alias(p, "--out", "--output")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = MainJobConfig(
            output=args.output, minutes=args.minutes, seed=args.seed, rate_scale=args.rate_scale,
            views=tuple(v for v in args.views.split(",") if v), preset=args.preset, pairing=args.pairing,
            epochs=args.epochs, batch_size=args.batch_size, start_time=args.start_time, ray_address=args.address,
            show_progress=not args.quiet,
        )
    except ValueError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_main(config)
    except (MainJobError, ValueError, FileNotFoundError) as exc:  # PretrainError, EmbedError, DownstreamError ...
        print(f"demo: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
