"""Batch scoring (Ray Data): clips Parquet or raw videos -> embeddings Parquet (DESIGN §3.2).

    run_embed(checkpoint, output, clips=DIR)        score every complete stream of a clips root
    run_embed(checkpoint, output, videos=[...])     fused decode -> embed, no clips on disk
    embed_video_file(path, checkpoint)              one short file in this process (no Ray), for search queries

Pipeline (every stage a Ray Data operator, streaming; rows keep their input order):

    clips:  read_parquet(the streams' files, in stream and time order)
    videos: probe each file (one task per file), then one task per time window running
            ingest's decode in memory (``window_clips``: frames, crops, JPEG, log-mel)
      -> map_batches(JPEG decode; clips without audio or video dropped and counted)   CPU tasks
      -> map_batches(ClipEmbedder, ActorPoolStrategy(actors))   one model per actor, GPU or CPU
         (with CPU actors Ray Data fuses the decode into the actors, as their resources match;
         with GPU actors the decode stays in CPU tasks and the actors only run the model)
      -> driver: each stream's rows, in t order, staged as Parquet parts of ``rows_per_file``
         rows as they arrive (driver memory is one part per open stream), then published.

Output layout: ``<output>/stream_id=<id>/part-NNNNN.parquet`` + ``manifest.json`` (see
``pipelines.score.embeddings``), ``<output>/_embed_config.json`` (the last scoring run's checkpoint,
λ, settings and inputs) and ``<output>/_staging/`` while streams are in progress.

Decisions (where the design is silent):
- Rows: one per clip with both audio and video; a clip lacking either gives no row and is
  counted in the manifest (seconds_without_audio/video; ``info.clips_unscored``).
- Resume is per stream: a stream whose manifest is complete for the same config hash
  (checkpoint id, λ, scoring rules, and the input: the clips stream's ingest config hash or the
  ingest config used to decode the video) and the same input (clips stream version or video
  file) is skipped. A stream interrupted mid-way is scored again from its start.
- One output root holds one model (``read_embeddings`` refuses a mix). A run whose checkpoint
  differs from the one of any complete stream in the output is refused (exit 2) unless
  ``overwrite``; with ``overwrite`` every stream of the run is scored again, and streams of
  the output that are not part of the run and still hold another model are named in the summary.
- Nothing published is half-written: parts are staged under ``_staging/<stream>/`` (atomic
  writes), and a finished stream is published by marking its manifest running, moving the parts
  in and marking it complete, so readers see the old rows, no rows, or the new rows.
  A stream that fails publishes no rows (manifest ``failed`` with the reasons); when it
  already had complete embeddings from an earlier run, those are kept and the summary says so.
- Videos are decoded with the ingest settings that match the model (crop size, frames) and the
  ingest defaults otherwise (JPEG quality 90, PyAV frames with fallback), so scoring a video
  equals ingesting it with those settings and scoring the clips. Probing, truncation checks and
  failures behave as in ingest: a broken video fails its stream only.
- Clips input: every completely ingested stream of the clips root is scored (others are not
  readable yet). Video input: a path that names nothing is an input error in the summary (exit 1).
- A crash that loses blocks (a worker died) is caught by counting: a stream whose clips did not
  all come back fails, naming how many are missing.
- Numbers: fp32 in eval mode; on GPUs PyTorch's defaults apply (cuDNN may use TF32 convolutions),
  so GPU and CPU embeddings agree to about 1e-3 relative, not bit for bit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.fs as pafs
from tqdm import tqdm

from pipelines.ingest.clips_dataset import stream_manifests
from pipelines.score.inputs import ClipShape, clip_batch_rows, window_batch_rows, window_task_rows
from pipelines.score.model import ClipEmbedder, EmbedError, ScoringModel
from pipelines.score.embeddings import Embeddings, embeddings_schema, embeddings_table
from pipelines.media.frames import stream_backend
from pipelines.ingest.job import ensure_ray, probe_row, run_map, source_key, time_windows, truncation_error, window_warnings
from pipelines.ingest.config import FRAME_BACKENDS, IngestConfig
from pipelines.runtime.manifest import (
    STATUS_COMPLETE, STATUS_FAILED, STATUS_RUNNING, StreamJobSummary, StreamManifest, stream_dir,
)
from pipelines.media.info import MediaError, VideoInfo, probe
from pipelines.media.sources import InputError, VideoSource, resolve_inputs
from pipelines.media.storage import OutputStore
from pipelines.train.data import CLIP_COLUMNS, ClipsError, check_compatible, inspect_clips
from pipelines.ingest.window import WindowResult, WindowTask

__all__ = ["EmbedError", "EmbedSettings", "EmbedSummary", "StreamOutcome", "embed_video_file", "run_embed"]

CONFIG_FILE = "_embed_config.json"
STAGING = "_staging"
STATUS_SKIPPED = "skipped"
# How rows are made; part of every stream's config hash (a change re-scores).
SCORING = {"version": 1, "v_emb": "mean of the two crops' f_v", "a_emb": "f_a", "av_dist": "D(v, a) with the run's lambda",
           "rows": "clips with audio and video", "precision": "fp32", "mode": "eval"}


@dataclass(frozen=True)
class EmbedSettings:
    """How scoring runs; only the video decode fields change the rows (they are in the hash via IngestConfig)."""

    batch_size: int = 64  # clips per model call in an actor
    actors: int = 1  # model actors in the pool
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0  # 1 on a GPU cluster: one GPU per actor
    clips_per_task: int = 32  # clip rows per JPEG-decode task (clips input)
    rows_per_file: int = 1200  # rows per embeddings Parquet part
    compression: str = "zstd"
    window_seconds: int = 60  # videos: seconds decoded per task
    frame_backend: str = "pyav"  # videos: as in ingest
    jpeg_quality: int = 90  # videos: the crops go through the same JPEG round trip as ingested clips

    def __post_init__(self) -> None:
        for name in ("batch_size", "actors", "clips_per_task", "rows_per_file", "window_seconds"):
            if getattr(self, name) < 1:
                raise EmbedError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)!r}")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise EmbedError(f"cpus-per-actor must be > 0 and gpus-per-actor >= 0, got {self.cpus_per_actor}, "
                             f"{self.gpus_per_actor}")
        if self.frame_backend not in FRAME_BACKENDS:
            raise EmbedError(f"frame-backend must be one of {FRAME_BACKENDS}, got {self.frame_backend!r}")


@dataclass
class StreamOutcome:
    stream_id: str
    source: str
    status: str  # complete, skipped or failed
    rows: int = 0
    unscored: int = 0  # clips without audio or video
    errors: list[str] = field(default_factory=list)


@dataclass
class EmbedSummary(StreamJobSummary):
    output: str
    model_id: str
    streams: list[StreamOutcome]
    input_errors: list[str]
    warnings: list[str]
    wall_seconds: float
    scoring_seconds: float = 0.0  # decode + embed + write, without start-up, probing and checks

    def _of(self, status: str) -> list[StreamOutcome]:
        return [s for s in self.streams if s.status == status]

    def format(self) -> str:
        done = self._of(STATUS_COMPLETE)
        rows = sum(s.rows for s in done)
        clips = rows + sum(s.unscored for s in done)
        rate = clips / self.scoring_seconds if self.scoring_seconds > 0 else 0.0
        lines = [
            f"embed summary -> {self.output} (model {self.model_id})",
            (f"  streams: {len(done)} scored, {len(self._of(STATUS_SKIPPED))} already complete (skipped), "
             f"{len(self.failed)} failed"),
            f"  clips: {rows} scored, {clips - rows} without audio or video (no row)",
            f"  wall time: {self.wall_seconds:.1f} s; scoring {self.scoring_seconds:.1f} s, {rate:.1f} clips/s",
        ]
        for stream in self.failed:
            lines.append(f"  FAILED {stream.stream_id} ({stream.source}):")
            lines.extend(f"    - {error}" for error in stream.errors)
        lines.extend(f"  INPUT ERROR {error}" for error in self.input_errors)
        lines.extend(f"  WARNING {warning}" for warning in self.warnings)
        return "\n".join(lines)


@dataclass
class _Plan:
    """One stream to score: where it comes from, what its output is keyed by."""

    stream_id: str
    source: str
    source_key: str
    config_hash: str
    config: dict[str, Any]
    info: dict[str, Any]
    expected: int = 0  # input clips
    files: list[str] = field(default_factory=list)  # clips input: the stream's Parquet files
    video: VideoSource | None = None
    previous: StreamManifest | None = None


def _short_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def ingest_config_for(scoring: ScoringModel, settings: EmbedSettings) -> IngestConfig:
    """The ingest settings that decode a video into the clips this model takes."""
    model = scoring.model_config
    try:
        config = IngestConfig(crop_size=model.visual.crop_size, frames_per_clip=model.visual.frames,
                              window_seconds=settings.window_seconds, frame_backend=settings.frame_backend,
                              jpeg_quality=settings.jpeg_quality)
    except ValueError as exc:
        raise EmbedError(f"checkpoint {str(scoring.path)!r}: its clips cannot be decoded from videos: {exc}") from None
    mel = (config.logmel.n_mels, config.logmel.frames_per_clip)
    if mel != (model.audio.n_mels, model.audio.frames):
        raise EmbedError(f"checkpoint {str(scoring.path)!r}: model audio {model.audio.n_mels}x{model.audio.frames} "
                         f"!= the log-mel {mel[0]}x{mel[1]} that ingest computes")
    return config


def _model_record(scoring: ScoringModel) -> dict[str, Any]:
    return {"model": scoring.model_id, "checkpoint": str(scoring.path), "lam": scoring.lam, "dim": scoring.dim,
            "scoring": SCORING}


def _clip_plans(clips: str, scoring: ScoringModel) -> list[_Plan]:
    try:
        info = inspect_clips(clips)
        check_compatible(info, scoring.model_config)
    except ClipsError as exc:
        raise EmbedError(str(exc)) from None
    root = clips if "://" in clips else str(Path(clips).resolve())
    store = OutputStore(clips)
    plans = []
    for manifest in stream_manifests(clips):
        if manifest.status != STATUS_COMPLETE or manifest.stream_id not in info.stream_ids:
            continue
        version = [manifest.config_hash, manifest.source_key, manifest.rows, manifest.files, manifest.updated_at]
        config = {**_model_record(scoring), "input": "clips", "clips_root": root, "clips_config_hash": manifest.config_hash}
        plans.append(_Plan(
            stream_id=manifest.stream_id,
            source=f"{root.rstrip('/')}/stream_id={manifest.stream_id}",
            source_key=_short_hash(version),
            config_hash=_short_hash({k: config[k] for k in ("model", "lam", "scoring", "clips_config_hash")}),
            config=config,
            info={"input": "clips", "clips_source": manifest.source, "clips": manifest.rows},
            expected=manifest.rows,
            files=[f"{stream_dir(store, manifest.stream_id)}/{name}" for name in manifest.files],
        ))
    return plans


def _video_plans(sources: list[VideoSource], scoring: ScoringModel, ingest: IngestConfig) -> list[_Plan]:
    config = {**_model_record(scoring), "input": "videos", "ingest": ingest.to_dict(), "ingest_hash": ingest.output_hash()}
    config_hash = _short_hash({k: config[k] for k in ("model", "lam", "scoring", "ingest_hash")})
    return [_Plan(s.stream_id, s.uri, source_key(s), config_hash, config, {"input": "videos"}, video=s)
            for s in sorted(sources, key=lambda s: s.stream_id)]


def _same_place(a: str, b: str) -> bool:
    def norm(path: str) -> str:
        return path.rstrip("/") if "://" in path else str(Path(path).resolve())

    return norm(a) == norm(b)


def _other_models(store: OutputStore, model_id: str) -> dict[str, str]:
    """Complete streams of the output that hold another model: {stream_id: model}."""
    if not store.exists(store.path()):
        return {}
    found = {}
    for manifest in stream_manifests(store.root):
        model = (manifest.config or {}).get("model")
        if manifest.status == STATUS_COMPLETE and model != model_id:
            found[manifest.stream_id] = str(model)
    return found


def _check_cluster(settings: EmbedSettings) -> None:
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    need_cpu, need_gpu = settings.actors * settings.cpus_per_actor, settings.actors * settings.gpus_per_actor
    if need_gpu > gpus:
        raise EmbedError(f"{settings.actors} actors x {settings.gpus_per_actor:g} GPU need {need_gpu:g} GPUs; "
                         f"the cluster has {gpus:g}")
    if need_cpu + 1 > cpus:
        raise EmbedError(f"{settings.actors} actors x {settings.cpus_per_actor:g} CPU need {need_cpu:g} CPUs plus one "
                         f"for the decode tasks; the cluster has {cpus:g} (lower --actors or --cpus-per-actor)")


class _StreamRun:
    """The driver's state of one stream being scored: counts, errors, and the part being filled."""

    def __init__(self, plan: _Plan, store: OutputStore, scoring: ScoringModel, settings: EmbedSettings) -> None:
        self.plan, self.store, self.scoring, self.settings = plan, store, scoring, settings
        self.staging = store.path(STAGING, plan.stream_id)
        self.received = self.no_audio = self.no_video = self.unscored = self.rows = 0
        self.errors: list[str] = []
        self.windows: list[WindowResult] = []
        self.parts: list[str] = []
        self.buffer: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.buffered = 0
        self.last_t = -1
        self.finished = False

    def take(self, rows: dict[str, np.ndarray]) -> None:
        """One stream's slice of an output batch, in arrival order."""
        self.received += int(rows["clips"].sum())
        self.no_audio += int(rows["no_audio"].sum())
        self.no_video += int(rows["no_video"].sum())
        self.unscored += int(rows["unscored"].sum())
        for window in rows["window"]:
            if window:
                self.windows.append(WindowResult(**json.loads(window)))
        for error in dict.fromkeys(e for e in rows["error"] if e):
            self.errors.append(error if error.startswith(self.plan.source) else f"{self.plan.source}: {error}")
        if self.errors:
            return  # the stream fails; stop staging its rows
        scored = (rows["t"] >= 0) & (rows["error"] == "")
        t = rows["t"][scored]
        if t.size == 0:
            return
        if t[0] <= self.last_t or np.any(np.diff(t) <= 0):
            self.errors.append(f"{self.plan.source}: rows arrived out of time order (t {int(t[0])} after {self.last_t})")
            return
        self.last_t = int(t[-1])
        self.buffer.append((t, rows["v_emb"][scored], rows["a_emb"][scored], rows["av_dist"][scored]))
        self.buffered += t.size
        while self.buffered >= self.settings.rows_per_file:
            self._write_part(self.settings.rows_per_file)

    def _write_part(self, n: int) -> None:
        t, v, a, d = (np.concatenate([b[k] for b in self.buffer]) for k in range(4))
        rest = (t[n:], v[n:], a[n:], d[n:])
        self.buffer = [rest] if rest[0].size else []
        self.buffered = rest[0].size
        scoring = self.scoring
        table = embeddings_table(self.plan.stream_id, t[:n], v[:n], a[:n], d[:n], scoring.model_id, scoring.lam)
        path = f"{self.staging}/part-{len(self.parts):05d}.parquet"
        schema = embeddings_schema(scoring.dim, scoring.model_id, scoring.lam)
        self.rows += self.store.write_parquet(path, [table], schema, self.settings.compression)
        self.parts.append(path)

    def check(self, info: VideoInfo | None) -> list[str]:
        """Errors that fail the stream once its input is exhausted."""
        errors = list(self.errors)
        if self.received < self.plan.expected:
            errors.append(f"{self.plan.source}: only {self.received} of {self.plan.expected} clips came back from "
                          f"the workers (a worker died?)")
        elif self.received > self.plan.expected:
            errors.append(f"{self.plan.source}: {self.received} clips came back, {self.plan.expected} expected")
        if not errors and info is not None:
            truncated = truncation_error(self.plan.source, info, self.windows)
            if truncated:
                errors.append(truncated)
        return errors

    def flush(self) -> None:
        if self.buffered:
            self._write_part(self.buffered)


class _Publisher:
    """Turns finished streams into published output (or failed manifests) and outcomes."""

    def __init__(self, store: OutputStore) -> None:
        self.store = store
        self.outcomes: dict[str, StreamOutcome] = {}

    def manifest(self, plan: _Plan, status: str) -> StreamManifest:
        return StreamManifest(plan.stream_id, plan.source, status, plan.config_hash, plan.config, info=dict(plan.info),
                              source_key=plan.source_key)

    def start(self, plan: _Plan) -> None:
        """Forget leftovers of an interrupted run; a stream seen for the first time says it is running."""
        self.store.delete_dir(self.store.path(STAGING, plan.stream_id))
        if plan.previous is None or plan.previous.status != STATUS_COMPLETE:
            self.manifest(plan, STATUS_RUNNING).save(self.store)

    def fail(self, plan: _Plan, errors: list[str]) -> None:
        store = self.store
        store.delete_dir(store.path(STAGING, plan.stream_id))
        if plan.previous is not None and plan.previous.status == STATUS_COMPLETE:
            kept = f"its earlier embeddings (model {plan.previous.config.get('model')}) are kept"
            self.outcomes[plan.stream_id] = StreamOutcome(plan.stream_id, plan.source, STATUS_FAILED,
                                                          errors=errors + [kept])
            return
        for stale in store.list_files(stream_dir(store, plan.stream_id), ".parquet"):
            store.delete_file(stale)
        manifest = self.manifest(plan, STATUS_FAILED)
        manifest.errors = errors
        manifest.save(store)
        self.outcomes[plan.stream_id] = StreamOutcome(plan.stream_id, plan.source, STATUS_FAILED, errors=errors)

    def complete(self, run: _StreamRun, info: VideoInfo | None) -> None:
        errors = run.check(info)
        if errors:
            self.fail(run.plan, errors)
            return
        run.flush()
        store, plan = self.store, run.plan
        manifest = self.manifest(plan, STATUS_RUNNING)  # readers skip the stream while its files change
        manifest.save(store)
        directory = stream_dir(store, plan.stream_id)
        names = [p.rsplit("/", 1)[-1] for p in run.parts]
        for part, name in zip(run.parts, names):
            store.fs.move(part, f"{directory}/{name}")
        for stale in store.list_files(directory, ".parquet"):
            if stale.rsplit("/", 1)[-1] not in names:
                store.delete_file(stale)
        manifest.status, manifest.files, manifest.rows = STATUS_COMPLETE, names, run.rows
        manifest.seconds_without_audio, manifest.seconds_without_video = run.no_audio, run.no_video
        manifest.info["clips_unscored"] = run.unscored
        manifest.frame_backend = str(plan.info.get("frame_backend", ""))
        manifest.warnings = [plan.info["backend_note"]] if plan.info.get("backend_note") else []
        if run.windows:
            manifest.warnings += window_warnings(run.windows)
            for window in run.windows:
                if window.backend:
                    manifest.windows_by_backend[window.backend] = manifest.windows_by_backend.get(window.backend, 0) + 1
        if run.unscored:
            manifest.warnings.append(f"{run.unscored} clips without audio or video were not scored (no rows)")
        manifest.save(store)
        store.delete_dir(store.path(STAGING, plan.stream_id))
        self.outcomes[plan.stream_id] = StreamOutcome(plan.stream_id, plan.source, STATUS_COMPLETE, run.rows, run.unscored)


def _probe_videos(plans: list[_Plan], publisher: _Publisher, ingest: IngestConfig, show_progress: bool) -> list[_Plan]:
    """Probe the videos in Ray tasks; a file that cannot be read fails its stream. Returns the readable ones."""
    rows = run_map([{"uri": p.source, "stream_id": p.stream_id} for p in plans], probe_row, 1, "probe", "file",
                   show_progress)
    by_id = {p.stream_id: p for p in plans}
    ready = []
    for row in sorted(rows, key=lambda r: r["stream_id"]):
        plan = by_id[row["stream_id"]]
        if row["error"]:
            publisher.fail(plan, [row["error"]])
            continue
        info = VideoInfo.from_dict(json.loads(row["info_json"]))
        backend, why = stream_backend(ingest.frame_backend, info, plan.video.local_path if plan.video else None)
        plan.info = {"input": "videos", **info.to_dict(), "frame_backend": backend, "backend_note": why or ""}
        plan.expected = info.whole_seconds
        ready.append(plan)
    lost = sorted(set(by_id) - {r["stream_id"] for r in rows})
    for stream_id in lost:
        publisher.fail(by_id[stream_id], [f"{by_id[stream_id].source}: its probe task died (crashed decoder?)"])
    return ready


def _window_items(plans: list[_Plan], ingest: IngestConfig) -> list[dict[str, Any]]:
    items = []
    for plan in plans:
        info = {k: v for k, v in plan.info.items() if k in VideoInfo.__dataclass_fields__}
        info_json = json.dumps(info)
        for start, seconds in time_windows(VideoInfo.from_dict(info), ingest.window_seconds):
            items.append({"stream_id": plan.stream_id, "uri": plan.source, "start": start, "seconds": seconds,
                          "part_path": "", "info_json": info_json, "backend": plan.info["frame_backend"]})
    return items


def _clips_dataset(files: list[str], clips: str, shape: ClipShape, settings: EmbedSettings):
    """Clip rows of the given files, in file order, decoded for the model (None: no file)."""
    import ray.data

    if not files:
        return None
    dataset = ray.data.read_parquet(files, columns=CLIP_COLUMNS, filesystem=OutputStore(clips).fs)
    return dataset.map_batches(clip_batch_rows, fn_kwargs={"shape": shape}, batch_size=settings.clips_per_task,
                               batch_format="numpy", num_cpus=1)


def _videos_dataset(items: list[dict[str, Any]], ingest: IngestConfig, shape: ClipShape):
    """One task per video window: ingest's decode in memory, then decoded for the model (None: no window)."""
    import ray.data

    if not items:
        return None
    dataset = ray.data.from_items(items, override_num_blocks=len(items))
    return dataset.map_batches(window_batch_rows, fn_kwargs={"config": ingest, "shape": shape}, batch_size=1,
                               batch_format="numpy", num_cpus=ingest.num_cpus_per_task)


def _score(dataset: Any, plans: list[_Plan], scoring: ScoringModel, settings: EmbedSettings, store: OutputStore,
           publisher: _Publisher, show_progress: bool) -> None:
    """Run the actor pool over the prepared rows and stream the results into per-stream parts."""
    import ray

    runs = {p.stream_id: _StreamRun(p, store, scoring, settings) for p in plans}
    infos = {p.stream_id: VideoInfo.from_dict({k: v for k, v in p.info.items() if k in VideoInfo.__dataclass_fields__})
             for p in plans if p.info.get("input") == "videos"}

    def finish(run: _StreamRun) -> None:
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
        batch_size=settings.batch_size,
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


def run_embed(
    checkpoint: str,
    output: str,
    *,
    clips: str | None = None,
    videos: list[str] | None = None,
    settings: EmbedSettings = EmbedSettings(),
    overwrite: bool = False,
    show_progress: bool = True,
    ray_address: str | None = None,
) -> EmbedSummary:
    """Score a clips root or video files into ``output``.

    ``EmbedError`` (or ``InputError`` for two videos with one stem) for bad input, raised
    before anything is written; a video or stream that fails is reported in the summary.
    """
    began = time.perf_counter()
    if (clips is None) == (not videos):
        raise EmbedError("give either a clips directory or video files, not both or neither")
    scoring = ScoringModel.load(checkpoint)
    shape = ClipShape.of_model(scoring.model_config)
    store = OutputStore(output)
    input_errors: list[str] = []
    ingest: IngestConfig | None = None
    if clips is not None:
        if _same_place(clips, output):
            raise EmbedError(f"output {output!r} is the clips directory; choose another --output")
        plans = _clip_plans(clips, scoring)
    else:
        ingest = ingest_config_for(scoring, settings)
        resolved = resolve_inputs(list(videos or []))
        plans = _video_plans(resolved.sources, scoring, ingest)
        input_errors = [f"{m.uri}: {m.reason}" for m in resolved.missing]
    others = _other_models(store, scoring.model_id)
    if others and not overwrite:
        held = ", ".join(f"{sid} ({model})" for sid, model in sorted(others.items()))
        raise EmbedError(f"output {output!r} holds embeddings of another model: {held}; pass --overwrite to score "
                         f"this run's streams with {scoring.model_id}, or choose another --output")
    run_ids = {p.stream_id for p in plans}
    warnings = [f"stream {sid} of the output still holds model {model} (not part of this run); read_embeddings "
                f"refuses a mix until it is scored again" for sid, model in sorted(others.items()) if sid not in run_ids]

    publisher = _Publisher(store)
    scoring_seconds = 0.0
    pending = []
    for plan in plans:
        plan.previous = StreamManifest.load(store, plan.stream_id) if store.exists(store.path()) else None
        previous = plan.previous
        if not overwrite and previous is not None and previous.is_complete_for(plan.config_hash, plan.source, plan.source_key):
            publisher.outcomes[plan.stream_id] = StreamOutcome(plan.stream_id, plan.source, STATUS_SKIPPED, previous.rows,
                                                               int((previous.info or {}).get("clips_unscored", 0)))
            continue
        pending.append(plan)

    if pending:
        ensure_ray(ray_address)
        _check_cluster(settings)
        store.makedirs(store.path())
        inputs: dict[str, Any] = {"clips": clips} if clips is not None else {"videos": list(videos or [])}
        store.write_json(store.path(CONFIG_FILE), {**_model_record(scoring), "settings": dataclasses.asdict(settings),
                                                   "inputs": inputs, "ingest": ingest.to_dict() if ingest else None})
        for plan in pending:
            publisher.start(plan)
        if clips is not None:
            dataset = _clips_dataset([f for p in pending for f in p.files], clips, shape, settings)
        else:
            assert ingest is not None
            pending = _probe_videos(pending, publisher, ingest, show_progress)
            dataset = _videos_dataset(_window_items(pending, ingest), ingest, shape)
        scoring_began = time.perf_counter()
        _score(dataset, pending, scoring, settings, store, publisher, show_progress)
        scoring_seconds = time.perf_counter() - scoring_began
        staging = store.path(STAGING)
        if store.exists(staging) and not store.fs.get_file_info(pafs.FileSelector(staging, recursive=True)):
            store.delete_dir(staging)

    outcomes = [publisher.outcomes[k] for k in sorted(publisher.outcomes)]
    return EmbedSummary(output, scoring.model_id, outcomes, input_errors, warnings, time.perf_counter() - began,
                        scoring_seconds)


def embed_video_file(path: str, checkpoint: str, *, settings: EmbedSettings = EmbedSettings()) -> Embeddings:
    """Embeddings of every whole second of one (short) video file, computed in this process without Ray.

    The stream id is the file stem; rows are the seconds with audio and video, ordered by t; the
    numbers equal those of ``run_embed`` on the same file with the same ``settings`` (the decode
    windows matter: audio decoded from a window's seek point can differ slightly in the second
    after it). ``EmbedError`` names the file and the reason when it cannot be read or has no second
    with both audio and video.
    """
    scoring = ScoringModel.load(checkpoint)
    ingest = ingest_config_for(scoring, settings)
    try:
        resolved = resolve_inputs([path])
    except InputError as exc:
        raise EmbedError(str(exc)) from None
    if resolved.missing or len(resolved.sources) != 1:
        reason = resolved.missing[0].reason if resolved.missing else "not one video file"
        raise EmbedError(f"video {path!r}: {reason}")
    source = resolved.sources[0]
    try:
        info = probe(source.uri)
    except MediaError as exc:
        raise EmbedError(str(exc)) from None
    backend, _ = stream_backend(ingest.frame_backend, info, source.local_path)
    shape = ClipShape.of_model(scoring.model_config)
    embedder = ClipEmbedder.in_process(scoring, settings.batch_size)
    info_json = json.dumps(info.to_dict())
    times, vs, as_, ds = [], [], [], []
    windows = []
    for start, seconds in time_windows(info, ingest.window_seconds):
        rows = window_task_rows(WindowTask(source.stream_id, source.uri, start, seconds, "", info_json, backend),
                                ingest, shape)
        errors = [e for e in rows["error"] if e]
        if errors:
            raise EmbedError(errors[0])
        windows += [WindowResult(**json.loads(w)) for w in rows["window"] if w]
        keep = rows["t"] >= 0
        v, a, d = embedder.embed(rows["video"][keep], rows["audio"][keep])
        times.append(rows["t"][keep]), vs.append(v), as_.append(a), ds.append(d)
    truncated = truncation_error(source.uri, info, windows)
    if truncated:
        raise EmbedError(truncated)
    t = np.concatenate(times).astype(np.int64) if times else np.zeros(0, np.int64)
    if t.size == 0:
        raise EmbedError(f"video {path!r}: no 1-s clip has both audio and video, so none can be embedded")
    return Embeddings(
        stream_id=np.full(t.size, source.stream_id, dtype=object), t=t, v=np.concatenate(vs), a=np.concatenate(as_),
        av_dist=np.concatenate(ds).astype(np.float32), model=scoring.model_id, lam=scoring.lam,
    )
