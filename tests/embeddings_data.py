"""Test data for the downstream tasks: embeddings and clips directories in their real formats.

``write_embeddings`` writes the §3.2 dataset exactly as scoring does (``embeddings_table``
+ ``OutputStore.write_parquet`` + a complete ``StreamManifest``); ``write_clips`` writes
a §3.1 clips stream with JPEG frames and log-mels that identify (stream, t);
``make_scene`` builds three views of one labelled timeline whose embeddings carry the
classes the way a good model would (visible classes in v, audible ones in a, anomalies
as v and a pointing apart), and whose spectra carry each audible class as a shape of its own.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from epg.distance import distance
from pipelines.ingest.clip_table import clips_schema
from pipelines.ingest.config import IngestConfig
from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import STATUS_COMPLETE, StreamManifest, stream_dir
from pipelines.score.embeddings import embeddings_schema, embeddings_table

MODEL_ID = "test-model@step1"
PART = "part-00000.parquet"


def av_distance(v: np.ndarray, a: np.ndarray, lam: float) -> np.ndarray:
    return distance(torch.from_numpy(np.asarray(v, np.float32)), torch.from_numpy(np.asarray(a, np.float32)), lam).numpy()


def write_embeddings(root: Path | str, streams: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                     model_id: str = MODEL_ID, lam: float = 0.5, spectra: dict[str, np.ndarray] | None = None) -> None:
    """streams: stream_id → (t [N], v [N, d], a [N, d]); av_dist = D(v, a) with ``lam``; ``spectra``: stream_id →
    spectrum [N, n_mels] (default: zeros of 4 bands)."""
    store = OutputStore(str(root))
    for stream_id, (t, v, a) in streams.items():
        spectrum = (spectra or {}).get(stream_id, np.zeros((len(t), 4), np.float32))
        table = embeddings_table(stream_id, t, v, a, av_distance(v, a, lam), model_id, lam, spectrum)
        schema = embeddings_schema(v.shape[1], model_id, lam, spectrum.shape[1])
        store.write_parquet(f"{stream_dir(store, stream_id)}/{PART}", [table], schema, "zstd")
        StreamManifest(stream_id=stream_id, source=f"clips/{stream_id}", status=STATUS_COMPLETE, config_hash="test",
                       config={"model": model_id, "lam": lam}, rows=len(t), files=[PART]).save(store)


def frame_jpeg(stream_index: int, t: int, size: int = 16) -> bytes:
    """A solid-colour JPEG whose colour encodes (stream, t)."""
    colour = ((37 * t) % 256, (91 * stream_index + 40) % 256, (13 * t + 120) % 256)
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def write_clips(root: Path | str, stream_id: str, stream_index: int, seconds: int) -> dict[int, bytes]:
    """A complete clips stream of ``seconds`` rows; returns t → its first JPEG."""
    config = IngestConfig(crop_size=16)
    n_mels, frames_per_mel = config.logmel.n_mels, config.logmel.frames_per_clip
    schema = clips_schema(config)
    t = np.arange(seconds, dtype=np.int32)
    firsts = {int(s): frame_jpeg(stream_index, int(s)) for s in t}
    frames = [[firsts[int(s)]] + [frame_jpeg(stream_index, int(s) + 1000 + k) for k in range(2 * config.frames_per_clip - 1)] for s in t]
    ramp = np.linspace(-80.0, 0.0, n_mels * frames_per_mel, dtype=np.float32)
    logmel = np.stack([ramp - (s % 40) for s in t]).astype(np.float16).reshape(-1)
    table = pa.table({
        "stream_id": pa.array([stream_id] * seconds, pa.string()),
        "t": pa.array(t),
        "frames": pa.array(frames, pa.list_(pa.binary())),
        "logmel": pa.FixedSizeListArray.from_arrays(pa.array(logmel), n_mels * frames_per_mel),
        "has_audio": pa.array([True] * seconds),
        "has_video": pa.array([True] * seconds),
    }, schema=schema)
    store = OutputStore(str(root))
    store.write_parquet(f"{stream_dir(store, stream_id)}/{PART}", [table], schema, "zstd")
    StreamManifest(stream_id=stream_id, source=f"{stream_id}.mp4", status=STATUS_COMPLETE, config_hash=config.output_hash(),
                   config={}, rows=seconds, files=[PART]).save(store)
    return firsts


# -- a labelled scene -----------------------------------------------------------------------

#: class → (audible, visible, spans [start, end))
SCENE_CLASSES: dict[str, tuple[bool, bool, list[tuple[int, int]]]] = {
    "car": (True, True, [(10, 15), (40, 45), (70, 75), (130, 135), (160, 165), (190, 195), (204, 209), (250, 255), (280, 285), (310, 315)]),
    "motorcycle": (True, True, [(25, 29), (145, 149), (265, 269)]),
    "train": (True, False, [(55, 63), (200, 208), (330, 338)]),
    "forklift": (False, True, [(85, 91), (235, 241), (295, 301)]),
    "glass_break": (True, True, [(100, 104), (170, 173)]),
}
VIEWS = ("train", "similar", "challenging")
NOISE = {"train": 0.08, "similar": 0.08, "challenging": 0.15}
SPECTRUM_BANDS = 8


@dataclass(frozen=True)
class Scene:
    embeddings: Path
    labels: Path
    seconds: int
    dim: int


def make_scene(directory: Path, seconds: int = 360, dim: int = 32, seed: int = 0, lam: float = 0.5) -> Scene:
    """Three views of one timeline: embeddings + labels.parquet (rows for audible or visible seconds)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=dim)
    base *= 4.0 / np.linalg.norm(base)
    prototypes = {}
    for name in SCENE_CLASSES:
        p = rng.normal(size=dim)
        prototypes[name] = 2.0 * p / np.linalg.norm(p)
    camera_shift = rng.normal(size=dim)
    camera_shift *= 0.5 / np.linalg.norm(camera_shift)
    sounds = {name: 6.0 * rng.normal(size=SPECTRUM_BANDS) for name in SCENE_CLASSES}  # dB per band

    t = np.arange(seconds)
    audible = {c: np.zeros(seconds, bool) for c in SCENE_CLASSES}
    visible = {c: np.zeros(seconds, bool) for c in SCENE_CLASSES}
    for name, (is_audible, is_visible, spans) in SCENE_CLASSES.items():
        for lo, hi in spans:
            audible[name][lo:hi] = is_audible
            visible[name][lo:hi] = is_visible

    streams, spectra = {}, {}
    label_rows: dict[str, list] = {"stream_id": [], "t": [], "label": [], "audible": [], "visible": []}
    for view in VIEWS:
        v = np.tile(base, (seconds, 1)) + rng.normal(scale=NOISE[view], size=(seconds, dim))
        a = np.tile(base, (seconds, 1)) + rng.normal(scale=NOISE[view], size=(seconds, dim))
        for name in SCENE_CLASSES:
            v += visible[name][:, None] * prototypes[name]
            a += audible[name][:, None] * prototypes[name]
        glass = audible["glass_break"]
        a[glass] = -a[glass]  # an anomaly: what is heard does not fit what is seen
        if view == "challenging":
            v += camera_shift
        streams[view] = (t, v.astype(np.float32), a.astype(np.float32))
        spectrum = -40.0 + rng.normal(scale=0.5, size=(seconds, SPECTRUM_BANDS))
        for name in SCENE_CLASSES:
            spectrum += audible[name][:, None] * sounds[name]
        spectra[view] = spectrum.astype(np.float32)
        for name in SCENE_CLASSES:
            for s in np.flatnonzero(audible[name] | visible[name]):
                label_rows["stream_id"].append(view)
                label_rows["t"].append(int(s))
                label_rows["label"].append(name)
                label_rows["audible"].append(bool(audible[name][s]))
                label_rows["visible"].append(bool(visible[name][s]))
    root = directory / "embeddings"
    write_embeddings(root, streams, lam=lam, spectra=spectra)
    labels = directory / "labels.parquet"
    pq.write_table(pa.table({**label_rows, "t": pa.array(label_rows["t"], pa.int32())}), labels)
    return Scene(embeddings=root, labels=labels, seconds=seconds, dim=dim)
