"""Clip rows (DESIGN §3.1): two overlapping square JPEG crops per frame and
the clip's log-mel, as a pyarrow table of one window.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
from PIL import Image

from epg.features import log_mel
from pipelines.ingest.config import IngestConfig
from pipelines.media.audio import WindowAudio
from pipelines.media.frames import FrameSelection

# A second counts as having audio when at least this share of it was decoded.
MIN_AUDIO_COVERAGE = 0.5


def clips_schema(config: IngestConfig) -> pa.Schema:
    n = config.logmel.n_mels * config.logmel.frames_per_clip
    return pa.schema(
        [
            pa.field("stream_id", pa.string(), nullable=False),
            pa.field("t", pa.int32(), nullable=False),
            pa.field("frames", pa.list_(pa.binary()), nullable=False),
            pa.field("logmel", pa.list_(pa.float16(), n), nullable=False),
            pa.field("has_audio", pa.bool_(), nullable=False),
            pa.field("has_video", pa.bool_(), nullable=False),
        ],
        metadata={
            "crop_size": str(config.crop_size),
            "frames_per_clip": str(config.frames_per_clip),
            "n_mels": str(config.logmel.n_mels),
            "logmel_frames": str(config.logmel.frames_per_clip),
            "config_hash": config.output_hash(),
        },
    )


def frame_targets(start: int, seconds: int, config: IngestConfig) -> np.ndarray:
    """Target times t + k / clip_fps for every clip t of the window, clip-major."""
    t = np.arange(start, start + seconds, dtype=np.float64)[:, None]
    k = np.arange(config.frames_per_clip, dtype=np.float64)[None, :] / config.clip_fps
    return (t + k).reshape(-1)


def square_crops(image: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The two size x size squares at the two ends of the longer side."""
    height, width = image.shape[:2]
    if width >= height:
        return image[:size, :size], image[:size, width - size :]
    return image[:size, :size], image[height - size :, :size]


def _jpeg(pixels: np.ndarray, quality: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _clip_parts(start: int, seconds: int, selection: FrameSelection, audio: WindowAudio,
                config: IngestConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per clip: its frames' indices into ``selection.images`` [seconds, F], has_video, the log-mel
    (float16, as stored) [seconds, n_mels · T] and has_audio."""
    per_clip = config.frames_per_clip
    targets = frame_targets(start, seconds, config).reshape(seconds, per_clip)
    index = selection.frame_index.reshape(seconds, per_clip)
    age = np.abs(targets - selection.shown_at.reshape(seconds, per_clip))
    has_video = np.all((index >= 0) & (age <= config.max_frame_age), axis=1)
    rate = config.logmel.sample_rate
    mels = log_mel(audio.waveform.reshape(seconds, rate), config.logmel).astype(np.float16).reshape(seconds, -1)
    return index, has_video, mels, audio.coverage >= MIN_AUDIO_COVERAGE


def window_table(
    stream_id: str, start: int, seconds: int, selection: FrameSelection, audio: WindowAudio, config: IngestConfig
) -> pa.Table:
    """Rows for clips start .. start + seconds - 1."""
    size = config.crop_size
    encoded = [tuple(_jpeg(c, config.jpeg_quality) for c in square_crops(img, size)) for img in selection.images]
    blank = _jpeg(np.zeros((size, size, 3), dtype=np.uint8), config.jpeg_quality)
    index, has_video, mels, has_audio = _clip_parts(start, seconds, selection, audio, config)

    frames_column = []
    for clip in range(seconds):
        crops = [encoded[i] if i >= 0 else (blank, blank) for i in index[clip]]
        frames_column.append([c[0] for c in crops] + [c[1] for c in crops])

    schema = clips_schema(config)
    flat = pa.array(mels.reshape(-1), type=pa.float16())
    logmel_column = pa.FixedSizeListArray.from_arrays(flat, schema.field("logmel").type.list_size)
    return pa.table(
        {
            "stream_id": pa.array([stream_id] * seconds, type=pa.string()),
            "t": pa.array(np.arange(start, start + seconds, dtype=np.int32)),
            "frames": pa.array(frames_column, type=pa.list_(pa.binary())),
            "logmel": logmel_column,
            "has_audio": pa.array(has_audio),
            "has_video": pa.array(has_video),
        },
        schema=schema,
    )


def window_crops(
    start: int, seconds: int, selection: FrameSelection, audio: WindowAudio, config: IngestConfig
) -> dict[str, np.ndarray]:
    """The window's clips as the model takes them, without the JPEG round trip of ``window_table``.

    t int64 [n]; video uint8 [n, 2, 3, F, H, W] (crop 0, crop 1); logmel float32 [n, n_mels · T]
    (through float16, as stored); has_audio, has_video bool [n]. Missing frames are black.
    """
    size = config.crop_size
    crops = np.zeros((len(selection.images) + 1, 2, size, size, 3), dtype=np.uint8)  # the last one: black
    for i, image in enumerate(selection.images):
        crops[i, 0], crops[i, 1] = square_crops(image, size)
    index, has_video, mels, has_audio = _clip_parts(start, seconds, selection, audio, config)
    picked = crops[np.where(index >= 0, index, len(selection.images))]  # [n, F, 2, H, W, 3]
    return {
        "t": np.arange(start, start + seconds, dtype=np.int64),
        "video": np.ascontiguousarray(picked.transpose(0, 2, 5, 1, 3, 4)),  # -> [n, 2, 3, F, H, W]
        "logmel": mels.astype(np.float32),
        "has_audio": has_audio,
        "has_video": has_video,
    }
