"""Settings of the live watcher (``WatchConfig``): one dataclass, defaults in one place, validated on creation."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from epg.configs import Config
from pipelines.downstream.anomaly_job import SCORES, AnomalyJobConfig

SOURCE_KINDS = ("hls", "rtsp", "dir")
GENERIC_NAMES = {"index", "live", "playlist", "stream", "master", "chunklist", "prog_index", "mono", "main"}


class WatchError(ValueError):
    """Bad arguments to the watcher; the message names the argument and says why."""


def source_kind(source: str) -> str:
    """``hls`` for an http(s) playlist, ``rtsp`` for rtsp://, ``dir`` for a directory of rolling segments."""
    lowered = source.lower()
    if lowered.startswith(("http://", "https://")):
        return "hls"
    if lowered.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if "://" in source:
        raise WatchError(f"--source {source!r}: not an http(s) playlist, an rtsp:// URL or a directory")
    return "dir"


def redacted(source: str) -> str:
    """The source as manifests, logs and metrics show it: a password in the URL (``rtsp://user:pw@cam/``) as ***."""
    password = urlparse(source).password if "://" in source else None
    return source.replace(f":{password}@", ":***@", 1) if password else source


def scrubbed(text: str, source: str) -> str:
    """``text`` (an error message) without the source's password, as written in the URL or percent-decoded
    (as a library that opened the URL may print it)."""
    password = urlparse(source).password if "://" in source else None
    for form in sorted({password, unquote(password)} if password else (), key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def default_stream_id(source: str) -> str:
    """A stream id from the source: the playlist's name (for index.m3u8-like names its folder's, or the host's),
    the RTSP host and path, or the directory's name."""
    if "://" in source:
        url = urlparse(source)
        parts = [p for p in url.path.split("/") if p]
        if source_kind(source) == "hls":
            stem = Path(parts[-1]).stem if parts else ""
            if not stem or stem.lower() in GENERIC_NAMES:
                stem = parts[-2] if len(parts) > 1 else (url.hostname or "stream")
            name = stem
        else:
            name = "_".join([url.hostname or "rtsp", *parts])
    else:
        name = Path(source.rstrip("/")).name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "stream"


def stream_ids(config: "WatchConfig") -> tuple[str, ...]:
    """Each source's stream id (``config.streams``, or from the source)."""
    return config.streams or tuple(default_stream_id(s) for s in config.sources)


@dataclass(frozen=True)
class WatchConfig(Config):
    """One watcher run: its sources, where clips/embeddings/alerts go, and how it follows and scores.

    ``streams`` names each source's stream id (default: from the URL or directory name).
    Without ``checkpoint`` the watcher only keeps the clips growing; with it, it also embeds
    each committed second, and with ``reference`` too it scores them and raises alerts.
    """

    sources: tuple[str, ...]
    clips: str
    streams: tuple[str, ...] = ()
    checkpoint: str | None = None
    embeddings: str | None = None  # default: <clips>-embeddings beside the clips root
    reference: str | None = None  # embeddings root of normal footage: the anomaly threshold is fitted on it
    alerts: str | None = None  # JSON lines file of alerts
    webhook: str | None = None  # each alert line is also POSTed here
    # the anomaly score and its threshold, with jobs/anomaly.py's defaults
    score: str = AnomalyJobConfig.default_of("score")
    sigma: float = AnomalyJobConfig.default_of("sigma")
    knn_k: int = AnomalyJobConfig.default_of("knn_k")
    knn_exclusion: int = AnomalyJobConfig.default_of("knn_exclusion")
    poll_seconds: float = 1.0  # how often a playlist or directory is looked at
    shard_seconds: int = 600  # small per-segment shards are merged into one file per this many seconds
    commit_margin: float = 0.5  # a second is cut once the source covers it and this much beyond
    settle_seconds: float = 5.0  # dir: the newest file counts as complete once unchanged this long
    stall_seconds: float = 30.0  # no new segment for this long: the source is reconnected
    backoff_seconds: float = 1.0  # first retry delay after a source error (doubles, up to backoff_max)
    backoff_max: float = 30.0
    rtsp_segment_seconds: float = 2.0  # rtsp: ffmpeg remuxes the stream into segments this long
    cpus_per_watcher: float = 1.0  # Ray CPUs each source's actor asks for (a 320x180 camera needs far less than 1)
    metrics_port: int | None = None  # Prometheus endpoint on 127.0.0.1 (0: any free port; None: off)
    duration: float | None = None  # stop after this many seconds (None: until stopped)
    crop_size: int = 160  # clips when no checkpoint says otherwise
    window_seconds_max: int = 60  # at most this many seconds are decoded in one piece

    config_error = WatchError

    def __post_init__(self) -> None:
        if not self.sources:
            raise WatchError("--source: give at least one source")
        if self.streams and len(self.streams) != len(self.sources):
            raise WatchError(f"--stream: {len(self.streams)} names for {len(self.sources)} sources")
        for source in self.sources:
            source_kind(source)
        ids = stream_ids(self)
        if len(set(ids)) != len(ids):
            twice = sorted({i for i in ids if ids.count(i) > 1})
            raise WatchError(f"--source: two sources would write stream(s) {twice}; name each with --stream")
        if not self.clips:
            raise WatchError("--clips: name the clips root")
        if self.reference and not self.checkpoint:
            raise WatchError("--reference needs --checkpoint (the seconds are scored with it)")
        if (self.alerts or self.webhook) and not self.reference:
            raise WatchError("--alerts/--webhook need --reference (the threshold is fitted on it)")
        if self.score not in SCORES:
            raise WatchError(f"--score must be one of {SCORES}, got {self.score!r}")
        for name in ("poll_seconds", "settle_seconds", "stall_seconds", "backoff_seconds", "backoff_max",
                     "rtsp_segment_seconds", "shard_seconds", "window_seconds_max", "knn_k", "crop_size",
                     "cpus_per_watcher"):
            if not getattr(self, name) > 0:
                raise WatchError(f"--{name.replace('_', '-')} must be > 0, got {getattr(self, name)!r}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0) or self.knn_exclusion < 0 or self.commit_margin < 0:
            raise WatchError("--sigma, --knn-exclusion and --commit-margin must be >= 0")
        if self.duration is not None and not self.duration > 0:
            raise WatchError(f"--duration must be > 0 seconds, got {self.duration}")
        if self.metrics_port is not None and not 0 <= self.metrics_port < 65536:
            raise WatchError(f"--metrics-port must be a port number, got {self.metrics_port}")
