"""Scoring throughput (issue 5), against an anchor measured in the same run.

    python bench/score.py                        # presets small and x3d_m, 5 min of footage
    python bench/score.py --presets small --minutes 2

Scoring throughput (clips/s) of ``run_embed`` on this machine:
- from clips Parquet (JPEG decode + model), and from raw video (fused decode -> clips in
  memory -> model, nothing written but the embeddings);
- anchor: the model's forward pass alone on clips already decoded in memory (the
  same batch size, one process) -- the pipeline's cost over pure compute is the ratio.
Encoders are randomly initialised (speed does not depend on the weights).
GPU rows (one GPU per actor) need a GPU; without one they print "not measured".
Search latency and recall live in ``bench/search.py``.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import ray  # noqa: E402
import torch  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402

from pipelines.ingest.clips_dataset import read_stream  # noqa: E402
from pipelines.ingest.config import IngestConfig  # noqa: E402
from pipelines.ingest.job import run_ingest  # noqa: E402
from pipelines.runtime.cluster import start_local_ray  # noqa: E402
from pipelines.score.config import EmbedConfig  # noqa: E402
from pipelines.score.job import run_embed  # noqa: E402
from pipelines.synthetic import SyntheticConfig, generate  # noqa: E402
from pipelines.train.args import config_from_args, parse_args  # noqa: E402
from pipelines.train.checkpoint import build_model, load_model, write_model  # noqa: E402
from pipelines.train.data import decode_clips  # noqa: E402

CROPS = {"tiny": 32, "small": 64, "x3d_m": 160}


def footage(cache: Path, minutes: float) -> Path:
    videos = cache / f"score-videos-{minutes:g}min"
    if not (videos / "train.mp4").exists():
        generate(SyntheticConfig(out=videos, minutes=minutes, seed=7, size=(320, 180), fps=10.0, views=("train",)))
    return videos / "train.mp4"


def random_checkpoint(work: Path, preset: str, clips: Path) -> Path:
    config = config_from_args(parse_args(["--clips", str(clips), "--run-dir", str(work / "run"), "--preset", preset,
                                          "--crop-size", str(CROPS[preset])]))
    checkpoint = work / "run" / "checkpoint_step000000000"
    write_model(checkpoint, config, build_model(config).eval())
    return checkpoint


def forward_anchor(checkpoint: Path, clips: Path, batch: int, limit: int = 256) -> float:
    """Clips/s of the model alone on decoded clips in memory (two crops + audio per clip)."""
    model, _ = load_model(str(checkpoint))
    table = read_stream(str(clips), "train").slice(0, limit).to_pydict()
    decoded = decode_clips(table, stream_index={"train": 0}, frames_per_clip=5, n_mels=128, logmel_frames=64)
    video = torch.as_tensor(decoded["video"]).float().div_(255)
    audio = torch.as_tensor(decoded["audio"])
    n = len(video) // 2
    with torch.no_grad():
        model(video[: 2 * min(batch, n)], audio[: 2 * min(batch, n)])  # warm-up
        began = time.perf_counter()
        for start in range(0, 2 * n, 2 * batch):
            model(video[start:start + 2 * batch], audio[start:start + 2 * batch])
    return n / (time.perf_counter() - began)


def scoring(cache: Path, presets: list[str], minutes: float, batch: int) -> list[dict]:
    video = footage(cache, minutes)
    rows = []
    for preset in presets:
        work = cache / f"score-{preset}"
        shutil.rmtree(work / "out", ignore_errors=True)
        clips = cache / f"score-clips-{minutes:g}min-c{CROPS[preset]}"
        if not clips.exists():
            run_ingest([str(video)], str(clips), IngestConfig(crop_size=CROPS[preset]), show_progress=False)
        checkpoint = random_checkpoint(work, preset, clips)
        settings = EmbedConfig(batch_size=batch, actors=1, cpus_per_actor=1.0)
        figures = {"preset": preset, "crop": CROPS[preset], "anchor": forward_anchor(checkpoint, clips, batch)}
        for source in ("clips", "video"):
            began = time.perf_counter()
            kwargs = {"clips": str(clips)} if source == "clips" else {"videos": [str(video)]}
            summary = run_embed(str(checkpoint), str(work / "out" / source), settings=settings, show_progress=False, **kwargs)
            if not summary.ok:
                raise SystemExit(summary.format())
            figures[source] = minutes * 60 / (time.perf_counter() - began)
        rows.append(figures)
        print(f"scored {preset}: {figures}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("out/bench"))
    parser.add_argument("--presets", default="small,x3d_m")
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--batch-size", type=int, default=32, help="clips per model call")
    parser.add_argument("--write-results", action="store_true", help="also write the printed summary into its section of bench/RESULTS.md")
    args = parser.parse_args()

    torch.set_num_threads(2)
    start_local_ray(num_cpus=2)
    scored = scoring(args.cache, [p for p in args.presets.split(",") if p], args.minutes, args.batch_size)
    ray.shutdown()

    report = Printed()
    report(f"\nscoring throughput, clips/s (2 CPU cores, 1 CPU model actor + decode tasks, batch {args.batch_size}, {args.minutes:g} min of 320x180 footage)")
    report(f"{'preset':>7} {'crop':>5} {'model only':>11} {'from clips':>11} {'x':>6} {'from video':>11} {'x':>6}")
    for r in scored:
        report(f"{r['preset']:>7} {r['crop']:>5} {r['anchor']:11.1f} {r['clips']:11.1f} {r['clips'] / r['anchor']:6.2f}"
               f" {r['video']:11.1f} {r['video'] / r['anchor']:6.2f}")
    gpu = "not measured (no GPU on this machine)" if not torch.cuda.is_available() else "run with --gpus-per-actor 1 on the cluster"
    report(f"GPU (x3d_m 160 px, one GPU per actor): {gpu}")
    if args.write_results:
        update_results("Scoring throughput", report.text, command_line(__file__, sys.argv[1:]))


if __name__ == "__main__":
    main()
