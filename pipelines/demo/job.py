"""The main job: the whole pipeline on synthetic footage, from nothing to a report page.

    run_main(MainJobConfig(out="out/demo"))     # jobs/demo.py, `make demo`

Stages, in order, each timed (``stages.json`` and the report's first table):

    generate   synthetic multi-view stream + labels       <out>/videos/
    ingest     videos -> clips Parquet (Ray Data)          <out>/clips/
    pretrain   EPG on all views' clips (Ray Train, CPU)    <out>/runs/<preset>-<pairing>-<key>/
    embed      clips -> embeddings (Ray Data)              <out>/embeddings/
    anomaly    threshold on the train view, events         <out>/anomaly/
    search     a labelled clip of the similar view         <out>/search/
    localize   linear probe: train on train, eval others   <out>/localize/
    report     index.html + raw files                      <out>/report/

``<out>/config.json`` is this run's ``MainJobConfig``.

Decisions:
- Defaults live in ``MainJobConfig`` only (``jobs/demo.py`` reads them from there).
  They are sized for a 2-core laptop (about 5 minutes): 10 minutes of 3 views at
  320x180, the ``small`` preset (crop 64, ~0.25 M parameters), 3 epochs (1 TPG
  warm-up + 2 EPG). The event rate is 4x the generator's default and seed 2 is
  chosen because that timeline holds every class, five anomalies among them,
  within 10 minutes: at the natural rates a short stream has no anomaly to find.
- Pretraining uses every view's clips (it needs no labels); the labels are passed
  for the mined-pair diagnostics only. The PretrainConfig is built by the
  pretraining CLI's ``parse_args`` + ``config_from_args`` (``pipelines.train.args``) so the demo trains
  exactly what ``jobs/pretrain.py`` with the same flags would.
- Resume: a rerun with the same out folder reuses every finished stage.
  generate is skipped when its config.json records the same generator config;
  ingest and embed skip complete streams themselves; the pretraining run directory
  is named by a key of its settings and of the data (generator config, ingest
  hash), so a rerun with the same settings reuses or resumes it, and one with other
  settings trains a new run instead of refusing the old directory; embed scores
  again (``overwrite``) only when its output holds another checkpoint's rows. The
  downstream jobs and the report take seconds and always run again. (Dropping a
  view in an existing folder leaves its clips there, and pretraining reads every
  clip: use a new out folder for another set of views.)
- Search query: the middle second of the first emergency vehicle event of the
  similar view (else a bus, truck, motorcycle, car, any class), preferring seconds
  where the event is both seen and heard; relevance comes from the labels.
- Ray, as in every job: ``ray_address``, else the cluster ``ray.init`` finds
  (RAY_ADDRESS, a running local head), else a new local Ray, which this job shuts
  down at the end. The stages run in this process, one after the other.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from epg.timecode import hhmmss, parse_start_time

if TYPE_CHECKING:
    from pipelines.train.driver import PretrainConfig
    from pipelines.report.page import ReportInputs
    from pipelines.synthetic import SyntheticConfig

VIEWS: tuple[str, ...] = ("train", "similar", "challenging")
REFERENCE_VIEW = "train"
QUERY_VIEW = "similar"
QUERY_CLASSES: tuple[str, ...] = ("emergency_vehicle", "bus", "truck", "motorcycle", "car")
CONFIG_FILE = "config.json"
STAGES_FILE = "stages.json"


class MainJobError(RuntimeError):
    """A stage failed (its summary says why); raised after the stage's own report was printed."""


@dataclass(frozen=True)
class MainJobConfig:
    """One end-to-end run; the defaults are the README's demo. Validated on creation (errors name the field)."""

    out: str
    minutes: float = 10.0
    seed: int = 2
    rate_scale: float = 4.0
    views: tuple[str, ...] = VIEWS
    size: tuple[int, int] = (320, 180)
    fps: float = 10.0
    preset: str = "small"
    pairing: str = "epg"
    epochs: int = 3
    batch_size: int | None = None  # None: the EPG config's default
    anomaly_k: float = 2.0
    search_k: int = 5
    start_time: str | None = None  # ISO 8601 start of the recording: wall-clock HH:MM:SS in the outputs
    ray_address: str | None = None
    show_progress: bool = True

    def __post_init__(self) -> None:
        from pipelines.train.driver import PAIRINGS, PRESETS

        def fail(name: str, rule: str) -> None:
            raise ValueError(f"MainJobConfig.{name} must be {rule}, got {getattr(self, name)!r}")

        if not self.out:
            fail("out", "an output folder")
        if not math.isfinite(self.minutes) or self.minutes <= 0:
            fail("minutes", "> 0")
        if self.seed < 0:
            fail("seed", ">= 0")
        if REFERENCE_VIEW not in self.views or len(set(self.views)) != len(self.views) or set(self.views) - set(VIEWS):
            fail("views", f"distinct views of {VIEWS} including {REFERENCE_VIEW!r}")
        if len(self.views) < 2:
            fail("views", "at least two views (localization is scored on a view it was not trained on)")
        if self.preset not in PRESETS:
            fail("preset", f"one of {sorted(PRESETS)}")
        if self.pairing not in PAIRINGS:
            fail("pairing", f"one of {PAIRINGS}")
        if self.epochs < 1:
            fail("epochs", ">= 1")
        if self.batch_size is not None and (self.batch_size < 2 or self.batch_size % 2):
            fail("batch_size", "an even number >= 2")
        if not math.isfinite(self.anomaly_k) or self.anomaly_k < 0:
            fail("anomaly_k", ">= 0")
        if self.search_k < 1:
            fail("search_k", ">= 1")
        if self.start_time is not None:
            parse_start_time(self.start_time)

    @property
    def crop_size(self) -> int:
        from pipelines.train.driver import PRESETS

        return PRESETS[self.preset](None).visual.crop_size

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["views"], data["size"] = list(self.views), list(self.size)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MainJobConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"MainJobConfig: unknown field(s) {unknown}")
        values = dict(data)
        for name in ("views", "size"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


@dataclass(frozen=True)
class Layout:
    """Where each stage writes under the out folder."""

    root: Path

    @property
    def videos(self) -> Path:
        return self.root / "videos"

    @property
    def labels(self) -> Path:
        return self.videos / "labels.parquet"

    @property
    def clips(self) -> Path:
        return self.root / "clips"

    @property
    def runs(self) -> Path:
        return self.root / "runs"

    @property
    def embeddings(self) -> Path:
        return self.root / "embeddings"

    @property
    def anomaly(self) -> Path:
        return self.root / "anomaly"

    @property
    def search(self) -> Path:
        return self.root / "search"

    @property
    def localize(self) -> Path:
        return self.root / "localize"

    @property
    def report(self) -> Path:
        return self.root / "report"


@dataclass
class StageTiming:
    name: str
    seconds: float
    status: str  # "ran" or "reused"
    note: str = ""


@dataclass
class MainResult:
    out: Path
    report: Path
    stages: list[StageTiming]
    run_dir: Path
    checkpoint: Path
    query: str
    summaries: dict[str, dict] = field(default_factory=dict)  # anomaly / search / localize summary.json contents

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


# -- stages --------------------------------------------------------------------------


def synthetic_config(config: MainJobConfig, layout: Layout) -> SyntheticConfig:
    from pipelines.synthetic import SyntheticConfig

    return SyntheticConfig(out=layout.videos, minutes=config.minutes, seed=config.seed, size=config.size, fps=config.fps,
                           views=config.views, anomalies=True, rate_scale=config.rate_scale)


def generated_already(config: SyntheticConfig, layout: Layout) -> bool:
    """The videos folder holds a finished generation of exactly this generator config (written last)."""
    record = layout.videos / CONFIG_FILE
    if not record.is_file() or not layout.labels.is_file():
        return False
    recorded = json.loads(record.read_text()).get("config")
    return recorded == config.to_dict() and all((layout.videos / f"{v}.mp4").is_file() for v in config.views)


def pretrain_config(config: MainJobConfig, layout: Layout, run_dir: Path | None = None) -> PretrainConfig:
    """The PretrainConfig that ``jobs/pretrain.py`` builds from the same flags (``pipelines.train.args``)."""
    from pipelines.train.args import config_from_args, parse_args

    argv = ["--clips", str(layout.clips), "--run-dir", str(run_dir or layout.runs / "pending"), "--preset", config.preset,
            "--pairing", config.pairing, "--epochs", str(config.epochs), "--workers", "1", "--labels", str(layout.labels),
            "--seed", str(config.seed), "--log-every", "20"]
    if config.batch_size is not None:
        argv += ["--batch-size", str(config.batch_size)]
    return config_from_args(parse_args(argv))


def run_dir_for(config: MainJobConfig, layout: Layout, data_key: dict[str, Any]) -> Path:
    """``runs/<preset>-<pairing>-<key>``: the key hashes the training settings and the data they train on."""
    from pipelines.train.driver import OPERATIONAL_FIELDS

    settings = {k: v for k, v in pretrain_config(config, layout).to_dict().items()
                if k not in OPERATIONAL_FIELDS and k != "run_dir"}
    key = hashlib.sha256(json.dumps({"pretrain": settings, "data": data_key}, sort_keys=True, default=str).encode())
    return layout.runs / f"{config.preset}-{config.pairing}-{key.hexdigest()[:8]}"


def finished_checkpoint(run_dir: Path, epochs: int) -> Path | None:
    """The end-of-last-epoch checkpoint of a finished run, or None (not started, or interrupted)."""
    done = sorted(run_dir.glob(f"checkpoint_step*_end_of_epoch{epochs:04d}")) if run_dir.is_dir() else []
    return done[-1] if done else None


def choose_query(labels_path: Path, embedded: set[tuple[str, int]], stream: str = QUERY_VIEW) -> tuple[str, int, str]:
    """(stream, t, class) of the search query: the middle second of the first event of the preferred class."""
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


def _embeddings_model(layout: Layout) -> str | None:
    from pipelines.score.job import CONFIG_FILE as EMBED_CONFIG

    record = layout.embeddings / EMBED_CONFIG
    return json.loads(record.read_text()).get("model") if record.is_file() else None


# -- the job -------------------------------------------------------------------------


def _say(line: str) -> None:
    print(f"[main] {line}", flush=True)


class _Stages:
    """Runs stages in order, timing each and printing one line per stage."""

    def __init__(self) -> None:
        self.timings: list[StageTiming] = []

    def run(self, name: str, body: Callable[[], tuple[str, str]]) -> None:
        _say(f"{name} ...")
        started = time.perf_counter()
        status, note = body()
        seconds = time.perf_counter() - started
        self.timings.append(StageTiming(name, seconds, status, note))
        _say(f"{name}: {status} in {hhmmss(seconds)} ({seconds:.1f} s){' - ' + note if note else ''}")


def write_config(config: MainJobConfig, layout: Layout) -> Path:
    layout.root.mkdir(parents=True, exist_ok=True)
    path = layout.root / CONFIG_FILE
    tmp = path.with_name(f".{CONFIG_FILE}.partial")
    tmp.write_text(json.dumps(config.to_dict(), indent=1))
    os.replace(tmp, path)
    return path


def run_main(config: MainJobConfig) -> MainResult:
    """Every stage in order (reusing finished ones), then the report; returns where everything is."""
    import ray

    started_ray = not ray.is_initialized()
    try:
        return _run(config)
    finally:
        if started_ray and ray.is_initialized():
            ray.shutdown()


def _run(config: MainJobConfig) -> MainResult:
    from pipelines.downstream.anomaly_job import AnomalyJobConfig, run_anomaly
    from pipelines.downstream.anomaly_job import format_summary as anomaly_text
    from pipelines.downstream.clock import ALL_STREAMS, Clock
    from pipelines.downstream.localize_job import LocalizeJobConfig, run_localize
    from pipelines.downstream.localize_job import format_summary as localize_text
    from pipelines.downstream.search_job import SearchJobConfig, run_search
    from pipelines.downstream.search_job import format_summary as search_text
    from pipelines.score.job import run_embed
    from pipelines.score.model import checkpoint_id, resolve_checkpoint
    from pipelines.score.embeddings import read_embeddings
    from pipelines.ingest.job import run_ingest
    from pipelines.ingest.config import IngestConfig
    from pipelines.train.driver import run_pretrain
    from pipelines.report.page import write_report
    from pipelines.synthetic import generate

    layout = Layout(Path(config.out))
    write_config(config, layout)
    stages = _Stages()
    start_times = {ALL_STREAMS: config.start_time} if config.start_time else {}
    synthetic = synthetic_config(config, layout)
    ingest_config = IngestConfig(crop_size=config.crop_size)
    state: dict[str, Any] = {}

    def do_generate() -> tuple[str, str]:
        if generated_already(synthetic, layout):
            return "reused", f"{len(config.views)} views in {layout.videos}"
        streams = generate(synthetic)
        return "ran", (f"{len(streams.videos)} views x {streams.seconds:.0f} s, "
                       f"{sum(streams.event_counts.values())} events -> {layout.videos}")

    def do_ingest() -> tuple[str, str]:
        videos = [str(layout.videos / f"{view}.mp4") for view in config.views]
        summary = run_ingest(videos, str(layout.clips), ingest_config, show_progress=config.show_progress,
                             ray_address=config.ray_address)
        print(summary.format(), flush=True)
        if not summary.ok:
            raise MainJobError(f"ingest failed (see the summary above); clips in {layout.clips}")
        ran = any(s.status != "skipped" for s in summary.streams)
        return ("ran" if ran else "reused"), f"{sum(s.rows for s in summary.streams)} clips -> {layout.clips}"

    def do_pretrain() -> tuple[str, str]:
        run_dir = run_dir_for(config, layout, {"generator": synthetic.to_dict(), "ingest": ingest_config.output_hash()})
        state["run_dir"] = run_dir
        done = finished_checkpoint(run_dir, config.epochs)
        status = "reused"
        if done is None:
            run_pretrain(pretrain_config(config, layout, run_dir), ray_address=config.ray_address)
            status = "ran"
        state["checkpoint"] = resolve_checkpoint(str(run_dir))
        return status, f"{config.preset} preset, {config.pairing} x {config.epochs} epoch(s) -> {state['checkpoint']}"

    def do_embed() -> tuple[str, str]:
        checkpoint = state["checkpoint"]
        held = _embeddings_model(layout)
        overwrite = held is not None and held != checkpoint_id(checkpoint)
        summary = run_embed(str(checkpoint), str(layout.embeddings), clips=str(layout.clips), overwrite=overwrite,
                            show_progress=config.show_progress, ray_address=config.ray_address)
        print(summary.format(), flush=True)
        if not summary.ok:
            raise MainJobError(f"embed failed (see the summary above); embeddings in {layout.embeddings}")
        ran = any(s.status != "skipped" for s in summary.streams)
        return ("ran" if ran else "reused"), f"{sum(s.rows for s in summary.streams)} rows -> {layout.embeddings}"

    def do_anomaly() -> tuple[str, str]:
        result = run_anomaly(AnomalyJobConfig(embeddings=str(layout.embeddings), output=str(layout.anomaly),
                                              reference=(REFERENCE_VIEW,), k=config.anomaly_k, labels=str(layout.labels),
                                              start_times=start_times))
        print(anomaly_text(result, Clock(start_times)), flush=True)
        return "ran", f"{len(result.events)} events"

    def do_search() -> tuple[str, str]:
        emb = read_embeddings(str(layout.embeddings), [QUERY_VIEW] if QUERY_VIEW in config.views else None)
        stream = QUERY_VIEW if QUERY_VIEW in config.views else REFERENCE_VIEW
        stream, t, name = choose_query(layout.labels, set(zip(emb.stream_id.tolist(), emb.t.tolist())), stream)
        state["query"] = f"{stream}:{t}"
        result = run_search(SearchJobConfig(embeddings=str(layout.embeddings), output=str(layout.search),
                                            query=state["query"], k=config.search_k, clips=str(layout.clips),
                                            labels=str(layout.labels), start_times=start_times))
        print(search_text(result), flush=True)
        return "ran", f"query {stream} at {Clock(start_times).format(stream, t)} ({name})"

    def do_localize() -> tuple[str, str]:
        views = {view: (view,) for view in config.views if view != REFERENCE_VIEW}
        result = run_localize(LocalizeJobConfig(embeddings=str(layout.embeddings), labels=str(layout.labels),
                                                output=str(layout.localize), train=(REFERENCE_VIEW,), eval=views))
        print(localize_text(result), flush=True)
        best = result.summary.get("best") or {}
        return "ran", "best per view: " + ", ".join(f"{v} {b['accuracy']:.2f} ({b['head']} on {b['features']})"
                                                    for v, b in best.items())

    def do_report() -> tuple[str, str]:
        state["report"] = write_report(report_inputs(config, layout, stages.timings, state["run_dir"]), layout.report)
        return "ran", str(state["report"])

    for name, body in (("generate", do_generate), ("ingest", do_ingest), ("pretrain", do_pretrain), ("embed", do_embed),
                       ("anomaly", do_anomaly), ("search", do_search), ("localize", do_localize)):
        stages.run(name, body)
    stages.run("report", do_report)
    # The report's stage table was written before the report stage ended: write it once more with every stage.
    report = write_report(report_inputs(config, layout, stages.timings, state["run_dir"]), layout.report)
    (layout.root / STAGES_FILE).write_text(json.dumps([dataclasses.asdict(s) for s in stages.timings], indent=1))
    summaries = {name: json.loads((getattr(layout, name) / "summary.json").read_text())
                 for name in ("anomaly", "search", "localize")}
    return MainResult(out=layout.root, report=report, stages=stages.timings, run_dir=state["run_dir"],
                      checkpoint=state["checkpoint"], query=state["query"], summaries=summaries)


def report_inputs(config: MainJobConfig, layout: Layout, timings: list[StageTiming], run_dir: Path) -> ReportInputs:
    from pipelines.report.page import ReportInputs

    views = ", ".join(config.views)
    when = f"recording started {config.start_time}" if config.start_time else "no recording start given"
    subtitle = (f"{_minutes(config.minutes)} of synthetic street footage seen by {len(config.views)} cameras ({views}), "
                f"seed {config.seed}; {config.preset} model pretrained {config.epochs} epoch{'s' * (config.epochs != 1)} "
                f"with {config.pairing.upper()} on CPU; {when}.")
    raw = [("run-config.json", layout.root / CONFIG_FILE), ("labels.parquet", layout.labels),
           ("pretrain-config.json", run_dir / "config.json"), ("pretrain-epochs.csv", run_dir / "metrics" / "epochs.csv"),
           ("pretrain-steps.csv", run_dir / "metrics" / "steps.csv")]
    for directory, names in ((layout.anomaly, ("summary.json", "events.json", "events.parquet", "scores.parquet")),
                             (layout.search, ("summary.json", "results.json", "results.parquet", "contact_sheet.html")),
                             (layout.localize, ("summary.json", "accuracy.json", "accuracy.csv"))):
        raw += [(f"{directory.name}-{name}", directory / name) for name in names]
    return ReportInputs(
        title="EPG on synthetic surveillance streams",
        subtitle=subtitle,
        stages=[(s.name, s.seconds, s.status) for s in timings],
        pretrain_run=run_dir,
        anomaly_dir=layout.anomaly,
        search_dir=layout.search,
        localize_dir=layout.localize,
        raw_files=raw,
        wall_clock=config.start_time is not None,
    )


def _minutes(minutes: float) -> str:
    return f"{minutes:g} minute{'s' * (minutes != 1)}"


def format_result(result: MainResult) -> str:
    """The closing lines: one per stage, the total, and where the report is (last)."""
    width = max(len(s.name) for s in result.stages)
    lines = ["main job: stages"]
    lines += [f"  {s.name:<{width}}  {hhmmss(s.seconds)}  {s.seconds:7.1f} s  {s.status}" for s in result.stages]
    lines.append(f"  {'total':<{width}}  {hhmmss(result.total_seconds)}  {result.total_seconds:7.1f} s")
    lines.append(f"report: {result.report.resolve()}")
    return "\n".join(lines)
