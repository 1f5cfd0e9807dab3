"""Query-by-example event search on embeddings (DESIGN §5): top-k moments like a clip or a video file.

Local:    python jobs/search.py --embeddings data/emb --query train:3600 --output reports/search
          [--mode both|audio|visual] [--k 5] [--exclusion 60] [--suppression 60] [--clips data/clips]
          [--labels data/synth/labels.parquet] [--start-time [STREAM=]ISO8601]
          [--index auto|exact|approximate] [--approximate-from 250000] [--nprobe 16] [--index-cache DIR]
          python jobs/search.py --embeddings data/emb --video query.mp4 --checkpoint runs/epg1/checkpoint_step500 ...
Cluster:  ray job submit --working-dir . -- python jobs/search.py --embeddings s3://bucket/emb ...
--query is STREAM:SECONDS or STREAM:HH:MM:SS. Writes results.parquet/.json, contact_sheet.png/.html,
summary.json and config.json (see pipelines/downstream/search_job.py). With --index auto, an index of
--approximate-from clips or more is searched through an approximate (faiss IVF) index, which --index-cache
keeps for the next search; the console and summary.json say which index answered.
Exit code 0 when done, 2 for bad arguments or input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout / ray working dir

from epg.search import MODES  # noqa: E402
from epg.search_ann import ApproximateConfig  # noqa: E402
from pipelines.downstream.clock import parse_start_time_args  # noqa: E402
from pipelines.downstream.search_index import INDEX_KINDS  # noqa: E402
from pipelines.downstream.search_job import SearchJobConfig, format_summary, run_search  # noqa: E402
from pipelines.runtime.cli import add_output_option, add_skip_bad_shards_option  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = SearchJobConfig.default_of
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", required=True, help="embeddings root written by jobs/embed.py (path or URI)")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--query", help="a clip of the index: STREAM:SECONDS or STREAM:HH:MM:SS")
    query.add_argument("--video", help="a short video file to search for (needs --checkpoint)")
    p.add_argument("--checkpoint", default=None, help="checkpoint to embed --video with")
    p.add_argument("--mode", choices=MODES, default=d("mode"), help="distance on visual, audio or the mean of both")
    p.add_argument("--k", type=int, default=d("k"), help="number of results")
    p.add_argument("--exclusion", type=int, default=d("exclusion"), help="seconds around the query excluded")
    p.add_argument("--suppression", type=int, default=d("suppression"),
                   help="seconds around a higher-ranked result in which results are suppressed")
    p.add_argument("--clips", default=None, help="clips root (thumbnails and spectrograms on the contact sheet)")
    p.add_argument("--labels", default=None, help="labels table (Parquet/CSV): label of each hit and precision@k")
    p.add_argument("--start-time", action="append", default=[], metavar="[STREAM=]ISO8601",
                   help="recording start, for wall-clock times (once for all streams, or per stream)")
    p.add_argument("--index", choices=INDEX_KINDS, default=d("index"),
                   help="exact (every clip per query), approximate (faiss IVF candidates, ranked by D), or auto (by size)")
    p.add_argument("--approximate-from", type=int, default=d("approximate_from"),
                   help="with --index auto: clips from which the approximate index is used")
    p.add_argument("--nprobe", type=int, default=ApproximateConfig.default_of("nprobe"),
                   help="approximate index: inverted lists scanned per query (more: slower, closer to exact)")
    p.add_argument("--index-cache", default=None,
                   help="directory (path or URI) keeping built approximate indexes for later searches of the same embeddings")
    add_skip_bad_shards_option(p, d("skip_bad_shards"), "embeddings files")
    add_output_option(p, "output directory (path or URI)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = SearchJobConfig(
            embeddings=args.embeddings, output=args.output, query=args.query, video=args.video,
            checkpoint=args.checkpoint, mode=args.mode, k=args.k, exclusion=args.exclusion,
            suppression=args.suppression, clips=args.clips, labels=args.labels,
            start_times=parse_start_time_args(args.start_time), index=args.index,
            approximate_from=args.approximate_from, approximate=ApproximateConfig(nprobe=args.nprobe),
            index_cache=args.index_cache, skip_bad_shards=args.skip_bad_shards,
        )
        result = run_search(config)
    except (ValueError, FileNotFoundError) as exc:  # DownstreamError, EmbeddingsError, LabelsError are ValueErrors
        print(f"search: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
