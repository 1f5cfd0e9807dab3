"""The ingest pipeline (Ray Data): videos -> clips Parquet (DESIGN §3.1).

Stages, each a Ray Data map so any cluster size works:
1. inspect every pending source (one task per file);
2. decode every time window of every stream (one task per window; a 4-hour
   file is never read whole by one task); each window stages its rows as a
   Parquet part under ``_staging/`` (atomic), which also makes an interrupted
   run resume window by window;
3. compact the staged parts of each fully decoded stream into final files of
   ~``shard_rows`` rows, ordered by t, then mark its manifest complete and
   drop its staging.
A stream with any failure gets a failed manifest naming the reasons and no
rows; the others complete. The driver only sees small result rows.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass

import pyarrow.parquet as pq

from pipelines.ingest.clip_table import clips_schema
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.window import (
    WindowResult,
    decode_window_row,
    inspect_source_row,
    source_key,
    time_windows,
    truncation_error,
    window_warnings,
)
from pipelines.media.frames import stream_backend
from pipelines.media.info import VideoInfo
from pipelines.media.sources import ResolvedInputs, VideoSource, resolve_inputs
from pipelines.media.storage import OutputStore
from pipelines.runtime.cluster import ensure_ray
from pipelines.runtime.datasets import run_map
from pipelines.runtime.lock import output_lock
from pipelines.runtime.manifest import STATUS_COMPLETE, STATUS_RUNNING, StreamManifest, stream_dir
from pipelines.runtime.stream_job import (
    STAGING,
    STATUS_SKIPPED,
    StreamJobSummary,
    StreamOutcome,
    fail_stream,
    keep_only,
    remove_empty_staging,
    remove_temporaries,
    staging_root,
)


@dataclass
class IngestSummary(StreamJobSummary):
    output: str
    config_hash: str
    streams: list[StreamOutcome]
    input_errors: list[str]
    wall_seconds: float
    frame_skip: str = "none"
    max_frame_offset: float | None = None  # over the streams decoded in this run (s)
    windows_decoded_in_full: int = 0
    decode_timeout: float = 0.0
    hung: int = 0  # windows or files whose decode ran past decode_timeout and was stopped
    crashed: int = 0  # windows or files whose decode process crashed
    damaged_packets: int = 0  # packets left out as undecodable, over the streams decoded in this run

    @property
    def clips(self) -> int:
        return sum(s.rows for s in self.streams if s.status == STATUS_COMPLETE)

    def format(self) -> str:
        done, skipped = self.of(STATUS_COMPLETE), self.of(STATUS_SKIPPED)
        footage = sum(s.seconds for s in done)
        rate = footage / self.wall_seconds if self.wall_seconds > 0 else 0.0
        lines = [
            f"ingest summary -> {self.output} (config {self.config_hash})",
            f"  streams: {len(done)} ingested, {len(skipped)} already complete (skipped), {len(self.failed)} failed",
            f"  clips written: {self.clips} ({footage / 3600:.2f} h of footage)",
            f"  wall time: {self.wall_seconds:.1f} s, throughput: {rate:.1f} s of footage per s",
        ]
        if self.frame_skip != "none" and self.max_frame_offset is not None:
            lines.append(f"  frame skip {self.frame_skip}: every frame shown at most {1000 * self.max_frame_offset:.0f} ms "
                         f"before its target; {self.windows_decoded_in_full} window(s) decoded again in full")
        if self.hung or self.crashed:
            lines.append(f"  decodes stopped: {self.hung} hung past {self.decode_timeout:g} s, {self.crashed} crashed "
                         "(their streams failed, named below)")
        if self.damaged_packets:
            lines.append(f"  damaged recordings: {self.damaged_packets} undecodable packet(s) left out (counted in the "
                         "streams' manifests)")
        return "\n".join(lines + self.failure_lines())


def staging_dir(store: OutputStore, source: VideoSource, config: IngestConfig) -> str:
    """Where a stream's window parts wait for compaction. Keyed by the config
    hash and the source file, so a changed file or config never reuses them."""
    return store.path(STAGING, source.stream_id, f"{config.output_hash()}-{source_key(source)}")


def staged_part(store: OutputStore, source: VideoSource, config: IngestConfig, start: int, seconds: int) -> str:
    """One window's part; named by start and length, so a resume with another
    window size never mixes overlapping parts."""
    return f"{staging_dir(store, source, config)}/{_part_name(start, seconds)}"


def _part_name(start: int, seconds: int) -> str:
    return f"w-{start:09d}-{seconds:05d}.parquet"


def _compact_row(row: dict, config: IngestConfig, store: OutputStore) -> dict:
    """Stream staged window parts, in order, into one final shard file."""
    parts = json.loads(row["parts"])
    schema = clips_schema(config)

    def tables():
        for part in parts:
            with store.fs.open_input_file(part) as handle:
                yield pq.read_table(handle, schema=schema)

    try:
        rows = store.write_parquet(row["path"], tables(), schema, config.compression)
        return {"stream_id": row["stream_id"], "path": row["path"], "rows": rows, "error": ""}
    except Exception as exc:
        return {"stream_id": row["stream_id"], "path": row["path"], "rows": 0, "error": f"{type(exc).__name__}: {exc}"}


def run_ingest(
    inputs: list[str],
    output: str,
    config: IngestConfig = IngestConfig(),
    overwrite: bool = False,
    show_progress: bool = True,
    ray_address: str | None = None,
) -> IngestSummary:
    """Ingest ``inputs`` into ``output``; never raises for a bad video (``OutputInUse`` while another run
    writes ``output``)."""
    began = time.perf_counter()
    resolved = resolve_inputs(inputs)  # raises InputError for duplicate stream ids, before anything is written
    with output_lock(output, "ingest"):
        return _ingest(resolved, output, config, overwrite, show_progress, ray_address, began)


def _ingest(resolved: ResolvedInputs, output: str, config: IngestConfig, overwrite: bool, show_progress: bool,
            ray_address: str | None, began: float) -> IngestSummary:
    store = OutputStore(output)
    store.makedirs(store.path())
    store.write_json(store.path("_ingest_config.json"), {"config": config.to_dict(), "hash": config.output_hash()})
    config_hash = config.output_hash()
    outcomes: dict[str, StreamOutcome] = {}
    input_errors: list[str] = []

    def fail(manifest: StreamManifest, errors: list[str]) -> None:
        outcomes[manifest.stream_id] = fail_stream(store, manifest, errors)

    def new_manifest(stream_id: str, uri: str) -> StreamManifest:
        return StreamManifest(stream_id, uri, STATUS_RUNNING, config_hash, config.to_dict(), frame_backend=config.frame_backend)

    for missing in resolved.missing:
        previous = StreamManifest.load(store, missing.stream_id) if missing.stream_id else None
        if missing.stream_id is None or (previous is not None and previous.status == STATUS_COMPLETE):
            # Nothing to attach it to, or clips of an earlier run that must not be lost.
            input_errors.append(f"{missing.uri}: {missing.reason}")
        else:
            fail(new_manifest(missing.stream_id, missing.uri), [f"{missing.uri}: {missing.reason}"])

    pending: list[VideoSource] = []
    source_keys: dict[str, str] = {}
    for source in resolved.sources:
        key = source_keys[source.stream_id] = source_key(source)
        previous = StreamManifest.load(store, source.stream_id)
        if previous is not None and not overwrite:
            if previous.is_complete_for(config_hash, source.uri, key):
                info = previous.info or {}
                outcomes[source.stream_id] = StreamOutcome(
                    source.stream_id, source.uri, STATUS_SKIPPED, previous.rows, float(info.get("duration", 0.0))
                )
                # A run killed between committing the stream and dropping its staging left that staging behind.
                store.delete_dir(staging_root(store, source.stream_id))
                continue
            if previous.status == STATUS_COMPLETE and previous.source != source.uri:
                input_errors.append(
                    f"{source.uri}: stream id {source.stream_id!r} was already ingested from {previous.source}; "
                    "rename the file or pass --overwrite"
                )
                continue
        if overwrite:  # old shards stay readable until the new ones replace them
            store.delete_dir(staging_root(store, source.stream_id))
        remove_temporaries(store, stream_dir(store, source.stream_id))
        remove_temporaries(store, staging_root(store, source.stream_id))
        pending.append(source)

    if pending:
        ensure_ray(ray_address)
    probed = run_map(
        [{"uri": s.uri, "stream_id": s.stream_id} for s in pending], lambda row: inspect_source_row(row, config), 1,
        "inspect", "file", show_progress,
    )
    by_id = {s.stream_id: s for s in pending}
    manifests: dict[str, StreamManifest] = {}
    infos: dict[str, VideoInfo] = {}
    tasks: list[dict] = []
    staged: dict[str, list[str]] = {}
    stopped = [row["stopped"] for row in probed]
    for row in sorted(probed, key=lambda r: r["stream_id"]):
        source = by_id[row["stream_id"]]
        manifest = new_manifest(source.stream_id, source.uri)
        if row["error"]:
            fail(manifest, [row["error"]])
            continue
        info = VideoInfo.from_dict(json.loads(row["info_json"]))
        manifest.info, manifest.source_key = info.to_dict(), source_keys[source.stream_id]
        backend, why = stream_backend(config.frame_backend, info, source.local_path, config.frame_skip)
        manifest.frame_backend, manifest.warnings = backend, [why] if why else []
        manifest.save(store)
        manifests[source.stream_id], infos[source.stream_id] = manifest, info
        staging = staging_dir(store, source, config)  # stats the source once, not per window
        done = set(store.list_files(staging, ".parquet"))
        staged[source.stream_id] = []
        for start, seconds in time_windows(info, config.window_seconds):
            part = f"{staging}/{_part_name(start, seconds)}"
            staged[source.stream_id].append(part)
            if part not in done:
                tasks.append(
                    {
                        "stream_id": source.stream_id,
                        "uri": source.uri,
                        "start": start,
                        "seconds": seconds,
                        "part_path": part,
                        "info_json": row["info_json"],
                        "backend": backend,
                    }
                )

    results = run_map(
        tasks,
        lambda row: decode_window_row(row, config, store),
        config.num_cpus_per_task,
        "decode windows",
        "window",
        show_progress,
    )
    by_stream: dict[str, list[WindowResult]] = defaultdict(list)
    for result in results:
        by_stream[result["stream_id"]].append(WindowResult(**result))
        stopped.append(result["stopped"])

    compactions: list[dict] = []
    frame_offsets: list[float | None] = []
    decoded_in_full = damaged = 0
    for stream_id, manifest in manifests.items():
        info = infos[stream_id]
        errors, warnings = _check_windows(manifest.source, info, tasks, by_stream[stream_id], staged[stream_id], store)
        manifest.warnings += warnings
        manifest.count_backends(r.backend for r in by_stream[stream_id])
        for result in by_stream[stream_id]:
            manifest.seconds_without_audio += result.seconds_without_audio
            manifest.seconds_without_video += result.seconds_without_video
            manifest.windows_decoded_in_full += int(result.redecoded_in_full)
            manifest.damaged_packets += result.damaged_packets
            manifest.decode_seconds += result.wall_seconds
            if not math.isnan(result.max_frame_offset):
                manifest.max_frame_offset = max(manifest.max_frame_offset or 0.0, result.max_frame_offset)
        frame_offsets.append(manifest.max_frame_offset)
        decoded_in_full += manifest.windows_decoded_in_full
        damaged += manifest.damaged_packets
        if errors:
            fail(manifest, errors)
            store.delete_dir(staging_root(store, stream_id))
            continue
        per_file = max(1, config.shard_rows // config.window_seconds)
        parts = staged[stream_id]
        for k in range(math.ceil(len(parts) / per_file)):
            compactions.append(
                {
                    "stream_id": stream_id,
                    "path": f"{stream_dir(store, stream_id)}/part-{k:05d}.parquet",
                    "parts": json.dumps(parts[k * per_file : (k + 1) * per_file]),
                }
            )

    written = run_map(
        compactions, lambda row: _compact_row(row, config, store), 1, "write shards", "file", show_progress
    )
    files_by_stream: dict[str, list[dict]] = defaultdict(list)
    for row in written:
        files_by_stream[row["stream_id"]].append(row)
    for stream_id, files in files_by_stream.items():
        manifest = manifests[stream_id]
        errors = [f"{manifest.source}: " + (f["error"] if f["path"] in f["error"] else f"writing {f['path']}: {f['error']}")
                  for f in files if f["error"]]
        if errors:
            fail(manifest, errors)
            continue
        manifest.files = sorted(f["path"].rsplit("/", 1)[-1] for f in files)
        keep_only(store, stream_id, manifest.files)
        manifest.rows = sum(f["rows"] for f in files)
        manifest.status = STATUS_COMPLETE
        manifest.save(store)
        store.delete_dir(staging_root(store, stream_id))
        outcomes[stream_id] = StreamOutcome(
            stream_id, manifest.source, STATUS_COMPLETE, manifest.rows, infos[stream_id].duration
        )

    remove_empty_staging(store)
    ordered = [outcomes[k] for k in sorted(outcomes)]
    offsets = [x for x in frame_offsets if x is not None]
    return IngestSummary(output, config_hash, ordered, input_errors, time.perf_counter() - began, config.frame_skip,
                         max(offsets) if offsets else None, decoded_in_full, config.decode_timeout,
                         stopped.count("hung"), stopped.count("crashed"), damaged)


def _check_windows(
    source: str,
    info: VideoInfo,
    tasks: list[dict],
    results: list[WindowResult],
    parts: list[str],
    store: OutputStore,
) -> tuple[list[str], list[str]]:
    """Errors that fail the stream, and warnings worth keeping in its manifest."""
    errors = [r.error for r in results if not r.ok]
    expected = {t["start"] for t in tasks if t["uri"] == source}
    lost = sorted(expected - {r.start for r in results})
    errors += [f"{source}: window {s} s: its worker died while decoding (crashed decoder?)" for s in lost]
    warnings = window_warnings(results)
    if errors:
        return errors, warnings
    missing_parts = [p for p in parts if not store.exists(p)]
    if missing_parts:
        return [f"{source}: staged part missing: {p}" for p in missing_parts], warnings
    if results and len(results) == len(expected) and len(expected) == len(parts):
        truncated = truncation_error(source, info, results)
        if truncated:
            errors.append(truncated)
    return errors, warnings
