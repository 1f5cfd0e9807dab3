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
  {"train_accuracy", "per_view": {view: score}}}}, or the older {features: {...}} of a
  single linear head), accuracy.png
- the pretraining run directory: config.json, metrics/epochs.csv, metrics/steps.csv

plus the stage timings. A section whose folder or files are missing says so
instead of failing the page. Times of events are HH:MM:SS as the jobs wrote them
(from the stream start, or wall-clock when they were given the recording's start).
Nothing is written outside ``out_dir`` (the training curves are drawn in memory).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import itertools
import json
import math
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from epg.timecode import hhmmss

REPORT_FILE = "index.html"
DATA_DIR = "data"
MAX_EVENT_ROWS = 25

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


@dataclass(frozen=True)
class Card:
    label: str
    value: str
    note: str = ""
    tone: str = ""  # "good", "bad", "neutral" or "" (the colour of its top border)


# -- small pieces -----------------------------------------------------------------------


def png_data_uri(data: bytes) -> str:
    """PNG bytes as a ``data:`` URI (the page carries its images inside)."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def image_data_uri(path: Path) -> str:
    return png_data_uri(path.read_bytes())


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


class Markup(str):
    """HTML already escaped (a cell that holds a mark-up snippet)."""


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return f"<td>{'yes' if value else 'no'}</td>"
    if isinstance(value, float):
        return f'<td class="num">{_fmt(value)}</td>'
    if isinstance(value, int):
        return f'<td class="num">{value}</td>'
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    return '<td class="num">–</td>' if value is None else f"<td>{_esc(value)}</td>"


def html_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
               headers: Sequence[str] | None = None, row_classes: Sequence[str] | None = None) -> str:
    """Rows of dicts as an HTML table; floats with three decimals, numbers right-aligned."""
    if not rows:
        return '<p class="what">(none)</p>'
    columns = list(columns or rows[0].keys())
    numeric = [all(isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool) or r.get(c) is None
                   for r in rows) for c in columns]
    head = "".join(f'<th class="num">{_esc(h)}</th>' if n else f"<th>{_esc(h)}</th>"
                   for h, n in zip(headers or columns, numeric))
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(_cell(row.get(c)) for c in columns) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _image(path: Path, alt: str, css: str = "plot") -> str:
    if not path.is_file():
        return f'<p class="missing">missing plot {_esc(path.name)}</p>'
    return f'<img class="{css}" src="{image_data_uri(path)}" alt="{_esc(alt)}">'


def _cards(cards: Iterable[Card]) -> str:
    items = "".join(
        f'<div class="card {c.tone}"><div class="label">{_esc(c.label)}</div><div class="value">{_esc(c.value)}</div>'
        f'<div class="note">{_esc(c.note)}</div></div>'
        for c in cards
    )
    return f'<div class="cards">{items}</div>' if items else ""


def _read_json(path: Path | None) -> Any:
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def _section(title: str, what: str, body: str, anchor: str) -> str:
    return f'<section id="{anchor}"><h2>{_esc(title)}</h2><p class="what">{what}</p>{body}</section>'


def _missing(name: str, directory: Path | None) -> str:
    where = f" in <code>{_esc(directory)}</code>" if directory else ""
    return f'<p class="missing">No {_esc(name)} output{where}.</p>'


def _tone(value: float | None, reference: float | None) -> str:
    if value is None or reference is None or not math.isfinite(value) or not math.isfinite(reference):
        return "neutral"
    return "good" if value > reference else "bad"


def _classes(label: str) -> str:
    """``bus+car`` as ``bus + car``: a long list of classes can wrap in a narrow card."""
    return label.replace("+", " + ")


def _mark(relevant: Any) -> Markup | str:
    if relevant is True:
        return Markup('<span class="ok">✓</span>')
    if relevant is False:
        return Markup('<span class="miss">✗</span>')
    return ""


# -- shapes the jobs write ---------------------------------------------------------------


def localize_scores(accuracy: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """accuracy.json as head → features → {"train_accuracy", "per_view"}; the one-head layout is read as "linear"."""
    if accuracy and all(isinstance(v, dict) and "per_view" in v for v in accuracy.values()):
        return {"linear": dict(accuracy)}
    return {h: dict(by_f) for h, by_f in accuracy.items() if isinstance(by_f, dict)}


def last_epoch(run_dir: Path | None) -> dict[str, float]:
    rows = _read_csv(run_dir / "metrics" / "epochs.csv") if run_dir else []
    return {k: _float(v) for k, v in rows[-1].items()} if rows else {}


def key_numbers(inputs: ReportInputs) -> list[Card]:
    """The cards at the top: each task's headline number next to what it should beat."""
    cards: list[Card] = []
    anomaly = _read_json(inputs.anomaly_dir / "summary.json") if inputs.anomaly_dir else None
    if anomaly:
        auc = anomaly.get("roc_auc")
        cards.append(Card("anomaly ROC-AUC", _fmt(auc, 2), "per second vs labels; chance 0.50", _tone(auc, 0.5))
                     if "roc_auc" in anomaly else Card("anomaly events", str(anomaly.get("n_events", "?")), "no labels"))
        if anomaly.get("event_recall") is not None:
            cards.append(Card("anomalies found", f"{anomaly.get('event_recall', 0):.0%}",
                              f"of {anomaly.get('n_labelled_events')} labelled; event precision "
                              f"{_fmt(anomaly.get('event_precision'), 2)}", "neutral"))
    search = _read_json(inputs.search_dir / "summary.json") if inputs.search_dir else None
    if search and search.get("precision_at_k") is not None:
        label = _classes((search.get("query") or {}).get("label") or "?")
        cards.append(Card(f"search precision@{search.get('k')}", _fmt(search["precision_at_k"], 2),
                          f"hits sharing a class with the query ({label})", "neutral"))
    localize = _read_json(inputs.localize_dir / "summary.json") if inputs.localize_dir else None
    if localize:
        baseline = localize.get("majority_baseline") or {}
        for view, best in (localize.get("best") or _best_of_old(localize)).items():
            base = baseline.get(view)
            cards.append(Card(f"localization, {view} view", _fmt(best.get("accuracy"), 2),
                              f"best: {best.get('head')} head on {best.get('features')}; always "
                              f"{localize.get('majority_class')}: {_fmt(base, 2)}", _tone(best.get("accuracy"), base)))
    epoch = last_epoch(inputs.pretrain_run)
    mined, chance = epoch.get("mined_label_precision", math.nan), epoch.get("random_label_share", math.nan)
    if math.isfinite(mined):
        cards.append(Card("mined pairs sharing a label", _fmt(mined, 2), f"last epoch; random pairs {_fmt(chance, 2)}",
                          _tone(mined, chance)))
    if inputs.stages:
        total = sum(seconds for _, seconds, _ in inputs.stages)
        reused = sum(status == "reused" for _, _, status in inputs.stages)
        cards.append(Card("pipeline time", hhmmss(total), f"{len(inputs.stages)} stages" +
                          (f", {reused} reused from an earlier run" if reused else ""), "neutral"))
    cards += [Card(label, value, note, "neutral") for label, value, note in inputs.facts]
    return cards


def _best_of_old(summary: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``best`` of the one-head summary layout ({features: {view: accuracy}})."""
    accuracy = summary.get("accuracy") or {}
    best: dict[str, dict[str, Any]] = {}
    for features, by_view in accuracy.items():
        for view, value in (by_view or {}).items():
            if isinstance(value, (int, float)) and (view not in best or value > best[view]["accuracy"]):
                best[view] = {"head": "linear", "features": features, "accuracy": value}
    return best


# -- sections ------------------------------------------------------------------------------


def stages_section(stages: Sequence[tuple[str, float, str]]) -> str:
    longest = max((s for _, s, _ in stages), default=0.0) or 1.0
    rows = []
    for name, seconds, status in stages:
        width = max(0.5, 100.0 * seconds / longest)
        bar = f'<div class="bar {"reused" if status == "reused" else ""}" style="width:{width:.1f}%"></div>'
        badge = f' <span class="badge">{_esc(status)}</span>' if status == "reused" else ""
        rows.append(f'<tr><td>{_esc(name)}{badge}</td><td class="num">{hhmmss(seconds)}</td>'
                    f'<td class="num">{seconds:.1f} s</td><td class="barcell">{bar}</td></tr>')
    total = sum(s for _, s, _ in stages)
    rows.append(f'<tr><th>total</th><th class="num">{hhmmss(total)}</th><th class="num">{total:.1f} s</th><th></th></tr>')
    table = '<table><tr><th>stage</th><th class="num">time</th><th class="num">seconds</th><th></th></tr>' + "".join(rows) + "</table>"
    return _section("Pipeline", "Each stage of this run and how long it took (HH:MM:SS). A stage marked "
                    "<i>reused</i> found its finished output from an earlier run in the same folder.", table, "pipeline")


def training_png(steps: Sequence[Mapping[str, str]], epochs: Sequence[Mapping[str, str]]) -> bytes:
    """Loss, mined positives per anchor and the share of pairs that share a label, per step, epochs marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = steps or epochs
    x = [_float(r.get("step", r.get("epoch"))) for r in rows]
    fig = Figure(figsize=(14, 3.6))
    axes = fig.subplots(1, 3)
    axes[0].plot(x, [_float(r.get("loss")) for r in rows], color="#2f6f9f", lw=1.4)
    axes[0].set(title="loss", xlabel="step" if steps else "epoch")
    axes[1].plot(x, [_float(r.get("extra_positives_per_anchor")) for r in rows], color="#d35400", lw=1.4,
                 label="mined (EPG)")
    axes[1].plot(x, [_float(r.get("aligned_per_anchor")) for r in rows], color="#7f8c8d", lw=1.0, ls="--",
                 label="aligned (same clip)")
    axes[1].set(title="positives per anchor", xlabel="step" if steps else "epoch")
    for key, label, colour in (("mined_label_precision", "mined pairs", "#c0392b"),
                               ("random_label_share", "random pairs", "#7f8c8d")):
        axes[2].plot(x, [_float(r.get(key)) for r in rows], color=colour, lw=1.4, label=label)
    axes[2].set(title="pairs sharing a label (diagnostic)", xlabel="step" if steps else "epoch", ylim=(0, 1))
    if steps:  # epoch boundaries
        ends = [_float(prev.get("step")) for prev, r in itertools.pairwise(steps) if r.get("epoch") != prev.get("epoch")]
        for ax in axes:
            for end in ends:
                ax.axvline(end, color="#b8c4cf", lw=0.8, ls=":")
    for ax in axes:
        ax.grid(alpha=0.3)
    for ax in axes[1:]:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=9)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor="white")
    return buffer.getvalue()


def pretrain_section(run_dir: Path | None) -> str:
    what = ("How the encoders learned. EPG adds <i>mined</i> positives: clips whose visual or audio embedding is among "
            "an anchor's nearest neighbours, hours apart or in another view. The right plot checks the mining against "
            "the labels (never used in training): mined pairs should share a label far more often than random pairs.")
    epochs = _read_csv(run_dir / "metrics" / "epochs.csv") if run_dir else []
    if not epochs:
        return _section("Pretraining", what, _missing("pretraining", run_dir), "pretrain")
    steps = _read_csv(run_dir / "metrics" / "steps.csv")
    record = _read_json(run_dir / "config.json") or {}
    config = record.get("config") or {}
    epg = config.get("epg") or {}
    pairs, optim = epg.get("pairs") or {}, epg.get("optim") or {}
    clips = record.get("clips") or {}
    cards = [
        Card("pairing", str(config.get("pairing", "?")).upper(),
             f"mining {pairs.get('mining')} k={pairs.get('k')} after {pairs.get('warmup_epochs')} warm-up epoch(s)"
             if pairs.get("enabled") else "timestamps only", "neutral"),
        Card("model", str(config.get("preset", "?")), f"embedding dim {(epg.get('model') or {}).get('visual', {}).get('embed_dim')}",
             "neutral"),
        Card("training clips", str(clips.get("rows", "?")), f"{len(clips.get('streams', []))} streams, 2 crops each", "neutral"),
        Card("epochs x steps", f"{len(epochs)} x {int(_float(epochs[-1].get('steps')))}", f"batch {optim.get('batch_size')}",
             "neutral"),
    ]
    wanted = [("epoch", "epoch"), ("loss", "loss"), ("positives_per_anchor", "positives / anchor"),
              ("extra_positives_per_anchor", "mined / anchor"), ("mined_label_precision", "mined sharing a label"),
              ("random_label_share", "random sharing a label"), ("mined_time_gap", "mined time gap (s)"),
              ("random_time_gap", "random time gap (s)"), ("samples_per_s", "samples / s")]
    present = [(k, h) for k, h in wanted if k in epochs[0]]
    rows = []
    for e in epochs:
        row: dict[str, Any] = {k: _float(e.get(k)) for k, _ in present}
        row["epoch"] = int(row["epoch"]) + 1
        rows.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    plot = f'<img class="plot" src="{png_data_uri(training_png(steps, epochs))}" alt="training curves">'
    body = (_cards(cards) + plot + "<h3>Per epoch (means over its steps; mining starts after the warm-up)</h3>"
            + html_table(rows, [k for k, _ in present], [h for _, h in present]))
    return _section("Pretraining", what, body, "pretrain")


def anomaly_section(directory: Path | None) -> str:
    what = ("The score of a second is D(v, a): how badly its picture and its sound agree. The threshold "
            "(mean + k·std) is fitted on the reference camera; contiguous seconds above it form an event. "
            "Purple strips are the labelled anomalies (glass breaking, a scream, a speeding car).")
    summary = _read_json(directory / "summary.json") if directory else None
    if summary is None:
        return _section("Anomaly detection", what, _missing("anomaly", directory), "anomaly")
    events = _read_json(directory / "events.json") or {}
    events = events.get("events", []) if isinstance(events, dict) else events
    anomaly_classes = set(summary.get("anomaly_classes") or [])
    cards = [Card("threshold", _fmt(summary.get("threshold")), f"μ {_fmt(summary.get('mean'))} + {summary.get('k')}·σ "
                  f"{_fmt(summary.get('std'))} on {', '.join(summary.get('reference', []))}", "neutral"),
             Card("events", str(summary.get("n_events", len(events))),
                  f"{summary.get('n_anomalous_seconds')} of {summary.get('n_seconds')} seconds flagged", "neutral")]
    if "roc_auc" in summary:
        cards.append(Card("ROC-AUC", _fmt(summary.get("roc_auc"), 2), "per second, chance 0.50",
                          _tone(summary.get("roc_auc"), 0.5)))
        cards.append(Card("average precision", _fmt(summary.get("average_precision"), 2),
                          f"chance {_fmt(_share(summary), 2)}", _tone(summary.get("average_precision"), _share(summary))))
    if summary.get("event_recall") is not None:
        cards.append(Card("event recall", _fmt(summary.get("event_recall"), 2),
                          f"of {summary.get('n_labelled_events')} labelled anomalies, share overlapped by an event", "neutral"))
    if summary.get("event_precision") is not None:
        cards.append(Card("event precision", _fmt(summary.get("event_precision"), 2),
                          f"of {summary.get('n_detected_events')} events, share on a labelled anomaly", "neutral"))
    reference = set(summary.get("reference") or [])
    timelines = sorted(directory.glob("timeline-*.png"), key=lambda p: (p.stem.removeprefix("timeline-") in reference, p.stem))
    plots = "".join(
        f"<h3>{_esc(p.stem.removeprefix('timeline-'))}{' (reference)' if p.stem.removeprefix('timeline-') in reference else ''}</h3>"
        + _image(p, p.stem) for p in timelines
    )
    strongest = sorted(events, key=lambda e: -_float(e.get("peak_score")))[:MAX_EVENT_ROWS]
    rows = []
    for e in strongest:
        labels = e.get("labels") or ""
        hit = bool(anomaly_classes & set(labels.split("+"))) if labels and anomaly_classes else None
        rows.append({"stream": e.get("stream_id"), "start": e.get("start_hhmmss") or hhmmss(e["start"]),
                     "end": e.get("end_hhmmss") or hhmmss(e["end"]), "seconds": e.get("duration"),
                     "peak at": e.get("peak_hhmmss") or hhmmss(e.get("peak_t", e["start"])),
                     "peak score": _float(e.get("peak_score")), "labels in the event": labels or "",
                     "labelled anomaly": _mark(hit)})
    title = (f"Events, the {len(strongest)} strongest of {len(events)}" if len(events) > len(strongest) else "Events") + \
        " (strongest first)"
    return _section("Anomaly detection", what, _cards(cards) + plots + f"<h3>{title}</h3>" + html_table(rows), "anomaly")


def _share(summary: Mapping[str, Any]) -> float | None:
    """The share of labelled anomalous seconds: the average precision of a random score."""
    n, positives = summary.get("n_seconds"), summary.get("n_anomalous_labelled")  # over the labelled seconds
    return positives / n if n and positives is not None else None


def search_section(directory: Path | None) -> str:
    what = ("Query by example: one clip is the query; every other second of every camera is ranked by the distance "
            "of its embeddings (mean of the visual and the audio distance). Seconds within the exclusion window of the "
            "query, and of a better hit, are skipped. The same moment seen by another camera is a correct hit; "
            "✓ marks hits that share a labelled class with the query.")
    summary = _read_json(directory / "summary.json") if directory else None
    if summary is None:
        return _section("Event search", what, _missing("search", directory), "search")
    results = _read_json(directory / "results.json") or {}
    results = results.get("results", []) if isinstance(results, dict) else results
    query = summary.get("query") or {}
    if query.get("kind") == "video":
        query_card = Card("query: a video file", Path(str(query.get("video"))).name, "", "neutral")
    else:
        label = f"labelled {_classes(query['label'])}" if query.get("label") else "unlabelled"
        query_card = Card(f"query: a second of {query.get('stream_id')}", str(query.get("time")), label, "neutral")
    cards = [query_card,
             Card("mode", str(summary.get("mode", "?")), f"{summary.get('n_indexed')} clips indexed", "neutral")]
    if summary.get("precision_at_k") is not None:
        cards.append(Card(f"precision@{summary.get('k')}", _fmt(summary["precision_at_k"], 2), "hits sharing a class",
                          "neutral"))
    rows = []
    for r in results:
        row: dict[str, Any] = {"rank": r.get("rank"), "stream": r.get("stream_id"), "time": r.get("time") or hhmmss(r["t"]),
                               "distance": _float(r.get("distance"))}
        if "label" in r:
            row["label"] = r.get("label") or "background"
            row["shares a class"] = _mark(r.get("relevant"))
        rows.append(row)
    body = (_cards(cards) + _image(directory / "contact_sheet.png", "contact sheet", "sheet") + html_table(rows))
    return _section("Event search", what, body, "search")


def localize_section(directory: Path | None) -> str:
    what = ("Can the frozen embeddings tell what happens each second? A head (a linear layer on the audio, the visual "
            "or both embeddings) is trained on the labelled reference camera and scored per second on the other "
            "cameras; background is a class of its own. It should beat always answering the most frequent class.")
    summary = _read_json(directory / "summary.json") if directory else None
    if summary is None:
        return _section("Event localization", what, _missing("localization", directory), "localize")
    scores = localize_scores(_read_json(directory / "accuracy.json") or {})
    views = list(summary.get("views") or next((list(s["per_view"]) for by_f in scores.values() for s in by_f.values()), []))
    best = summary.get("best") or _best_of_old(summary)
    rows, classes = [], []
    for head, by_features in scores.items():
        for features, score in by_features.items():
            per_view = score.get("per_view") or {}
            row: dict[str, Any] = {"head": head, "features": features}
            row.update({view: (per_view.get(view) or {}).get("accuracy") for view in views})
            row["train view"] = score.get("train_accuracy")
            rows.append(row)
            is_best = any(best.get(v, {}).get("head") == head and best.get(v, {}).get("features") == features for v in views)
            classes.append("best" if is_best else "")
    baseline = summary.get("majority_baseline") or {}
    rows.append({"head": f"always {summary.get('majority_class', '?')}", "features": "-",
                 **{view: baseline.get(view) for view in views}, "train view": None})
    classes.append("baseline")
    columns = ["head", "features", *views, "train view"]
    table = html_table(rows, columns, ["head", "features", *[f"{v} view" for v in views], "train view (fit)"], classes)
    note = (f'<p class="what">Trained on {", ".join(summary.get("train", []))} ({summary.get("n_train_seconds")} s, '
            f'{len(summary.get("classes", []))} classes with background); bold: the best head per view.</p>')
    body = table + note + _image(directory / "accuracy.png", "accuracy per view and class")
    return _section("Event localization", what, body, "localize")


def raw_section(links: Sequence[tuple[str, int]]) -> str:
    items = "".join(f'<li><a href="{_esc(link)}">{_esc(link.removeprefix(DATA_DIR + "/"))}</a> '
                    f'<span class="badge">{_size(size)}</span></li>' for link, size in links)
    return _section("Raw outputs", "The files behind this page, copied next to it (Parquet, JSON, CSV).",
                    f'<ul class="raw">{items}</ul>', "raw")


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{max(1, round(size / 1e3))} kB"


# -- the page ------------------------------------------------------------------------------


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
        _cards(key_numbers(inputs)),
        stages_section(inputs.stages) if inputs.stages else "",
        pretrain_section(inputs.pretrain_run),
        anomaly_section(inputs.anomaly_dir),
        search_section(inputs.search_dir),
        localize_section(inputs.localize_dir),
        raw_section(links) if links else "",
    ])
    generated = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(inputs.title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{_esc(inputs.title)}</h1><p>{_esc(inputs.subtitle)}</p><p>{_esc(clock)}</p></header>"
        f"<main>{body}</main><footer>Written by pipelines/report on {_esc(generated)}. "
        "The page is self-contained: images are inlined, nothing is loaded from a network.</footer></body></html>"
    )


def write_report(inputs: ReportInputs, out_dir: Path) -> Path:
    """Write ``out_dir/index.html`` (+ the raw files under ``out_dir/data``); returns the page's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    links = copy_raw_files(inputs.raw_files, out_dir)
    path = out_dir / REPORT_FILE
    temp = path.with_name(f".{REPORT_FILE}.tmp")
    temp.write_text(render(inputs, links), encoding="utf-8")
    temp.replace(path)
    return path
