"""Pictures of the downstream results (matplotlib, Agg; PNG bytes or self-contained HTML).

- ``anomaly_timeline_png``: a stream's anomaly score over time, the threshold,
  detected events as shaded spans with their peaks (the strongest ones labelled
  with their time) and, when labels exist, a strip of the labelled anomalies.
- ``contact_sheet_png`` / ``contact_sheet_html``: the query and its hits as cards
  (first frame, log-mel spectrogram, stream, time, distance, label); the HTML
  inlines every image (base64), so it is one file to mail or embed.
- ``accuracy_png``: probe accuracy per view and feature set (with the
  always-the-majority-class baseline), then per class for every view.

Time axes read HH:MM:SS (wall-clock when the stream's start is known), with ticks
at round clock times. Figures are built with ``matplotlib.figure.Figure`` (no
pyplot), so nothing global changes and any number of threads may plot.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FixedLocator, FuncFormatter
from PIL import Image

from epg.anomaly import Event
from epg.timecode import hhmmss, seconds_of_day
from pipelines.downstream.previews import ClipPreview
from pipelines.report.html import data_uri, document, esc, html_table

TICK_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
FEATURE_COLOURS = {"audio": "#e67e22", "visual": "#2e86c1", "both": "#27ae60"}
SCORE_COLOUR, THRESHOLD_COLOUR, EVENT_COLOUR, TRUTH_COLOUR, QUERY_COLOUR = "#1f3b5a", "#c0392b", "#f39c12", "#8e44ad", "#2e86c1"
SPECTROGRAM_RANGE_DB = 80.0
CARDS_PER_ROW = 6
LABELLED_PEAKS = 5
MARKED_PEAKS = 30
MAX_TIMELINE_POINTS = 2000  # longer streams are drawn per bin


def _png(fig: Figure, dpi: int = 100) -> bytes:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white")
    return buffer.getvalue()


def time_ticks(t0: float, t1: float, start: datetime | None = None, max_ticks: int = 10) -> np.ndarray:
    """Tick positions (stream seconds) at round clock times between t0 and t1."""
    span = max(t1 - t0, 1.0)
    step = next((s for s in TICK_STEPS if span / s <= max_ticks), 86400 * math.ceil(span / (86400 * max_ticks)))
    offset = seconds_of_day(start)
    first = math.ceil((t0 + offset) / step) * step - offset
    return np.arange(first, t1 + 1e-9, step)


def format_time_axis(ax, t0: float, t1: float, start: datetime | None) -> None:
    ax.set_xlim(t0, t1)
    ax.xaxis.set_major_locator(FixedLocator(time_ticks(t0, t1, start)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: hhmmss(x, start)))
    ax.set_xlabel(f"wall-clock time (stream started {start.isoformat()})" if start else "time from stream start (HH:MM:SS)")


def _runs(t: np.ndarray, mask: np.ndarray) -> list[tuple[int, int]]:
    """Runs of consecutive seconds where mask holds, as (start, end) with end exclusive."""
    hits = np.sort(np.asarray(t)[np.asarray(mask, dtype=bool)])
    if hits.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(hits) > 1) + 1
    return [(int(hits[lo]), int(hits[hi - 1]) + 1) for lo, hi in zip(np.r_[0, breaks], np.r_[breaks, hits.size])]


def _score_series(t: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """(x, mean, low, high, bin seconds) for a step plot: every second of a short stream, or per-bin mean and
    range of a long one (a day of seconds is 60 points per pixel). Missing seconds (bins) become NaN breaks."""
    t0, t1 = int(t[0]), int(t[-1]) + 1
    width = max(1, math.ceil((t1 - t0) / MAX_TIMELINE_POINTS))
    bins = (t - t0) // width
    starts = np.r_[0, np.flatnonzero(np.diff(bins)) + 1]
    counts = np.diff(np.r_[starts, len(t)])
    mean = np.add.reduceat(scores, starts) / counts
    low, high = np.minimum.reduceat(scores, starts), np.maximum.reduceat(scores, starts)
    x = (t0 + bins[starts] * width).astype(np.float64)
    gaps = np.flatnonzero(np.diff(bins[starts]) > 1)
    x = np.insert(x, gaps + 1, x[gaps] + width)
    mean, low, high = (np.insert(v, gaps + 1, np.nan) for v in (mean, low, high))
    # The last bin spans [x, x + width).
    return np.r_[x, x[-1] + width], np.r_[mean, mean[-1]], np.r_[low, low[-1]], np.r_[high, high[-1]], width


def anomaly_timeline_png(
    stream_id: str,
    t: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    k: float,
    events: Sequence[Event],
    start: datetime | None = None,
    truth: np.ndarray | None = None,
    note: str = "",
) -> bytes:
    """One stream's score timeline with threshold, events and (optional) labelled anomalies.

    Long streams are drawn per bin (mean line, min-max band). Events are shaded in the
    plot and repeated in a strip below it (above the labelled anomalies, when given), where
    spans narrower than two pixels are widened so a 1-s event on a day-long axis stays
    visible; only the strongest events get a peak marker, the top few their time.
    """
    order = np.argsort(t)
    t, scores = np.asarray(t)[order], np.asarray(scores, dtype=np.float64)[order]
    x, mean, low, high, width = _score_series(t, scores)
    t0, t1 = float(t[0]), float(t[-1] + 1)
    min_span = (t1 - t0) / 700.0

    strips = ["events"] + (["labels"] if truth is not None else [])
    fig = Figure(figsize=(14, 4.4 + 0.4 * len(strips)))
    grid = fig.add_gridspec(1 + len(strips), 1, height_ratios=[7] + [0.7] * len(strips), hspace=0.06)
    ax = fig.add_subplot(grid[0])
    lanes = {name: fig.add_subplot(grid[1 + i], sharex=ax) for i, name in enumerate(strips)}
    for event in events:
        ax.axvspan(event.start, event.end, color=EVENT_COLOUR, alpha=0.35, lw=0)
        lanes["events"].axvspan(event.start, max(event.end, event.start + min_span), color=EVENT_COLOUR, lw=0)
    if width > 1:
        ax.fill_between(x, low, high, step="post", color=SCORE_COLOUR, alpha=0.25, lw=0)
    ax.step(x, mean, where="post", color=SCORE_COLOUR, lw=0.7)
    ax.axhline(threshold, color=THRESHOLD_COLOUR, ls="--", lw=1.3)
    strongest = sorted(events, key=lambda e: -e.peak_score)
    if strongest:
        marked = strongest[:MARKED_PEAKS]
        ax.scatter([e.peak_t + 0.5 for e in marked], [e.peak_score for e in marked], color=THRESHOLD_COLOUR, s=16, zorder=3)
        for e in strongest[:LABELLED_PEAKS]:
            ax.annotate(hhmmss(e.peak_t, start), (e.peak_t + 0.5, e.peak_score), xytext=(0, 6), textcoords="offset points",
                        ha="center", fontsize=8, color=THRESHOLD_COLOUR)
    top, bottom = max(float(scores.max()), threshold), min(float(scores.min()), threshold)
    pad = 0.12 * max(top - bottom, 1e-6)
    ax.set_ylim(bottom - pad, top + 2.5 * pad)
    ax.set_ylabel("anomaly score D(v, a)")
    ax.grid(axis="y", alpha=0.3)
    n_anomalous = int((scores > threshold).sum())
    score_label = "score" if width == 1 else f"score (mean and range per {width} s)"
    handles = [
        Line2D([], [], color=SCORE_COLOUR, lw=1, label=score_label),
        Line2D([], [], color=THRESHOLD_COLOUR, ls="--", lw=1.3, label=f"threshold μ + {k:g}σ = {threshold:.3f}"),
        Patch(color=EVENT_COLOUR, alpha=0.35, label=f"events ({len(events)})"),
    ]
    if len(strongest) > MARKED_PEAKS:
        handles.append(Line2D([], [], color=THRESHOLD_COLOUR, marker="o", ls="", markersize=4, label=f"{MARKED_PEAKS} highest peaks"))
    if truth is not None:
        handles.append(Patch(color=TRUTH_COLOUR, alpha=0.8, label="labelled anomalies"))
    ax.legend(handles=handles, loc="upper right", fontsize=8, framealpha=0.9, ncol=len(handles))
    share = 100.0 * n_anomalous / max(len(t), 1)
    ax.set_title(f"{stream_id}: {len(events)} event(s), {n_anomalous} anomalous second(s) of {len(t)} ({share:.1f} %){note}",
                 loc="left", fontsize=11)
    if truth is not None:
        truth = np.asarray(truth, dtype=bool)[order]
        for lo, hi in _runs(t, truth):
            lanes["labels"].axvspan(lo, max(hi, lo + min_span), color=TRUTH_COLOUR, alpha=0.8, lw=0)
    for name, lane in lanes.items():
        lane.set_yticks([])
        lane.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    for axis in [ax, *lanes.values()][:-1]:
        axis.tick_params(labelbottom=False)
    format_time_axis(lanes[strips[-1]], t0, t1, start)
    fig.subplots_adjust(left=0.06, right=0.96, top=0.9, bottom=0.14)
    return _png(fig)


# -- contact sheet ----------------------------------------------------------------------------


@dataclass(frozen=True)
class SheetCard:
    """One clip on a contact sheet: a heading ("query", "#1"), caption lines and its preview when known."""

    heading: str
    lines: tuple[str, ...]
    preview: ClipPreview | None = None
    is_query: bool = False
    missing: str = "no frame\n(run with --clips)"  # shown instead of the frame when there is no preview


def logmel_range(previews: Sequence[ClipPreview | None]) -> tuple[float, float]:
    """One colour scale for all spectrograms of a sheet (the top SPECTROGRAM_RANGE_DB dB), so they compare."""
    values = [p.logmel for p in previews if p is not None and p.logmel.size]
    if not values:
        return -SPECTROGRAM_RANGE_DB, 0.0
    top = float(max(np.nanmax(v) for v in values))
    return top - SPECTROGRAM_RANGE_DB, top


def spectrogram_rgb(logmel: np.ndarray, vmin: float, vmax: float) -> np.ndarray:
    """A log-mel [n_mels, T] as an RGB image (uint8 [n_mels, T, 3]), low frequencies at the bottom."""
    scaled = np.clip((np.asarray(logmel, dtype=np.float32) - vmin) / max(vmax - vmin, 1e-6), 0.0, 1.0)
    rgb = matplotlib.colormaps["magma"](scaled[::-1])[..., :3]
    return (rgb * 255).astype(np.uint8)


def _frame_array(jpeg: bytes) -> np.ndarray | None:
    try:
        return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    except Exception:  # noqa: BLE001 - a broken thumbnail must not stop the report
        return None


def _blank(ax, text: str) -> None:
    ax.set_facecolor("#eeeeee")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, color="#777777", transform=ax.transAxes)


def contact_sheet_png(cards: Sequence[SheetCard], title: str, subtitle: str = "") -> bytes:
    """The query and its hits as a grid of cards: frame, spectrogram, caption."""
    n = len(cards)
    cols = min(n, CARDS_PER_ROW)
    rows = math.ceil(n / cols)
    vmin, vmax = logmel_range([c.preview for c in cards])
    fig = Figure(figsize=(2.5 * cols + 0.3, 4.7 * rows + 0.9))
    grid = fig.add_gridspec(rows * 3, cols, height_ratios=[2.4, 1.0, 1.0] * rows, hspace=0.12, wspace=0.08)
    for i, card in enumerate(cards):
        r, c = divmod(i, cols)
        thumb, spec, text = (fig.add_subplot(grid[3 * r + j, c]) for j in range(3))
        for ax in (thumb, spec, text):
            ax.set_xticks([])
            ax.set_yticks([])
        frame = _frame_array(card.preview.frame) if card.preview is not None else None
        if frame is not None:
            thumb.imshow(frame)
            if not card.preview.has_video:
                _blank_note(thumb, "no video at t")
        else:
            _blank(thumb, card.missing if card.preview is None else "unreadable frame")
        if card.preview is not None:
            spec.imshow(card.preview.logmel, origin="lower", aspect="auto", cmap="magma", vmin=vmin, vmax=vmax)
            if not card.preview.has_audio:
                _blank_note(spec, "no audio at t")
        else:
            _blank(spec, "no spectrogram")
        colour = QUERY_COLOUR if card.is_query else "#333333"
        for ax in (thumb, spec):
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(3 if card.is_query else 0.8)
        text.axis("off")
        text.text(0.0, 1.0, card.heading, fontsize=11, fontweight="bold", color=colour, va="top", transform=text.transAxes)
        text.text(0.0, 0.72, "\n".join(card.lines), fontsize=8, va="top", family="monospace", transform=text.transAxes)
    fig.suptitle(title + (f"\n{subtitle}" if subtitle else ""), fontsize=12, x=0.01, ha="left")
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.9 / (4.7 * rows + 0.9), bottom=0.01)
    return _png(fig)


def _blank_note(ax, text: str) -> None:
    ax.text(0.5, 0.05, text, ha="center", va="bottom", fontsize=8, color="white", transform=ax.transAxes,
            bbox={"facecolor": "black", "alpha": 0.6, "lw": 0})


def _png_of_array(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


CONTACT_SHEET_STYLE = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; margin-bottom: 4px; } p.sub { color: #555; margin-top: 0; }
.grid { display: flex; flex-wrap: wrap; gap: 14px; }
.card { width: 200px; border: 1px solid #ccc; border-radius: 6px; padding: 8px; margin: 0; }
.card.query { border: 3px solid #2e86c1; }
.card img { width: 200px; display: block; }
.card img.spec { height: 80px; margin-top: 4px; }
.card .none { width: 200px; height: 200px; background: #eee; color: #777; display: flex;
              align-items: center; justify-content: center; font-size: 13px; }
figcaption { font-size: 12px; margin-top: 6px; line-height: 1.35; } figcaption b { font-size: 14px; }
table { border-collapse: collapse; margin-top: 24px; font-size: 13px; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; } th { background: #f4f4f4; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
"""


def contact_sheet_html(cards: Sequence[SheetCard], title: str, subtitle: str = "", rows: Sequence[Mapping] = ()) -> str:
    """A self-contained page (``pipelines.report.html``): the cards with inlined images, then the results table."""
    vmin, vmax = logmel_range([c.preview for c in cards])
    parts = [f"<h1>{esc(title)}</h1><p class='sub'>{esc(subtitle)}</p>", "<div class='grid'>"]
    for card in cards:
        parts.append(f"<figure class='card{' query' if card.is_query else ''}'>")
        if card.preview is not None and card.preview.frame:
            parts.append(f"<img class='thumb' alt='frame' src='{data_uri('image/jpeg', card.preview.frame)}'>")
        else:
            note = card.missing if card.preview is None else "unreadable frame"
            parts.append(f"<div class='none'>{esc(note).replace(chr(10), '<br>')}</div>")
        if card.preview is not None:
            spec = _png_of_array(spectrogram_rgb(card.preview.logmel, vmin, vmax))
            parts.append(f"<img class='spec' alt='log-mel spectrogram' src='{data_uri('image/png', spec)}'>")
        lines = "<br>".join(esc(line) for line in card.lines)
        parts.append(f"<figcaption><b>{esc(card.heading)}</b><br>{lines}</figcaption></figure>")
    parts.append("</div>")
    if rows:
        parts.append(html_table(rows, digits=4))
    return document(title, CONTACT_SHEET_STYLE, "\n".join(parts)) + "\n"


# -- probe accuracy ---------------------------------------------------------------------------


def _bars(ax, groups: Sequence[str], series: Mapping[str, Sequence[float]], annotate: bool) -> np.ndarray:
    """Grouped bars (one colour per series); NaN bars are marked n/a. Returns the group centres."""
    centres = np.arange(len(groups), dtype=np.float64)
    width = 0.8 / max(len(series), 1)
    for j, (name, values) in enumerate(series.items()):
        xs = centres - 0.4 + width * (j + 0.5)
        values = np.asarray(values, dtype=np.float64)
        ax.bar(xs, np.nan_to_num(values), width=width * 0.92, color=FEATURE_COLOURS.get(name, f"C{j}"), label=name)
        for x, value in zip(xs, values):
            if not np.isfinite(value):
                ax.text(x, 0.02, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="#777777")
            elif annotate or value < 0.1:  # a bar too short to see still says what it is
                ax.text(x, value + 0.01, f"{value:.2f}", ha="center", va="bottom", fontsize=8 if annotate else 7)
    ax.set_xticks(centres)
    ax.set_xticklabels(groups)
    ax.set_ylim(0, 1.08)
    ax.grid(axis="y", alpha=0.3)
    return centres


def accuracy_png(
    classes: Sequence[str],
    views: Sequence[str],
    overall: Mapping[str, Mapping[str, float]],
    baseline: Mapping[str, float],
    per_class: Mapping[str, Mapping[str, Mapping[str, float]]],
    per_class_n: Mapping[str, Mapping[str, int]],
    title: str,
) -> bytes:
    """overall[features][view], baseline[view], per_class[features][view][class], per_class_n[view][class]."""
    feature_sets = list(overall)
    fig = Figure(figsize=(max(10.0, 1.0 * len(classes) + 2), 3.4 * (1 + len(views))))
    top = fig.add_subplot(1 + len(views), 1, 1)
    centres = _bars(top, list(views), {f: [overall[f][v] for v in views] for f in feature_sets}, annotate=True)
    for x, view in zip(centres, views):
        top.plot([x - 0.42, x + 0.42], [baseline[view]] * 2, color="black", ls="--", lw=1.2)
    top.set_ylim(0, 1.45)  # room for the legend above the bars
    top.set_yticks(np.linspace(0, 1, 6))
    top.set_ylabel("accuracy per second")
    top.set_title("accuracy per view", loc="left", fontsize=10)
    handles, _ = top.get_legend_handles_labels()
    handles.append(Line2D([], [], color="black", ls="--", lw=1.2, label="always the most frequent training class"))
    top.legend(handles=handles, title="features", fontsize=8, loc="upper center", ncol=len(handles))
    for i, view in enumerate(views):
        ax = fig.add_subplot(1 + len(views), 1, 2 + i)
        labels = [f"{c}\n(n={per_class_n[view].get(c, 0)})" for c in classes]
        series = {f: [per_class[f][view].get(c, float("nan")) for c in classes] for f in feature_sets}
        _bars(ax, labels, series, annotate=False)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylabel("accuracy")
        ax.set_title(f"view {view!r}: accuracy per class (seconds whose target is the class)", loc="left", fontsize=10)
    fig.suptitle(title, fontsize=12, x=0.01, ha="left")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _png(fig)
