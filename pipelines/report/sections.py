"""The report's sections, one function each, from the folders the jobs write (their file names are the contract).

- anomaly (``pipelines/downstream/anomaly_job.py``): summary.json, events.json, timeline-<stream>.png
- search (``search_job.py``): summary.json, results.json, contact_sheet.png
- localize (``localize_job.py``): summary.json (with ``best`` per view), accuracy.json
  ({head: {features: {"train_accuracy", "per_view": {view: score}}}}), accuracy.png
- the pretraining run directory: config.json, metrics/epochs.csv, metrics/steps.csv

A section whose folder or files are missing says so instead of failing the page; the
training curves are drawn in memory.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from epg.learning import INIT_DIAGNOSTICS_FILE
from epg.timecode import hhmmss
from pipelines.report.html import (
    Card,
    Markup,
    card_grid,
    esc,
    fmt,
    html_table,
    image,
    missing,
    png_data_uri,
    section,
    tone,
)

MAX_EVENT_ROWS = 25


def read_json(path: Path | None) -> Any:
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def as_float(text: Any) -> float:
    try:
        return float(text)
    except (TypeError, ValueError):
        return math.nan


def classes_label(label: str) -> str:
    """``bus+car`` as ``bus + car``: a long list of classes can wrap in a narrow card."""
    return label.replace("+", " + ")


def _mark(relevant: Any) -> Markup | str:
    if relevant is True:
        return Markup('<span class="ok">✓</span>')
    if relevant is False:
        return Markup('<span class="miss">✗</span>')
    return ""

def last_epoch(run_dir: Path | None) -> dict[str, float]:
    rows = _read_csv(run_dir / "metrics" / "epochs.csv") if run_dir else []
    return {k: as_float(v) for k, v in rows[-1].items()} if rows else {}


def stages_section(stages: Sequence[tuple[str, float, str]]) -> str:
    longest = max((s for _, s, _ in stages), default=0.0) or 1.0
    rows = []
    for name, seconds, status in stages:
        width = max(0.5, 100.0 * seconds / longest)
        bar = f'<div class="bar {"reused" if status == "reused" else ""}" style="width:{width:.1f}%"></div>'
        badge = f' <span class="badge">{esc(status)}</span>' if status == "reused" else ""
        rows.append(f'<tr><td>{esc(name)}{badge}</td><td class="num">{hhmmss(seconds)}</td>'
                    f'<td class="num">{seconds:.1f} s</td><td class="barcell">{bar}</td></tr>')
    total = sum(s for _, s, _ in stages)
    rows.append(f'<tr><th>total</th><th class="num">{hhmmss(total)}</th><th class="num">{total:.1f} s</th><th></th></tr>')
    table = '<table><tr><th>stage</th><th class="num">time</th><th class="num">seconds</th><th></th></tr>' + "".join(rows) + "</table>"
    return section("Pipeline", "Each stage of this run and how long it took (HH:MM:SS). A stage marked "
                    "<i>reused</i> found its finished output from an earlier run in the same folder.", table, "pipeline")


def training_png(steps: Sequence[Mapping[str, str]], epochs: Sequence[Mapping[str, str]]) -> bytes:
    """Loss, mined positives per anchor and the share of pairs that share a label, per step, epochs marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    rows = steps or epochs
    x = [as_float(r.get("step", r.get("epoch"))) for r in rows]
    fig = Figure(figsize=(14, 3.6))
    axes = fig.subplots(1, 3)
    axes[0].plot(x, [as_float(r.get("loss")) for r in rows], color="#2f6f9f", lw=1.4)
    axes[0].set(title="loss", xlabel="step" if steps else "epoch")
    axes[1].plot(x, [as_float(r.get("extra_positives_per_anchor")) for r in rows], color="#d35400", lw=1.4,
                 label="mined (EPG)")
    axes[1].plot(x, [as_float(r.get("aligned_per_anchor")) for r in rows], color="#7f8c8d", lw=1.0, ls="--",
                 label="aligned (same clip)")
    axes[1].set(title="positives per anchor", xlabel="step" if steps else "epoch")
    for key, label, colour in (("mined_label_precision", "mined pairs", "#c0392b"),
                               ("random_label_share", "random pairs", "#7f8c8d")):
        axes[2].plot(x, [as_float(r.get(key)) for r in rows], color=colour, lw=1.4, label=label)
    axes[2].set(title="pairs sharing a label (diagnostic)", xlabel="step" if steps else "epoch", ylim=(0, 1))
    if steps:  # epoch boundaries
        ends = [as_float(prev.get("step")) for prev, r in itertools.pairwise(steps) if r.get("epoch") != prev.get("epoch")]
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
        return section("Pretraining", what, missing("pretraining", run_dir), "pretrain")
    steps = _read_csv(run_dir / "metrics" / "steps.csv")
    record = read_json(run_dir / "config.json") or {}
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
        Card("epochs x steps", f"{len(epochs)} x {int(as_float(epochs[-1].get('steps')))}", f"batch {optim.get('batch_size')}",
             "neutral"),
    ]
    cards += learning_cards(epochs[-1], read_json(run_dir / "metrics" / INIT_DIAGNOSTICS_FILE) or {})
    wanted = [("epoch", "epoch"), ("loss", "loss"), ("positives_per_anchor", "positives / anchor"),
              ("extra_positives_per_anchor", "mined / anchor"), ("mined_label_precision", "mined sharing a label"),
              ("random_label_share", "random sharing a label"), ("mined_time_gap", "mined time gap (s)"),
              ("random_time_gap", "random time gap (s)"), ("holdout_pair_auc", "held-out pair AUC"),
              ("holdout_recall_at_k", "held-out v→a recall@10"), ("holdout_recall_chance", "recall@10 by chance"),
              ("samples_per_s", "samples / s")]
    present = [(k, h) for k, h in wanted if k in epochs[0]]
    rows = []
    for e in epochs:
        row: dict[str, Any] = {k: as_float(e.get(k)) for k, _ in present}
        row["epoch"] = int(row["epoch"]) + 1
        rows.append({k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()})
    plot = f'<img class="plot" src="{png_data_uri(training_png(steps, epochs))}" alt="training curves">'
    body = (card_grid(cards) + plot + "<h3>Per epoch (means over its steps; mining starts after the warm-up)</h3>"
            + html_table(rows, [k for k, _ in present], [h for _, h in present]))
    return section("Pretraining", what, body, "pretrain")


def learning_cards(epoch: Mapping[str, str], initial: Mapping[str, float] | None = None) -> list[Card]:
    """Did the encoders learn? The last epoch's held-out diagnostics against chance and against the initial
    (random) model when the run measured it; none before the diagnostics existed."""
    auc, recall, chance = (as_float(epoch.get(f"holdout_{k}")) for k in ("pair_auc", "recall_at_k", "recall_chance"))
    if not math.isfinite(auc):
        return []
    initial = initial or {}
    auc0, recall0 = (as_float(initial.get(f"holdout_{k}")) for k in ("pair_auc", "recall_at_k"))
    collapsed = as_float(epoch.get("holdout_collapsed")) == 1.0
    at_init = (lambda x: f"; random init {fmt(x, 2)}" if math.isfinite(x) else "")
    return [Card("held-out pair AUC", fmt(auc, 2), "a clip's picture vs its sound against far pairs; chance 0.50"
                 + at_init(auc0) + ("; embeddings collapsed" if collapsed else ""),
                 "bad" if collapsed else tone(auc, max(0.5, auc0) if math.isfinite(auc0) else 0.5)),
            Card("held-out v→a recall@10", fmt(recall, 2), f"within ±2 s; chance {fmt(chance, 2)}" + at_init(recall0),
                 tone(recall, max(chance, recall0) if math.isfinite(recall0) else chance))]


SCORE_MEANING = {
    "av_dist": "D(v, a): how badly its picture and its sound agree",
    "knn_visual": "how far its picture is from the nearest seconds of the reference camera",
    "knn_audio": "how far its sound is from the nearest seconds of the reference footage",
    "knn_spectrum": "how far its sound's spectrum is from the nearest seconds of the reference footage (no model)",
    "fusion": "how far its picture and its sound are from the nearest reference seconds (z-scores, averaged)",
    "fusion_visual_spectrum": "how far its picture and its sound's spectrum are from the nearest reference seconds "
                              "(z-scores, averaged)",
}


def anomaly_section(directory: Path | None) -> str:
    summary = read_json(directory / "summary.json") if directory else None
    what = (f"The score of a second is {SCORE_MEANING.get((summary or {}).get('score', 'av_dist'), 'its anomaly score')}. "
            "The threshold (mean + k·std) is fitted on the reference camera; contiguous seconds above it form an event. "
            "Purple strips are the labelled anomalies (glass breaking, a scream, a speeding car).")
    if summary is None:
        return section("Anomaly detection", what, missing("anomaly", directory), "anomaly")
    events = read_json(directory / "events.json") or {}
    events = events.get("events", []) if isinstance(events, dict) else events
    anomaly_classes = set(summary.get("anomaly_classes") or [])
    cards = [Card("threshold", fmt(summary.get("threshold")), f"μ {fmt(summary.get('mean'))} + {summary.get('k')}·σ "
                  f"{fmt(summary.get('std'))} on {', '.join(summary.get('reference', []))}", "neutral"),
             Card("events", str(summary.get("n_events", len(events))),
                  f"{summary.get('n_anomalous_seconds')} of {summary.get('n_seconds')} seconds flagged", "neutral")]
    if "roc_auc" in summary:
        cards.append(Card("ROC-AUC", fmt(summary.get("roc_auc"), 2), "per second, chance 0.50",
                          tone(summary.get("roc_auc"), 0.5)))
        cards.append(Card("average precision", fmt(summary.get("average_precision"), 2),
                          f"chance {fmt(_share(summary), 2)}", tone(summary.get("average_precision"), _share(summary))))
    loudness = (summary.get("loudness_baseline") or {}).get("roc_auc")
    if loudness is not None:
        cards.append(Card("loudness baseline ROC-AUC", fmt(loudness, 2), "the mean log-mel of each second as the score",
                          "neutral"))
    if summary.get("event_recall") is not None:
        cards.append(Card("event recall", fmt(summary.get("event_recall"), 2),
                          f"of {summary.get('n_labelled_events')} labelled anomalies, share overlapped by an event", "neutral"))
    if summary.get("event_precision") is not None:
        cards.append(Card("event precision", fmt(summary.get("event_precision"), 2),
                          f"of {summary.get('n_detected_events')} events, share on a labelled anomaly", "neutral"))
    reference = set(summary.get("reference") or [])
    timelines = sorted(directory.glob("timeline-*.png"), key=lambda p: (p.stem.removeprefix("timeline-") in reference, p.stem))
    plots = "".join(
        f"<h3>{esc(p.stem.removeprefix('timeline-'))}{' (reference)' if p.stem.removeprefix('timeline-') in reference else ''}</h3>"
        + image(p, p.stem) for p in timelines
    )
    strongest = sorted(events, key=lambda e: -as_float(e.get("peak_score")))[:MAX_EVENT_ROWS]
    rows = []
    for e in strongest:
        labels = e.get("labels") or ""
        hit = bool(anomaly_classes & set(labels.split("+"))) if labels and anomaly_classes else None
        rows.append({"stream": e.get("stream_id"), "start": e.get("start_hhmmss") or hhmmss(e["start"]),
                     "end": e.get("end_hhmmss") or hhmmss(e["end"]), "seconds": e.get("duration"),
                     "peak at": e.get("peak_hhmmss") or hhmmss(e.get("peak_t", e["start"])),
                     "peak score": as_float(e.get("peak_score")), "labels in the event": labels or "",
                     "labelled anomaly": _mark(hit)})
    title = (f"Events, the {len(strongest)} strongest of {len(events)}" if len(events) > len(strongest) else "Events") + \
        " (strongest first)"
    return section("Anomaly detection", what, card_grid(cards) + plots + f"<h3>{title}</h3>" + html_table(rows), "anomaly")


def _share(summary: Mapping[str, Any]) -> float | None:
    """The share of labelled anomalous seconds: the average precision of a random score."""
    n, positives = summary.get("n_seconds"), summary.get("n_anomalous_labelled")  # over the labelled seconds
    return positives / n if n and positives is not None else None


def search_section(directory: Path | None) -> str:
    what = ("Query by example: one clip is the query; every other second of every camera is ranked by the distance "
            "of its embeddings (mean of the visual and the audio distance). Seconds within the exclusion window of the "
            "query, and of a better hit, are skipped. The same moment seen by another camera is a correct hit; "
            "✓ marks hits that share a labelled class with the query.")
    summary = read_json(directory / "summary.json") if directory else None
    if summary is None:
        return section("Event search", what, missing("search", directory), "search")
    results = read_json(directory / "results.json") or {}
    results = results.get("results", []) if isinstance(results, dict) else results
    query = summary.get("query") or {}
    if query.get("kind") == "video":
        query_card = Card("query: a video file", Path(str(query.get("video"))).name, "", "neutral")
    else:
        label = f"labelled {classes_label(query['label'])}" if query.get("label") else "unlabelled"
        query_card = Card(f"query: a second of {query.get('stream_id')}", str(query.get("time")), label, "neutral")
    cards = [query_card,
             Card("mode", str(summary.get("mode", "?")), f"{summary.get('n_indexed')} clips indexed", "neutral")]
    if summary.get("precision_at_k") is not None:
        cards.append(Card(f"precision@{summary.get('k')}", fmt(summary["precision_at_k"], 2), "hits sharing a class",
                          "neutral"))
    rows = []
    for r in results:
        row: dict[str, Any] = {"rank": r.get("rank"), "stream": r.get("stream_id"), "time": r.get("time") or hhmmss(r["t"]),
                               "distance": as_float(r.get("distance"))}
        if "label" in r:
            row["label"] = r.get("label") or "background"
            row["shares a class"] = _mark(r.get("relevant"))
        rows.append(row)
    body = (card_grid(cards) + image(directory / "contact_sheet.png", "contact sheet", "sheet") + html_table(rows))
    return section("Event search", what, body, "search")


def localize_section(directory: Path | None) -> str:
    what = ("Can the frozen embeddings tell what happens each second? A head (a linear layer on the audio, the visual "
            "or both embeddings) is trained on the labelled reference camera and scored per second on the other "
            "cameras; background is a class of its own. It should beat always answering the most frequent class.")
    summary = read_json(directory / "summary.json") if directory else None
    if summary is None:
        return section("Event localization", what, missing("localization", directory), "localize")
    scores = read_json(directory / "accuracy.json") or {}
    views = list(summary.get("views") or next((list(s["per_view"]) for by_f in scores.values() for s in by_f.values()), []))
    best = summary.get("best") or {}
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
    body = table + note + image(directory / "accuracy.png", "accuracy per view and class")
    return section("Event localization", what, body, "localize")
