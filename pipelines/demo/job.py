"""The main job (``jobs/demo.py``, ``make demo``): the whole pipeline on synthetic footage, from nothing to a report.

    run_main(MainJobConfig(output="out/demo"))

Stages, in order, each timed (``stages.json`` and the report's first table):

    generate   synthetic multi-view stream + labels       <output>/videos/
    ingest     videos -> clips Parquet (Ray Data)          <output>/clips/
    pretrain   EPG on all views' clips (Ray Train, CPU)    <output>/runs/<preset>-<pairing>-<key>/
    embed      clips -> embeddings (Ray Data)              <output>/embeddings/
    anomaly    threshold on the train view, events         <output>/anomaly/
    search     a labelled clip of the similar view         <output>/search/
    localize   heads trained on train, scored on the rest  <output>/localize/
    report     index.html + raw files                      <output>/report/

``<output>/config.json`` is this run's ``MainJobConfig``, ``<output>/summary.txt`` every job's full
summary (the console shows one line per stage); a rerun with the same output folder
reuses every finished stage (``pipelines.demo.stages``). Ray, as in every job: ``ray_address``,
else RAY_ADDRESS, else a new local Ray (on 127.0.0.1, its internal messages in its log files),
which this job shuts down at the end.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from epg.timecode import hhmmss
from pipelines.demo.config import CONFIG_FILE, STAGES_FILE, SUMMARY_FILE, DemoLayout, MainJobConfig
from pipelines.demo.stages import DemoRun, StageTiming
from pipelines.report.page import ReportInputs


@dataclass
class MainResult:
    output: Path
    report: Path
    stages: list[StageTiming]
    run_dir: Path
    checkpoint: Path
    query: str
    summaries: dict[str, dict] = field(default_factory=dict)  # anomaly / search / localize summary.json contents

    @property
    def total_seconds(self) -> float:
        return sum(s.seconds for s in self.stages)


def write_config(config: MainJobConfig, layout: DemoLayout) -> Path:
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
        run = DemoRun(config)
        write_config(config, run.layout)
        run.run(report_inputs)
    finally:
        if started_ray and ray.is_initialized():
            ray.shutdown()
    layout = run.layout
    (layout.root / STAGES_FILE).write_text(json.dumps([dataclasses.asdict(s) for s in run.timings], indent=1))
    summaries = {name: json.loads((getattr(layout, name) / "summary.json").read_text())
                 for name in ("anomaly", "search", "localize")}
    assert run.report is not None and run.run_dir is not None and run.checkpoint is not None
    return MainResult(output=layout.root, report=run.report, stages=run.timings, run_dir=run.run_dir,
                      checkpoint=run.checkpoint, query=run.query, summaries=summaries)


def report_inputs(run: DemoRun) -> ReportInputs:
    """What the report page shows of this run: the stage timings and every stage's output folder."""
    config, layout = run.config, run.layout
    assert run.run_dir is not None
    run_dir = run.run_dir
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
        stages=[(s.name, s.seconds, s.status) for s in run.timings],
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
    """The closing lines: the total time, where the stage summaries are, and where the report is (last).
    (Each stage's time is on its own line above, in ``stages.json`` and in the report.)"""
    ran = sum(s.status == "ran" for s in result.stages)
    return (f"main job: done in {hhmmss(result.total_seconds)} ({result.total_seconds:.1f} s; {ran} of "
            f"{len(result.stages)} stages ran, the rest reused); summaries: {result.output.resolve() / SUMMARY_FILE}\n"
            f"report: {result.report.resolve()}")
