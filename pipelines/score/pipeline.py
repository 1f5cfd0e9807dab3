"""The Ray Data graph of scoring: inputs -> decode tasks -> model actors -> the driver's publisher.

    clips:  one task per slice of ``clips_per_task`` rows of the streams' files (stream and time
            order), reading it with pyarrow and JPEG-decoding it
    videos: inspect each file (one task per file), then one task per time window running
            ingest's decode in memory (``window_clips``: frames, crops, JPEG, log-mel)
      -> map_batches(JPEG decode; clips without audio or video dropped and counted)   CPU tasks
      -> map_batches(ClipEmbedder, ActorPoolStrategy(actors))   one model per actor, GPU or CPU
      -> driver: ``score`` hands each stream's rows, in t order, to its ``StreamRun``.

With CPU actors the decode tasks ask for an actor's CPUs, so Ray Data fuses them into the actors
and every actor reads and decodes its own windows or slices (the pool fills the cluster: ``EmbedConfig.actors_for``);
with GPU actors the decode stays in CPU tasks and the actors only run the model. A crash that loses
blocks is caught by counting: a stream whose clips did not all come back fails.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np
from tqdm import tqdm

from pipelines.ingest.config import IngestConfig
from pipelines.ingest.window import inspect_source_row, time_windows
from pipelines.media.frames import stream_backend
from pipelines.media.info import VideoInfo
from pipelines.media.storage import OutputStore
from pipelines.runtime.datasets import run_map
from pipelines.score.config import EmbedConfig
from pipelines.score.inputs import ClipShape, clip_slice_rows, clip_slices, window_batch_rows
from pipelines.score.model import ClipEmbedder, ScoringModel
from pipelines.score.plans import StreamPlan
from pipelines.score.publish import Publisher, StreamRun


def inspect_videos(plans: list[StreamPlan], publisher: Publisher, ingest: IngestConfig, show_progress: bool) -> list[StreamPlan]:
    """Probe the videos in Ray tasks; a file that cannot be read fails its stream. Returns the readable ones."""
    rows = run_map([{"uri": p.source, "stream_id": p.stream_id} for p in plans],
                   lambda row: inspect_source_row(row, ingest), 1, "inspect", "file", show_progress)
    by_id = {p.stream_id: p for p in plans}
    ready = []
    for row in sorted(rows, key=lambda r: r["stream_id"]):
        plan = by_id[row["stream_id"]]
        if row["error"]:
            publisher.fail(plan, [row["error"]])
            continue
        info = VideoInfo.from_dict(json.loads(row["info_json"]))
        backend, why = stream_backend(ingest.frame_backend, info, plan.video.local_path if plan.video else None,
                                     ingest.frame_skip)
        plan.info = {"input": "videos", **info.to_dict(), "frame_backend": backend, "backend_note": why or ""}
        plan.expected = info.whole_seconds
        ready.append(plan)
    lost = sorted(set(by_id) - {r["stream_id"] for r in rows})
    for stream_id in lost:
        publisher.fail(by_id[stream_id], [f"{by_id[stream_id].source}: its inspect task died (crashed decoder?)"])
    return ready



def window_items(plans: list[StreamPlan], ingest: IngestConfig) -> list[dict[str, Any]]:
    items = []
    for plan in plans:
        info = {k: v for k, v in plan.info.items() if k in VideoInfo.__dataclass_fields__}
        info_json = json.dumps(info)
        for start, seconds in time_windows(VideoInfo.from_dict(info), ingest.window_seconds):
            items.append({"stream_id": plan.stream_id, "uri": plan.source, "start": start, "seconds": seconds,
                          "part_path": "", "info_json": info_json, "backend": plan.info["frame_backend"]})
    return items



def clip_items(plans: list[StreamPlan], clips: str, rows_per_slice: int) -> list[dict[str, Any]]:
    """One item per ``rows_per_slice`` rows of each stream's clips files, in stream and time order (the
    row counts from the files' footers)."""
    import pyarrow.parquet as pq

    fs = OutputStore(clips).fs
    items = []
    for plan in plans:
        for path in plan.files:
            with fs.open_input_file(path) as handle:
                rows = pq.ParquetFile(handle).metadata.num_rows
            items.extend(asdict(piece) for piece in clip_slices(plan.stream_id, path, rows, rows_per_slice))
    return items


def clips_dataset(items: list[dict[str, Any]], clips: str, shape: ClipShape, settings: EmbedConfig):
    """One task per clips slice: read (pyarrow), then decoded for the model (None: no slice).

    The slices are read inside the decode tasks, not by Ray Data's Parquet reader: its file listing
    asks a CPU of its own, which CPU actors holding every CPU would never leave it, so a CPU stood
    idle beside the actors. As from videos, CPU actors now read and decode their own inputs."""
    import ray.data

    if not items:
        return None
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    return dataset.map_batches(clip_slice_rows, fn_kwargs={"clips": clips, "shape": shape}, batch_size=1,
                               batch_format="numpy", num_cpus=settings.decode_cpus)


def videos_dataset(items: list[dict[str, Any]], ingest: IngestConfig, shape: ClipShape, round_trip: bool = True):
    """One task per video window: ingest's decode in memory, then decoded for the model (None: no window);
    ``round_trip`` False hands the raw crops to the model instead of JPEG-encoding and decoding them."""
    import ray.data

    if not items:
        return None
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    return dataset.map_batches(window_batch_rows, fn_kwargs={"config": ingest, "shape": shape, "round_trip": round_trip},
                               batch_size=1,
                               batch_format="numpy", num_cpus=ingest.num_cpus_per_task)



def score(dataset: Any, plans: list[StreamPlan], scoring: ScoringModel, settings: EmbedConfig, store: OutputStore,
           publisher: Publisher, show_progress: bool) -> None:
    """Run the actor pool over the prepared rows and stream the results into per-stream parts.

    An actor call takes one input item as it comes: a decoded video window or clips slice (the
    embedder still runs the model ``batch_size`` clips at a time). Asking Ray Data for ``batch_size``
    rows instead would make it bundle upstream blocks until it has them, and the decode fused into
    the actor would then run many items in one actor while the others wait."""
    import ray

    runs = {p.stream_id: StreamRun(p, store, scoring, settings) for p in plans}
    infos = {p.stream_id: VideoInfo.from_dict({k: v for k, v in p.info.items() if k in VideoInfo.__dataclass_fields__})
             for p in plans if p.info.get("input") == "videos"}

    def finish(run: StreamRun) -> None:
        run.finished = True
        try:
            publisher.complete(run, infos.get(run.plan.stream_id))
        except Exception as exc:  # e.g. the output storage failed: this stream fails, the others go on
            publisher.fail(run.plan, [f"{run.plan.source}: writing the embeddings: {type(exc).__name__}: {exc}"])

    if dataset is None:  # nothing to read (streams without clips): they complete empty
        for run in runs.values():
            finish(run)
        return
    state = ray.put({k: v.detach().cpu() for k, v in scoring.model.state_dict().items()})
    dataset = dataset.map_batches(
        ClipEmbedder,
        fn_constructor_kwargs={**scoring.actor_args(state), "num_gpus": settings.gpus_per_actor,
                               "num_cpus": settings.cpus_per_actor, "batch_size": settings.batch_size},
        batch_size=None,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=settings.actors),
        num_cpus=settings.cpus_per_actor,
        num_gpus=settings.gpus_per_actor,
    )
    dataset.context.execution_options.preserve_order = True  # each stream's rows arrive together, in t order
    total = sum(p.expected for p in plans)
    with tqdm(total=total, desc="embed", unit="clip", disable=not show_progress, mininterval=1.0) as bar:
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                stream_ids = np.asarray(batch["stream_id"]).astype(str)
                for stream_id in dict.fromkeys(stream_ids.tolist()):
                    run = runs[stream_id]
                    if run.finished:
                        continue
                    try:
                        run.take({k: np.asarray(v)[stream_ids == stream_id] for k, v in batch.items()})
                    except Exception as exc:  # staging a part failed (storage): this stream fails
                        run.errors.append(f"{run.plan.source}: writing the embeddings: {type(exc).__name__}: {exc}")
                    if run.received >= run.plan.expected:
                        finish(run)
                bar.update(int(np.asarray(batch["clips"]).sum()))
        except Exception as exc:  # the pipeline itself broke (e.g. no actor could start): unfinished streams fail
            for run in runs.values():
                run.errors.append(f"{run.plan.source}: scoring pipeline failed: {type(exc).__name__}: {exc}")
    for run in runs.values():
        if not run.finished:
            finish(run)

