"""Embeddings of one short video in this process, without Ray: the query of a search by video."""

from __future__ import annotations

import json

import numpy as np

from pipelines.ingest.window import WindowResult, WindowTask, time_windows, truncation_error
from pipelines.media.frames import stream_backend
from pipelines.media.info import MediaError, inspect_video
from pipelines.media.sources import InputError, resolve_inputs
from pipelines.score.config import EmbedConfig, EmbedError
from pipelines.score.embeddings import Embeddings
from pipelines.score.inputs import ClipShape, window_task_rows
from pipelines.score.model import ClipEmbedder, ScoringModel
from pipelines.score.plans import ingest_config_for


def embed_video_file(path: str, checkpoint: str, *, settings: EmbedConfig = EmbedConfig()) -> Embeddings:
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
        info = inspect_video(source.uri)
    except MediaError as exc:
        raise EmbedError(str(exc)) from None
    backend, _ = stream_backend(ingest.frame_backend, info, source.local_path, ingest.frame_skip)
    shape = ClipShape.of_model(scoring.model_config)
    embedder = ClipEmbedder.in_process(scoring, settings.batch_size)
    info_json = json.dumps(info.to_dict())
    times, vs, as_, ds, spectra = [], [], [], [], []
    windows = []
    for start, seconds in time_windows(info, ingest.window_seconds):
        rows = window_task_rows(WindowTask(source.stream_id, source.uri, start, seconds, "", info_json, backend),
                                ingest, shape)
        errors = [e for e in rows["error"] if e]
        if errors:
            raise EmbedError(errors[0])
        windows += [WindowResult(**json.loads(w)) for w in rows["window"] if w]
        keep = rows["t"] >= 0
        v, a, d, s = embedder.embed(rows["video"][keep], rows["audio"][keep])
        times.append(rows["t"][keep]), vs.append(v), as_.append(a), ds.append(d), spectra.append(s)
    truncated = truncation_error(source.uri, info, windows)
    if truncated:
        raise EmbedError(truncated)
    t = np.concatenate(times).astype(np.int64) if times else np.zeros(0, np.int64)
    if t.size == 0:
        raise EmbedError(f"video {path!r}: no 1-s clip has both audio and video, so none can be embedded")
    return Embeddings(
        stream_id=np.full(t.size, source.stream_id, dtype=object), t=t, v=np.concatenate(vs), a=np.concatenate(as_),
        av_dist=np.concatenate(ds).astype(np.float32), model=scoring.model_id, lam=scoring.lam,
        spectrum=np.concatenate(spectra),
    )
