"""Event localization job (DESIGN §5): heads on frozen embeddings, trained on labelled streams, scored per second.

    run_localize(LocalizeJobConfig(embeddings=..., labels=..., output=..., train=("train",),
                                   eval={"similar": ("similar",), "challenging": ("challenging",)},
                                   heads=("linear", "cpsp")))

Heads (``pipelines.downstream.heads``): ``linear`` (one probe per feature set) and
``cpsp`` (the CPSP sequence head, both modalities: it runs for the feature set
``both`` only). A run of the job trains every (head, feature set) pair the head can
use, on the same training seconds and targets, and scores them with the same code,
so their rows compare directly.

Output directory:

    config.json       this run's LocalizeJobConfig (heads, features, probe and cpsp settings)
    accuracy.json     {head: {features: {"train_accuracy", "per_view": {view: ViewScore}}}}; ViewScore:
                      streams, n_seconds, accuracy, exact_accuracy, majority_baseline,
                      per_class {class: accuracy or null}, per_class_n {class: seconds}
    accuracy.csv      head, features, view, class ("all" = every second), n_seconds, accuracy
    accuracy.png      accuracy per view and (head, features) with the majority baseline, per class
    summary.json      heads, model, classes (background first), train streams, views, majority class,
                      accuracy[head][features][view], majority_baseline[view], best[view] (head, features,
                      accuracy), train_accuracy[head][features], fit_seconds[head][features], probe settings
                      (linear), cpsp settings + model selection (train/val windows, val_from second per
                      stream, best_epoch, val_accuracy per epoch, the full CPSPConfig)

Decisions (where the design is silent):
- Targets follow ``pipelines.downstream.labels`` (background is class 0; one target
  per second by the audio-visual / rarest / name rule), for every head.
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
  not be training streams (the numbers are for held-out footage). A head that
  selects a model (cpsp) does so on a time split of the training streams only.
- ``features`` may list several feature sets; one linear head is trained per set.
  A head none of whose feature sets is listed is an error (``--head cpsp
  --features audio``), not a silent skip.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from epg.configs import Config
from epg.metrics import per_class_accuracy
from epg.probe import FEATURE_SETS, ProbeConfig
from pipelines.downstream import DownstreamError
from pipelines.downstream.heads import HEADS, CPSPHeadConfig, LabelledSeconds
from pipelines.downstream.labels import LabelTable, align_labels, read_labels
from pipelines.downstream.outputs import CONFIG_FILE, OutputDir
from pipelines.downstream.plots import accuracy_png
from pipelines.score.embeddings import Embeddings, read_embeddings


@dataclass(frozen=True)
class LocalizeJobConfig(Config):
    """One localization run; validated on creation (errors name the field)."""

    embeddings: str
    labels: str
    output: str
    train: tuple[str, ...]
    eval: dict[str, tuple[str, ...]]  # view name → streams
    features: tuple[str, ...] = FEATURE_SETS
    heads: tuple[str, ...] = ("linear",)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    cpsp: CPSPHeadConfig = field(default_factory=CPSPHeadConfig)
    skip_bad_shards: bool = False  # leave out damaged embeddings files (each named) instead of stopping

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
        if not self.heads or len(set(self.heads)) != len(self.heads) or set(self.heads) - set(HEADS):
            raise ValueError(f"LocalizeJobConfig.heads must be distinct values of {tuple(HEADS)}, got {self.heads}")
        for head in self.heads:
            if not set(HEADS[head].features) & set(self.features):
                raise ValueError(f"LocalizeJobConfig.features {self.features} has no feature set the {head} head can use "
                                 f"(it reads {' or '.join(HEADS[head].features)}); add one")
        if not isinstance(self.probe, ProbeConfig):
            raise ValueError(f"LocalizeJobConfig.probe must be a ProbeConfig, got {type(self.probe).__name__}")
        if not isinstance(self.cpsp, CPSPHeadConfig):
            raise ValueError(f"LocalizeJobConfig.cpsp must be a CPSPHeadConfig, got {type(self.cpsp).__name__}")

    def runs(self) -> list[tuple[str, str]]:
        """The (head, feature set) pairs this run trains and scores, in order."""
        return [(h, f) for h in self.heads for f in self.features if f in HEADS[h].features]


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
    scores: dict[str, dict[str, dict[str, ViewScore]]]  # head → features → view → score
    train_accuracy: dict[str, dict[str, float]]  # head → features → accuracy on the training seconds
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


def localize(config: LocalizeJobConfig, emb: Embeddings, labels: LabelTable) -> LocalizeResult:
    """Train every (head, features) pair of ``config`` on the training streams and score it on every view,
    in memory (no files; ``config.output`` is only named in the result). ``run_localize`` reads and writes."""
    _check_inputs(config, emb, labels)
    classes = labels.classes
    train = _labelled_seconds(emb.of_streams(config.train), labels)
    views = {view: _labelled_seconds(emb.of_streams(streams), labels) for view, streams in config.eval.items()}
    majority = int(np.bincount(train.target, minlength=len(classes)).argmax())

    scores: dict[str, dict[str, dict[str, ViewScore]]] = {h: {} for h in config.heads}
    train_accuracy: dict[str, dict[str, float]] = {h: {} for h in config.heads}
    fit_seconds: dict[str, dict[str, float]] = {h: {} for h in config.heads}
    records: dict[str, dict] = {}
    for head_name, features in config.runs():
        head = HEADS[head_name].build(features, config.probe, config.cpsp)
        started = time.perf_counter()
        head.fit(train, classes)
        fit_seconds[head_name][features] = time.perf_counter() - started
        train_accuracy[head_name][features] = score_view(train, head.predict(train), classes, majority, config.train).accuracy
        scores[head_name][features] = {view: score_view(data, head.predict(data), classes, majority, config.eval[view])
                                       for view, data in views.items()}
        if head.record():
            records[head_name] = head.record()

    view_names = list(config.eval)
    first = next(iter(scores[config.heads[0]].values()))
    pairs = config.runs()
    best = {}
    for v in view_names:
        h, f = max(pairs, key=lambda pair: scores[pair[0]][pair[1]][v].accuracy)
        best[v] = {"head": h, "features": f, "accuracy": scores[h][f][v].accuracy}
    summary = {
        "skipped_files": list(emb.skipped),  # --skip-bad-shards: damaged files left out
        "heads": list(config.heads), "model": emb.model, "classes": list(classes), "train": list(config.train),
        "views": {v: list(streams) for v, streams in config.eval.items()},
        "n_train_seconds": len(train.t), "majority_class": classes[majority],
        "accuracy": {h: {f: {v: s[v].accuracy for v in view_names} for f, s in by_f.items()} for h, by_f in scores.items()},
        "majority_baseline": {v: first[v].majority_baseline for v in view_names},
        "best": best, "train_accuracy": train_accuracy, "fit_seconds": fit_seconds,
    }
    if "linear" in config.heads:
        summary["probe"] = config.probe
    if "cpsp" in config.heads:
        summary["cpsp"] = {"settings": config.cpsp, **records.get("cpsp", {})}
    return LocalizeResult(output=config.output, classes=classes, scores=scores, train_accuracy=train_accuracy,
                          summary=summary, files=[])


def run_localize(config: LocalizeJobConfig) -> LocalizeResult:
    """Read the embeddings and labels, run ``localize``, write tables, chart and summary."""
    emb = read_embeddings(config.embeddings, skip_bad_shards=config.skip_bad_shards)
    for damaged in emb.skipped:
        print(f"localize: left out (--skip-bad-shards): {damaged}", file=sys.stderr)
    labels = read_labels(config.labels)
    _check_inputs(config, emb, labels)
    out = OutputDir(config.output)
    out.write_json(CONFIG_FILE, config.to_dict())
    result = localize(config, emb, labels)
    scores, classes, summary = result.scores, result.classes, result.summary

    out.write_json("accuracy.json", {h: {f: {"train_accuracy": result.train_accuracy[h][f], "per_view": by_view}
                                         for f, by_view in by_f.items()} for h, by_f in scores.items()})
    out.write_csv("accuracy.csv", _accuracy_table(scores, classes))
    view_names = list(config.eval)
    series = {series_name(h, f): scores[h][f] for h, f in config.runs()}
    first = next(iter(series.values()))
    out.write_bytes("accuracy.png", accuracy_png(
        classes, view_names,
        overall={name: {v: s[v].accuracy for v in view_names} for name, s in series.items()},
        baseline={v: first[v].majority_baseline for v in view_names},
        per_class={name: {v: {c: (a if a is not None else float("nan")) for c, a in s[v].per_class.items()}
                          for v in view_names} for name, s in series.items()},
        per_class_n={v: first[v].per_class_n for v in view_names},
        title=f"Localization, {' and '.join(config.heads)} head(s) on frozen embeddings ({emb.model}); trained on "
              f"{', '.join(config.train)} ({summary['n_train_seconds']} s)",
    ))
    out.write_json("summary.json", summary)
    return LocalizeResult(output=config.output, classes=classes, scores=scores, train_accuracy=result.train_accuracy,
                          summary=summary, files=list(out.written))


def series_name(head: str, features: str) -> str:
    """How a (head, features) pair is named in the chart and the printed table."""
    return f"{head}: {features}"


def _accuracy_table(scores: dict[str, dict[str, dict[str, ViewScore]]], classes: tuple[str, ...]) -> pa.Table:
    rows = []
    for head, by_features in scores.items():
        for features, by_view in by_features.items():
            for view, score in by_view.items():
                rows.append((head, features, view, "all", score.n_seconds, score.accuracy))
                rows += [(head, features, view, c, score.per_class_n[c], score.per_class[c]) for c in classes]
    columns = list(zip(*rows))
    return pa.table({
        "head": pa.array(columns[0], pa.string()), "features": pa.array(columns[1], pa.string()),
        "view": pa.array(columns[2], pa.string()), "class": pa.array(columns[3], pa.string()),
        "n_seconds": pa.array(columns[4], pa.int64()), "accuracy": pa.array(columns[5], pa.float64()),
    })


def format_summary(result: LocalizeResult) -> str:
    pairs = [(h, f) for h, by_f in result.scores.items() for f in by_f]
    views = list(result.scores[pairs[0][0]][pairs[0][1]])
    header = f"  {'head':<8}{'features':<10}" + "".join(f"{v:>14}" for v in views) + f"{'train':>10}"
    lines = [f"localize: accuracy per second ({len(result.classes)} classes incl. background)", header]
    for head, features in pairs:
        by_view = result.scores[head][features]
        lines.append(f"  {head:<8}{features:<10}" + "".join(f"{by_view[v].accuracy:>14.3f}" for v in views)
                     + f"{result.train_accuracy[head][features]:>10.3f}")
    lines.append(f"  {'baseline':<18}" + "".join(f"{result.summary['majority_baseline'][v]:>14.3f}" for v in views)
                 + f"   (always {result.summary['majority_class']})")
    if "cpsp" in result.summary and "best_epoch" in result.summary["cpsp"]:
        c = result.summary["cpsp"]
        lines.append(f"  cpsp: epoch {c['best_epoch'] + 1} of {len(c['val_accuracy'])} chosen on {c['val_windows']} "
                     f"validation window(s) of the training streams (accuracy {c['best_val_accuracy']:.3f})")
    lines.append(f"  outputs in {result.output}")
    return "\n".join(lines)
