"""The ingest pipeline (Ray Data): videos -> clips Parquet (DESIGN §3.1).

Stages, each a Ray Data map so any cluster size works:
1. probe every pending source (one task per file);
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

import hashlib
import json
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
from tqdm import tqdm

from pipelines.ingest.clip_table import clips_schema
from pipelines.media.frames import stream_backend
from pipelines.ingest.config import IngestConfig
from pipelines.runtime.manifest import (
    STATUS_COMPLETE,
    STATUS_FAILED,
    STATUS_RUNNING,
    StreamJobSummary,
    StreamManifest,
    stream_dir,
)
from pipelines.media.info import MediaError, VideoInfo, probe
from pipelines.media.sources import VideoSource, filesystem_from_uri, resolve_inputs
from pipelines.media.storage import OutputStore
from pipelines.ingest.window import WindowResult, decode_window_row

STAGING = "_staging"
# Header duration beyond the last decoded media by more than this => truncated.
TRUNCATION_SLACK_SECONDS = 2.0
# Worker environment: one thread per library, the tasks are the parallelism.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


@dataclass
class StreamOutcome:
    stream_id: str
    source: str
    status: str  # complete, failed or skipped
    rows: int = 0
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)


@dataclass
class IngestSummary(StreamJobSummary):
    output: str
    config_hash: str
    streams: list[StreamOutcome]
    input_errors: list[str]
    wall_seconds: float

    @property
    def clips(self) -> int:
        return sum(s.rows for s in self.streams if s.status == STATUS_COMPLETE)

    def format(self) -> str:
        done = [s for s in self.streams if s.status == STATUS_COMPLETE]
        skipped = [s for s in self.streams if s.status == "skipped"]
        footage = sum(s.seconds for s in done)
        rate = footage / self.wall_seconds if self.wall_seconds > 0 else 0.0
        lines = [
            f"ingest summary -> {self.output} (config {self.config_hash})",
            f"  streams: {len(done)} ingested, {len(skipped)} already complete (skipped), {len(self.failed)} failed",
            f"  clips written: {self.clips} ({footage / 3600:.2f} h of footage)",
            f"  wall time: {self.wall_seconds:.1f} s, throughput: {rate:.1f} s of footage per s",
        ]
        for stream in self.failed:
            lines.append(f"  FAILED {stream.stream_id} ({stream.source}):")
            lines.extend(f"    - {error}" for error in stream.errors)
        lines.extend(f"  INPUT ERROR {error}" for error in self.input_errors)
        return "\n".join(lines)


def ensure_ray(address: str | None = None) -> None:
    """Connect to a running cluster (ray job submit sets RAY_ADDRESS) or start
    a local one; workers get single-threaded numeric libraries."""
    if not ray.is_initialized():
        ray.init(address=address, runtime_env={"env_vars": WORKER_ENV}, log_to_driver=True)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = False
    ctx.enable_progress_bars = False  # the driver shows one bar of its own
    # A worker that dies (e.g. a decoder crash on a corrupt file) loses its
    # window, not the job: the window is reported failed.
    ctx.max_errored_blocks = -1


def probe_row(row: dict) -> dict:
    try:
        info = probe(row["uri"])
        return {**row, "info_json": json.dumps(info.to_dict()), "error": ""}
    except MediaError as exc:
        return {**row, "info_json": "", "error": str(exc)}
    except Exception as exc:  # unexpected failures still name the file
        return {**row, "info_json": "", "error": f"{row['uri']}: {type(exc).__name__}: {exc}"}


def source_key(source: VideoSource) -> str:
    """Changes when the file is replaced, so stale staged windows are not reused."""
    if source.is_local:
        fs, path = pafs.LocalFileSystem(), source.uri
    else:
        fs, path = filesystem_from_uri(source.uri)
    info = fs.get_file_info(path)
    blob = f"{source.uri}|{info.size}|{info.mtime_ns}".encode()
    return hashlib.sha256(blob).hexdigest()[:10]


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


def _remove_temporaries(store: OutputStore, directory: str) -> None:
    """Drop half-written files an interrupted run left in a directory tree."""
    infos = store.fs.get_file_info(pafs.FileSelector(directory, recursive=True, allow_not_found=True))
    for info in infos:
        if info.is_file and info.base_name.startswith(".tmp-"):
            store.delete_file(info.path)


def time_windows(info: VideoInfo, window_seconds: int) -> list[tuple[int, int]]:
    total = info.whole_seconds
    return [(s, min(window_seconds, total - s)) for s in range(0, total, window_seconds)]


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


def single_map_dataset(items: list[dict], fn, num_cpus: float) -> ray.data.Dataset:
    """One Ray Data task per item, without Ray Data's per-operator resource
    reservation. The reservation keeps CPUs back for downstream operators;
    these datasets have none, and on a small node it held half the CPUs idle
    for the first second and left ~0.1 s between tasks (measured on 2 CPUs:
    ten 0.8-s tasks took 5.3 s with it, 4.1 s without). The setting is
    captured by the dataset when it is made, so the process-wide context is
    restored right after (other pipelines in the same driver keep it)."""
    ctx = ray.data.DataContext.get_current()
    saved = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = False
    try:
        return ray.data.from_items(items, override_num_blocks=len(items)).map(fn, num_cpus=num_cpus)
    finally:
        ctx.op_resource_reservation_enabled = saved


def run_map(items: list[dict], fn, num_cpus: float, desc: str, unit: str, show_progress: bool) -> list[dict]:
    if not items:
        return []
    dataset = single_map_dataset(items, fn, num_cpus)
    results = []
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not show_progress, mininterval=1.0) as bar:
        for result in dataset.iter_rows():
            results.append(result)
            bar.update(1)
    return results


def run_ingest(
    inputs: list[str],
    output: str,
    config: IngestConfig = IngestConfig(),
    overwrite: bool = False,
    show_progress: bool = True,
    ray_address: str | None = None,
) -> IngestSummary:
    """Ingest ``inputs`` into ``output``; never raises for a bad video."""
    began = time.perf_counter()
    resolved = resolve_inputs(inputs)  # raises InputError for duplicate stream ids
    store = OutputStore(output)
    store.makedirs(store.path())
    store.write_json(store.path("_ingest_config.json"), {"config": config.to_dict(), "hash": config.output_hash()})
    config_hash = config.output_hash()
    outcomes: dict[str, StreamOutcome] = {}
    input_errors: list[str] = []

    def fail(manifest: StreamManifest, errors: list[str]) -> None:
        """A failed stream publishes no rows: its shards go, its manifest says why."""
        for shard in store.list_files(stream_dir(store, manifest.stream_id), ".parquet"):
            store.delete_file(shard)
        manifest.status, manifest.errors = STATUS_FAILED, errors
        manifest.rows, manifest.files = 0, []
        manifest.save(store)
        outcomes[manifest.stream_id] = StreamOutcome(manifest.stream_id, manifest.source, STATUS_FAILED, errors=errors)

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
                    source.stream_id, source.uri, "skipped", previous.rows, float(info.get("duration", 0.0))
                )
                continue
            if previous.status == STATUS_COMPLETE and previous.source != source.uri:
                input_errors.append(
                    f"{source.uri}: stream id {source.stream_id!r} was already ingested from {previous.source}; "
                    "rename the file or pass --overwrite"
                )
                continue
        if overwrite:  # old shards stay readable until the new ones replace them
            store.delete_dir(store.path(STAGING, source.stream_id))
        _remove_temporaries(store, stream_dir(store, source.stream_id))
        _remove_temporaries(store, store.path(STAGING, source.stream_id))
        pending.append(source)

    if pending:
        ensure_ray(ray_address)
    probed = run_map(
        [{"uri": s.uri, "stream_id": s.stream_id} for s in pending], probe_row, 1, "probe", "file", show_progress
    )
    by_id = {s.stream_id: s for s in pending}
    manifests: dict[str, StreamManifest] = {}
    infos: dict[str, VideoInfo] = {}
    tasks: list[dict] = []
    staged: dict[str, list[str]] = {}
    for row in sorted(probed, key=lambda r: r["stream_id"]):
        source = by_id[row["stream_id"]]
        manifest = new_manifest(source.stream_id, source.uri)
        if row["error"]:
            fail(manifest, [row["error"]])
            continue
        info = VideoInfo.from_dict(json.loads(row["info_json"]))
        manifest.info, manifest.source_key = info.to_dict(), source_keys[source.stream_id]
        backend, why = stream_backend(config.frame_backend, info, source.local_path)
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

    compactions: list[dict] = []
    for stream_id, manifest in manifests.items():
        info = infos[stream_id]
        errors, warnings = _check_windows(manifest.source, info, tasks, by_stream[stream_id], staged[stream_id], store)
        manifest.warnings += warnings
        for result in by_stream[stream_id]:
            if result.backend:
                manifest.windows_by_backend[result.backend] = manifest.windows_by_backend.get(result.backend, 0) + 1
            manifest.seconds_without_audio += result.seconds_without_audio
            manifest.seconds_without_video += result.seconds_without_video
        if errors:
            fail(manifest, errors)
            store.delete_dir(store.path(STAGING, stream_id))
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
        errors = [f"{manifest.source}: writing {f['path']}: {f['error']}" for f in files if f["error"]]
        if errors:
            fail(manifest, errors)
            continue
        keep = {f["path"] for f in files}
        for stale in store.list_files(stream_dir(store, stream_id), ".parquet"):
            if stale not in keep:
                store.delete_file(stale)
        manifest.files = sorted(p.rsplit("/", 1)[-1] for p in keep)
        manifest.rows = sum(f["rows"] for f in files)
        manifest.status = STATUS_COMPLETE
        manifest.save(store)
        store.delete_dir(store.path(STAGING, stream_id))
        outcomes[stream_id] = StreamOutcome(
            stream_id, manifest.source, STATUS_COMPLETE, manifest.rows, infos[stream_id].duration
        )

    staging_root = store.path(STAGING)
    if store.exists(staging_root) and not store.fs.get_file_info(pafs.FileSelector(staging_root, recursive=True)):
        store.delete_dir(staging_root)
    ordered = [outcomes[k] for k in sorted(outcomes)]
    return IngestSummary(output, config_hash, ordered, input_errors, time.perf_counter() - began)


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


def window_warnings(results: list[WindowResult]) -> list[str]:
    """Backend fallbacks and audio decode problems of a stream's windows, for its manifest."""
    warnings = [f"window {r.start} s: {r.fallback}" for r in results if r.fallback]
    return warnings + [f"window {r.start} s: {r.audio_warning}" for r in results if r.audio_warning]


def truncation_error(source: str, info: VideoInfo, results: list[WindowResult]) -> str | None:
    """The header promises more than both streams delivered (all windows decoded): a truncated recording."""
    ends = [r.media_end for r in results if not math.isnan(r.media_end)]
    media_end = max(ends) if ends else 0.0
    if info.duration_source == "header" and media_end < info.duration - TRUNCATION_SLACK_SECONDS:
        return (
            f"{source}: truncated recording: audio and video end at {media_end:.1f} s but the header says "
            f"{info.duration:.1f} s"
        )
    return None
