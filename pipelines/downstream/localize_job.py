"""Event localization job (DESIGN §5): a head on frozen embeddings, trained on labelled streams, scored per second.

    run_localize(LocalizeJobConfig(embeddings=..., labels=..., output=..., train=("train",),
                                   eval={"similar": ("similar",), "challenging": ("challenging",)}))

Output directory:

    config.json       this run's LocalizeJobConfig (with the probe settings)
    accuracy.json     {features: {"train_accuracy", "per_view": {view: ViewScore}}}, features in
                      audio | visual | both; ViewScore: streams, n_seconds, accuracy, exact_accuracy,
                      majority_baseline, per_class {class: accuracy or null}, per_class_n {class: seconds}
    accuracy.csv      features, view, class ("all" = every second), n_seconds, accuracy
    accuracy.png      accuracy per view and feature set (with the majority baseline), per class
    summary.json      head, model, classes (background first), train streams, views, majority class,
                      accuracy[features][view], majority_baseline[view], best_features[view],
                      train_accuracy, fit_seconds, probe settings

Decisions (where the design is silent):
- Targets follow ``pipelines.downstream.labels`` (background is class 0; one target
  per second by the audio-visual / rarest / name rule).
- A prediction is correct when the predicted class is present in that second (any
  of its classes; background when none): a second with a car and a train is not
  missed by saying "train". ``exact_accuracy`` (prediction = target) is reported too;
  both are equal on seconds with one class.
- Per-class accuracy: among the seconds whose target is the class, the share
  predicted correctly; each second counts for one class, so the per-class numbers
  weighted by their counts give the view's accuracy. null for a class without seconds.
- Baseline: always predicting the most frequent training target (usually
  background), scored by the same rule.
- Every train and eval stream must appear in the labels table (a stream without a
  single labelled second is more likely unlabelled than empty); eval streams must
  not be training streams (the numbers are for held-out footage).
- ``features`` may list several feature sets; one head is trained per set.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from epg.metrics import per_class_accuracy
from epg.probe import FEATURE_SETS, ProbeConfig
from pipelines.downstream import DownstreamError
from pipelines.downstream.heads import HEADS, LabelledSeconds
from pipelines.downstream.labels import LabelTable, align_labels, read_labels
from pipelines.downstream.outputs import CONFIG_FILE, OutputDir, config_from_record, config_record
from pipelines.downstream.plots import accuracy_png
from pipelines.embeddings import Embeddings, read_embeddings


@dataclass(frozen=True)
class LocalizeJobConfig:
    """One localization run; validated on creation (errors name the field)."""

    embeddings: str
    labels: str
    output: str
    train: tuple[str, ...]
    eval: dict[str, tuple[str, ...]]  # view name → streams
    features: tuple[str, ...] = FEATURE_SETS
    head: str = "linear"
    probe: ProbeConfig = field(default_factory=ProbeConfig)

    def __post_init__(self) -> None:
        for name in ("embeddings", "labels", "output"):
            if not getattr(self, name):
                raise ValueError(f"LocalizeJobConfig.{name} must be given")
        if not self.train:
            raise ValueError("LocalizeJobConfig.train must name at least one labelled training stream")
        if not self.eval:
            raise ValueError("LocalizeJobConfig.eval must name at least one view (VIEW=STREAM[,STREAM])")
        for view, streams in self.eval.items():
            if not view or not streams:
                raise ValueError(f"LocalizeJobConfig.eval: view {view!r} needs a name and at least one stream")
            overlap = sorted(set(streams) & set(self.train))
            if overlap:
                raise ValueError(f"LocalizeJobConfig.eval: view {view!r} uses training stream(s) {overlap}; evaluate on held-out streams")
        if not self.features or len(set(self.features)) != len(self.features) or set(self.features) - set(FEATURE_SETS):
            raise ValueError(f"LocalizeJobConfig.features must be distinct values of {FEATURE_SETS}, got {self.features}")
        if self.head not in HEADS:
            raise ValueError(f"LocalizeJobConfig.head must be one of {sorted(HEADS)}, got {self.head!r}")
        if not isinstance(self.probe, ProbeConfig):
            raise ValueError(f"LocalizeJobConfig.probe must be a ProbeConfig, got {type(self.probe).__name__}")

    @classmethod
    def from_dict(cls, data: dict) -> LocalizeJobConfig:
        return config_from_record(cls, data)


@dataclass(frozen=True)
class ViewScore:
    """Accuracy of one head on one view."""

    streams: tuple[str, ...]
    n_seconds: int
    accuracy: float
    exact_accuracy: float
    majority_baseline: float
    per_class: dict[str, float | None]
    per_class_n: dict[str, int]


@dataclass(frozen=True)
class LocalizeResult:
    output: str
    classes: tuple[str, ...]
    scores: dict[str, dict[str, ViewScore]]  # features → view → score
    train_accuracy: dict[str, float]
    summary: dict
    files: list[str]


def _labelled_seconds(emb: Embeddings, labels: LabelTable) -> LabelledSeconds:
    aligned = align_labels(labels, emb.stream_id, emb.t)
    return LabelledSeconds(emb.stream_id, emb.t, emb.v, emb.a, aligned.target, aligned.present)


def _check_inputs(config: LocalizeJobConfig, emb: Embeddings, labels: LabelTable) -> None:
    wanted = list(config.train) + [s for streams in config.eval.values() for s in streams]
    missing = sorted(set(wanted) - set(emb.streams))
    if missing:
        raise DownstreamError(f"stream(s) {missing} not in embeddings {config.embeddings!r} (it has {emb.streams})")
    unlabelled = sorted(set(wanted) - labels.streams)
    if unlabelled:
        raise DownstreamError(f"stream(s) {unlabelled} have no rows in labels {config.labels!r} (it labels {sorted(labels.streams)})")


def score_view(data: LabelledSeconds, predictions: np.ndarray, classes: tuple[str, ...], majority: int, streams: tuple[str, ...]) -> ViewScore:
    """Accuracy of predictions on one view (correct = predicted class present in the second)."""
    rows = np.arange(len(predictions))
    correct = data.present[rows, predictions]
    per_class = per_class_accuracy(data.target, correct, len(classes))
    counts = np.bincount(data.target, minlength=len(classes))
    return ViewScore(
        streams=tuple(streams),
        n_seconds=len(rows),
        accuracy=float(correct.mean()),
        exact_accuracy=float((predictions == data.target).mean()),
        majority_baseline=float(data.present[:, majority].mean()),
        per_class={c: (None if np.isnan(a) else float(a)) for c, a in zip(classes, per_class)},
        per_class_n={c: int(n) for c, n in zip(classes, counts)},
    )


def run_localize(config: LocalizeJobConfig) -> LocalizeResult:
    """Train one head per feature set on the training streams; score it on every view; write tables and chart."""
    emb = read_embeddings(config.embeddings)
    labels = read_labels(config.labels)
    _check_inputs(config, emb, labels)
    out = OutputDir(config.output)
    out.write_json(CONFIG_FILE, config_record(config))
    classes = labels.classes

    train = _labelled_seconds(emb.of_streams(config.train), labels)
    views = {view: _labelled_seconds(emb.of_streams(streams), labels) for view, streams in config.eval.items()}
    majority = int(np.bincount(train.target, minlength=len(classes)).argmax())

    scores: dict[str, dict[str, ViewScore]] = {}
    train_accuracy: dict[str, float] = {}
    fit_seconds: dict[str, float] = {}
    for features in config.features:
        head = HEADS[config.head](features, config.probe)
        started = time.perf_counter()
        head.fit(train, len(classes))
        fit_seconds[features] = time.perf_counter() - started
        train_accuracy[features] = score_view(train, head.predict(train), classes, majority, config.train).accuracy
        scores[features] = {view: score_view(data, head.predict(data), classes, majority, config.eval[view]) for view, data in views.items()}

    out.write_json("accuracy.json", {f: {"train_accuracy": train_accuracy[f], "per_view": scores[f]} for f in config.features})
    out.write_csv("accuracy.csv", _accuracy_table(scores, classes))
    view_names = list(config.eval)
    out.write_bytes("accuracy.png", accuracy_png(
        classes, view_names,
        overall={f: {v: scores[f][v].accuracy for v in view_names} for f in config.features},
        baseline={v: scores[config.features[0]][v].majority_baseline for v in view_names},
        per_class={f: {v: {c: (a if a is not None else float("nan")) for c, a in scores[f][v].per_class.items()}
                       for v in view_names} for f in config.features},
        per_class_n={v: scores[config.features[0]][v].per_class_n for v in view_names},
        title=f"Localization, {config.head} head on frozen embeddings ({emb.model}); trained on {', '.join(config.train)} "
              f"({len(train.t)} s)",
    ))
    summary = {
        "head": config.head, "model": emb.model, "classes": list(classes), "train": list(config.train),
        "views": {v: list(streams) for v, streams in config.eval.items()},
        "n_train_seconds": len(train.t), "majority_class": classes[majority],
        "accuracy": {f: {v: scores[f][v].accuracy for v in view_names} for f in config.features},
        "majority_baseline": {v: scores[config.features[0]][v].majority_baseline for v in view_names},
        "best_features": {v: max(config.features, key=lambda f: scores[f][v].accuracy) for v in view_names},
        "train_accuracy": train_accuracy, "fit_seconds": fit_seconds, "probe": config.probe,
    }
    out.write_json("summary.json", summary)
    return LocalizeResult(output=config.output, classes=classes, scores=scores, train_accuracy=train_accuracy,
                          summary=summary, files=list(out.written))


def _accuracy_table(scores: dict[str, dict[str, ViewScore]], classes: tuple[str, ...]) -> pa.Table:
    rows = []
    for features, by_view in scores.items():
        for view, score in by_view.items():
            rows.append((features, view, "all", score.n_seconds, score.accuracy))
            rows += [(features, view, c, score.per_class_n[c], score.per_class[c]) for c in classes]
    columns = list(zip(*rows))
    return pa.table({
        "features": pa.array(columns[0], pa.string()), "view": pa.array(columns[1], pa.string()),
        "class": pa.array(columns[2], pa.string()), "n_seconds": pa.array(columns[3], pa.int64()),
        "accuracy": pa.array(columns[4], pa.float64()),
    })


def format_summary(result: LocalizeResult) -> str:
    views = list(next(iter(result.scores.values())))
    header = f"  {'features':<10}" + "".join(f"{v:>14}" for v in views) + f"{'train':>10}"
    lines = [f"localize: accuracy per second ({result.summary['head']} head, {len(result.classes)} classes incl. background)", header]
    for features, by_view in result.scores.items():
        lines.append(f"  {features:<10}" + "".join(f"{by_view[v].accuracy:>14.3f}" for v in views)
                     + f"{result.train_accuracy[features]:>10.3f}")
    lines.append(f"  {'baseline':<10}" + "".join(f"{result.summary['majority_baseline'][v]:>14.3f}" for v in views)
                 + f"   (always {result.summary['majority_class']})")
    lines.append(f"  outputs in {result.output}")
    return "\n".join(lines)
