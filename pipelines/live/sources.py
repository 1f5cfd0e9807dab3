"""Live sources as a sequence of complete media segments on local disk.

Every kind of source is read the same way: ``poll()`` returns the segments that became
complete since the last call, each a local file (MPEG-TS from HLS and RTSP; whatever the
NVR writes for a directory), in source order.

- ``HlsSource``: an HLS media playlist over HTTP (a master playlist: its first variant),
  read with the ``m3u8`` library; live (sliding window), event and ended (``EXT-X-ENDLIST``)
  playlists. Segments are downloaded into the spool directory and numbered by their media
  sequence, so a restart knows which ones it has, and which expired while it was away.
- ``SegmentDirSource``: a directory an NVR fills with rolling files, in the order they were
  written (modification time, then name: a ring buffer that reuses names, or a recorder that
  starts again from ``seg00000``, still reads as new files); a file counts as complete once a
  later one exists, or once it has not changed for ``settle_seconds``; its modification time
  stands in for the wall clock of its end.
- ``RtspSource``: Debian's ``ffmpeg`` reads the RTSP stream and remuxes it, without
  re-encoding, into rolling MPEG-TS segment files in the spool, which a ``SegmentDirSource``
  then follows; each ffmpeg run writes into its own folder, so a reconnect never reuses a
  name, and the first segment of each run is marked as a discontinuity (its clock is new).

A source error (server gone, HTTP error on the playlist, broken playlist, an unreadable
folder) raises ``SourceError``; the watcher retries with backoff. A segment that cannot be
downloaded three polls in a row is handed on as failed (``Segment.error``), so one bad segment
never blocks the stream.
"""

from __future__ import annotations

import ctypes
import hashlib
import http.client
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

MEDIA_SUFFIXES = (".ts", ".m2ts", ".mts", ".mp4", ".mkv", ".webm", ".mov", ".avi", ".flv")
HTTP_TIMEOUT = 10.0
DOWNLOAD_ATTEMPTS = 3  # polls in a row a segment may fail to download before it is given up


class SourceError(RuntimeError):
    """The source cannot be read right now (the watcher retries); the message names it."""


@dataclass(frozen=True)
class Segment:
    """One complete piece of the stream, as a local file."""

    sequence: int  # HLS media sequence; for files, the order in which they were found (per watcher run)
    name: str  # the source's name for it (playlist URI or file name), for the manifest
    path: str  # local file with its bytes
    duration: float | None = None  # as the playlist says (None: from the media)
    program_time: float | None = None  # wall clock (POSIX s) of its start when the source says (HLS PROGRAM-DATE-TIME)
    discontinuity: bool = False  # the source says its timestamps restart here (HLS EXT-X-DISCONTINUITY)
    arrived: float = 0.0  # wall clock when it became complete (found by the watcher; a file's modification time)
    error: str = ""  # it could not be read (the watcher records it and leaves a hole)
    key: str = ""  # the watcher's name for it, in source order (resume state)


@dataclass(frozen=True)
class Poll:
    """What one look at the source found."""

    segments: list[Segment]
    last_sequence: int | None = None  # HLS: the newest
    ended: bool = False  # the source says no more segments will come
    listed: int = 0  # HLS: how many segments the playlist lists


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            return response.read()
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        raise SourceError(f"{url}: {type(exc).__name__}: {exc}") from None


class HlsSource:
    """An HLS playlist, its new segments downloaded into ``spool``."""

    def __init__(self, url: str, spool: str) -> None:
        self.url, self.spool = url, Path(spool)
        self.spool.mkdir(parents=True, exist_ok=True)
        self._failures: dict[int, int] = {}  # sequence -> downloads failed so far
        for orphan in self.spool.glob(".tmp-*"):  # a download cut short by a killed watcher
            orphan.unlink(missing_ok=True)

    def spooled(self, sequence: int) -> Path:
        return self.spool / f"seg-{sequence:012d}.ts"

    def _playlist(self):
        import m3u8

        url = self.url
        for _ in range(2):  # a master playlist names its variants: follow the first
            try:
                playlist = m3u8.loads(_fetch(url).decode("utf-8", errors="replace"), uri=url)
            except SourceError:
                raise
            except Exception as exc:  # a playlist m3u8 cannot parse
                raise SourceError(f"{url}: not an HLS playlist: {type(exc).__name__}: {exc}") from None
            if not playlist.is_variant:
                return playlist
            url = playlist.playlists[0].absolute_uri
        raise SourceError(f"{self.url}: a master playlist names another master playlist")

    def poll(self, after: int) -> Poll:
        """Segments with a media sequence above ``after`` (downloaded, or found in the spool), in order."""
        playlist = self._playlist()
        first = int(playlist.media_sequence or 0)
        found = []
        for i, segment in enumerate(playlist.segments):
            sequence = first + i
            if sequence <= after:
                continue
            path = self.spooled(sequence)
            error = ""
            if not path.exists():
                try:
                    data = _fetch(segment.absolute_uri)
                    temp = path.with_name(f".tmp-{path.name}")
                    temp.write_bytes(data)
                    os.replace(temp, path)
                except (SourceError, OSError) as exc:
                    self._failures[sequence] = self._failures.get(sequence, 0) + 1
                    if self._failures[sequence] < DOWNLOAD_ATTEMPTS:
                        break  # the next poll tries again; later segments wait, to keep the order
                    error = f"download failed {DOWNLOAD_ATTEMPTS} times: {exc}"
            self._failures.pop(sequence, None)
            when = segment.current_program_date_time
            found.append(Segment(sequence, segment.uri, str(path), float(segment.duration or 0) or None,
                                 when.timestamp() if when is not None else None, bool(segment.discontinuity),
                                 time.time(), error, f"{sequence:012d}"))
        listed = bool(playlist.segments)
        return Poll(found, first + len(playlist.segments) - 1 if listed else None, bool(playlist.is_endlist),
                    len(playlist.segments))

    def release(self, segment: Segment) -> None:
        """The watcher no longer needs this segment's file."""
        Path(segment.path).unlink(missing_ok=True)


class SegmentDirSource:
    """Rolling segment files in a directory, in write order."""

    def __init__(self, directory: str, settle_seconds: float, recursive: bool = False) -> None:
        self.directory, self.settle_seconds, self.recursive = Path(directory), settle_seconds, recursive
        self._seen: dict[str, tuple[str, int, float]] = {}  # the newest file -> (key, size, first seen so)
        self._read: dict[str, tuple[int, bytes, str]] = {}  # files handed on, still there -> (size, head, key)
        self.warnings: list[str] = []  # for the manifest's errors (the watcher takes them)

    def files(self) -> list[tuple[str, Path, float]]:
        """(key, path, modification time) of the media files in write order; key = mtime_ns-name, which sorts so."""
        try:
            if not self.directory.is_dir():
                raise SourceError(f"{self.directory}: not a directory (yet?)")
            found = list(self.directory.rglob("*") if self.recursive else self.directory.iterdir())
        except OSError as exc:  # a stale network mount, an unreadable folder
            raise SourceError(f"{self.directory}: {type(exc).__name__}: {exc}") from None
        files = []
        for p in found:
            if p.suffix.lower() not in MEDIA_SUFFIXES or p.name.startswith((".", "_")):
                continue
            try:
                if not p.is_file():
                    continue
                mtime = p.stat().st_mtime_ns
            except FileNotFoundError:  # removed (the NVR's retention) between the listing and now: not there
                continue
            except OSError as exc:
                raise SourceError(f"{p}: {type(exc).__name__}: {exc}") from None
            files.append((f"{mtime:020d}-{p.relative_to(self.directory).as_posix()}", p, mtime / 1e9))
        return sorted(files)

    def poll(self, after: str) -> list[Segment]:
        """The complete files written after the one keyed ``after``, in write order."""
        listing = self.files()
        names = {key: path.relative_to(self.directory).as_posix() for key, path, _ in listing}
        present = set(names.values())
        self._read = {name: v for name, v in self._read.items() if name in present}  # no state for deleted files
        files = [f for f in listing if f[0] > after and not self._grown(f[0], names[f[0]], f[1])]
        now = time.monotonic()
        complete = files[:-1]
        if files:
            key, last, _ = files[-1]
            size = _size(last)
            seen = self._seen.get(last.name)
            if seen is None or seen[0] != key or seen[1] != size:
                self._seen = {last.name: (key, size, now)}
            elif now - seen[2] >= self.settle_seconds and size > 0:
                complete = files
        found = []
        for key, path, mtime in complete:
            size = _size(path)
            if size > 0:  # an empty file's head matches anything written later: it would read as grown
                self._read[names[key]] = (size, _head(path, size), key)
            found.append(Segment(-1, names[key], str(path), arrived=mtime, key=key))
        return found

    def _grown(self, key: str, name: str, path: Path) -> bool:
        """A file handed on before that has grown since (the same first bytes, more of them): its writer paused
        longer than ``settle_seconds``. It is not read again (its new bytes would repeat its old seconds);
        the loss is said in ``warnings``."""
        if name not in self._read:
            return False
        size, head, seen = self._read[name]
        if key == seen:  # as it was handed on (or as it was found grown): skipped again, said once
            return True
        now = _size(path)
        if now <= size or _head(path, size) != head:  # a file written again under the same name (a ring buffer)
            return False
        self.warnings.append(f"segment {name} grew by {now - size} bytes after it was read (its writer paused "
                             f"longer than settle_seconds={self.settle_seconds:g}); the added bytes are not read")
        self._read[name] = (now, head, key)
        return True


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _head(path: Path, size: int) -> bytes:
    """A digest of a file's first bytes (up to 64 KiB of its first ``size``): what tells a file that grew from
    one written again under its name."""
    try:
        with open(path, "rb") as handle:
            return hashlib.blake2b(handle.read(min(size, 65536)), digest_size=16).digest()
    except OSError:
        return b""


class RtspSource:
    """An RTSP stream remuxed by ffmpeg into rolling MPEG-TS files under ``spool`` (one folder per ffmpeg run)."""

    def __init__(self, url: str, spool: str, segment_seconds: float, settle_seconds: float) -> None:
        self.url, self.spool, self.segment_seconds = url, Path(spool), segment_seconds
        self.spool.mkdir(parents=True, exist_ok=True)
        self.files = SegmentDirSource(str(self.spool), settle_seconds, recursive=True)
        self.process: subprocess.Popen | None = None
        self.run_dir: Path | None = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        """Start ffmpeg into a new run folder (named by the time, so names keep their order)."""
        if shutil.which("ffmpeg") is None:
            raise SourceError(f"{self.url}: RTSP needs the ffmpeg command (apt install ffmpeg)")
        run_dir = self.run_dir = self.spool / f"run-{int(time.time() * 1000):015d}"
        run_dir.mkdir(parents=True)
        self.process = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-rtsp_transport", "tcp", "-timeout", "5000000",
             "-i", self.url, "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-f", "segment",
             "-segment_time", str(self.segment_seconds), "-segment_format", "mpegts", "-reset_timestamps", "0",
             str(run_dir / "seg-%09d.ts")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)

    def ended(self) -> str:
        """Why the last ffmpeg run ended ("" when none ran since the last call, or it still runs)."""
        if self.process is None or self.process.poll() is None:
            return ""
        code, self.process = self.process.returncode, None
        return f"ffmpeg ended with exit code {code} (the stream ended or the camera is unreachable)"

    def poll(self, after: str) -> list[Segment]:
        """Complete segment files written after ``after`` (``start`` ffmpeg first, and again when it ended)."""
        for run in self.spool.glob("run-*"):  # folders of earlier ffmpeg runs, once drained
            if run != self.run_dir and run.is_dir() and not any(run.iterdir()):
                run.rmdir()
        found = self.files.poll(after)
        folder = after.split("-", 1)[1].split("/")[0] if "/" in after else None  # run folder of the last one read
        marked = []
        for segment in found:  # a new ffmpeg run starts a new clock (the camera's, or 0): say so
            run = segment.name.split("/")[0]
            marked.append(replace(segment, discontinuity=folder is not None and run != folder))
            folder = run
        return marked

    @property
    def warnings(self) -> list[str]:
        return self.files.warnings

    def stop(self) -> None:
        """Stop ffmpeg (the segments it wrote stay, for the watcher to drain)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def _die_with_parent() -> None:
    """In the ffmpeg child: SIGTERM when the watcher's process dies (Linux), so no ffmpeg outlives a killed actor."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass
