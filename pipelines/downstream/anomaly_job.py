"""Anomaly detection job (DESIGN §5): embeddings → threshold → anomalous seconds → events, tables, timelines.

    run_anomaly(AnomalyJobConfig(embeddings=..., output=..., reference=("train",)))

Output directory:

    config.json             this run's AnomalyJobConfig
    scores.parquet          stream_id, t, score (of ``score``), anomalous
    events.parquet          stream_id, start, end (exclusive), duration, peak_t, peak_score, labels
    events.json             {"threshold", "events": [... + start_hhmmss, end_hhmmss, peak_hhmmss]}
    timeline-<stream>.png   score over time, threshold, events (and labelled anomalies)
    summary.json            threshold, mean, std, k (= sigma), max_gap, counts per stream; with labels:
                            ROC-AUC and AP per second (overall and in
                            metrics_per_stream), event precision/recall

Decisions (where the design is silent):
- ``score``: ``av_dist`` (the paper's; the embeddings' D(v, a) with the model's λ, not
  recomputed); kNN novelty of one feature (``epg.anomaly.knn_novelty``: the mean distance to
  the ``knn_k`` nearest reference seconds, leaving out the query's own stream within
  ±``knn_exclusion`` s, also for the reference seconds that fit the threshold): ``knn_visual``,
  ``knn_audio`` (the learned embeddings, D with the model's λ) or ``knn_spectrum`` (the
  second's log-mel spectrum that scoring stores, each mel band standardised on the reference,
  Euclidean; no model in it); or a fusion, the mean of several novelties' z-scores on the
  reference: ``fusion`` (visual and audio) and ``fusion_visual_spectrum`` (the learned visual
  novelty with the spectrum's, so a second can be novel to the eye or to the ear). The default
  is the quality benchmark's best (bench/RESULTS.md). The threshold is fitted on the reference
  seconds' values of the chosen score.
- With labels, the summary holds a loudness baseline (the mean log-mel of each second, from the
  spectrum that scoring stores), so a detector that only hears loud seconds is not mistaken for a
  learned one. Embeddings scored before the spectrum was stored take it from ``clips`` when given.
- Streams scored (``streams``): all streams of the embeddings when not given, the
  reference included (its events show what the threshold flags on known footage).
- With labels, a second is a true anomaly when one of ``anomaly_classes`` is present
  (default ``DEFAULT_ANOMALY_CLASSES``: the synthetic generator's anomaly classes, which a
  test keeps equal to ``pipelines.synthetic.ANOMALY_CLASSES``). ROC-AUC/AP are computed over
  the scored seconds of streams that the labels table has; per stream as well.
  ``labels`` of an event: the classes present in any of its seconds.
- Event precision: share of detected events that overlap a labelled anomaly second;
  event recall: share of labelled anomalies (runs of anomalous seconds, merged with
  the same ``max_gap``) that a detected event overlaps.
- A rerun into the same directory replaces the files; timelines of streams this run
  did not score are removed, so the directory always describes one run.
"""

from __future__ import annotations

import sys
import math
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from epg.anomaly import Event, Threshold, detect_events, fit_threshold, fuse, knn_novelty, merge_events
from epg.configs import Config
from epg.metrics import average_precision, roc_auc
from pipelines.downstream import DownstreamError
from pipelines.downstream.clock import Clock, check_start_times
from pipelines.downstream.labels import SecondLabels, align_labels, read_labels
from pipelines.downstream.outputs import CONFIG_FILE, OutputDir
from pipelines.downstream.plots import anomaly_timeline_png
from pipelines.score.embeddings import Embeddings, read_embeddings

TIMELINE_PREFIX = "timeline-"
SCORES: tuple[str, ...] = ("av_dist", "knn_visual", "knn_audio", "knn_spectrum", "fusion", "fusion_visual_spectrum")
# The features whose kNN novelty each score uses (v, a: the learned embeddings; s: the stored spectrum);
# a score of several is the mean of their z-scores.
NOVELTY_FEATURES: dict[str, str] = {"knn_visual": "v", "knn_audio": "a", "knn_spectrum": "s", "fusion": "va",
                                    "fusion_visual_spectrum": "vs"}
SPECTRUM_SCALE_FLOOR_DB = 0.1  # the least per-band std the spectrum is standardised with
# Classes that count as anomalies when labels are given (the synthetic footage's: glass, scream, speeding car).
DEFAULT_ANOMALY_CLASSES: tuple[str, ...] = ("glass_break", "scream", "speeding_car")


@dataclass(frozen=True)
class AnomalyJobConfig(Config):
    """One anomaly run; validated on creation (errors name the field)."""

    embeddings: str
    output: str
    reference: tuple[str, ...]
    streams: tuple[str, ...] = ()  # () = every stream of the embeddings
    sigma: float = 2.0  # threshold = mean + sigma * std of the reference scores
    score: str = "fusion_visual_spectrum"  # one of SCORES; picked by bench/quality.py (bench/RESULTS.md)
    knn_k: int = 10
    knn_exclusion: int = 60  # seconds of the query's own stream left out of its neighbours
    clips: str | None = None  # clips root: the loudness baseline of embeddings without a spectrum (with labels)
    max_gap: int = 0
    labels: str | None = None
    anomaly_classes: tuple[str, ...] = DEFAULT_ANOMALY_CLASSES
    start_times: dict[str, str] = field(default_factory=dict)  # stream or "*" → ISO 8601 start
    plots: bool = True
    skip_bad_shards: bool = False  # leave out damaged embeddings files (each named) instead of stopping

    def __post_init__(self) -> None:
        if not self.embeddings:
            raise ValueError("AnomalyJobConfig.embeddings must name the embeddings directory")
        if not self.output:
            raise ValueError("AnomalyJobConfig.output must name an output directory")
        if not self.reference:
            raise ValueError("AnomalyJobConfig.reference must name at least one reference stream")
        if not math.isfinite(self.sigma) or self.sigma < 0:
            raise ValueError(f"AnomalyJobConfig.sigma must be a finite number >= 0, got {self.sigma}")
        if self.score not in SCORES:
            raise ValueError(f"AnomalyJobConfig.score must be one of {SCORES}, got {self.score!r}")
        if self.knn_k < 1 or self.knn_exclusion < 0:
            raise ValueError(f"AnomalyJobConfig.knn_k must be >= 1 and knn_exclusion >= 0, got {self.knn_k}, "
                             f"{self.knn_exclusion}")
        if self.max_gap < 0:
            raise ValueError(f"AnomalyJobConfig.max_gap must be >= 0, got {self.max_gap}")
        if self.labels is not None and not self.anomaly_classes:
            raise ValueError("AnomalyJobConfig.anomaly_classes must name at least one class when labels are given")
        check_start_times("AnomalyJobConfig.start_times", self.start_times)


@dataclass(frozen=True)
class AnomalyResult:
    output: str
    threshold: Threshold
    events: list[Event]
    summary: dict
    files: list[str]


@dataclass(frozen=True)
class FittedScore:
    """``config.score`` fitted on reference embeddings: their scores, the threshold, and the scoring of new seconds
    (the batch job's and the live watcher's, the same way)."""

    config: AnomalyJobConfig
    reference: Embeddings
    lam: float
    reference_scores: np.ndarray
    threshold: Threshold
    # kNN scores, per feature used: (mean, std, max) of the reference seconds' novelty (a fusion's z-scores;
    # the max stands in for a second with no eligible reference neighbour)
    novelty_stats: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    # knn_spectrum and fusion_visual_spectrum: the reference's per-band mean and std of the spectrum
    spectrum_scale: tuple[np.ndarray, np.ndarray] | None = None
    # the reference's features per feature used, computed once (the spectrum standardised), not per scored batch
    reference_features: dict[str, np.ndarray] = field(default_factory=dict)

    def score(self, selected: Embeddings) -> np.ndarray:
        """Scores of ``selected``'s seconds."""
        if self.config.score == "av_dist":
            return selected.av_dist.astype(np.float64)
        novelty = {}
        for feature, (mean, std, most) in self.novelty_stats.items():
            found = _novelty(self.config, self.reference, self.reference_features[feature], selected,
                             _features(selected, feature, self.spectrum_scale), feature, self.lam)
            novelty[feature] = np.nan_to_num(found, nan=most)
        if len(novelty) == 1:
            return novelty[next(iter(novelty))]
        return np.mean([(novelty[m] - mean) / (std if std > 0 else 1.0)
                        for m, (mean, std, _) in self.novelty_stats.items()], axis=0)


def check_features(config: AnomalyJobConfig, emb: Embeddings) -> None:
    """``DownstreamError`` when ``config.score`` needs the spectrum and some of ``emb``'s streams predate it."""
    if "s" not in NOVELTY_FEATURES.get(config.score, ""):
        return
    if emb.spectrum is None:
        lacking = emb.streams
    else:
        lacking = sorted(set(emb.stream_id[np.isnan(emb.spectrum).any(axis=1)].tolist()))
    if lacking:
        raise DownstreamError(f"score {config.score}: stream(s) {lacking} of embeddings {config.embeddings!r} have no "
                              "spectrum (scored before scoring stored it); score their clips again with jobs/embed.py, "
                              "or choose a --score without spectrum")


def _features(rows: Embeddings, feature: str, spectrum_scale: tuple[np.ndarray, np.ndarray] | None) -> np.ndarray:
    if feature != "s":
        return getattr(rows, feature)
    centre, scale = spectrum_scale
    return (rows.spectrum - centre) / scale


def _novelty(config: AnomalyJobConfig, reference: Embeddings, reference_x: np.ndarray, rows: Embeddings,
             rows_x: np.ndarray, feature: str, lam: float) -> np.ndarray:
    """kNN novelty of ``rows`` (their features ``rows_x``) against the reference's (``reference_x``) in one
    feature; the spectrum's distance is Euclidean."""
    return knn_novelty(rows_x, rows.stream_id, rows.t, reference_x, reference.stream_id, reference.t,
                       k=config.knn_k, exclusion=config.knn_exclusion, lam=1.0 if feature == "s" else lam)


def fit_score(config: AnomalyJobConfig, reference: Embeddings, lam: float) -> FittedScore:
    """Score the reference seconds the way every other second is scored and fit μ + σ·std on them."""
    if config.score == "av_dist":
        scores = reference.av_dist.astype(np.float64)
        return FittedScore(config, reference, lam, scores, fit_threshold(scores, config.sigma))
    check_features(config, reference)
    features = NOVELTY_FEATURES[config.score]
    spectrum_scale = None
    if "s" in features:
        # A band that never changes in the reference (silence is one value) must not turn a tiny deviation into a
        # huge score: its scale has a floor.
        spectrum_scale = (reference.spectrum.mean(axis=0), np.maximum(reference.spectrum.std(axis=0), SPECTRUM_SCALE_FLOOR_DB))
    reference_features = {feature: _features(reference, feature, spectrum_scale) for feature in features}
    novelties = []
    for feature in features:
        x = reference_features[feature]
        found = _novelty(config, reference, x, reference, x, feature, lam)
        if not np.isfinite(found).all():
            raise DownstreamError(f"score {config.score}: some reference seconds have no reference neighbour outside "
                                  f"±{config.knn_exclusion} s; give more reference footage or a smaller --knn-exclusion")
        novelties.append(found)
    stats = {m: (float(n.mean()), float(n.std()), float(n.max())) for m, n in zip(features, novelties)}
    scores = fuse(novelties, np.ones(len(reference), bool)) if len(features) > 1 else novelties[0]
    return FittedScore(config, reference, lam, scores, fit_threshold(scores, config.sigma), stats, spectrum_scale,
                       reference_features)


def _loudness(selected: Embeddings, clips: str | None) -> np.ndarray | None:
    """Mean log-mel (dB) of each scored second: the mean of its stored spectrum over the mel bands (the
    spectrum is the log-mel's mean over time); the seconds of streams scored before scoring stored it take
    it from ``clips`` (a missing second reads as silence). None when some second has neither."""
    out = np.full(len(selected), np.nan)
    if selected.spectrum is not None:
        out = selected.spectrum.mean(axis=1, dtype=np.float64)
    lacking = np.isnan(out)
    if not lacking.any():
        return out
    if not clips:
        return None
    from pipelines.ingest.clips_dataset import read_stream

    for sid in np.unique(selected.stream_id[lacking]).tolist():
        table = read_stream(clips, sid, columns=["t", "logmel"])
        level = {int(t): float(np.mean(np.asarray(m, dtype=np.float32)))
                 for t, m in zip(table["t"].to_pylist(), table["logmel"].to_numpy(zero_copy_only=False))}
        rows = np.flatnonzero(lacking & (selected.stream_id == sid))
        out[rows] = [level.get(int(t), -100.0) for t in selected.t[rows]]
    return out


def _check_streams(emb: Embeddings, wanted: tuple[str, ...], what: str, root: str) -> None:
    missing = sorted(set(wanted) - set(emb.streams))
    if missing:
        raise DownstreamError(f"{what} stream(s) {missing} not in embeddings {root!r} (it has {emb.streams})")


def _label_metrics(selected: Embeddings, scores: np.ndarray, truth: np.ndarray, labelled: np.ndarray) -> dict:
    """ROC-AUC and AP over labelled seconds, overall and per stream (None with the reason when undefined)."""

    def both(mask: np.ndarray) -> dict:
        y, s = truth[mask], scores[mask]
        out = {"n_seconds": int(mask.sum()), "n_anomalous_labelled": int(y.sum())}
        if y.all() or not y.any():
            out.update(roc_auc=None, average_precision=None,
                       note="undefined: needs labelled anomalous and normal seconds")
        else:
            out.update(roc_auc=roc_auc(y, s), average_precision=average_precision(y, s))
        return out

    metrics = both(labelled)
    metrics["metrics_per_stream"] = {sid: both(labelled & (selected.stream_id == sid)) for sid in selected.streams
                             if (labelled & (selected.stream_id == sid)).any()}
    return metrics


def _event_metrics(events: list[Event], selected: Embeddings, truth: np.ndarray, labelled: np.ndarray, max_gap: int) -> dict:
    streams = sorted({sid for sid in selected.streams if labelled[selected.stream_id == sid].any()})
    detected = [e for e in events if e.stream_id in streams]
    truth_events: list[Event] = []
    for sid in streams:
        rows = selected.stream_id == sid
        truth_events += merge_events(sid, selected.t[rows], truth[rows].astype(float), truth[rows], max_gap)

    def overlaps(a: Event, b: Event) -> bool:
        return a.stream_id == b.stream_id and a.start < b.end and b.start < a.end

    hit = sum(any(overlaps(d, g) for g in truth_events) for d in detected)
    found = sum(any(overlaps(g, d) for d in detected) for g in truth_events)
    return {
        "n_detected_events": len(detected),
        "n_labelled_events": len(truth_events),
        "event_precision": hit / len(detected) if detected else None,
        "event_recall": found / len(truth_events) if truth_events else None,
    }


def _event_labels(events: list[Event], selected: Embeddings, labels: SecondLabels | None) -> list[str | None]:
    if labels is None:
        return [None] * len(events)
    out = []
    for e in events:
        rows = (selected.stream_id == e.stream_id) & (selected.t >= e.start) & (selected.t < e.end)
        present = labels.present[rows].any(axis=0)
        names = [labels.classes[c] for c in np.flatnonzero(present) if c != 0]
        out.append("+".join(names) if names else "background")
    return out


def run_anomaly(config: AnomalyJobConfig) -> AnomalyResult:
    """Fit the threshold on the reference streams, flag and merge, write tables, plots and summary."""
    emb = read_embeddings(config.embeddings, skip_bad_shards=config.skip_bad_shards)
    for damaged in emb.skipped:
        print(f"anomaly: left out (--skip-bad-shards): {damaged}", file=sys.stderr)
    _check_streams(emb, config.reference, "reference", config.embeddings)
    streams = config.streams or tuple(emb.streams)
    _check_streams(emb, streams, "scored", config.embeddings)
    check_features(config, emb.of_streams(sorted(set(streams) | set(config.reference))))
    labels_table = read_labels(config.labels) if config.labels else None
    if labels_table is not None:
        known = sorted(set(config.anomaly_classes) & set(labels_table.classes))
        if not known:
            raise DownstreamError(
                f"none of the anomaly classes {list(config.anomaly_classes)} occurs in labels {config.labels!r} "
                f"(classes: {list(labels_table.classes)}); pass --anomaly-classes"
            )
    out = OutputDir(config.output)
    out.write_json(CONFIG_FILE, config.to_dict())
    clock = Clock(config.start_times)

    selected = emb.of_streams(streams)
    fitted = fit_score(config, emb.of_streams(config.reference), emb.lam)
    scores, threshold = fitted.score(selected), fitted.threshold
    anomalous, events = detect_events(selected.stream_id, selected.t, scores, threshold, config.max_gap)

    second_labels = align_labels(labels_table, selected.stream_id, selected.t) if labels_table is not None else None
    truth = second_labels.any_of(frozenset(config.anomaly_classes)) if second_labels is not None else None
    event_labels = _event_labels(events, selected, second_labels)

    out.write_parquet("scores.parquet", pa.table({
        "stream_id": pa.array(selected.stream_id.tolist(), pa.string()),
        "t": pa.array(selected.t, pa.int32()),
        "score": pa.array(scores.astype(np.float32)),
        "anomalous": pa.array(anomalous),
    }))
    out.write_parquet("events.parquet", pa.table({
        "stream_id": pa.array([e.stream_id for e in events], pa.string()),
        "start": pa.array([e.start for e in events], pa.int32()),
        "end": pa.array([e.end for e in events], pa.int32()),
        "duration": pa.array([e.duration for e in events], pa.int32()),
        "peak_t": pa.array([e.peak_t for e in events], pa.int32()),
        "peak_score": pa.array([e.peak_score for e in events], pa.float32()),
        "labels": pa.array(event_labels, pa.string()),
    }))
    event_rows = [
        {"stream_id": e.stream_id, "start": e.start, "end": e.end, "duration": e.duration, "peak_t": e.peak_t,
         "peak_score": e.peak_score, "start_hhmmss": clock.format(e.stream_id, e.start),
         "end_hhmmss": clock.format(e.stream_id, e.end), "peak_hhmmss": clock.format(e.stream_id, e.peak_t),
         "labels": label}
        for e, label in zip(events, event_labels)
    ]
    out.write_json("events.json", {"threshold": threshold.value, "events": event_rows})

    per_stream = {}
    for sid in streams:
        rows = selected.stream_id == sid
        per_stream[sid] = {"n_seconds": int(rows.sum()), "n_anomalous_seconds": int(anomalous[rows].sum()),
                           "n_events": sum(e.stream_id == sid for e in events), "reference": sid in config.reference}
    summary = {
        "skipped_files": list(emb.skipped),  # --skip-bad-shards: damaged files left out
        "threshold": threshold.value, "mean": threshold.mean, "std": threshold.std, "k": threshold.k,
        "score": config.score, "max_gap": config.max_gap, "n_reference_seconds": threshold.n_reference, "reference": list(config.reference),
        "streams": list(streams), "n_seconds": len(selected), "n_anomalous_seconds": int(anomalous.sum()),
        "n_events": len(events), "per_stream": per_stream, "model": emb.model, "lam": emb.lam,
    }
    if truth is not None:
        labelled = second_labels.labelled
        summary["labels"] = config.labels
        summary["anomaly_classes"] = sorted(config.anomaly_classes)
        summary.update(_label_metrics(selected, scores, truth, labelled))
        summary.update(_event_metrics(events, selected, truth, labelled, config.max_gap))
        loudness = _loudness(selected, config.clips)
        if loudness is not None:
            baseline = _label_metrics(selected, loudness, truth, labelled)
            summary["loudness_baseline"] = {k: baseline[k] for k in ("roc_auc", "average_precision")}
        else:
            summary["loudness_baseline_missing"] = "streams scored before scoring stored the spectrum; give --clips"

    timelines = set()
    if config.plots:
        for sid in streams:
            rows = selected.stream_id == sid
            name = f"{TIMELINE_PREFIX}{sid}.png"
            note = "  [reference]" if sid in config.reference else ""
            stream_truth = truth[rows] if truth is not None and second_labels.labelled[rows].any() else None
            png = anomaly_timeline_png(sid, selected.t[rows], scores[rows], threshold.value, threshold.k,
                                       [e for e in events if e.stream_id == sid], clock.start(sid), stream_truth, note)
            out.write_bytes(name, png)
            timelines.add(name)
    out.remove_stale(TIMELINE_PREFIX, ".png", timelines)
    summary["timelines"] = sorted(timelines)
    out.write_json("summary.json", summary)
    return AnomalyResult(output=config.output, threshold=threshold, events=events, summary=summary, files=list(out.written))


def format_summary(result: AnomalyResult, clock: Clock, top: int = 10) -> str:
    """A few lines for the terminal: threshold, counts per stream, the strongest events."""
    s = result.summary
    lines = [f"anomaly: threshold {s['threshold']:.4f} = μ {s['mean']:.4f} + {s['k']:g}·σ {s['std']:.4f} "
             f"(reference {', '.join(s['reference'])}, {s['n_reference_seconds']} s)"]
    for sid, info in s["per_stream"].items():
        lines.append(f"  {sid:<20} {info['n_events']:>5} events  {info['n_anomalous_seconds']:>6} / {info['n_seconds']} s anomalous")
    if s.get("roc_auc") is not None:
        lines.append(f"  labels: ROC-AUC {s['roc_auc']:.3f}  AP {s['average_precision']:.3f}  "
                     f"event recall {_fmt(s.get('event_recall'))}  event precision {_fmt(s.get('event_precision'))}")
    strongest = sorted(result.events, key=lambda e: -e.peak_score)[:top]
    if strongest:
        lines.append("  strongest events:")
        for e in strongest:
            lines.append(f"    {e.stream_id:<20} {clock.format(e.stream_id, e.start)} – {clock.format(e.stream_id, e.end)}"
                         f"  peak {e.peak_score:.4f} at {clock.format(e.stream_id, e.peak_t)}")
    lines.append(f"  outputs in {result.output}")
    return "\n".join(lines)


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"
