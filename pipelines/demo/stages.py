"""The main job's stages, one method each, in the order ``run`` calls them.

Each stage returns ("ran" | "reused", a note) and leaves what later stages need on the
``DemoRun`` (run dir, checkpoint, query, report). A stage reuses finished output:
generate when its config.json records the same generator config; ingest and embed skip
complete streams themselves; pretraining's run directory is named by a key of its settings
and of the data (generator config, ingest hash), so a rerun with the same settings reuses or
resumes it and one with other settings trains a new run; embed scores again only when its
output holds another checkpoint's rows. The downstream jobs and the report take seconds and
always run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from epg.timecode import hhmmss
from pipelines.demo.config import (
    CONFIG_FILE,
    QUERY_CLASSES,
    QUERY_VIEW,
    REFERENCE_VIEW,
    SUMMARY_FILE,
    DemoLayout,
    MainJobConfig,
    MainJobError,
)
from pipelines.downstream.anomaly_job import AnomalyJobConfig, run_anomaly
from pipelines.downstream.anomaly_job import format_summary as anomaly_text
from pipelines.downstream.clock import ALL_STREAMS, Clock
from pipelines.downstream.localize_job import LocalizeJobConfig, run_localize
from pipelines.downstream.localize_job import format_summary as localize_text
from pipelines.downstream.search_job import SearchJobConfig, run_search
from pipelines.downstream.search_job import format_summary as search_text
from pipelines.ingest.config import IngestConfig
from pipelines.ingest.job import IngestSummary, run_ingest
from pipelines.report.page import ReportInputs, write_report
from pipelines.runtime.stream_job import STATUS_SKIPPED
from pipelines.score.config import CONFIG_FILE as EMBED_CONFIG
from pipelines.score.embeddings import read_embeddings
from pipelines.score.job import EmbedSummary, run_embed
from pipelines.score.model import checkpoint_id, resolve_checkpoint
from pipelines.synthetic import SyntheticConfig, generate
from pipelines.train.checkpoint import registered_checkpoints
from pipelines.train.config import OPERATIONAL_FIELDS, PretrainConfig, build_pretrain_config
from pipelines.train.driver import run_pretrain


@dataclass
class StageTiming:
    name: str
    seconds: float
    status: str  # "ran" or "reused"
    note: str = ""


def say(line: str) -> None:
    print(f"[main] {line}", flush=True)


def synthetic_config(config: MainJobConfig, layout: DemoLayout) -> SyntheticConfig:
    return SyntheticConfig(out=layout.videos, minutes=config.minutes, seed=config.seed, size=config.size, fps=config.fps,
                           views=config.views, anomalies=True, rate_scale=config.rate_scale)


def generated_already(config: SyntheticConfig, layout: DemoLayout) -> bool:
    """The videos folder holds a finished generation of exactly this generator config (written last)."""
    record = layout.videos / CONFIG_FILE
    if not record.is_file() or not layout.labels.is_file():
        return False
    recorded = json.loads(record.read_text()).get("config")
    return recorded == config.to_dict() and all((layout.videos / f"{v}.mp4").is_file() for v in config.views)


def pretrain_config(config: MainJobConfig, layout: DemoLayout, run_dir: Path | None = None) -> PretrainConfig:
    """Pretraining on every view's clips (it needs no labels; they feed the mined-pair diagnostics only)."""
    optim: dict[str, Any] = {"epochs": config.epochs, "seed": config.seed}
    if config.batch_size is not None:
        optim["batch_size"] = config.batch_size
    return build_pretrain_config(str(layout.clips), str(run_dir or layout.runs / "pending"), preset=config.preset,
                                 pairing=config.pairing, optim=optim, workers=1, labels=str(layout.labels), log_every=25)


def run_dir_for(config: MainJobConfig, layout: DemoLayout, data_key: dict[str, Any]) -> Path:
    """``runs/<preset>-<pairing>-<key>``: the key hashes the training settings and the data they train on."""
    settings = {k: v for k, v in pretrain_config(config, layout).to_dict().items()
                if k not in OPERATIONAL_FIELDS and k != "run_dir"}
    key = hashlib.sha256(json.dumps({"pretrain": settings, "data": data_key}, sort_keys=True, default=str).encode())
    return layout.runs / f"{config.preset}-{config.pairing}-{key.hexdigest()[:8]}"


def finished_checkpoint(run_dir: Path, epochs: int) -> Path | None:
    """The end-of-last-epoch checkpoint of a finished run, or None (not started, or interrupted)."""
    done = sorted(run_dir.glob(f"checkpoint_step*_end_of_epoch{epochs:04d}")) if run_dir.is_dir() else []
    registered = registered_checkpoints(run_dir)  # not a copy a killed run cut short
    done = [path for path in done if registered is None or path.name in registered]
    return done[-1] if done else None


def choose_query(labels_path: Path, embedded: set[tuple[str, int]], stream: str = QUERY_VIEW) -> tuple[str, int, str]:
    """(stream, t, class) of the search query: the middle second of the first event of the preferred class
    (``QUERY_CLASSES`` in order, then any), preferring seconds where it is both seen and heard."""
    labels = pq.read_table(labels_path).to_pandas()
    labels = labels[(labels.stream_id == stream) & labels.t.map(lambda t: (stream, int(t)) in embedded)]
    present = [c for c in QUERY_CLASSES if (labels.label == c).any()]
    present += sorted(set(labels.label) - set(present))
    for name in present:
        rows = labels[labels.label == name].sort_values("t")
        seconds = rows.t.to_numpy()
        breaks = [i + 1 for i in range(len(seconds) - 1) if seconds[i + 1] - seconds[i] > 1]
        first = rows.iloc[: breaks[0]] if breaks else rows  # the first contiguous run of this class
        both = first[first.audible & first.visible] if {"audible", "visible"} <= set(first.columns) else first
        pick = both if len(both) else first
        return stream, int(pick.t.iloc[len(pick) // 2]), name
    times = sorted(t for s, t in embedded if s == stream)
    if not times:
        raise MainJobError(f"no embedded clip of stream {stream!r} to search with")
    return stream, times[len(times) // 2], "background"


def stream_job_status(summary: IngestSummary | EmbedSummary, stage: str, unit: str, where: Path,
                      details: Callable[[str], None]) -> tuple[str, str]:
    """A per-stream job's summary into ``details``; ``MainJobError`` (the summary printed) when it failed,
    else (ran | reused, a note)."""
    details(summary.format())
    if not summary.ok:
        print(summary.format(), flush=True)
        raise MainJobError(f"{stage} failed (see the summary above); output in {where}")
    ran = any(s.status != STATUS_SKIPPED for s in summary.streams)
    return ("ran" if ran else "reused"), f"{sum(s.rows for s in summary.streams)} {unit} -> {where}"


def embeddings_model(layout: DemoLayout) -> str | None:
    """The checkpoint id the embeddings folder holds (None: nothing scored yet)."""
    record = layout.embeddings / EMBED_CONFIG
    return json.loads(record.read_text()).get("model") if record.is_file() else None


class DemoRun:
    """One run of the main job: the stages in order, timed, with what each leaves for the next.

    The console gets one line as a stage starts and one as it ends, with its headline numbers,
    besides the stages' own progress bars and lines; each job's full summary (what its own CLI
    prints) goes to ``<output>/summary.txt``, and everything is in the report.
    """

    def __init__(self, config: MainJobConfig) -> None:
        self.config = config
        self.layout = DemoLayout(Path(config.output))
        self.start_times = {ALL_STREAMS: config.start_time} if config.start_time else {}
        self.synthetic = synthetic_config(config, self.layout)
        self.ingest_config = IngestConfig(crop_size=config.crop_size)
        self.timings: list[StageTiming] = []
        self.run_dir: Path | None = None
        self.checkpoint: Path | None = None
        self.query = ""
        self.report: Path | None = None
        self.summaries: list[str] = []

    def details(self, text: str) -> None:
        """A job's full summary, kept in ``<output>/summary.txt`` (rewritten as each arrives)."""
        self.summaries.append(text)
        self.layout.root.mkdir(parents=True, exist_ok=True)
        path = self.layout.root / SUMMARY_FILE
        tmp = path.with_name(f".{SUMMARY_FILE}.partial")
        tmp.write_text("\n\n".join(self.summaries) + "\n")
        os.replace(tmp, path)

    def stage(self, name: str, body: Callable[[], tuple[str, str]]) -> None:
        """Run one stage, timing it and printing a line before and after."""
        say(f"{name} ...")
        started = time.perf_counter()
        status, note = body()
        seconds = time.perf_counter() - started
        self.timings.append(StageTiming(name, seconds, status, note))
        say(f"{name}: {status} in {hhmmss(seconds)} ({seconds:.1f} s){' - ' + note if note else ''}")

    def run(self, report_inputs: Callable[["DemoRun"], ReportInputs]) -> None:
        for name in ("generate", "ingest", "pretrain", "embed", "anomaly", "search", "localize"):
            self.stage(name, getattr(self, name))
        self.stage("report", lambda: self.write_report(report_inputs))
        # The report's stage table was written before the report stage ended: write it once more with every stage.
        self.report = write_report(report_inputs(self), self.layout.report)

    def generate(self) -> tuple[str, str]:
        layout = self.layout
        if generated_already(self.synthetic, layout):
            return "reused", f"{len(self.config.views)} views in {layout.videos}"
        streams = generate(self.synthetic)
        return "ran", (f"{len(streams.videos)} views x {streams.seconds:.0f} s, "
                       f"{sum(streams.event_counts.values())} events -> {layout.videos}")

    def ingest(self) -> tuple[str, str]:
        config, layout = self.config, self.layout
        videos = [str(layout.videos / f"{view}.mp4") for view in config.views]
        summary = run_ingest(videos, str(layout.clips), self.ingest_config, show_progress=config.show_progress,
                             ray_address=config.ray_address)
        return stream_job_status(summary, "ingest", "clips", layout.clips, self.details)

    def pretrain(self) -> tuple[str, str]:
        config, layout = self.config, self.layout
        data_key = {"generator": self.synthetic.to_dict(), "ingest": self.ingest_config.output_hash()}
        self.run_dir = run_dir_for(config, layout, data_key)
        status = "reused"
        if finished_checkpoint(self.run_dir, config.epochs) is None:
            run_pretrain(pretrain_config(config, layout, self.run_dir), ray_address=config.ray_address)
            status = "ran"
        self.checkpoint = resolve_checkpoint(str(self.run_dir))
        return status, f"{config.preset} preset, {config.pairing} x {config.epochs} epoch(s) -> {self.checkpoint}"

    def embed(self) -> tuple[str, str]:
        config, layout = self.config, self.layout
        assert self.checkpoint is not None
        held = embeddings_model(layout)
        overwrite = held is not None and held != checkpoint_id(self.checkpoint)
        summary = run_embed(str(self.checkpoint), str(layout.embeddings), clips=str(layout.clips), overwrite=overwrite,
                            show_progress=config.show_progress, ray_address=config.ray_address)
        return stream_job_status(summary, "embed", "rows", layout.embeddings, self.details)

    def anomaly(self) -> tuple[str, str]:
        layout = self.layout
        # A kNN score leaves ±knn_exclusion s of a second's own stream out of its neighbours: on short
        # footage (a test's minute) that would leave the reference seconds none, so it shrinks to a quarter.
        exclusion = min(AnomalyJobConfig.default_of("knn_exclusion"), int(self.config.minutes * 60) // 4)
        result = run_anomaly(AnomalyJobConfig(embeddings=str(layout.embeddings), output=str(layout.anomaly),
                                              reference=(REFERENCE_VIEW,), sigma=self.config.anomaly_sigma,
                                              knn_exclusion=exclusion, labels=str(layout.labels),
                                              clips=str(layout.clips), start_times=self.start_times))
        self.details(anomaly_text(result, Clock(self.start_times)))
        auc = result.summary.get("roc_auc")
        return "ran", f"{len(result.events)} events" + (f", ROC-AUC {auc:.2f} against the labels" if auc is not None else "")

    def search(self) -> tuple[str, str]:
        config, layout = self.config, self.layout
        emb = read_embeddings(str(layout.embeddings), [QUERY_VIEW] if QUERY_VIEW in config.views else None)
        stream = QUERY_VIEW if QUERY_VIEW in config.views else REFERENCE_VIEW
        stream, t, name = choose_query(layout.labels, set(zip(emb.stream_id.tolist(), emb.t.tolist())), stream)
        self.query = f"{stream}:{t}"
        result = run_search(SearchJobConfig(embeddings=str(layout.embeddings), output=str(layout.search),
                                            query=self.query, k=config.search_k, clips=str(layout.clips),
                                            labels=str(layout.labels), start_times=self.start_times))
        self.details(search_text(result))
        precision = result.summary.get("precision_at_k")
        return "ran", (f"query {stream} at {Clock(self.start_times).format(stream, t)} ({name})"
                       + (f", precision@{result.summary['k']} {precision:.2f}" if precision is not None else ""))

    def localize(self) -> tuple[str, str]:
        layout = self.layout
        views = {view: (view,) for view in self.config.views if view != REFERENCE_VIEW}
        result = run_localize(LocalizeJobConfig(embeddings=str(layout.embeddings), labels=str(layout.labels),
                                                output=str(layout.localize), train=(REFERENCE_VIEW,), eval=views))
        self.details(localize_text(result))
        best = result.summary.get("best") or {}
        return "ran", "best per view: " + ", ".join(f"{v} {b['accuracy']:.2f} ({b['head']} on {b['features']})"
                                                    for v, b in best.items())

    def write_report(self, report_inputs: Callable[["DemoRun"], ReportInputs]) -> tuple[str, str]:
        self.report = write_report(report_inputs(self), self.layout.report)
        return "ran", str(self.report)
