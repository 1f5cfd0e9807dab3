"""The report folder: one self-contained ``index.html`` over the outputs of a pipeline run.

The page is meant to be looked at rather than read: the key numbers first as
cards (each with what it is compared against), then one section per stage with a
line saying what the reader is looking at, the plots at full width, and the
tables after them. It is self-contained -- every image is inlined as a ``data:``
URI and the style sheet is in the page, nothing is fetched from a network -- so
it opens from a laptop, an artefact store or an e-mail attachment; the raw
Parquet/JSON/CSV outputs are copied next to it under ``data/`` and linked
relatively, for anyone who wants the numbers.

Inputs are the folders the jobs write (their file names are the jobs' contract):

- ``pipelines/downstream/anomaly_job.py``: summary.json, events.json, timeline-<stream>.png
- ``pipelines/downstream/search_job.py``: summary.json, results.json, contact_sheet.png
- ``pipelines/downstream/localize_job.py``: summary.json, accuracy.json ({head: {features:
  {"train_accuracy", "per_view": {view: score}}}}), accuracy.png
- the pretraining run directory: config.json, metrics/epochs.csv, metrics/steps.csv

plus the stage timings. A section whose folder or files are missing says so
instead of failing the page. Times of events are HH:MM:SS as the jobs wrote them
(from the stream start, or wall-clock when they were given the recording's start).
Nothing is written outside ``out_dir`` (the training curves are drawn in memory).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from epg.timecode import hhmmss
from pipelines.report.html import Card, card_grid, document, esc, fmt, section, tone
from pipelines.report.sections import (
    anomaly_section,
    classes_label,
    last_epoch,
    localize_section,
    pretrain_section,
    read_json,
    search_section,
    stages_section,
)

REPORT_FILE = "index.html"
DATA_DIR = "data"

STYLE = """
* { box-sizing: border-box; }
body { font-family: 'DejaVu Sans', system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 0;
       color: #1d2733; background: #eef1f4; line-height: 1.45; }
header { background: #17212b; color: #fff; padding: 22px 36px 20px 36px; }
header h1 { margin: 0 0 6px 0; font-size: 26px; font-weight: 600; }
header p { margin: 2px 0; color: #c5d0db; font-size: 14px; max-width: 1180px; }
main { padding: 6px 36px 28px 36px; max-width: 1280px; margin: 0 auto; }
section { background: #fff; border-radius: 8px; padding: 16px 24px 18px 24px; margin-top: 18px;
          box-shadow: 0 1px 3px rgba(0,0,0,.10); }
h2 { margin: 0 0 4px 0; font-size: 20px; }
h3 { font-size: 15px; margin: 16px 0 4px 0; color: #33414f; }
p.what { margin: 0 0 12px 0; color: #52606d; font-size: 14px; max-width: 1100px; }
table { border-collapse: collapse; margin: 6px 0 10px 0; font-size: 13.5px; }
th, td { border-bottom: 1px solid #e1e6eb; padding: 4px 14px 4px 0; text-align: left; vertical-align: middle; }
th { color: #52606d; font-weight: 600; border-bottom: 2px solid #cfd7df; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; padding-left: 14px; }
tr.best td.num { font-weight: 700; }
tr.baseline td { color: #6b7885; font-style: italic; }
img.plot { display: block; width: 100%; height: auto; margin: 6px 0 10px 0; border: 1px solid #e1e6eb; border-radius: 4px; }
img.sheet { display: block; max-width: 100%; height: auto; margin: 6px 0 10px 0; border: 1px solid #e1e6eb; border-radius: 4px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; margin: 18px 0 4px 0; }
.card { background: #fff; border-radius: 8px; padding: 12px 14px; box-shadow: 0 1px 3px rgba(0,0,0,.10);
        border-top: 4px solid #2f6f9f; }
.card .value { font-size: 25px; font-weight: 700; font-variant-numeric: tabular-nums; white-space: nowrap; }
.card .label { font-size: 13px; font-weight: 600; color: #33414f; min-height: 2.5em; }
.card .note { font-size: 12px; color: #6b7885; overflow-wrap: anywhere; }
.card.good { border-top-color: #2e8b57; } .card.bad { border-top-color: #c0392b; } .card.neutral { border-top-color: #8795a1; }
section .cards { margin-top: 6px; } section .card { box-shadow: none; background: #f4f6f8; }
.bar { background: #2f6f9f; height: 12px; border-radius: 3px; min-width: 2px; }
.bar.reused { background: #b8c4cf; }
td.barcell { width: 420px; }
.badge { font-size: 11px; padding: 1px 7px; border-radius: 9px; background: #e4e9ee; color: #52606d; }
.ok { color: #2e8b57; font-weight: 700; } .miss { color: #c0392b; font-weight: 700; }
.missing { color: #a61b1b; }
ul.raw { columns: 2; font-size: 13.5px; } ul.raw li { margin: 2px 0; }
code { background: #eef1f4; padding: 0 4px; border-radius: 3px; font-size: 12.5px; }
footer { color: #6b7885; font-size: 12px; padding: 0 36px 24px 36px; max-width: 1280px; margin: 0 auto; }
"""


@dataclass
class ReportInputs:
    """Where a run's outputs are; any of them may be None (the section then says it is missing)."""

    title: str
    subtitle: str = ""
    stages: list[tuple[str, float, str]] = field(default_factory=list)  # (stage, seconds, "ran" | "reused")
    facts: list[tuple[str, str, str]] = field(default_factory=list)  # extra cards: (label, value, note)
    pretrain_run: Path | None = None
    anomaly_dir: Path | None = None
    search_dir: Path | None = None
    localize_dir: Path | None = None
    raw_files: list[tuple[str, Path]] = field(default_factory=list)  # (name under data/, source), copied and linked
    wall_clock: bool = False  # the jobs were given the recording's start time


def key_numbers(inputs: ReportInputs) -> list[Card]:
    """The cards at the top: each task's headline number next to what it should beat."""
    cards: list[Card] = []
    anomaly = read_json(inputs.anomaly_dir / "summary.json") if inputs.anomaly_dir else None
    if anomaly:
        auc = anomaly.get("roc_auc")
        cards.append(Card("anomaly ROC-AUC", fmt(auc, 2), "per second vs labels; chance 0.50", tone(auc, 0.5))
                     if "roc_auc" in anomaly else Card("anomaly events", str(anomaly.get("n_events", "?")), "no labels"))
        if anomaly.get("event_recall") is not None:
            cards.append(Card("anomalies found", f"{anomaly.get('event_recall', 0):.0%}",
                              f"of {anomaly.get('n_labelled_events')} labelled; event precision "
                              f"{fmt(anomaly.get('event_precision'), 2)}", "neutral"))
    search = read_json(inputs.search_dir / "summary.json") if inputs.search_dir else None
    if search and search.get("precision_at_k") is not None:
        label = classes_label((search.get("query") or {}).get("label") or "?")
        cards.append(Card(f"search precision@{search.get('k')}", fmt(search["precision_at_k"], 2),
                          f"hits sharing a class with the query ({label})", "neutral"))
    localize = read_json(inputs.localize_dir / "summary.json") if inputs.localize_dir else None
    if localize:
        baseline = localize.get("majority_baseline") or {}
        for view, best in (localize.get("best") or {}).items():
            base = baseline.get(view)
            cards.append(Card(f"localization, {view} view", fmt(best.get("accuracy"), 2),
                              f"best: {best.get('head')} head on {best.get('features')}; always "
                              f"{localize.get('majority_class')}: {fmt(base, 2)}", tone(best.get("accuracy"), base)))
    epoch = last_epoch(inputs.pretrain_run)
    mined, chance = epoch.get("mined_label_precision", math.nan), epoch.get("random_label_share", math.nan)
    if math.isfinite(mined):
        cards.append(Card("mined pairs sharing a label", fmt(mined, 2), f"last epoch; random pairs {fmt(chance, 2)}",
                          tone(mined, chance)))
    if inputs.stages:
        total = sum(seconds for _, seconds, _ in inputs.stages)
        reused = sum(status == "reused" for _, _, status in inputs.stages)
        cards.append(Card("pipeline time", hhmmss(total), f"{len(inputs.stages)} stages" +
                          (f", {reused} reused from an earlier run" if reused else ""), "neutral"))
    cards += [Card(label, value, note, "neutral") for label, value, note in inputs.facts]
    return cards


def raw_section(links: Sequence[tuple[str, int]]) -> str:
    items = "".join(f'<li><a href="{esc(link)}">{esc(link.removeprefix(DATA_DIR + "/"))}</a> '
                    f'<span class="badge">{_size(size)}</span></li>' for link, size in links)
    return section("Raw outputs", "The files behind this page, copied next to it (Parquet, JSON, CSV).",
                    f'<ul class="raw">{items}</ul>', "raw")


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{max(1, round(size / 1e3))} kB"



def copy_raw_files(raw_files: Sequence[tuple[str, Path]], out_dir: Path) -> list[tuple[str, int]]:
    """Copy the raw outputs under ``out_dir/data`` (missing ones are left out); (relative link, bytes) each."""
    shutil.rmtree(out_dir / DATA_DIR, ignore_errors=True)  # the folder describes this run only
    links = []
    for name, source in raw_files:
        if source.is_file():
            target = out_dir / DATA_DIR / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            links.append((f"{DATA_DIR}/{name}", target.stat().st_size))
    return links


def render(inputs: ReportInputs, links: Sequence[tuple[str, int]] = ()) -> str:
    """The page's HTML."""
    clock = ("Times are wall-clock HH:MM:SS (the recording's start time was given)." if inputs.wall_clock else
             "Times are HH:MM:SS from the start of the stream.")
    body = "".join([
        card_grid(key_numbers(inputs)),
        stages_section(inputs.stages) if inputs.stages else "",
        pretrain_section(inputs.pretrain_run),
        anomaly_section(inputs.anomaly_dir),
        search_section(inputs.search_dir),
        localize_section(inputs.localize_dir),
        raw_section(links) if links else "",
    ])
    generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return document(inputs.title, STYLE, (
        f"<header><h1>{esc(inputs.title)}</h1><p>{esc(inputs.subtitle)}</p><p>{esc(clock)}</p></header>"
        f"<main>{body}</main><footer>Written by pipelines/report on {esc(generated)}. "
        "The page is self-contained: images are inlined, nothing is loaded from a network.</footer>"
    ))


def write_report(inputs: ReportInputs, out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` (+ the raw files under ``out_dir/data``); returns the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    links = copy_raw_files(inputs.raw_files, out_dir)
    path = out_dir / REPORT_FILE
    temp = path.with_name(f".{REPORT_FILE}.tmp")
    temp.write_text(render(inputs, links), encoding="utf-8")
    temp.replace(path)
    return path
