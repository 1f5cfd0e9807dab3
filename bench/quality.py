"""Quality benchmark: do trained encoders beat their random init, and does EPG beat TPG? Several seeds each.

    python bench/quality.py                                   # the default table (about 2 h 30 min on 2 cores)
    python bench/quality.py --methods random/residual,tpg/infonce/residual --seeds 0
    python bench/quality.py --methods random/raw,tpg/hadsell/raw@0   # a row with seed 0 only (@0+1: seeds 0 and 1)
    python bench/quality.py --epochs 3 --train-minutes 3 --eval-minutes 3 --seeds 0   # a quick look

A method is ``random/<input>`` (untrained, seeded encoders) or ``<pairing>/<loss>/<input>``:
pairing ``tpg`` or ``epg-<rule>`` (``epg-consensus``, ``epg-topk``, ``epg-adaptive``, ``epg-quantile``:
the mining rule with the library's safeguards), loss ``hadsell`` or ``infonce``, input one of
``VisualConfig.input`` (``raw``, ``residual``, ``diff``, ``normalized``), then any options:
``/learned-t`` (a learned InfoNCE temperature), ``/pooled`` (a clip's two crops pooled in the loss).

Protocol, the same budget for every method and seed:
- Footage: synthetic streams of one scene at ``--rate-scale`` times the default event rates (a
  busy street). Pretraining and the probes' training use the ``train`` view of timeline A (seed
  --seed-a, anomalies off); evaluation uses the ``similar`` and ``challenging`` views of a later
  timeline B (seed --seed-b, anomalies on). Generated and ingested once into --cache; the event
  counts of B are printed beside the table.
- Pretraining: the real job (``jobs/pretrain.py``'s flags, ``run_pretrain``, Ray Train on CPU), one
  preset, crop size, epochs, batch, learning rate (cosine after a warm-up) and augmentation for
  all; methods differ in their pair labels, loss and visual input, seeds in the run's seed.
- Scoring: the real ``run_embed`` of A and B with each method's checkpoint.
- Probes (linear, trained on A, scored on each view of B, balanced accuracy, so chance is 0.5
  whatever the share of event seconds): ``probe`` tells event seconds from background with both
  features; ``visual-only`` with v alone, on background seconds and the seconds where an event is
  visible; ``audio-only`` with a alone, on background and audible seconds. ``class`` is the
  multi-class probe (each class seen in A, background included; chance 1 / classes) on both.
- Cross-timeline kNN precision@5: every event second of a B view queries A's train view
  (both modalities); a neighbour is relevant when its second holds the query's class; the
  class prior (the share of A's seconds holding it) is printed beside it.
- v→a recall@10 on each B view (``epg.learning``): a hit is an audio row within ±2 s of the
  visual query's own second, against its chance level.
- Anomaly: ``run_anomaly`` for every ``--score`` (reference: A's train view), ROC-AUC against
  B's labelled anomaly seconds, and the loudness baseline (mean log-mel) of the same seconds.
- Localization (``--localize-methods``): ``run_localize`` trained on A's train view and scored on each
  view of B, accuracy per second: the linear probe (both features), the CPSP head fully supervised
  (per-second targets) and weakly supervised (the classes present in each 10-s window, and whether
  it holds background), against always predicting background and always predicting the most
  frequent training target.
- Mining: from the run's last epoch (``metrics/epochs.csv``), the label precision of mined pairs
  against random pairs.

Results are cached per method and seed under --cache (delete a folder to redo it) and written
to ``results.json`` / ``results.md`` beside them.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402

from epg.config import LOSS_KINDS, MINING_RULES, VISUAL_INPUTS  # noqa: E402
from epg.cpsp.config import SUPERVISIONS  # noqa: E402
from epg.learning import chance_of_a_hit, learning_diagnostics  # noqa: E402
from epg.metrics import balanced_accuracy, roc_auc  # noqa: E402
from epg.probe import ProbeConfig, select_features, train_probe  # noqa: E402
from epg.search import SearchIndex  # noqa: E402
from pipelines.downstream.anomaly_job import (  # noqa: E402
    DEFAULT_ANOMALY_CLASSES,
    SCORES,
    AnomalyJobConfig,
    run_anomaly,
)
from pipelines.downstream.heads import CPSPHeadConfig  # noqa: E402
from pipelines.downstream.labels import LabelTable, align_labels, read_labels  # noqa: E402
from pipelines.downstream.localize_job import LocalizeJobConfig, run_localize  # noqa: E402
from pipelines.ingest.clips_dataset import read_stream  # noqa: E402
from pipelines.ingest.config import IngestConfig  # noqa: E402
from pipelines.ingest.job import run_ingest  # noqa: E402
from pipelines.runtime.cluster import start_local_ray  # noqa: E402
from pipelines.score.embeddings import Embeddings, read_embeddings  # noqa: E402
from pipelines.score.job import run_embed  # noqa: E402
from pipelines.synthetic import SyntheticConfig, generate  # noqa: E402
from pipelines.train.args import config_from_args, parse_args  # noqa: E402
from pipelines.train.checkpoint import build_model, write_model  # noqa: E402
from pipelines.train.config import PRESETS  # noqa: E402
from pipelines.train.driver import run_pretrain  # noqa: E402

PAIRINGS = ("tpg", *(f"epg-{rule}" for rule in MINING_RULES))
# The table in bench/RESULTS.md: random init and TPG/EPG (two rules) with the default loss and input, 3 seeds; the
# paper's loss and the raw input once each (dominated or near, shown once).
# The default table: random init, the baseline and the default pairing. The variants measured at
# 20 min of training footage (raw input, top-k, Hadsell, learned T, pooled crops) are kept in
# RESULTS.md and run with --methods.
DEFAULT_METHODS = ("random/residual", "tpg/infonce/residual", "epg-consensus/infonce/residual")
VIEWS = ("similar", "challenging")
COMMON_CLASSES = ("car", "bus", "truck", "motorcycle")
# Methods whose embeddings also train the localization heads (linear probe, CPSP full and weak).
LOCALIZE_METHODS = ("random/residual", "tpg/infonce/residual", "epg-consensus/infonce/residual")


# Training options a method name may end with (``tpg/infonce/residual/learned-t``): their pretrain flags.
METHOD_OPTIONS = {"learned-t": ("--learn-temperature",), "pooled": ("--pool-crops",)}


@dataclass(frozen=True)
class Method:
    """One row of the table: ``pairing`` None for random encoders."""

    name: str
    pairing: str | None
    loss: str | None
    visual_input: str
    seeds: tuple[int, ...] | None = None  # ``name@0,1``: these seeds only (a row shown once), else --seeds
    options: tuple[str, ...] = ()  # keys of METHOD_OPTIONS

    @staticmethod
    def parse(spec: str) -> "Method":
        name, _, seeds = spec.partition("@")
        only = tuple(int(s) for s in seeds.split("+")) if seeds else None
        parts = name.split("/")
        if parts[0] == "random" and len(parts) == 2 and parts[1] in VISUAL_INPUTS:
            return Method(name, None, None, parts[1], only)
        if (len(parts) >= 3 and parts[0] in PAIRINGS and parts[1] in LOSS_KINDS and parts[2] in VISUAL_INPUTS
                and all(option in METHOD_OPTIONS for option in parts[3:])):
            return Method(name, parts[0], parts[1], parts[2], only, tuple(parts[3:]))
        raise ValueError(f"--methods: {spec!r} is not random/<input> or <pairing>/<loss>/<input>[/<option>...]"
                         f"[@seed+seed] with pairing in {PAIRINGS}, loss in {LOSS_KINDS}, input in {VISUAL_INPUTS}, "
                         f"options in {tuple(METHOD_OPTIONS)}")


# ---------------------------------------------------------------- data

def prepare_data(args: argparse.Namespace) -> dict[str, Path]:
    """Timeline A (train view, no anomalies) and B (similar + challenging, anomalies), ingested once."""
    root = args.cache / (f"data-{args.train_minutes:g}m-{args.eval_minutes:g}m-x{args.rate_scale:g}-{args.size}"
                         f"-c{args.crop}-s{args.seed_a}-{args.seed_b}")
    paths = {"A": root / "clips-A", "B": root / "clips-B", "labels": root / "labels.parquet",
             "events": root / "videos-B" / "events.json"}
    if paths["labels"].exists():
        return paths
    size = tuple(int(x) for x in args.size.split("x"))
    a = generate(SyntheticConfig(out=root / "videos-A", minutes=args.train_minutes, seed=args.seed_a, size=size,
                                 fps=10.0, views=("train",), anomalies=False, rate_scale=args.rate_scale))
    b = generate(SyntheticConfig(out=root / "videos-B", minutes=args.eval_minutes, seed=args.seed_b, size=size,
                                 fps=10.0, views=VIEWS, anomalies=True, rate_scale=args.rate_scale))
    for name, videos in (("A", root / "videos-A"), ("B", root / "videos-B")):
        summary = run_ingest([str(videos)], str(paths[name]), IngestConfig(crop_size=args.crop), show_progress=False)
        if not summary.ok:
            raise SystemExit(summary.format())
    pq.write_table(pa.concat_tables([pq.read_table(a.labels), pq.read_table(b.labels)]), paths["labels"])
    return paths


def event_counts(events_json: Path) -> dict[str, int]:
    """Events per class on the evaluation timeline."""
    counts: dict[str, int] = {}
    for event in json.loads(events_json.read_text())["events"]:
        counts[event["class"]] = counts.get(event["class"], 0) + 1
    return dict(sorted(counts.items()))


# ---------------------------------------------------------------- training

def train(method: Method, seed: int, args: argparse.Namespace, data: dict[str, Path], work: Path) -> tuple[Path, float]:
    """The checkpoint (trained, or the seeded random init) and the training seconds."""
    run_dir = work / "run"
    finished = work / "train_seconds.json"  # written last: a run without it is resumed by run_pretrain
    if finished.exists():
        return max(run_dir.glob("checkpoint_step*")), float(json.loads(finished.read_text()))
    flags = [
        "--clips", str(data["A"]), "--run-dir", str(run_dir), "--preset", args.preset, "--crop-size", str(args.crop),
        "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--lr-visual", str(args.lr),
        "--lr-audio", str(args.lr), "--lr-schedule", "cosine", "--lr-warmup-steps", str(args.warmup_steps),
        "--seed", str(seed), "--visual-input", method.visual_input, "--labels", str(data["labels"]),
        "--checkpoint-every", "100000", "--keep-checkpoints", "1", "--log-every", "50",
        "--max-failures", "2",  # a worker lost on a loaded machine resumes from the last epoch's checkpoint
    ]
    if method.pairing is not None:
        flags += ["--loss", method.loss, "--negative-exclusion", str(args.negative_exclusion)]
        flags += [flag for option in method.options for flag in METHOD_OPTIONS[option]]
        if method.pairing == "tpg":
            flags += ["--pairing", "tpg"]
        else:
            flags += ["--pairing", "epg", "--mining", method.pairing.removeprefix("epg-")]
    config = config_from_args(parse_args(flags))
    began = time.perf_counter()
    if method.pairing is None:  # random encoders: the same model, seeded, saved as a checkpoint without a step
        torch.manual_seed(seed)
        checkpoint = run_dir / "checkpoint_step000000000"
        write_model(checkpoint, config, build_model(config).eval())
    else:
        checkpoint = Path(run_pretrain(config).checkpoint)
    seconds = time.perf_counter() - began
    finished.write_text(json.dumps(seconds))
    return checkpoint, seconds


def last_epoch(run_dir: Path) -> dict[str, float]:
    path = run_dir / "metrics" / "epochs.csv"
    if not path.exists():
        return {}
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    keys = ("loss", "extra_positives_per_anchor", "mined_label_precision", "random_label_share", "holdout_pair_auc",
            "holdout_recall_at_k", "holdout_recall_chance")
    return {k: float(rows[-1][k]) for k in keys if rows and rows[-1].get(k) not in (None, "")}


# ---------------------------------------------------------------- metrics

@dataclass(frozen=True)
class Seconds:
    """One stream's embeddings with their per-second truth."""

    emb: Embeddings
    target: np.ndarray  # class index per second (0 = background)
    present: np.ndarray  # [n, classes] bool
    visible: np.ndarray  # some event is visible in the second
    audible: np.ndarray  # some event is audible in the second
    classes: list[str]


def seen_flags(labels: LabelTable, stream: str, t: np.ndarray) -> dict[str, np.ndarray]:
    """Per second ``t`` of ``stream``: whether some event is ``visible`` / ``audible`` in it ([n] bool each)."""
    frame = labels.frame[labels.frame["stream_id"] == stream]
    seen = {name: set(frame.loc[frame[name], "t"].astype(int)) for name in ("visible", "audible")}
    return {name: np.array([int(second) in seen[name] for second in t], dtype=bool) for name in seen}


def seconds_of(emb: Embeddings, labels: LabelTable, stream: str) -> Seconds:
    rows = emb.of_streams([stream])
    second = align_labels(labels, rows.stream_id, rows.t)
    flags = seen_flags(labels, stream, rows.t)
    return Seconds(rows, second.target, second.present, flags["visible"], flags["audible"], second.classes)


def fit_and_score(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray, n: int) -> float:
    probe = train_probe(train_x, train_y, n, ProbeConfig(class_weight="balanced"))
    return balanced_accuracy(test_y, probe.predict(test_x), n)


def probe_scores(train: Seconds, test: Seconds) -> dict[str, float]:
    """Balanced accuracy of the event-vs-background probes (both, visual-only, audio-only) and the class probe."""
    out = {}
    for name, features, keep in (("probe", "both", None), ("visual_only", "visual", "visible"),
                                 ("audio_only", "audio", "audible")):
        def rows(s: Seconds) -> np.ndarray:
            event = s.target != 0
            return np.ones(len(event), bool) if keep is None else ~event | getattr(s, keep)

        tr, te = rows(train), rows(test)
        out[name] = fit_and_score(select_features(train.emb.v, train.emb.a, features)[tr], (train.target[tr] != 0) * 1,
                                  select_features(test.emb.v, test.emb.a, features)[te], (test.target[te] != 0) * 1, 2)
    known = np.isin(test.target, np.unique(train.target))  # the classes the probe can name (no anomalies in A)
    out["class"] = fit_and_score(select_features(train.emb.v, train.emb.a, "both"), train.target,
                                 select_features(test.emb.v, test.emb.a, "both")[known], test.target[known],
                                 len(train.classes))
    return out


def knn_precision(train: Seconds, test: Seconds, k: int = 5) -> dict[str, float]:
    """Cross-timeline label precision@k of the test view's event seconds against A, and the class prior."""
    index = SearchIndex(train.emb.stream_id, train.emb.t, train.emb.v, train.emb.a, lam=train.emb.lam)
    hits, priors = [], []
    for q in np.flatnonzero((test.target != 0) & np.isin(test.target, np.unique(train.target))):
        relevant = train.present[:, test.target[q]]
        nearest = np.argsort(index.distances(test.emb.v[q], test.emb.a[q], "both"), kind="stable")[:k]
        hits.append(relevant[nearest].mean())
        priors.append(relevant.mean())
    return {"knn_p_at_5": float(np.mean(hits)) if hits else float("nan"),
            "knn_prior": float(np.mean(priors)) if priors else float("nan"), "knn_queries": len(hits)}


def retrieval(test: Seconds) -> dict[str, float]:
    codes = torch.zeros(len(test.emb), dtype=torch.long)
    found = learning_diagnostics(torch.from_numpy(test.emb.v), torch.from_numpy(test.emb.a), codes,
                                 torch.from_numpy(test.emb.t), lam=test.emb.lam)
    return {"recall_at_10": found["recall_at_k"], "recall_chance": found["recall_chance"], "pair_auc": found["pair_auc"]}


def class_level_recall_bound(labels: LabelTable, stream: str, seconds: int, k: int = 10, near: int = 2) -> float:
    """v→a recall@k of an oracle that knows every second's classes and nothing else: the audio of second j
    ranks for the picture of second i by the overlap (Jaccard) of j's audible classes with i's visible ones
    (nothing with nothing: 1), ties in random order (the expectation, exact). What a model that recognised
    every class perfectly, and told two cars apart by nothing, would reach: the recall column's ceiling
    for class-level features."""
    frame = labels.frame[labels.frame["stream_id"] == stream]
    names = sorted(set(frame["label"]))
    visible, audible = (np.zeros((seconds, len(names)), bool) for _ in range(2))
    for t, label, heard, seen in frame[["t", "label", "audible", "visible"]].itertuples(index=False):
        if 0 <= int(t) < seconds:
            visible[int(t), names.index(label)] |= bool(seen)
            audible[int(t), names.index(label)] |= bool(heard)
    both = visible.astype(np.float32) @ audible.T.astype(np.float32)
    either = visible.sum(1)[:, None] + audible.sum(1)[None, :] - both
    score = np.where(either > 0, both / np.maximum(either, 1), 1.0)
    t = np.arange(seconds)
    total = 0.0
    for i in range(seconds):
        hit = np.abs(t - i) <= near
        cut = np.sort(score[i])[-k]  # the k-th best score: all above it are in the top k, ties at it drawn
        above, tied = score[i] > cut, score[i] == cut
        if hit[above].any():
            total += 1.0
            continue
        total += float(chance_of_a_hit(int(tied.sum()), int(hit[tied].sum()), k - int(above.sum())))
    return total / seconds


def anomaly_ceilings(data: dict[str, Path], labels: LabelTable) -> dict[str, float]:
    """Anomaly ROC-AUC on B's views of detectors set by the labels: perfect on the seconds where an anomaly is
    heard and blind elsewhere (``audio_ceiling``), or perfect where one is seen (``visual_ceiling``). The
    anomaly job's ``knn_spectrum`` column is the same table's baseline without a model."""
    truth, heard, seen = [], [], []
    for view in VIEWS:
        t = np.asarray(read_stream(str(data["B"]), view, columns=["t"])["t"].to_pylist(), np.int64)
        frame = labels.frame[(labels.frame["stream_id"] == view) & labels.frame["label"].isin(DEFAULT_ANOMALY_CLASSES)]
        for out, rows in ((truth, frame), (heard, frame[frame["audible"]]), (seen, frame[frame["visible"]])):
            out.append(np.isin(t, rows["t"].astype(int).to_numpy()))
    truth_all = np.concatenate(truth)
    return {"audio_ceiling": roc_auc(truth_all, np.concatenate(heard).astype(float)),
            "visual_ceiling": roc_auc(truth_all, np.concatenate(seen).astype(float))}


def embed(checkpoint: Path, embeddings: Path, data: dict[str, Path]) -> None:
    """Timelines A and B embedded with ``checkpoint`` into a fresh ``embeddings`` root."""
    shutil.rmtree(embeddings, ignore_errors=True)
    for name in ("A", "B"):
        summary = run_embed(str(checkpoint), str(embeddings), clips=str(data[name]), show_progress=False)
        if not summary.ok:
            raise SystemExit(summary.format())


def representation_scores(embeddings: Path, args: argparse.Namespace, data: dict[str, Path], work: Path
                          ) -> dict[str, Any]:
    """Probes, kNN precision and recall per view, and the anomaly ROC-AUC of every --score."""
    emb = read_embeddings(str(embeddings))
    labels = read_labels(str(data["labels"]))
    train_seconds_of = seconds_of(emb, labels, "train")
    views = {}
    for view in VIEWS:
        test = seconds_of(emb, labels, view)
        views[view] = probe_scores(train_seconds_of, test) | knn_precision(train_seconds_of, test) | retrieval(test)
    anomaly = {}
    for score in args.scores:
        result = run_anomaly(AnomalyJobConfig(
            embeddings=str(embeddings), output=str(work / f"anomaly-{score}"), reference=("train",), streams=VIEWS,
            labels=str(data["labels"]), score=score, knn_exclusion=args.knn_exclusion,
            plots=False))
        anomaly[score] = result.summary.get("roc_auc")
        if "loudness_baseline" in result.summary:
            anomaly["loudness"] = result.summary["loudness_baseline"]["roc_auc"]
    return {"views": views, "anomaly": anomaly}


def localization(embeddings: Path, seed: int, args: argparse.Namespace, data: dict[str, Path], work: Path
                 ) -> dict[str, Any]:
    """Per-second localization accuracy on each view of B (``run_localize``, trained on A's train view): the
    linear probe on both features, the CPSP head fully and weakly supervised, and always-background."""
    out: dict[str, Any] = {}
    for supervision in SUPERVISIONS:
        heads = ("linear", "cpsp") if supervision == "full" else ("cpsp",)
        result = run_localize(LocalizeJobConfig(
            embeddings=str(embeddings), labels=str(data["labels"]), output=str(work / f"localize-{supervision}"),
            train=("train",), eval={view: (view,) for view in VIEWS}, features=("both",), heads=heads,
            probe=ProbeConfig(seed=seed),
            cpsp=CPSPHeadConfig(supervision=supervision, seed=seed, epochs=args.cpsp_epochs)))
        for head in heads:
            name = "linear" if head == "linear" else f"cpsp_{supervision}"
            out[name] = {view: result.scores[head]["both"][view].accuracy for view in VIEWS}
        scored = result.scores[heads[0]]["both"]
        background = result.classes[0]
        out["always_background"] = {view: scored[view].per_class_n[background] / scored[view].n_seconds
                                    for view in VIEWS}
        out["majority"] = result.summary["majority_baseline"]  # always the most frequent training target
    return out


def evaluate(method: Method, seed: int, args: argparse.Namespace, data: dict[str, Path], work: Path,
             localize: bool) -> dict[str, Any]:
    """The cached scores of one method and seed (embedding once for whatever is missing); with ``localize``
    also its ``localization``."""
    scores_file, localize_file = work / "result.json", work / "localize.json"
    missing_scores, missing_localize = not scores_file.exists(), localize and not localize_file.exists()
    if missing_scores or missing_localize:
        checkpoint, train_seconds = train(method, seed, args, data, work)
        embeddings = work / "embeddings"
        embed(checkpoint, embeddings, data)
        if missing_scores:
            scores = {"method": method.name, "seed": seed, "train_seconds": train_seconds,
                      **representation_scores(embeddings, args, data, work), "training": last_epoch(checkpoint.parent)}
            scores_file.write_text(json.dumps(scores, indent=1))
        if missing_localize:
            localize_file.write_text(json.dumps(localization(embeddings, seed, args, data, work), indent=1))
        if not args.keep_embeddings:
            shutil.rmtree(embeddings, ignore_errors=True)  # ~MBs per run; the metrics are what the tables need
    out = json.loads(scores_file.read_text())
    if localize:
        out["localization"] = json.loads(localize_file.read_text())
    return out


# ---------------------------------------------------------------- table

def columns(scores: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    view = "challenging"
    cols = [("probe", ("views", view, "probe")), ("visual-only", ("views", view, "visual_only")),
            ("audio-only", ("views", view, "audio_only")), ("class", ("views", view, "class")),
            ("kNN P@5", ("views", view, "knn_p_at_5")), ("v→a R@10", ("views", view, "recall_at_10"))]
    cols += [(f"AUC {s}", ("anomaly", s)) for s in scores]
    cols += [("mined prec", ("training", "mined_label_precision"))]
    return cols


def value(result: dict[str, Any], path: tuple[str, ...]) -> float:
    node: Any = result
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return float(node) if isinstance(node, (int, float)) else float("nan")


def mean_std(results: list[dict[str, Any]], path: tuple[str, ...]) -> tuple[float, float]:
    values = np.array([value(r, path) for r in results])
    values = values[np.isfinite(values)]
    if not len(values):
        return float("nan"), float("nan")
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def cell(mean: float, std: float) -> str:
    return "-" if mean != mean else f"{mean:.3f} ± {std:.3f}"


def table(by_method: dict[str, list[dict[str, Any]]], scores: list[str], view: str = "challenging") -> str:
    cols = [(name, tuple(view if p == "challenging" else p for p in path)) for name, path in columns(scores)]
    lines = ["| method | seeds | " + " | ".join(c for c, _ in cols) + " |", "|---|---:" + "|---" * len(cols) + "|"]
    for method, results in by_method.items():
        lines.append(f"| {method} | {len(results)} | " + " | ".join(cell(*mean_std(results, p)) for _, p in cols) + " |")
    return "\n".join(lines)


LOCALIZATION_COLUMNS = (("linear probe", "linear"), ("CPSP full", "cpsp_full"), ("CPSP weak", "cpsp_weak"),
                        ("always background", "always_background"), ("majority class", "majority"))


def localization_table(by_method: dict[str, list[dict[str, Any]]], view: str) -> str:
    """Per-second accuracy of the localization heads on ``view``, for the methods that ran them."""
    lines = ["| method | seeds | " + " | ".join(c for c, _ in LOCALIZATION_COLUMNS) + " | weak − full |",
             "|---|---:" + "|---" * (len(LOCALIZATION_COLUMNS) + 1) + "|"]
    for method, results in by_method.items():
        if "localization" not in results[0]:
            continue
        cells = [cell(*mean_std(results, ("localization", key, view))) for _, key in LOCALIZATION_COLUMNS]
        gaps = [{"gap": value(r, ("localization", "cpsp_weak", view)) - value(r, ("localization", "cpsp_full", view))}
                for r in results]
        lines.append(f"| {method} | {len(results)} | " + " | ".join(cells) + f" | {cell(*mean_std(gaps, ('gap',)))} |")
    return "\n".join(lines)


def references(by_method: dict[str, list[dict[str, Any]]], view: str = "challenging") -> str:
    """Chance levels beside the table: v→a recall chance, kNN class prior, loudness AUC, random pairs' label share."""
    any_results = [r for results in by_method.values() for r in results]
    parts = [f"v→a recall@10 chance {mean_std(any_results, ('views', view, 'recall_chance'))[0]:.3f}",
             f"kNN class prior {mean_std(any_results, ('views', view, 'knn_prior'))[0]:.3f}",
             f"loudness-baseline AUC {mean_std(any_results, ('anomaly', 'loudness'))[0]:.3f}",
             f"random pairs' label share {mean_std(any_results, ('training', 'random_label_share'))[0]:.3f}"]
    return "Chance and baselines (" + view + "): " + "; ".join(parts) + "."


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("out/quality"))
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated random/<input> or <pairing>/<loss>/<input>")
    parser.add_argument("--seeds", default="0,1,2", help="training seeds, comma-separated")
    parser.add_argument("--scores", default=",".join(SCORES), help=f"anomaly scores, of {', '.join(SCORES)}")
    parser.add_argument("--train-minutes", type=float, default=60.0)
    parser.add_argument("--eval-minutes", type=float, default=60.0)
    parser.add_argument("--rate-scale", type=float, default=5.0,
                        help="event rates × this: a busy street, and enough events on B for the metrics")
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--seed-a", type=int, default=1)
    parser.add_argument("--seed-b", type=int, default=2)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of both encoders (trained from scratch)")
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--negative-exclusion", type=int, default=2, help="same-stream seconds within ±N are not negatives")
    parser.add_argument("--knn-exclusion", type=int, default=60, help="anomaly kNN: own-stream seconds left out")
    parser.add_argument("--localize-methods", default=",".join(LOCALIZE_METHODS),
                        help="methods (of --methods) whose embeddings also train the localization heads")
    parser.add_argument("--cpsp-epochs", type=int, default=CPSPHeadConfig().epochs, help="CPSP head epochs")
    parser.add_argument("--keep-embeddings", action="store_true",
                        help="keep each run's embeddings (A and B) in its seed folder, e.g. to tune a downstream head")
    parser.add_argument("--write-results", action="store_true", help="also write the printed summary into its section of bench/RESULTS.md")
    args = parser.parse_args(argv)
    try:
        methods = [Method.parse(m) for m in args.methods.split(",") if m]
    except ValueError as exc:
        parser.error(str(exc))
    seeds = [int(s) for s in args.seeds.split(",") if s]
    localize_methods = {m for m in args.localize_methods.split(",") if m}
    args.scores = [s for s in args.scores.split(",") if s]
    if unknown := sorted(set(args.scores) - set(SCORES)):
        parser.error(f"--scores: unknown {unknown}; choose from {', '.join(SCORES)}")

    torch.set_num_threads(1)
    start_local_ray(num_cpus=2)
    data = prepare_data(args)
    tag = (f"{args.preset}-c{args.crop}-e{args.epochs}-b{args.batch_size}-lr{args.lr:g}-w{args.warmup_steps}"
           f"-x{args.negative_exclusion}")
    out = data["labels"].parent / "methods" / tag
    by_method: dict[str, list[dict[str, Any]]] = {}
    for method in methods:
        for seed in method.seeds or seeds:
            work = out / method.name.replace("/", "_") / f"seed{seed}"
            work.mkdir(parents=True, exist_ok=True)
            began = time.perf_counter()
            by_method.setdefault(method.name, []).append(
                evaluate(method, seed, args, data, work, localize=method.name in localize_methods))
            print(f"{method.name} seed {seed}: done in {time.perf_counter() - began:.0f} s", flush=True)
    counts = event_counts(data["events"])
    budget = (f"Budget: pretraining on {args.train_minutes:g} min of timeline A's train view ({args.size}, crops "
              f"{args.crop} px, events ×{args.rate_scale:g}), preset {args.preset}, {args.epochs} epochs, batch "
              f"{args.batch_size}, lr {args.lr:g} for both encoders (cosine after {args.warmup_steps} warm-up steps), "
              f"negatives exclude ±{args.negative_exclusion} s, the library's augmentation and bank defaults; seeds "
              f"{','.join(map(str, seeds))}; evaluation on {args.eval_minutes:g} min of timeline B. Events on B: "
              + ", ".join(f"{k} {v}" for k, v in counts.items()) + ".")
    train_seconds = {m: np.mean([r["train_seconds"] for r in rs]) for m, rs in by_method.items()}
    report = Printed()
    report("\n" + budget)
    labels = read_labels(str(data["labels"]))
    for view in reversed(VIEWS):
        report(f"\n{view} view (mean ± std over seeds; probes: balanced accuracy, chance 0.5; class: chance "
               f"1/classes):\n")
        report(table(by_method, args.scores, view))
        report("\n" + references(by_method, view))
        bound = class_level_recall_bound(labels, view, int(round(args.eval_minutes * 60)))
        report(f"Class-level ceiling of v→a recall@10 ({view}): {bound:.3f} (an oracle that ranks audio seconds by "
               f"how far their audible classes match the query second's visible ones, and nothing else).")
    found = anomaly_ceilings(data, labels)
    report(f"\nAnomaly ROC-AUC ceilings from the labels (both views): a detector perfect where an anomaly is heard and "
           f"blind elsewhere {found['audio_ceiling']:.3f}, perfect where one is seen {found['visual_ceiling']:.3f} "
           f"(knn_spectrum, the log-mel spectrum's novelty, is the table's score without a model).")
    if any("localization" in results[0] for results in by_method.values()):
        for view in reversed(VIEWS):
            report(f"\nLocalization, {view} view: accuracy per second (the predicted class is present in the second; "
                   f"background a class of its own), heads trained on A's train view, CPSP on 10-s windows "
                   f"({args.cpsp_epochs} epochs), weak = the classes present in each window and whether it holds "
                   f"background:\n")
            report(localization_table(by_method, view))
    report("\nTraining seconds per run: " + ", ".join(f"{m} {s:.0f}" for m, s in train_seconds.items()))
    (out / "results.json").write_text(json.dumps({"budget": budget, "results": by_method}, indent=1))
    (out / "results.md").write_text(report.text + "\n")
    if args.write_results:
        update_results("Quality benchmark", report.text,
                       command_line(__file__, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
