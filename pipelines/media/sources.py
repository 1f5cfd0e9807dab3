"""Video sources: turn the user's inputs (files, directories, globs, local or
any pyarrow filesystem URI) into a list of streams, and open them for reading.

A stream's id is its file stem (DESIGN §3.1); two inputs with one stem are
refused before any work starts, because their rows would mix.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator
from urllib.parse import urlsplit

import pyarrow.fs as pafs

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".flv", ".3gp"}
)
_GLOB_CHARS = set("*?[")


class InputError(ValueError):
    """The inputs cannot be ingested as given (e.g. two files share a stream id)."""


@dataclass(frozen=True)
class VideoSource:
    """One input video. ``uri`` is a local absolute path or a filesystem URI."""

    uri: str
    stream_id: str

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri

    @property
    def local_path(self) -> str | None:
        """A path decord can open directly, or None for remote files."""
        return self.uri if self.is_local else None


@dataclass(frozen=True)
class MissingInput:
    """An input that named nothing readable; reported, never fatal to the rest."""

    uri: str
    stream_id: str | None
    reason: str


@dataclass
class ResolvedInputs:
    sources: list[VideoSource]
    missing: list[MissingInput]


def filesystem_from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """The one place a URI becomes (filesystem, path); tests swap it to reach
    the remote-file code paths without a network."""
    return pafs.FileSystem.from_uri(uri)


def stream_id_of(path: str) -> str:
    return Path(path.rstrip("/")).stem


def _is_video(path: str) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _resolve_local(item: str) -> tuple[list[str], MissingInput | None]:
    if any(c in item for c in _GLOB_CHARS):
        matches = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p) and _is_video(p))
        if not matches:
            return [], MissingInput(item, None, "glob matched no video files")
        return [os.path.abspath(p) for p in matches], None
    if os.path.isdir(item):
        matches = sorted(
            os.path.join(root, name)
            for root, _, names in os.walk(item)
            for name in names
            if _is_video(name) and not name.startswith(".")
        )
        if not matches:
            return [], MissingInput(item, None, "directory contains no video files")
        return [os.path.abspath(p) for p in matches], None
    if os.path.isfile(item):
        return [os.path.abspath(item)], None
    return [], MissingInput(item, stream_id_of(item), "no such file or directory")


def _resolve_uri(item: str) -> tuple[list[str], MissingInput | None]:
    scheme = item.split("://", 1)[0]
    try:
        fs, path = filesystem_from_uri(item)
    except Exception as exc:  # pyarrow raises several types for bad URIs
        return [], MissingInput(item, None, f"cannot open filesystem URI: {exc}")
    local = isinstance(fs, pafs.LocalFileSystem)
    parts = urlsplit(item)
    query = f"?{parts.query}" if parts.query else ""

    def as_uri(p: str) -> str:
        """Rebuild a URI for path p that keeps the host and options of the input
        (e.g. s3://bucket/key?endpoint_override=..., hdfs://host:port/path)."""
        if local:
            return os.path.abspath(p)
        host = "" if p.startswith(parts.netloc) else parts.netloc
        return f"{scheme}://{host}{p}{query}"

    if any(c in path for c in _GLOB_CHARS):
        base = path
        while any(c in base for c in _GLOB_CHARS):
            if "/" not in base:
                return [], MissingInput(item, None, "a glob in the bucket or host name is not supported")
            base = base.rsplit("/", 1)[0]
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        matches = sorted(i.path for i in infos if i.is_file and fnmatch.fnmatch(i.path, path) and _is_video(i.path))
        if not matches:
            return [], MissingInput(item, None, "glob matched no video files")
        return [as_uri(p) for p in matches], None
    info = fs.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        return [], MissingInput(item, stream_id_of(path), "no such file or directory")
    if info.type == pafs.FileType.Directory:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
        matches = sorted(i.path for i in infos if i.is_file and _is_video(i.path))
        if not matches:
            return [], MissingInput(item, None, "directory contains no video files")
        return [as_uri(p) for p in matches], None
    return [as_uri(path)], None


def resolve_inputs(inputs: list[str]) -> ResolvedInputs:
    """Expand inputs into sources; refuse two sources with one stream id."""
    if not inputs:
        raise InputError("no inputs given")
    found: dict[str, str] = {}
    missing: list[MissingInput] = []
    for item in inputs:
        uris, problem = _resolve_uri(item) if "://" in item else _resolve_local(item)
        if problem is not None:
            missing.append(problem)
        for uri in uris:
            sid = stream_id_of(uri)
            if sid in found and found[sid] != uri:
                raise InputError(
                    f"two inputs have the stream id {sid!r} (the file stem): {found[sid]} and {uri}; "
                    "rename one of them"
                )
            found[sid] = uri
    sources = [VideoSource(uri=uri, stream_id=sid) for sid, uri in found.items()]
    return ResolvedInputs(sources=sources, missing=missing)


@contextlib.contextmanager
def open_source(uri: str) -> Iterator[str | IO[bytes]]:
    """Yield something PyAV can open: a local path, or a seekable remote file."""
    if "://" not in uri:
        yield uri
        return
    fs, path = filesystem_from_uri(uri)
    if isinstance(fs, pafs.LocalFileSystem):
        yield path
        return
    with fs.open_input_file(path) as handle:
        yield handle
