"""The main job on synthetic data: generate a multi-view stream and ingest it.

    python jobs/demo.py --out out/demo [--minutes 5]

Until pretraining and scoring exist this is the end-to-end pipeline: it
prints the generator's and the ingest job's summaries and where the clips
are. Exit code 1 when ingest reported a failure.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout / ray working dir

import pyarrow.parquet as pq  # noqa: E402

from pipelines.ingest import run_ingest  # noqa: E402
from pipelines.ingest_config import IngestConfig  # noqa: E402
from pipelines.synthetic import SyntheticConfig, generate  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("out/demo"))
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)

    videos = args.out / "videos"
    streams = generate(SyntheticConfig(out=videos, minutes=args.minutes, seed=args.seed))
    print(
        f"generated {len(streams.videos)} views x {streams.seconds:.0f} s in {streams.wall_seconds:.1f} s "
        f"({streams.seconds * len(streams.videos) / streams.wall_seconds:.1f}x real time) -> {videos}"
    )
    labels = pq.read_table(streams.labels).to_pandas()
    per_class = labels[labels.stream_id == "train"].groupby("label").t.count().sort_values(ascending=False)
    print("labelled seconds per class (train view): " + ", ".join(f"{k} {v}" for k, v in per_class.items()))

    summary = run_ingest([str(videos)], str(args.out / "clips"), IngestConfig(), show_progress=not args.quiet)
    print(summary.format())
    print(f"clips: {args.out / 'clips'}  (read with pipelines.clips_index.read_stream)")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
