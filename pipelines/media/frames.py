"""Frame backends: pick, for each target time, the frame shown at that time.

"Shown at time x" is the last frame whose timestamp is at or before x, so
variable-frame-rate sources are handled by timestamps, never by counting
frames. Frames come back already scaled so the shorter side equals the crop
size. Two backends give the same selection: decord (needs a local file) and
PyAV (any seekable input, e.g. object storage).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from pipelines.media.containers import input_container, tolerant_decode
from pipelines.media.info import VideoInfo

# Downscaling filter for the selected frames: area averaging is the fastest
# filter that does not alias when a 720p/1080p frame shrinks to ~160 px
# (faster than swscale's default; bench/RESULTS.md, "Ingest").
SCALE_INTERPOLATION = "AREA"
# Timestamps are compared with this slack so a frame stamped 2.2000001 s
# still counts as shown at 2.2 s (well below any real frame interval).
TIME_EPS = 1e-3
# Frames the decoder may leave out (libavcodec's skip_frame, PyAV backend only):
# "none" decodes every frame (exact); "nonref" skips frames no other frame refers
# to (most B-frames: no decoding work is lost, the rest still decode correctly);
# "nonkey" decodes keyframes only (very low target rates). A skipped frame is
# never shown: the target takes the last decoded frame before it.
FRAME_SKIPS = {"none": "DEFAULT", "nonref": "NONREF", "nonkey": "NONKEY"}


@dataclass
class FrameSelection:
    """Per target time: the scaled RGB frame shown then, and when it was shown.

    ``frame_index[i]`` points into ``images`` (-1: no frame), so a frame
    chosen for several targets is stored and encoded once.
    """

    images: list[np.ndarray]
    frame_index: np.ndarray  # int [n_targets]
    shown_at: np.ndarray  # float [n_targets], nan where no frame
    last_time: float  # time of the last frame decoded in range (nan: none)
    decoded: int = 0  # frames the decoder returned for the window (PyAV: fewer with a frame skip)
    damaged_packets: int = 0  # packets the decoder could not decode and left out (PyAV)


def scaled_size(width: int, height: int, crop: int) -> tuple[int, int]:
    """(w, h) with the shorter side equal to ``crop`` and the aspect kept."""
    if width <= height:
        return crop, max(crop, int(round(height * crop / width)))
    return max(crop, int(round(width * crop / height))), crop


def _assign(targets: np.ndarray, frame_times: np.ndarray, max_lead: float) -> np.ndarray:
    """Index of the frame shown at each target (-1 if none).

    Targets before the first frame take the first frame when it comes within
    ``max_lead`` seconds (a stream whose video starts slightly late).
    """
    if frame_times.size == 0:
        return np.full(targets.shape, -1, dtype=np.int64)
    idx = np.searchsorted(frame_times, targets + TIME_EPS, side="right") - 1
    early = (idx < 0) & (frame_times[0] - targets <= max_lead)
    idx[early] = 0
    return idx


def select_frames_pyav(
    uri: str, info: VideoInfo, targets: np.ndarray, crop: int, threads: int = 1, max_lead: float = 1.0,
    skip: str = "none",
) -> FrameSelection:
    """Decode the window with PyAV (leaving out the frames ``skip`` names); convert only the frames selected.

    A seek lands on a keyframe at or before the asked time; if a container
    seeks imprecisely (first frame after the first target), the seek is
    retried further back, and finally from the start of the file.
    """
    first = float(targets[0])
    for margin in (max_lead + 0.5, 10.0, None):
        seek_to = None if margin is None else first - margin
        if seek_to is not None and seek_to <= info.video_start:
            seek_to = None
        frame_times, kept, damaged = _decode_range(uri, info, targets, crop, threads, seek_to, skip)
        if seek_to is None or (frame_times.size and frame_times[0] <= first + TIME_EPS):
            break
    idx = _assign(targets, frame_times, max_lead)
    selection = _selection(idx, frame_times, kept, targets)
    selection.decoded, selection.damaged_packets = int(frame_times.size), damaged
    return selection


def _decode_range(
    uri: str, info: VideoInfo, targets: np.ndarray, crop: int, threads: int, seek_to: float | None, skip: str = "none"
) -> tuple[np.ndarray, dict[int, np.ndarray], int]:
    if skip not in FRAME_SKIPS:
        raise ValueError(f"frame skip must be one of {tuple(FRAME_SKIPS)}, got {skip!r}")
    width, height = scaled_size(info.width, info.height, crop)
    last = float(targets[-1])
    times: list[float] = []
    kept: dict[int, np.ndarray] = {}
    # One reformatter for the window keeps one scaler: frame.to_ndarray(width=...)
    # builds a new one per frame, which is costly with workers side by side.
    # The scaler gets the task's thread count like the codec (swscale would
    # start a thread per core in every task, oversubscribing the node).
    reformatter = VideoReformatter()

    def keep_if_shown(frame: av.VideoFrame, until: float) -> None:
        # The previous frame is shown at every target in [its time, until);
        # the very first frame also stands in for targets just before it.
        lo = times[-1] - TIME_EPS if len(times) > 1 else -np.inf
        if np.any((targets >= lo) & (targets + TIME_EPS < until)):
            scaled = reformatter.reformat(
                frame, width=width, height=height, format="rgb24", interpolation=SCALE_INTERPOLATION, threads=threads
            )
            kept[len(times) - 1] = scaled.to_ndarray()

    # Without a seek the pass reads from the start of the file: a fresh container. A kept-open
    # container serves one skip mode only (the decoder keeps the setting).
    with input_container(uri, f"frames/{threads}/{skip}", reuse=seek_to is not None) as container:
        stream = container.streams.video[0]
        if not stream.codec_context.is_open:
            if threads > 1:
                stream.thread_type = "AUTO"
                stream.codec_context.thread_count = threads
            stream.codec_context.skip_frame = FRAME_SKIPS[skip]
        if seek_to is not None:
            container.seek(int(info.container_time(seek_to) / stream.time_base), stream=stream, backward=True)
        previous = None
        damaged = [0]
        for frame in tolerant_decode(container, stream, damaged):
            if frame.time is None:
                continue
            ft = info.timeline(frame.time)
            if times and ft <= times[-1]:
                continue  # duplicate or out-of-order timestamp
            if previous is not None:
                keep_if_shown(previous, ft)
            times.append(ft)
            previous = frame
            if ft > last + TIME_EPS:
                break
        if previous is not None:
            keep_if_shown(previous, np.inf)
    return np.asarray(times, dtype=np.float64), kept, damaged[0]


def _selection(
    idx: np.ndarray, frame_times: np.ndarray, decoded: dict[int, np.ndarray], targets: np.ndarray
) -> FrameSelection:
    used = sorted({int(i) for i in idx if i >= 0})
    position = {frame: k for k, frame in enumerate(used)}
    images = [decoded[frame] for frame in used]
    frame_index = np.array([position[int(i)] if i >= 0 else -1 for i in idx], dtype=np.int64)
    shown_at = np.array([frame_times[i] if i >= 0 else np.nan for i in idx], dtype=np.float64)
    in_range = frame_times[frame_times <= float(targets[-1]) + TIME_EPS]
    last_time = float(in_range[-1]) if in_range.size else float("nan")
    return FrameSelection(images=images, frame_index=frame_index, shown_at=shown_at, last_time=last_time)


@functools.lru_cache(maxsize=2)
def _decord_reader(path: str, width: int, height: int, threads: int):
    """Open readers are cached per worker process: consecutive windows of one
    file on the same worker skip re-indexing it."""
    import decord

    reader = decord.VideoReader(path, ctx=decord.cpu(0), width=width, height=height, num_threads=threads)
    # decord reports times relative to the video stream's first frame.
    times = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0].astype(np.float64)
    # Packets without a pts (e.g. AVI with B-frames) come back as huge negative
    # numbers; selecting by them would silently pick wrong frames.
    if times.size == 0 or not np.all(np.isfinite(times)) or times.min() < -1.0:
        raise BackendUnsupported("decord reports invalid frame timestamps (packets without pts)")
    return reader, times


def select_frames_decord(
    path: str, info: VideoInfo, targets: np.ndarray, crop: int, threads: int = 1, max_lead: float = 1.0
) -> FrameSelection:
    """Select by decord's frame timestamps, then decode only the needed frames."""
    width, height = scaled_size(info.width, info.height, crop)
    reader, relative = _decord_reader(path, width, height, threads)
    frame_times = relative + info.video_start
    if frame_times.size > 1 and np.any(np.diff(frame_times) <= 0):
        order = np.argsort(frame_times, kind="stable")
        frame_times = frame_times[order]
    else:
        order = None
    idx = _assign(targets, frame_times, max_lead)
    wanted = sorted({int(i) for i in idx if i >= 0})
    decoded: dict[int, np.ndarray] = {}
    if wanted:
        reader_idx = [int(order[i]) if order is not None else i for i in wanted]
        batch = reader.get_batch(reader_idx).asnumpy()
        decoded = {frame: batch[k] for k, frame in enumerate(wanted)}
    return _selection(idx, frame_times, decoded, targets)


# decord 0.6.0's get_batch can spin forever in native code (holding the GIL,
# so no timeout can stop it) on some timestamp layouts; MPEG-TS triggers it
# reliably here (upstream dmlc/decord issues 269 and 373). Those containers
# go straight to PyAV, and the manifest records the hand-over.
DECORD_UNSAFE_CONTAINERS = frozenset({"mpegts"})


class BackendUnsupported(RuntimeError):
    """The backend cannot (or must not) read this source; use the other one."""


def stream_backend(preferred: str, info: VideoInfo, local_path: str | None, skip: str = "none") -> tuple[str, str]:
    """The backend to start a stream's windows with, and why it is not the
    preferred one (empty when it is). Decided once per stream, so a remote
    or MPEG-TS source is not 'failed' by decord in every window."""
    if preferred == "decord" and skip != "none":
        return "pyav", f"decord cannot leave frames out (frame skip {skip!r}); frames decoded with pyav"
    if preferred == "decord" and local_path is None:
        return "pyav", "decord reads local files only; frames decoded with pyav"
    if preferred == "decord" and info.container in DECORD_UNSAFE_CONTAINERS:
        return "pyav", f"decord's get_batch hangs on {info.container} (dmlc/decord#269, #373); frames decoded with pyav"
    return preferred, ""


def select_frames(
    backend: str, uri: str, local_path: str | None, info: VideoInfo, targets: np.ndarray, crop: int, threads: int,
    skip: str = "none",
) -> FrameSelection:
    if backend == "decord":
        usable, why = stream_backend("decord", info, local_path, skip)
        if usable != "decord":  # also guards a window falling back from PyAV to decord
            raise BackendUnsupported(why)
        return select_frames_decord(local_path, info, targets, crop, threads)
    if backend == "pyav":
        return select_frames_pyav(uri, info, targets, crop, threads, skip=skip)
    raise ValueError(f"unknown frame backend {backend!r}")
