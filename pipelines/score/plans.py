"""What a scoring run will do, stream by stream: ``StreamPlan`` (input, config hash, source version).

A stream's output is keyed by a config hash (checkpoint id, λ, scoring rules, and the input:
the clips stream's ingest config hash or the ingest config used to decode the video) and by
the version of its input (the clips stream's files or the video file), so a rerun skips
streams that are complete for both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.ingest.clips_dataset import stream_manifests
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.window import source_key
from pipelines.media.sources import VideoSource
from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import STATUS_COMPLETE, StreamManifest, stream_dir
from pipelines.score.config import SCORING, EmbedConfig, EmbedError
from pipelines.score.model import ScoringModel
from pipelines.train.data import ClipsError, check_compatible, inspect_clips


@dataclass
class StreamPlan:
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



def short_hash(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:12]


def ingest_config_for(scoring: ScoringModel, settings: EmbedConfig) -> IngestConfig:
    """The ingest settings that decode a video into the clips this model takes."""
    model = scoring.model_config
    try:
        config = IngestConfig(crop_size=model.visual.crop_size, frames_per_clip=model.visual.frames,
                              window_seconds=settings.window_seconds, frame_backend=settings.frame_backend,
                              jpeg_quality=settings.jpeg_quality, frame_skip=settings.frame_skip,
                              frame_skip_tolerance=settings.frame_skip_tolerance, num_cpus_per_task=settings.decode_cpus,
                              decode_timeout=settings.decode_timeout)
    except ValueError as exc:
        raise EmbedError(f"checkpoint {str(scoring.path)!r}: its clips cannot be decoded from videos: {exc}") from None
    mel = (config.logmel.n_mels, config.logmel.frames_per_clip)
    if mel != (model.audio.n_mels, model.audio.frames):
        raise EmbedError(f"checkpoint {str(scoring.path)!r}: model audio {model.audio.n_mels}x{model.audio.frames} "
                         f"!= the log-mel {mel[0]}x{mel[1]} that ingest computes")
    return config


def model_record(scoring: ScoringModel) -> dict[str, Any]:
    return {"model": scoring.model_id, "checkpoint": str(scoring.path), "lam": scoring.lam, "dim": scoring.dim,
            "scoring": SCORING}


def clip_plans(clips: str, scoring: ScoringModel, skipped: list[str] | None = None) -> list[StreamPlan]:
    """A plan per readable stream of the clips root. A damaged manifest or file is an ``EmbedError`` naming
    it, or with a ``skipped`` list its stream is left out (a stream is scored whole) and said there."""
    try:
        info = inspect_clips(clips, skip_bad_shards=skipped is not None)
        check_compatible(info, scoring.model_config)
    except ClipsError as exc:
        raise EmbedError(str(exc)) from None
    if skipped is not None:
        skipped += info.skipped
    root = clips if "://" in clips else str(Path(clips).resolve())
    store = OutputStore(clips)
    plans = []
    usable = set(info.files)
    for manifest in stream_manifests(clips, [] if skipped is not None else None):
        if not manifest.readable or manifest.stream_id not in info.stream_ids:
            continue
        if any(f"{stream_dir(store, manifest.stream_id)}/{name}" not in usable for name in manifest.files):
            continue  # one of its files is damaged (said in ``skipped``)
        version = [manifest.config_hash, manifest.source_key, manifest.rows, manifest.files, manifest.updated_at]
        config = {**model_record(scoring), "input": "clips", "clips_root": root, "clips_config_hash": manifest.config_hash}
        plans.append(StreamPlan(
            stream_id=manifest.stream_id,
            source=f"{root.rstrip('/')}/stream_id={manifest.stream_id}",
            source_key=short_hash(version),
            config_hash=short_hash({k: config[k] for k in ("model", "lam", "scoring", "clips_config_hash")}),
            config=config,
            info={"input": "clips", "clips_source": manifest.source, "clips": manifest.rows},
            expected=manifest.rows,
            files=[f"{stream_dir(store, manifest.stream_id)}/{name}" for name in manifest.files],
        ))
    return plans


def video_plans(sources: list[VideoSource], scoring: ScoringModel, ingest: IngestConfig,
                jpeg_round_trip: bool = True) -> list[StreamPlan]:
    config = {**model_record(scoring), "input": "videos", "ingest": ingest.to_dict(), "ingest_hash": ingest.output_hash(),
              "crops": "jpeg" if jpeg_round_trip else "raw"}
    # Raw crops give other embeddings, so another hash; the JPEG default keeps the hash of earlier runs.
    hashed = ("model", "lam", "scoring", "ingest_hash") + (() if jpeg_round_trip else ("crops",))
    config_hash = short_hash({k: config[k] for k in hashed})
    return [StreamPlan(s.stream_id, s.uri, source_key(s), config_hash, config, {"input": "videos"}, video=s)
            for s in sorted(sources, key=lambda s: s.stream_id)]


def same_place(a: str, b: str) -> bool:
    def norm(path: str) -> str:
        return path.rstrip("/") if "://" in path else str(Path(path).resolve())

    return norm(a) == norm(b)


def other_models(store: OutputStore, model_id: str) -> dict[str, str]:
    """Complete streams of the output that hold another model: {stream_id: model}."""
    if not store.exists(store.path()):
        return {}
    found = {}
    for manifest in stream_manifests(store.root, []):  # a damaged manifest: that stream is scored again
        model = (manifest.config or {}).get("model")
        if manifest.status == STATUS_COMPLETE and model != model_id:
            found[manifest.stream_id] = str(model)
    return found

