"""Follow one live source: segments -> the same 1-s clips as ingest -> embeddings -> anomaly alerts.

``StreamWatcher`` is a plain object (the job runs one per source as a Ray actor; tests drive
it in-process with ``step``). Each step looks at the source, places its new complete
segments on the stream's seconds (``pipelines.live.timeline``), and cuts every whole second
the segments now cover (and ``commit_margin`` beyond, so the audio of a second's end comes
from the next segment as it would from a file) with ingest's own window decode
(``pipelines.ingest.window.window_clips``) on the concatenated MPEG-TS segments around it:
the rows are those of ingesting the same footage as one file. Then, in this order, the
seconds are embedded with the checkpoint and scored against the reference footage, their
alert lines go out (at least once), the clips and the embeddings are committed
(``pipelines.live.appender``) with the resume state in the clips manifest.

Seconds the source does not deliver (an outage, segments that expired from the playlist while
the watcher was down, a corrupt segment) get no rows: they are recorded as gaps in the
manifest with the reason, and a corrupt segment's name and error are in its errors.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipelines.downstream.anomaly_job import AnomalyJobConfig, FittedScore, fit_score
from pipelines.ingest.clip_table import clips_schema
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.window import WindowTask, bounded_window_clips
from pipelines.live.alerts import AlertSink, AlertTracker
from pipelines.live.appender import LiveAppender
from pipelines.live.config import WatchConfig, redacted, scrubbed, source_kind, stream_ids
from pipelines.live.sources import HlsSource, RtspSource, Segment, SegmentDirSource, SourceError
from pipelines.live.timeline import HOLE_SECONDS, Placed, StreamTimeline
from pipelines.media.info import MediaError, inspect_video
from pipelines.runtime.isolated import CallTimedOut, ChildDied, bounded_call

LEAD_SECONDS = 1.0  # media decoded before a cut's first second (the decoder's and resampler's warm-up)
# A segment or a cut is seconds of footage: its inspection or decode past this (a cut: at least, and 5 s
# per second it holds) is hung, and its process is stopped (pipelines.runtime.isolated); the seconds
# become a gap with that reason, as they do when a decoder crashes.
LIVE_DECODE_SECONDS = 60.0
LIVE_DECODE_SECONDS_PER_SECOND = 5.0
LAG_SAMPLES = 10_000


def resident_mb() -> float:
    """This process's resident memory (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


def default_embeddings(clips: str) -> str:
    """``<clips>-embeddings`` beside the clips root."""
    return clips.rstrip("/") + "-embeddings"


@dataclass
class WatchStats:
    """What a watcher reports (the progress line, the metrics endpoint, the job's summary)."""

    stream_id: str
    source: str
    state: str = "starting"  # following, retrying, ended, stopped
    committed_until: int = 0
    seconds_committed: int = 0  # by this run
    rows: int = 0
    gap_seconds: int = 0
    segments: int = 0
    segment_failures: int = 0
    reconnects: int = 0
    alerts: int = 0
    webhook_failures: int = 0
    decode_seconds: float = 0.0
    score_seconds: float = 0.0
    cpu_seconds: float = 0.0  # CPU time of this process (all its threads) since the watcher started
    rss_mb: float = 0.0  # resident memory of this process now
    rss_mb_after_minute: float | None = None  # ... once this run had committed its first minute (flat over hours?)
    lag_seconds: float | None = None  # behind the source: now − end of the last committed second (wall clock)
    last_error: str = ""
    lags: list[tuple[int, float, float | None]] = field(default_factory=list)  # (t, commit − arrival, commit − wall end)
    startup_until: int | None = None  # the first commit of this run ends here (its seconds waited for start-up)


class StreamWatcher:
    """One source, followed until ``stop`` (or its end, or ``config.duration``)."""

    def __init__(self, config: WatchConfig, index: int) -> None:
        self.config = config
        self.source = config.sources[index]
        self.kind = source_kind(self.source)
        self.stream_id = stream_ids(config)[index]
        self._stop = threading.Event()
        self.stats = WatchStats(self.stream_id, redacted(self.source))
        self._lags: deque = deque(maxlen=LAG_SAMPLES)
        self._cpu_at_start = time.process_time()

        self.scoring = self.embedder = None
        if config.checkpoint:
            from pipelines.score.config import EmbedConfig
            from pipelines.score.inputs import ClipShape
            from pipelines.score.model import ClipEmbedder, ScoringModel
            from pipelines.score.plans import ingest_config_for

            self.scoring = ScoringModel.load(config.checkpoint)
            self.embedder = ClipEmbedder.in_process(self.scoring)
            self.shape = ClipShape.of_model(self.scoring.model_config)
            self.ingest = ingest_config_for(self.scoring, EmbedConfig())
        else:
            self.ingest = IngestConfig(crop_size=config.crop_size)
        self.clips = LiveAppender(config.clips, self.stream_id, redacted(self.source), self.ingest.output_hash(),
                                  self.ingest.to_dict(), clips_schema(self.ingest), self.ingest.compression,
                                  config.shard_seconds)
        self.embeddings = self._embeddings_appender() if self.scoring else None
        state = self.clips.manifest.live or {}
        self.timeline = StreamTimeline.from_state(state.get("epochs", []))
        self.released = str(state.get("released", ""))  # key of the last segment no longer needed
        self.generation = int(state.get("generation", 0))
        self.next_t = self.clips.committed_until
        self.chain: list[Placed] = []
        self.hole_reason = ""  # why the next segment will not follow on (said in the gap before it)
        self.chain_reason = ""  # ... for the gap before the chain's first segment
        self.skipped = ""  # key of the newest segment dropped (corrupt) while older ones are held
        self.restart_pending = False  # a dropped segment said the source's clock restarts: the next one does
        self._committed_epochs: list | None = None  # the timeline as the manifest may say (None: as it is now)
        self.ended = False
        self.last_segment_at = time.monotonic()
        self.last_segment_seconds = 0.0

        self.spool = self._spool_dir()
        self.reader = self._reader()
        self.fitted: FittedScore | None = None
        self.tracker = self.sink = None
        if config.reference:
            self.fitted = self._fit_reference()
            self.tracker = AlertTracker(self.stream_id, self.fitted.threshold.value, state.get("alert"))
            self.sink = AlertSink(config.alerts, config.webhook)
        self.stats.committed_until = self.next_t
        self._catch_up_embeddings()

    # ------------------------------------------------------------------ set-up

    def _spool_dir(self) -> Path:
        """Local folder for downloaded segments and cut chunks: beside the clips when they are local."""
        if "://" in self.config.clips:
            base = Path(tempfile.gettempdir()) / "epg-live"
        else:
            base = Path(self.config.clips) / "_live"
        spool = base / self.stream_id
        spool.mkdir(parents=True, exist_ok=True)
        return spool

    def _reader(self):
        if self.kind == "hls":
            return HlsSource(self.source, str(self.spool / f"hls-{self.generation:04d}"))
        if self.kind == "rtsp":
            return RtspSource(self.source, str(self.spool / "rtsp"), self.config.rtsp_segment_seconds,
                              self.config.settle_seconds)
        return SegmentDirSource(self.source, self.config.settle_seconds)

    def _embeddings_appender(self) -> LiveAppender:
        from pipelines.score.embeddings import embeddings_schema
        from pipelines.score.plans import model_record, short_hash

        record = {**model_record(self.scoring), "input": "live", "clips_config_hash": self.ingest.output_hash()}
        return LiveAppender(self.config.embeddings or default_embeddings(self.config.clips), self.stream_id,
                            redacted(self.source), short_hash(record), record,
                            embeddings_schema(self.scoring.dim, self.scoring.model_id, self.scoring.lam,
                                              self.scoring.n_mels), "zstd",
                            self.config.shard_seconds)

    def _fit_reference(self) -> FittedScore:
        from pipelines.score.embeddings import read_embeddings

        read = read_embeddings(self.config.reference)
        reference = read.of_streams(read.streams)  # in memory of its own (the reader's arrays are read-only views)
        if self.stream_id in reference.streams:
            raise ValueError(f"--reference {self.config.reference!r} has a stream {self.stream_id!r} too; "
                             "give the live source another --stream name")
        if reference.model != self.scoring.model_id:
            raise ValueError(f"--reference {self.config.reference!r} was scored with model {reference.model}, "
                             f"the checkpoint is {self.scoring.model_id}; score the reference with this checkpoint")
        c = self.config
        job = AnomalyJobConfig(embeddings=c.reference, output="(live)", reference=tuple(reference.streams),
                               sigma=c.sigma, score=c.score, knn_k=c.knn_k, knn_exclusion=c.knn_exclusion)
        return fit_score(job, reference, reference.lam)

    def _catch_up_embeddings(self) -> None:
        """Seconds committed as clips but not yet as embeddings (a watcher stopped between the two)."""
        if self.embeddings is None or self.embeddings.committed_until >= self.next_t:
            return
        import pyarrow.parquet as pq

        from pipelines.live.appender import shard_span

        start = self.embeddings.committed_until
        names = [f for f in self.clips.manifest.files if shard_span(f)[1] > start]
        tables = [pq.read_table(f"{self.clips.dir}/{f}", filesystem=self.clips.store.fs) for f in names]
        if tables:
            table = pa.concat_tables(tables).sort_by("t")
            self._embed_and_alert(table.filter(pc.greater_equal(table.column("t"), start)), self.next_t, send=False)

    # ------------------------------------------------------------------ the loop

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> dict:
        """Follow the source until stopped, ended or ``config.duration``; the final stats. A source that fails
        (an HTTP or file-system error, a stalled playlist, ffmpeg gone) is retried with backoff."""
        began = time.monotonic()
        self._cpu_at_start = time.process_time()
        backoff = self.config.backoff_seconds
        try:
            while not self._stop.is_set():
                if self.config.duration is not None and time.monotonic() - began >= self.config.duration:
                    break
                try:
                    if isinstance(self.reader, RtspSource) and not self.reader.alive():
                        ended = self.reader.ended()
                        if ended:  # its segments are drained by the next steps; retry after the backoff
                            raise SourceError(f"{self.source}: {ended}")
                        self.reader.start()
                    done = self.step()
                    self.stats.state = "following"
                    backoff = self.config.backoff_seconds
                    if self.ended:
                        self.stats.state = "ended"
                        break
                    stall = max(self.config.stall_seconds, 3 * self.last_segment_seconds)
                    if time.monotonic() - self.last_segment_at > stall:
                        raise SourceError(f"{self.source}: no new segment for {stall:.0f} s")
                    if not done:
                        self._stop.wait(self.config.poll_seconds)
                # Source errors only (the sources wrap their own I/O errors): a failed commit must not be
                # retried on a half-updated manifest, so storage errors end the actor and the job restarts it.
                except (SourceError, http.client.HTTPException) as exc:
                    self.stats.state = "retrying"
                    self.stats.last_error = scrubbed(f"{type(exc).__name__}: {exc}", self.source)
                    self.stats.reconnects += 1
                    if isinstance(self.reader, RtspSource):
                        self.reader.stop()
                    self.last_segment_at = time.monotonic()
                    self._stop.wait(backoff)
                    backoff = min(2 * backoff, self.config.backoff_max)
        finally:
            self.close()
        return self.report()

    def step(self) -> int:
        """One look at the source; the seconds committed."""
        for segment in self._poll():
            self._add(segment)
        return self._cut(final=self.ended)

    def close(self) -> None:
        if self.stats.state not in ("ended",):
            self.stats.state = "stopped"
        if isinstance(self.reader, RtspSource):
            self.reader.stop()
        for appender in (self.clips, self.embeddings):
            if appender is not None:
                appender.compact()

    def report(self, lags: bool = True) -> dict:
        """The stats as a new dict (with the per-second lags when ``lags``); safe from another thread."""
        stats = asdict(self.stats)
        stats["lags"] = list(self._lags) if lags else []
        stats["cpu_seconds"] = time.process_time() - self._cpu_at_start
        stats["rss_mb"] = resident_mb()
        wall_end = self._wall(self.stats.committed_until)
        stats["lag_seconds"] = None if wall_end is None or not self.stats.seconds_committed else time.time() - wall_end
        if self.sink is not None:
            stats["webhook_failures"] = self.sink.webhook_failures
        return stats

    # ------------------------------------------------------------------ segments

    def _newest(self) -> str:
        """Key of the newest segment read (released, held or dropped)."""
        return max([self.released, self.skipped] + [p.segment.key for p in self.chain])

    def _poll(self) -> list[Segment]:
        if not isinstance(self.reader, HlsSource):
            found = self.reader.poll(self._newest())
            for warning in self.reader.warnings:
                self._error(warning)
            self.reader.warnings.clear()
            return found
        newest = int(self._newest() or -1)
        found = self.reader.poll(newest)
        if found.last_sequence is not None and found.last_sequence < newest - found.listed:
            # The playlist starts again far below what was read: the source restarted. Its segments go to a
            # new spool folder (the numbers repeat) and the first one opens a new epoch; what the old run
            # delivered is complete.
            self._cut(final=True, closing=True)
            self._release_all()
            shutil.rmtree(self.reader.spool, ignore_errors=True)
            self.generation += 1
            self.reader = HlsSource(self.source, str(self.spool / f"hls-{self.generation:04d}"))
            self.released, self.skipped, newest = "", "", -1
            found = self.reader.poll(newest)
            if found.segments:
                found.segments[0] = replace(found.segments[0], discontinuity=True)
        elif found.segments and newest >= 0 and found.segments[0].sequence > newest + 1:
            self.hole_reason = (f"segments {newest + 1}-{found.segments[0].sequence - 1} expired from the playlist "
                                "before the watcher read them")
        self.ended = found.ended
        return found.segments

    def _add(self, segment: Segment) -> None:
        """Inspect and place a new segment; one that cannot be read is recorded and leaves a hole."""
        self.stats.segments += 1
        self.last_segment_at = time.monotonic()
        problem, info = segment.error, None
        if not problem:
            try:
                info = bounded_call(inspect_video, segment.path, 0.0, timeout=LIVE_DECODE_SECONDS)
            except MediaError as exc:
                problem = exc.reason
            except (CallTimedOut, ChildDied) as exc:
                problem = f"inspection {exc}"
        if info is None:
            self.restart_pending |= segment.discontinuity
            self.stats.segment_failures += 1
            self.hole_reason = f"segment {segment.name}: {problem}"
            self._error(self.hole_reason)
            self._drop(segment)
            return
        self.last_segment_seconds = info.duration
        if self.restart_pending:
            segment, self.restart_pending = replace(segment, discontinuity=True), False
        resuming = not self.chain
        after = self.chain[-1].end if self.chain else float(self.next_t)
        epochs = list(self.timeline.epochs)
        placed = self.timeline.place(segment, info, after, segment.key, resuming)
        if self.chain:
            last = self.chain[-1]
            if placed.epoch is not last.epoch or placed.start > last.end + HOLE_SECONDS or not (placed.joins and last.joins):
                # The chain ends: commit all of it. The manifest keeps the timeline without this segment's
                # epoch until a cut of the new chain, so a watcher killed in between reads the old chain's
                # segments again on the clock they were placed on.
                self._committed_epochs = epochs
                try:
                    self._cut(final=True, closing=True)
                finally:
                    self._committed_epochs = None
                self._release_all()
        elif placed.end <= self.next_t - LEAD_SECONDS:  # read again on resume, before the lead-in: not needed
            self._release(segment)
            return
        if not self.chain:
            self.chain_reason, self.hole_reason = self.hole_reason, ""
        self.hole_reason = ""  # a reason that no hole followed is stale
        self.chain.append(placed)

    def _error(self, message: str) -> None:
        """A problem for the manifest (the same one read again on resume is not repeated; the last 1000 kept)."""
        errors = self.clips.manifest.errors
        message = scrubbed(message, self.source)
        if message not in errors[-20:]:
            errors.append(message)
            del errors[:-1000]

    def _drop(self, segment: Segment) -> None:
        """A segment that cannot be used: its file goes; a resumed watcher skips it unless older ones are held."""
        if isinstance(self.reader, HlsSource):
            self.reader.release(segment)
        elif isinstance(self.reader, RtspSource):
            Path(segment.path).unlink(missing_ok=True)
        if self.chain:
            self.skipped = max(self.skipped, segment.key)
        else:
            self.released = max(self.released, segment.key)

    def _release(self, segment: Segment) -> None:
        if isinstance(self.reader, HlsSource):
            self.reader.release(segment)
        elif isinstance(self.reader, RtspSource):
            Path(segment.path).unlink(missing_ok=True)
        self.released = max(self.released, segment.key)

    def _release_all(self) -> None:
        for placed in self.chain:
            self._release(placed.segment)
        self.chain = []

    def _releasable(self, until: int) -> list[Placed]:
        """The held segments no cut after ``until`` needs (its lead-in and the newest one stay)."""
        keep = [p for p in self.chain if p.end > until - LEAD_SECONDS] or self.chain[-1:]
        return self.chain[: len(self.chain) - len(keep)]

    # ------------------------------------------------------------------ cutting

    def _cut(self, final: bool, closing: bool = False) -> int:
        """Commit every whole second the chain covers (all of them when ``final``: also ``closing``, the chain
        ends here, a hole or a new epoch follows); the seconds committed."""
        if not self.chain:
            return 0
        gaps = []
        first = self.chain[0].first_whole_second
        if self.next_t < first:
            reason = scrubbed(self.chain_reason or "the source delivered no media for these seconds", self.source)
            gaps.append({"start": self.next_t, "end": first, "reason": reason})
            self.stats.gap_seconds += first - self.next_t
            self.next_t = first
        self.chain_reason = ""
        end = self.chain[-1].end
        until = math.floor(end + 1e-3) if final else math.floor(end - self.config.commit_margin)
        committed = 0
        while self.next_t < until or gaps:
            n = max(0, min(until - self.next_t, self.config.window_seconds_max))
            committed += self._commit(self.next_t, n, gaps)
            gaps = []
            if n == 0:
                break
        done = self._releasable(self.next_t)
        for placed in done:
            self._release(placed.segment)
        self.chain = self.chain[len(done):]
        return committed

    def _commit(self, t0: int, n: int, gaps: list[dict]) -> int:
        """Decode seconds [t0, t0 + n) from the chain, embed, score, alert, commit."""
        table = None
        if n > 0:
            began = time.perf_counter()
            table, error = self._decode(t0, n)
            self.stats.decode_seconds += time.perf_counter() - began
            if table is None:
                gaps = gaps + [{"start": t0, "end": t0 + n, "reason": scrubbed(error, self.source)}]
                self.stats.gap_seconds += n
                self._error(error)
        until = t0 + n
        if table is not None:
            self._embed_and_alert(table, until, send=True)
        elif self.tracker is not None and gaps:
            self._send(self.tracker.update([until + 1], [-math.inf], self._wall))  # a gap ends an open event
        resume = max([self.released] + [p.segment.key for p in self._releasable(until)])  # as it will be after this cut
        epochs = self.timeline.to_state() if self._committed_epochs is None else \
            StreamTimeline(self._committed_epochs).to_state()
        state = {"epochs": epochs, "released": resume, "generation": self.generation,
                 "alert": self.tracker.state() if self.tracker else None}
        self.clips.commit(table, until, gaps, state)
        if self.embeddings is not None and self.embeddings.committed_until < until:
            self.embeddings.commit(self._pending_embeddings, until)
            self._pending_embeddings = None
        self.next_t = until
        self.stats.committed_until = until
        self.stats.seconds_committed += n
        self.stats.rows = self.clips.manifest.rows
        self._record_lag(t0, until)
        return n

    def _decode(self, t0: int, n: int) -> tuple[pa.Table | None, str]:
        pieces = [p for p in self.chain if p.end > t0 - LEAD_SECONDS and p.start < t0 + n + 0.5] or self.chain[-1:]
        names = ", ".join(p.segment.name for p in pieces)
        try:
            if pieces[0].joins:
                chunk = self.spool / "chunk.ts"
                with open(chunk, "wb") as out:
                    for p in pieces:
                        with open(p.segment.path, "rb") as handle:
                            out.write(handle.read())
            else:
                chunk = Path(pieces[-1].segment.path)
            bound = max(LIVE_DECODE_SECONDS, LIVE_DECODE_SECONDS_PER_SECOND * n)  # a catch-up cut holds more footage
            inspected = bounded_call(inspect_video, str(chunk), 0.0, timeout=bound)
            info = self.timeline.chunk_info(inspected, pieces[0].epoch, near=t0)
        except MediaError as exc:
            return None, f"seconds {t0}-{t0 + n} (segments {names}): {exc.reason}"
        except (CallTimedOut, ChildDied) as exc:
            return None, f"seconds {t0}-{t0 + n} (segments {names}): inspection {exc}"
        except OSError as exc:  # e.g. the NVR's retention deleted a file the watcher was still behind on
            return None, f"seconds {t0}-{t0 + n} (segments {names}): {type(exc).__name__}: {exc}"
        task = WindowTask(self.stream_id, str(chunk), t0, n, "", json.dumps(info.to_dict()))
        table, result = bounded_window_clips(task, replace(self.ingest, decode_timeout=bound))
        if table is None:
            return None, f"seconds {t0}-{t0 + n} (segments {names}): {result.error}"
        return table, ""

    # ------------------------------------------------------------------ scoring and alerts

    _pending_embeddings: pa.Table | None = None

    def _embed_and_alert(self, table: pa.Table, until: int, send: bool) -> None:
        if self.embedder is None or table.num_rows == 0:
            return
        from pipelines.score.embeddings import Embeddings, embeddings_table
        from pipelines.score.inputs import scoring_rows

        began = time.perf_counter()
        columns = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        rows = scoring_rows(columns, self.shape)
        keep = (rows["t"] >= 0) & (rows["error"] == "")
        t = rows["t"][keep].astype(np.int64)
        v, a, d, s = self.embedder.embed(rows["video"][keep], rows["audio"][keep])
        after = self.embeddings.committed_until
        fresh = t >= after
        t, v, a, d, s = t[fresh], v[fresh], a[fresh], d[fresh], s[fresh]
        self._pending_embeddings = embeddings_table(self.stream_id, t, v, a, d, self.scoring.model_id, self.scoring.lam, s)
        if self.fitted is not None and len(t):
            emb = Embeddings(np.full(len(t), self.stream_id, dtype=object), t, v, a, d, self.scoring.model_id,
                             self.scoring.lam, spectrum=s)
            scores = self.fitted.score(emb)
            lines = self.tracker.update(t.tolist(), scores.tolist(), self._wall)
            if send:
                self._send(lines)
        self.stats.score_seconds += time.perf_counter() - began
        if not send:  # catching up at start: commit at once
            self.embeddings.commit(self._pending_embeddings, until)
            self._pending_embeddings = None

    def _send(self, lines: list[dict]) -> None:
        for line in lines:
            self.sink.send(line)
            self.stats.alerts += line["kind"] == "start"

    def _wall(self, t: float) -> float | None:
        chain = self.chain  # read once: report() calls this from another thread
        epoch = chain[-1].epoch if chain else self.timeline.current
        return epoch.wall_clock(t) if epoch is not None else None

    def _record_lag(self, t0: int, until: int) -> None:
        """Per committed second: (t, now − when its last segment arrived, now − its end at the source)."""
        if not self.chain:
            return
        now = time.time()
        arrived = self.chain[-1].segment.arrived
        for t in range(t0, until):
            wall_end = self._wall(t + 1)
            self._lags.append((t, now - arrived, None if wall_end is None else now - wall_end))
            self.stats.lag_seconds = None if wall_end is None else now - wall_end
        if self.stats.startup_until is None and until > t0:
            self.stats.startup_until = until
        if self.stats.rss_mb_after_minute is None and self.stats.seconds_committed >= 60:
            self.stats.rss_mb_after_minute = resident_mb()

