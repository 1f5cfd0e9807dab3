"""Scoring at day scale (issue 16): fused from raw video and from clips, against two anchors in the same run.

    python bench/score.py                                # 10 and 60 min of 1280x720 30 fps; presets small and x3d_m
    python bench/score.py --minutes 10 --presets small   # a quick look

Per preset and footage length (the 720p30 streams of ``bench/ingest.py``, cached under --cache):
- **decode-only anchor**: the ingest decode of the file at the preset's settings (every window's
  frame selection at the crop size and its audio, ``pipelines.media``), nothing else, in a process
  pool of all cores;
- **forward-only anchor**: the scoring embedder (``ClipEmbedder``) on in-memory clips, in as many
  processes at once as the scoring pool has actors, each at an actor's batch size and threads,
  timed on a sample and scaled to the footage's clips;
- **fused from video**, exact (ingest's JPEG round trip) and with ``--raw-crops``, and **from
  clips** (ingested beforehand, not timed): ``run_embed``'s scoring time on a local Ray started
  once (start-up and probing are not per stream and not counted), with the settings ``EmbedConfig``
  chooses for this machine;
- **memory**: the driver's peak RSS and the peak of the summed RSS of this Ray's workers;
- **raw crops against exact**: the cosine between their v embeddings (min and mean).
The figure is the ratio of each scoring time to the slower anchor (target <= 1.25); a day is 24
times the 60-minute time per camera. Encoders are randomly initialised (speed does not depend on
the weights).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import ray  # noqa: E402
import torch  # noqa: E402
from ingest import WorkerMemory, stream_for  # noqa: E402  (bench/ingest.py: the same footage and memory probe)
from results import Printed, command_line, update_results  # noqa: E402

from pipelines.ingest.clip_table import frame_targets  # noqa: E402
from pipelines.ingest.clips_dataset import read_stream  # noqa: E402
from pipelines.ingest.config import IngestConfig  # noqa: E402
from pipelines.ingest.job import run_ingest  # noqa: E402
from pipelines.ingest.window import time_windows  # noqa: E402
from pipelines.media.audio import read_audio  # noqa: E402
from pipelines.media.frames import select_frames_pyav  # noqa: E402
from pipelines.media.info import VideoInfo, inspect_video  # noqa: E402
from pipelines.runtime.cluster import start_local_ray  # noqa: E402
from pipelines.score.config import EmbedConfig  # noqa: E402
from pipelines.score.embeddings import read_embeddings  # noqa: E402
from pipelines.score.job import run_embed, with_actors_for_cluster  # noqa: E402
from pipelines.score.model import ClipEmbedder, ScoringModel  # noqa: E402
from pipelines.train.args import config_from_args, parse_args  # noqa: E402
from pipelines.train.checkpoint import build_model, write_model  # noqa: E402
from pipelines.train.data import decode_clips  # noqa: E402

CROPS = {"tiny": 32, "small": 64, "x3d_m": 160}


def random_checkpoint(work: Path, preset: str, clips: Path) -> Path:
    config = config_from_args(parse_args(["--clips", str(clips), "--run-dir", str(work / "run"), "--preset", preset,
                                          "--crop-size", str(CROPS[preset])]))
    checkpoint = work / "run" / "checkpoint_step000000000"
    write_model(checkpoint, config, build_model(config).eval())
    return checkpoint


def _decode_window(args: tuple[str, str, int, int, int]) -> int:
    """One window's ingest decode: the frames shown at the targets, scaled to the crop size, and the audio."""
    os.environ["OMP_NUM_THREADS"] = "1"
    uri, info_json, start, seconds, crop = args
    info = VideoInfo.from_dict(json.loads(info_json))
    config = IngestConfig(crop_size=crop)
    selection = select_frames_pyav(uri, info, frame_targets(start, seconds, config), crop)
    read_audio(uri, info, start, seconds, config.logmel.sample_rate)
    return len(selection.images)


def decode_anchor(video: Path, crop: int, cpus: int) -> float:
    """Seconds to run the ingest decode of every window of ``video`` on a pool of ``cpus`` processes."""
    info = inspect_video(str(video))
    info_json = json.dumps(info.to_dict())
    windows = [(str(video), info_json, start, seconds, crop) for start, seconds in time_windows(info, 60)]
    with multiprocessing.get_context("spawn").Pool(cpus) as pool:
        pool.map(_decode_window, windows[:cpus])  # warm-up: imports in every process
        began = time.perf_counter()
        pool.map(_decode_window, windows, chunksize=1)
        return time.perf_counter() - began


_FORWARD: dict = {}


def _load_forward(checkpoint: str, clips: str, batch: int, threads: int, sample: int) -> None:
    """Pool initializer: the embedder at the actor's batch and threads, and ``sample`` decoded clips in memory."""
    torch.set_num_threads(threads)
    scoring = ScoringModel.load(checkpoint)
    shape = scoring.model_config
    table = read_stream(clips, "train").slice(0, sample).to_pydict()
    decoded = decode_clips(table, stream_index={"train": 0}, frames_per_clip=shape.visual.frames,
                           n_mels=shape.audio.n_mels, logmel_frames=shape.audio.frames)
    video, audio = decoded["video"].reshape(-1, 2, *decoded["video"].shape[1:]), decoded["audio"][::2]
    embedder = ClipEmbedder.in_process(scoring, batch_size=batch)
    embedder.embed(video[:batch], audio[:batch])  # warm-up
    _FORWARD.update(embedder=embedder, video=video, audio=audio)


def _time_forward(_: int) -> float:
    """Seconds per clip of this process's embedder over its in-memory clips."""
    began = time.perf_counter()
    _FORWARD["embedder"].embed(_FORWARD["video"], _FORWARD["audio"])
    return (time.perf_counter() - began) / len(_FORWARD["video"])


def forward_anchor(checkpoint: Path, clips: Path, settings: EmbedConfig, total: int, sample: int = 256) -> float:
    """Seconds for the model alone to embed ``total`` clips with the scoring pool's shape: ``settings.actors``
    processes at once, each at the actor's batch and threads on ``sample`` clips in memory (the slowest one's
    time per clip, scaled to its share of ``total``)."""
    args = (str(checkpoint), str(clips), settings.batch_size, max(1, int(settings.cpus_per_actor)), sample)
    with multiprocessing.get_context("spawn").Pool(settings.actors, initializer=_load_forward, initargs=args) as pool:
        per_clip = pool.map(_time_forward, range(settings.actors), chunksize=1)
    return max(per_clip) * total / settings.actors


def timed_embed(checkpoint: Path, out: Path, settings: EmbedConfig, **inputs) -> tuple[float, float]:
    """run_embed's scoring seconds and the peak summed worker RSS (MB) while it ran."""
    shutil.rmtree(out, ignore_errors=True)
    with WorkerMemory() as memory:
        summary = run_embed(str(checkpoint), str(out), settings=settings, show_progress=False, **inputs)
    if not summary.ok:
        raise SystemExit(summary.format())
    return summary.scoring_seconds, memory.peak


def measure(preset: str, minutes: float, cache: Path, cpus: int) -> dict:
    video = stream_for(minutes, cache)
    crop = CROPS[preset]
    work = cache / f"score-{preset}"
    clips = cache / f"score-clips-720p30-{minutes:g}min-c{crop}"
    if not clips.exists():
        summary = run_ingest([str(video)], str(clips), IngestConfig(crop_size=crop), show_progress=False)
        if not summary.ok:
            raise SystemExit(summary.format())
    checkpoint = random_checkpoint(work, preset, clips)
    settings = with_actors_for_cluster(EmbedConfig())  # what run_embed resolves on this Ray
    total = int(minutes * 60)
    figures = {"preset": preset, "crop": crop, "minutes": minutes, "clips": total, "actors": settings.actors,
               "batch": settings.batch_size, "decode_s": decode_anchor(video, crop, cpus),
               "forward_s": forward_anchor(checkpoint, clips, settings, total)}
    out = work / "out"
    figures["video_s"], figures["video_mb"] = timed_embed(checkpoint, out / "video", settings, videos=[str(video)])
    raw = replace(settings, jpeg_round_trip=False)
    figures["raw_s"], figures["raw_mb"] = timed_embed(checkpoint, out / "raw", raw, videos=[str(video)])
    from_clips = with_actors_for_cluster(EmbedConfig())
    figures["clips_actors"] = from_clips.actors
    figures["clips_s"], figures["clips_mb"] = timed_embed(checkpoint, out / "clips", from_clips, clips=str(clips))
    exact, moved = read_embeddings(str(out / "video")), read_embeddings(str(out / "raw"))
    cosine = (exact.v * moved.v).sum(1) / np.maximum(np.linalg.norm(exact.v, axis=1) * np.linalg.norm(moved.v, axis=1), 1e-12)
    figures["raw_cos_min"], figures["raw_cos_mean"] = float(cosine.min()), float(cosine.mean())
    print(f"measured {preset} {minutes:g} min: {figures}", flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("out/bench"))
    parser.add_argument("--presets", default="small,x3d_m")
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0])
    parser.add_argument("--write-results", action="store_true", help="also write the printed summary into its section of bench/RESULTS.md")
    args = parser.parse_args()

    cpus = os.cpu_count() or 1
    start_local_ray(num_cpus=cpus)
    rows = [measure(preset, minutes, args.cache, cpus) for preset in args.presets.split(",") if preset
            for minutes in args.minutes]
    ray.shutdown()
    driver_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    report = Printed()
    report(f"scoring 1280x720 30 fps footage, {cpus} CPU(s), EmbedConfig defaults ({rows[0]['actors']} actor(s) "
           f"of {EmbedConfig().cpus_per_actor:g} CPU from video, {rows[0]['clips_actors']} from clips, batch "
           f"{rows[0]['batch']}), seconds (× the slower anchor)")
    report("| preset | footage | decode-only s | forward-only s | from video s | raw crops s | from clips s | "
           "workers' peak MB (video / raw / clips) | a day per camera, from video |")
    report("|---|---|---:|---:|---:|---:|---:|---|---:|")
    for r in rows:
        slower = max(r["decode_s"], r["forward_s"])
        cells = [f"{r[k]:.1f} ({r[k] / slower:.2f}×)" for k in ("video_s", "raw_s", "clips_s")]
        day = r["video_s"] * 86_400 / (r["minutes"] * 60) / 3600
        report(f"| {r['preset']} {r['crop']} px | {r['minutes']:g} min | {r['decode_s']:.1f} | {r['forward_s']:.1f} | "
               f"{' | '.join(cells)} | {r['video_mb']:.0f} / {r['raw_mb']:.0f} / {r['clips_mb']:.0f} | {day:.1f} h |")
    report(f"driver peak RSS: {driver_mb:.0f} MB; raw crops against exact, cosine of v: " + ", ".join(
        f"{r['preset']} {r['minutes']:g} min min {r['raw_cos_min']:.4f} mean {r['raw_cos_mean']:.4f}" for r in rows))
    report("decode-only: the ingest decode (frames at the targets, scaled; audio) on a pool of all cores; forward-only: "
           "the embedder on in-memory clips in one process per actor at once, at the actor's batch and threads, "
           "scaled from 256 clips each")
    if args.write_results:
        update_results("Scoring throughput", report.text, command_line(__file__, sys.argv[1:]))


if __name__ == "__main__":
    main()
