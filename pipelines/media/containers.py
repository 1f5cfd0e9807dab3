"""Open PyAV input containers, kept open in a worker process between windows.

Opening an mp4 parses its whole sample index, which grows with the
recording's length. A worker decodes consecutive windows of the same file,
so the frame pass keeps a local file's container open for the next window
(bench/RESULTS.md, "Ingest"). Reuse is safe for frames because every pass seeks before it reads, PyAV's
seek flushes the decoders, and video decoding restarts from a keyframe; a
pass that starts at the beginning of the file gets a fresh container, and a
pass that fails closes its container.

Audio does not use this: an audio decoder keeps state that a flush does not
reset (e.g. AAC's noise-substitution generator), and in Matroska or MPEG-TS
a seek lands where the index built so far allows, so the samples would
depend on which windows the worker decoded before.

``tolerant_decode`` is how frames and audio are decoded from a container: packets the decoder
rejects as invalid data (a damaged recording) are left out and counted, not fatal.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import av
import pyarrow.fs as pafs

from pipelines.media.sources import filesystem_from_uri, open_source

logger = logging.getLogger(__name__)

# Open containers kept per process (two files, e.g. one finishing, one starting).
MAX_OPEN = 2

_open: OrderedDict[tuple, tuple[ExitStack, av.container.InputContainer]] = OrderedDict()


def _local_key(uri: str, purpose: str) -> tuple | None:
    """A local file is keyed by its size and mtime too, so a replaced file is
    reopened; other filesystems are not kept open (None): checking them for a
    replaced object would cost a request per window, and an idle remote handle
    can go stale."""
    if "://" in uri:
        try:
            fs, path = filesystem_from_uri(uri)
        except (ValueError, OSError):  # not a usable URI: opening it will say what is wrong
            return None
        if not isinstance(fs, pafs.LocalFileSystem):
            return None
    else:
        path = uri
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return uri, purpose, stat.st_size, stat.st_mtime_ns


def _close(entry: tuple[ExitStack, av.container.InputContainer]) -> None:
    try:
        entry[0].close()
    except Exception as exc:  # noqa: BLE001 - closing a kept container must not fail the pass at hand
        logger.warning("closing a kept container failed: %s: %s", type(exc).__name__, exc)


@contextmanager
def input_container(uri: str, purpose: str, reuse: bool = False) -> Iterator[av.container.InputContainer]:
    """An open container for ``uri``. With ``reuse``, one left open by an
    earlier pass with the same ``purpose`` on the same local file (its position
    is wherever that pass stopped: seek before reading); without, a fresh one
    that reads from the start. A local file's container is kept for the next
    pass unless this one raises."""
    key = _local_key(uri, purpose)
    entry = _open.pop(key, None) if reuse and key is not None else None
    if entry is None:
        stack = ExitStack()
        try:
            container = stack.enter_context(av.open(stack.enter_context(open_source(uri))))
        except BaseException:
            stack.close()
            raise
        entry = (stack, container)
    try:
        yield entry[1]
    except BaseException:
        _close(entry)
        raise
    if key is None:
        _close(entry)
        return
    displaced = _open.pop(key, None)
    if displaced is not None:
        _close(displaced)
    _open[key] = entry
    while len(_open) > MAX_OPEN:
        _close(_open.popitem(last=False)[1])


def close_all() -> None:
    """Close every kept container (tests; a worker's exit closes them anyway)."""
    while _open:
        _close(_open.popitem(last=False)[1])


def audio_stream(container: av.container.InputContainer) -> av.stream.Stream | None:
    """The audio track ingest decodes: the first whose codec is known (a damaged header can leave one
    unknown, which cannot be decoded); None when there is none."""
    return next((s for s in container.streams.audio if s.codec_context is not None and s.codec_context.name), None)


class UnreadableContainer(RuntimeError):
    """The container cannot be read on (the message says why)."""


def demux(container: av.container.InputContainer, *streams: av.stream.Stream) -> Iterator[av.Packet]:
    """``container.demux(*streams)``; a stream that appears mid-file (a damaged MPEG-TS can announce one),
    which PyAV's demuxer cannot follow (an IndexError from its stream list), is ``UnreadableContainer``."""
    packets = container.demux(*streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            return
        except IndexError:
            raise UnreadableContainer(
                f"a stream appeared mid-file (#{len(container.streams) + 1} or later; a damaged container?) and "
                "the demuxer cannot read on past it") from None
        yield packet


def tolerant_decode(container: av.container.InputContainer, stream: av.stream.Stream, damaged: list[int]):
    """The stream's frames, leaving out packets the decoder rejects as invalid data (counted in
    ``damaged[0]``), as players do: a damaged packet costs its own frames (and those that refer to
    them look damaged until the next keyframe), not the rest of the recording. Other errors (I/O, a
    container that cannot be read on) are raised."""
    for packet in demux(container, stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            damaged[0] += 1
            continue
        yield from frames
