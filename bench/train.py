"""Pretraining throughput: samples/s and the share of step time spent waiting
for data, for 1 and 2 CPU workers with the tiny and small presets, in one run.

    python bench/train.py                  # 40 steps per case
    python bench/train.py --steps 20 --presets tiny --workers 1

Clips come from a synthetic stream (generated and ingested once, cached under
--cache). Each case is a real `run_pretrain` (Ray Data -> Ray Train
TorchTrainer, gloo); the numbers are the means of rank 0's per-step metrics
after the first few steps (warm-up). The GPU figures (X3D-M at 160x160, bf16)
come from bench/gpu.sh on a GPU machine.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402

from pipelines.ingest.config import IngestConfig  # noqa: E402
from pipelines.ingest.job import run_ingest  # noqa: E402
from pipelines.runtime.cluster import start_local_ray  # noqa: E402
from pipelines.synthetic import SyntheticConfig, generate  # noqa: E402
from pipelines.train.args import config_from_args, parse_args  # noqa: E402
from pipelines.train.driver import run_pretrain  # noqa: E402

WARMUP_STEPS = 3


CROPS = {"tiny": 32, "small": 64}  # each preset's crop size


def clips_for(cache: Path, minutes: float, crop: int) -> Path:
    clips = cache / f"train-clips-{minutes:g}min" if crop == 32 else cache / f"train-clips-{minutes:g}min-c{crop}"
    if not clips.exists():
        videos = cache / f"train-videos-{minutes:g}min"
        if not videos.exists():
            generate(SyntheticConfig(out=videos, minutes=minutes, seed=5, size=(320, 180), fps=5.0, views=("train",)))
        summary = run_ingest([str(videos)], str(clips), IngestConfig(crop_size=crop), show_progress=False)
        if not summary.ok:
            raise SystemExit(summary.format())
    return clips


def measure(clips: Path, preset: str, workers: int, steps: int, batch: int, work: Path) -> dict[str, float]:
    run_dir = work / f"run-{preset}-{workers}w"
    args = parse_args([
        "--clips", str(clips), "--run-dir", str(run_dir), "--preset", preset, "--crop-size", str(CROPS[preset]),
        "--workers", str(workers), "--cpus-per-worker", "0.5", "--batch-size", str(batch), "--epochs", "50",
        "--warmup-epochs", "0", "--stop-after-steps", str(steps), "--checkpoint-every", str(steps), "--log-every", "1",
    ])
    run_pretrain(config_from_args(args))
    with open(run_dir / "metrics" / "steps.csv") as handle:
        rows = [r for r in csv.DictReader(handle) if int(float(r["step"])) > WARMUP_STEPS]
    mean = lambda key: sum(float(r[key]) for r in rows) / len(rows)  # noqa: E731
    return {"samples_per_s": mean("samples_per_s"), "data_wait": mean("data_wait_fraction"), "steps": len(rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32, help="visual samples per worker")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--presets", default="tiny,small", help=f"comma-separated, of {', '.join(CROPS)}")
    parser.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--cache", type=Path, default=Path("out/bench"))
    parser.add_argument("--write-results", action="store_true", help="also write the printed summary into its section of bench/RESULTS.md")
    args = parser.parse_args()

    start_local_ray(num_cpus=2)
    presets = [p for p in args.presets.split(",") if p]
    counts = [int(w) for w in args.workers.split(",") if w]
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    results = {(p, w): measure(clips_for(args.cache, args.minutes, CROPS[p]), p, w, args.steps, args.batch_size, work)
               for p in presets for w in counts}
    shutil.rmtree(work, ignore_errors=True)

    report = Printed()
    report(f"\npretraining throughput, batch {args.batch_size} visual samples per worker (0.5 CPU each),"
           f" CPU (2 cores), steps {WARMUP_STEPS + 1}..{args.steps}")
    report("| preset | crop | workers | samples/s | × 1 worker | waiting for data |")
    report("|---|---:|---:|---:|---:|---:|")
    for (preset, workers), r in results.items():
        one = results.get((preset, 1), r)["samples_per_s"]
        report(f"| {preset} | {CROPS[preset]} px | {workers} | {r['samples_per_s']:.1f} | {r['samples_per_s'] / one:.2f} | "
               f"{r['data_wait']:.0%} |")
    if not torch.cuda.is_available():
        report("GPU (X3D-M 160x160, bf16): not measured here, no GPU on this machine; bench/gpu.sh measures it")
    if args.write_results:
        update_results("Pretraining throughput", report.text, command_line(__file__, sys.argv[1:]))


if __name__ == "__main__":
    main()
