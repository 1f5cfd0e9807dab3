"""The live watcher job: one long-lived Ray actor per source, a progress line and a Prometheus endpoint.

    run_watch(WatchConfig(sources=("http://cam1/live.m3u8",), clips="data/clips", ...))

Each actor runs a ``StreamWatcher`` (``pipelines.live.watcher``) until the job is stopped
(Ctrl-C / SIGTERM, or ``duration``), or its source ends (an HLS playlist with ENDLIST). An
actor that dies (a crashed decoder, a lost node) is started again after a pause and resumes
from its stream's manifest. The driver polls the actors' stats every second, prints one
progress line per stream and serves them as Prometheus metrics on 127.0.0.1.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass

from pipelines.live.config import WatchConfig, redacted, scrubbed, stream_ids
from pipelines.live.watcher import StreamWatcher, WatchStats, default_embeddings
from pipelines.runtime.cluster import ensure_ray

RESTART_PAUSE_SECONDS = 2.0
MAX_RESTARTS = 5  # in a row without a newly committed second: the watcher cannot start (bad settings), give up


@dataclass
class WatchSummary:
    config: WatchConfig
    streams: list[dict]  # each watcher's final stats
    wall_seconds: float
    metrics_port: int | None = None

    @property
    def ok(self) -> bool:
        return all(s.get("state") in ("ended", "stopped") for s in self.streams)

    def format(self) -> str:
        lines = [f"watch summary -> clips {self.config.clips}" + (
            f", embeddings {self.config.embeddings or default_embeddings(self.config.clips)}" if self.config.checkpoint else "")]
        for s in self.streams:
            lines.append(f"  {s['stream_id']} ({s['source']}): {s['state']}, committed up to {s['committed_until']} s "
                         f"({s['seconds_committed']} s this run, {s['gap_seconds']} s in gaps), {s['alerts']} alert(s), "
                         f"{s['reconnects']} reconnect(s), {s['segment_failures']} bad segment(s)"
                         + (f"; last error: {s['last_error']}" if s.get("last_error") else ""))
        lines.append(f"  wall time: {self.wall_seconds:.1f} s")
        return "\n".join(lines)


class Metrics:
    """Prometheus gauges of every stream, set from the actors' stats."""

    def __init__(self, port: int) -> None:
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        names = {
            "lag_seconds": "seconds between the end of the last committed second at the source and now",
            "committed_until_seconds": "every stream second below this is committed (rows or a recorded gap)",
            "seconds_committed": "stream seconds committed by this run",
            "gap_seconds": "stream seconds recorded as gaps by this run",
            "decode_seconds_per_second": "decode time per committed stream second",
            "score_seconds_per_second": "embedding and scoring time per committed stream second",
            "alerts": "alerts raised by this run",
            "reconnects": "source errors retried by this run",
            "segment_failures": "corrupt segments by this run",
        }
        self.gauges = {k: Gauge(f"epg_live_{k}", h, ["stream"], registry=self.registry) for k, h in names.items()}
        self.server, self.thread = start_http_server(port, addr="127.0.0.1", registry=self.registry)
        self.port = self.server.server_port

    def update(self, stats: dict) -> None:
        sid = stats["stream_id"]
        per = max(1, stats["seconds_committed"])
        values = {**{k: stats[k] for k in ("committed_until", "seconds_committed", "gap_seconds", "alerts",
                                           "reconnects", "segment_failures")},
                  "lag_seconds": stats["lag_seconds"] if stats["lag_seconds"] is not None else float("nan"),
                  "decode_seconds_per_second": stats["decode_seconds"] / per,
                  "score_seconds_per_second": stats["score_seconds"] / per}
        values["committed_until_seconds"] = values.pop("committed_until")
        for key, value in values.items():
            self.gauges[key].labels(stream=sid).set(value)

    def close(self) -> None:
        self.server.shutdown()


def progress_line(stats: list[dict]) -> str:
    parts = []
    for s in stats:
        lag = f"lag {s['lag_seconds']:.1f} s" if s.get("lag_seconds") is not None else "lag ?"
        parts.append(f"{s['stream_id']}: {s['state']} t={s['committed_until']} s {lag} alerts {s['alerts']}")
    return "[watch] " + " | ".join(parts)


def _unstarted(config: WatchConfig, i: int) -> dict:
    return asdict(WatchStats(stream_ids(config)[i], redacted(config.sources[i])))


def run_watch(config: WatchConfig, ray_address: str | None = None, show_progress: bool = True) -> WatchSummary:
    """Follow every source until stopped (SIGINT/SIGTERM), ``config.duration``, or every source ended."""
    import ray

    began = time.monotonic()
    ensure_ray(ray_address)
    actor_class = ray.remote(num_cpus=config.cpus_per_watcher, max_concurrency=2)(StreamWatcher)
    actors = [actor_class.remote(config, i) for i in range(len(config.sources))]
    runs = {i: actor.run.remote() for i, actor in enumerate(actors)}
    final: dict[int, dict] = {}
    last: dict[int, dict] = {}
    restarts = {i: 0 for i in runs}
    metrics = Metrics(config.metrics_port) if config.metrics_port is not None else None
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()

    previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)} \
        if threading.current_thread() is threading.main_thread() else {}
    try:
        while runs:
            if stopping.is_set() or (config.duration is not None and time.monotonic() - began > config.duration + 30):
                for i in runs:
                    actors[i].stop.remote()
            done, _ = ray.wait(list(runs.values()), timeout=1.0)
            for i, ref in list(runs.items()):
                if ref not in done:
                    continue
                try:
                    final[i] = ray.get(ref)
                    del runs[i]
                except ray.exceptions.RayError as exc:  # the actor died: start it again, it resumes
                    restarts[i] += 1
                    if stopping.is_set() or restarts[i] > MAX_RESTARTS:
                        del runs[i]
                        final[i] = {**last.get(i, _unstarted(config, i)), "state": "failed",
                                    "last_error": scrubbed(f"{type(exc).__name__}: {exc}", config.sources[i])}
                        print(f"[watch] {redacted(config.sources[i])}: watcher failed: {scrubbed(str(exc), config.sources[i])}", file=sys.stderr)
                        continue
                    print(f"[watch] {redacted(config.sources[i])}: watcher died ({type(exc).__name__}); restarting",
                          file=sys.stderr)
                    ray.kill(actors[i], no_restart=True)  # a task error leaves the actor alive
                    last.pop(i, None)  # the new actor counts its own seconds from 0
                    time.sleep(RESTART_PAUSE_SECONDS)
                    actors[i] = actor_class.remote(config, i)
                    runs[i] = actors[i].run.remote()
            for i in runs:
                try:
                    stats = ray.get(actors[i].report.remote(False), timeout=5)
                    if stats["seconds_committed"] > last.get(i, {}).get("seconds_committed", 0):
                        restarts[i] = 0
                    last[i] = stats
                except (ray.exceptions.RayError, ray.exceptions.GetTimeoutError):
                    continue
            for stats in {**last, **final}.values():
                if metrics is not None and "seconds_committed" in stats:
                    metrics.update(stats)
            if show_progress and last:
                print(progress_line([{**last, **final}[i] for i in sorted({**last, **final})]), file=sys.stderr,
                      flush=True)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        port = metrics.port if metrics is not None else None
        if metrics is not None:
            metrics.close()
    streams = [final[i] for i in sorted(final)]
    return WatchSummary(config, streams, time.monotonic() - began, port)
