"""CLI: python -m pipelines.synthetic --output DIR --minutes M [options]."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.runtime.cli import add_deprecated_alias

from .config import VIEW_NAMES, SyntheticConfig, parse_size, parse_views
from .generator import generate


def _size(text: str):
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _views(text: str):
    try:
        return parse_views(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.synthetic",
        description="Write seeded synthetic street-camera streams (H.264/AAC mp4 per view) with per-second labels.",
    )
    d = SyntheticConfig.default_of
    p.add_argument("--output", "-o", dest="out", required=True, type=Path, help="output directory")
    p.add_argument("--minutes", required=True, type=float, help="stream length in minutes")
    p.add_argument("--seed", type=int, default=d("seed"), help="draws the event timeline (default %(default)s)")
    p.add_argument("--size", type=_size, default=d("size"), help="frame size WxH, both even (default 320x180)")
    p.add_argument("--fps", type=float, default=d("fps"), help="frames per second (default %(default)s)")
    p.add_argument("--views", type=_views, default=d("views"), help=f"comma-separated views out of {','.join(VIEW_NAMES)} (default all)")
    p.add_argument("--scene", type=int, default=d("scene"), help="street layout and cameras (default %(default)s)")
    p.add_argument("--no-anomalies", dest="anomalies", action="store_false", help="leave out the anomaly classes")
    p.add_argument("--rate-scale", type=float, default=d("rate_scale"), help="multiply every class's event rate (default %(default)s)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress messages")
    add_deprecated_alias(p, "--out", "--output")
    return p


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = SyntheticConfig(
            out=args.out,
            minutes=args.minutes,
            seed=args.seed,
            size=args.size,
            fps=args.fps,
            views=args.views,
            scene=args.scene,
            anomalies=args.anomalies,
            rate_scale=args.rate_scale,
        )
    except ValueError as e:
        parser.error(str(e))
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s")
    res = generate(config, progress=not args.quiet)
    print(f"wrote {len(res.videos)} view(s) of {res.seconds:.1f} s to {config.out}")
    for name, path in res.videos.items():
        print(f"  {path}  ({path.stat().st_size / 1e6:.1f} MB)")
    print(f"  {res.labels}\n  {res.events}\n  {res.config}")
    print("events per class: " + ", ".join(f"{c}={n}" for c, n in res.event_counts.items()))
    print(f"wall {res.wall_seconds:.1f} s, real-time factor {res.realtime_factor:.1f}x (stream seconds per wall second, {len(res.videos)} view(s))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
