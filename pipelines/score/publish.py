"""The driver side of scoring: each stream's rows staged as parts while they arrive, then published.

``StreamRun`` holds one stream being scored (counts, errors, the part being filled; driver
memory is one part per open stream); ``Publisher`` turns finished streams into published
output through ``pipelines.runtime.stream_job`` (readers see the old rows, no rows, or the new
rows) or into failed manifests, and records every stream's outcome.
"""

from __future__ import annotations

import json

import numpy as np

from pipelines.ingest.window import WindowResult, truncation_error, window_warnings
from pipelines.media.info import VideoInfo
from pipelines.media.storage import OutputStore
from pipelines.runtime.manifest import STATUS_COMPLETE, STATUS_FAILED, STATUS_RUNNING, StreamManifest
from pipelines.runtime.stream_job import StreamOutcome, fail_stream, publish_staged, staging_root
from pipelines.score.config import EmbedConfig
from pipelines.score.embeddings import embeddings_schema, embeddings_table
from pipelines.score.model import ScoringModel
from pipelines.score.plans import StreamPlan


class StreamRun:
    """The driver's state of one stream being scored: counts, errors, and the part being filled."""

    def __init__(self, plan: StreamPlan, store: OutputStore, scoring: ScoringModel, settings: EmbedConfig) -> None:
        self.plan, self.store, self.scoring, self.settings = plan, store, scoring, settings
        self.staging = staging_root(store, plan.stream_id)
        self.received = self.no_audio = self.no_video = self.unscored = self.rows = 0
        self.errors: list[str] = []
        self.windows: list[WindowResult] = []
        self.parts: list[str] = []
        self.buffer: list[tuple[np.ndarray, ...]] = []  # (t, v, a, av_dist, spectrum) per batch
        self.buffered = 0
        self.last_t = -1
        self.finished = False

    def take(self, rows: dict[str, np.ndarray]) -> None:
        """One stream's slice of an output batch, in arrival order."""
        self.received += int(rows["clips"].sum())
        self.no_audio += int(rows["no_audio"].sum())
        self.no_video += int(rows["no_video"].sum())
        self.unscored += int(rows["unscored"].sum())
        for window in rows["window"]:
            if window:
                self.windows.append(WindowResult(**json.loads(window)))
        for error in dict.fromkeys(e for e in rows["error"] if e):
            self.errors.append(error if error.startswith(self.plan.source) else f"{self.plan.source}: {error}")
        if self.errors:
            return  # the stream fails; stop staging its rows
        scored = (rows["t"] >= 0) & (rows["error"] == "")
        t = rows["t"][scored]
        if t.size == 0:
            return
        if t[0] <= self.last_t or np.any(np.diff(t) <= 0):
            self.errors.append(f"{self.plan.source}: rows arrived out of time order (t {int(t[0])} after {self.last_t})")
            return
        self.last_t = int(t[-1])
        self.buffer.append((t, rows["v_emb"][scored], rows["a_emb"][scored], rows["av_dist"][scored],
                            rows["spectrum"][scored]))
        self.buffered += t.size
        while self.buffered >= self.settings.rows_per_file:
            self._write_part(self.settings.rows_per_file)

    def _write_part(self, n: int) -> None:
        t, v, a, d, s = (np.concatenate([b[k] for b in self.buffer]) for k in range(5))
        rest = (t[n:], v[n:], a[n:], d[n:], s[n:])
        self.buffer = [rest] if rest[0].size else []
        self.buffered = rest[0].size
        scoring = self.scoring
        table = embeddings_table(self.plan.stream_id, t[:n], v[:n], a[:n], d[:n], scoring.model_id, scoring.lam, s[:n])
        path = f"{self.staging}/part-{len(self.parts):05d}.parquet"
        schema = embeddings_schema(scoring.dim, scoring.model_id, scoring.lam, scoring.n_mels)
        self.rows += self.store.write_parquet(path, [table], schema, self.settings.compression)
        self.parts.append(path)

    def check(self, info: VideoInfo | None) -> list[str]:
        """Errors that fail the stream once its input is exhausted."""
        errors = list(self.errors)
        if self.received < self.plan.expected:
            errors.append(f"{self.plan.source}: only {self.received} of {self.plan.expected} clips came back from "
                          f"the workers (a worker died?)")
        elif self.received > self.plan.expected:
            errors.append(f"{self.plan.source}: {self.received} clips came back, {self.plan.expected} expected")
        if not errors and info is not None:
            truncated = truncation_error(self.plan.source, info, self.windows)
            if truncated:
                errors.append(truncated)
        return errors

    def flush(self) -> None:
        if self.buffered:
            self._write_part(self.buffered)


class Publisher:
    """Turns finished streams into published output (or failed manifests) and outcomes."""

    def __init__(self, store: OutputStore) -> None:
        self.store = store
        self.outcomes: dict[str, StreamOutcome] = {}

    def manifest(self, plan: StreamPlan, status: str) -> StreamManifest:
        return StreamManifest(plan.stream_id, plan.source, status, plan.config_hash, plan.config, info=dict(plan.info),
                              source_key=plan.source_key)

    def start(self, plan: StreamPlan) -> None:
        """Forget leftovers of an interrupted run; a stream seen for the first time says it is running."""
        self.store.delete_dir(staging_root(self.store, plan.stream_id))
        if plan.previous is None or plan.previous.status != STATUS_COMPLETE:
            self.manifest(plan, STATUS_RUNNING).save(self.store)

    def fail(self, plan: StreamPlan, errors: list[str]) -> None:
        store = self.store
        store.delete_dir(staging_root(store, plan.stream_id))
        if plan.previous is not None and plan.previous.status == STATUS_COMPLETE:
            kept = f"its earlier embeddings (model {plan.previous.config.get('model')}) are kept"
            self.outcomes[plan.stream_id] = StreamOutcome(plan.stream_id, plan.source, STATUS_FAILED,
                                                          errors=errors + [kept])
            return
        self.outcomes[plan.stream_id] = fail_stream(store, self.manifest(plan, STATUS_FAILED), errors)

    def complete(self, run: StreamRun, info: VideoInfo | None) -> None:
        errors = run.check(info)
        if errors:
            self.fail(run.plan, errors)
            return
        run.flush()
        store, plan = self.store, run.plan
        manifest = self.manifest(plan, STATUS_RUNNING)
        manifest.seconds_without_audio, manifest.seconds_without_video = run.no_audio, run.no_video
        manifest.info["clips_unscored"] = run.unscored
        manifest.frame_backend = str(plan.info.get("frame_backend", ""))
        manifest.warnings = [plan.info["backend_note"]] if plan.info.get("backend_note") else []
        if run.windows:
            manifest.warnings += window_warnings(run.windows)
            manifest.count_backends(w.backend for w in run.windows)
            manifest.damaged_packets = sum(w.damaged_packets for w in run.windows)
            manifest.decode_seconds = sum(w.wall_seconds for w in run.windows)
        if run.unscored:
            manifest.warnings.append(f"{run.unscored} clips without audio or video were not scored (no rows)")
        publish_staged(store, manifest, run.parts, run.rows)
        store.delete_dir(staging_root(store, plan.stream_id))
        self.outcomes[plan.stream_id] = StreamOutcome(plan.stream_id, plan.source, STATUS_COMPLETE, run.rows,
                                                      unscored=run.unscored)
