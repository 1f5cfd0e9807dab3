"""Quality benchmark: TPG vs EPG (each mining rule, with and without safeguards) vs random encoders.

    python bench/quality.py                          # the full table (about 30-40 min on 2 cores)
    python bench/quality.py --methods tpg,epg-topk   # a subset
    python bench/quality.py --epochs 4 --train-minutes 5 --eval-minutes 5   # a quick look

Protocol (issue 5, DESIGN §4-§5), the same budget for every method:
- Data: synthetic streams of one scene (``pipelines.synthetic``). Pretraining and the
  probe's training use the ``train`` view of timeline A (seed --seed-a, anomaly classes
  off); evaluation uses the ``similar`` and ``challenging`` views of a later timeline B
  (seed --seed-b, anomalies on). Generated and ingested once into --cache.
- Pretraining: the real job (``jobs/pretrain.py``'s config, ``run_pretrain``, Ray Train on
  CPU) with one model preset, epochs, batch, learning rates and augmentation for all;
  methods differ only in the pair labels. ``random`` scores untrained encoders (seeded).
- Scoring: the real ``run_embed`` into one embeddings root per method (A and B).
- Localization: ``run_localize`` (the linear probe; with ``--heads linear,cpsp`` also the
  CPSP head) trained on A's train view, per-second accuracy on B's views, for audio,
  visual and both features (CPSP always uses both).
- Anomaly: ``run_anomaly`` with A's train view as reference; ROC-AUC and average
  precision of the score D(v, a) against B's labelled anomaly seconds.
- Search: every second of B with a (non-background) label is a query against the other
  seconds of its own view; relevant = same class, outside ±60 s of the query. P@5 with the
  search job's exclusion and suppression (±60 s); mAP over the whole ranking with the
  exclusion only (suppression would cut the ranking short). Both modalities (mode both).
- Mining diagnostics: from the run's last epoch (``metrics/epochs.csv``): mined positives
  per anchor, the share of mined pairs that share a label vs random pairs, time gaps.

Results are cached per method under --cache (delete a method's folder to redo it) and
written to ``<cache>/results.json`` and ``results.md``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402

from epg.config import EPGConfig  # noqa: E402
from epg.metrics import mean_average_precision, precision_at_k  # noqa: E402
from epg.search import SearchIndex  # noqa: E402
from pipelines.downstream.anomaly_job import AnomalyJobConfig, run_anomaly  # noqa: E402
from pipelines.downstream.labels import align_labels, read_labels  # noqa: E402
from pipelines.downstream.localize_job import LocalizeJobConfig, run_localize  # noqa: E402
from pipelines.ingest.config import IngestConfig  # noqa: E402
from pipelines.ingest.job import run_ingest  # noqa: E402
from pipelines.runtime.cluster import start_local_ray  # noqa: E402
from pipelines.score.embeddings import read_embeddings  # noqa: E402
from pipelines.score.job import run_embed  # noqa: E402
from pipelines.synthetic import SyntheticConfig, generate  # noqa: E402
from pipelines.train.args import config_from_args, parse_args  # noqa: E402
from pipelines.train.checkpoint import build_model, write_model  # noqa: E402
from pipelines.train.config import PRESETS  # noqa: E402
from pipelines.train.driver import run_pretrain  # noqa: E402

# Pair-label settings per method (EPGConfig.pairs fields); None = random encoders, no training.
NO_SAFEGUARDS = {"warmup_epochs": 0, "cap": None, "exclusion_window": 0, "mined_weight": 1.0}
METHODS: dict[str, dict[str, Any] | None] = {
    "random": None,
    "tpg": {"enabled": False},
    "epg-adaptive": {"mining": "adaptive", **NO_SAFEGUARDS},  # the paper as read: no warm-up, no cap, no gap
    "epg-adaptive+safe": {"mining": "adaptive"},
    "epg-topk": {"mining": "topk", **NO_SAFEGUARDS},
    "epg-topk+safe": {"mining": "topk"},  # the safeguards are the library defaults (k 4, cap 8, W 10, warm-up 1)
    "epg-consensus": {"mining": "consensus", **NO_SAFEGUARDS},
    "epg-consensus+safe": {"mining": "consensus"},
    # topk with the safeguards and a warm-up of half the epochs: mining starts from embeddings TPG has shaped
    "epg-topk+safe+warmup": {"mining": "topk", "warmup_epochs": "half"},
    # without augmentation (not in the default run): what augmentation does to learning within this budget
    "tpg-noaug": {"enabled": False},
    "epg-topk+safe-noaug": {"mining": "topk"},
}
NO_AUGMENT = frozenset(m for m in METHODS if m.endswith("-noaug"))
DEFAULT_METHODS = [m for m in METHODS if m not in NO_AUGMENT]
VIEWS = ("similar", "challenging")
FEATURES = ("audio", "visual", "both")


def prepare_data(args: argparse.Namespace) -> dict[str, Path]:
    """Timeline A (train view, no anomalies) and B (similar + challenging, anomalies), ingested once."""
    root = args.cache / f"data-{args.train_minutes:g}m-{args.eval_minutes:g}m-{args.size}-c{args.crop}"
    paths = {"A": root / "clips-A", "B": root / "clips-B", "labels": root / "labels.parquet"}
    if paths["labels"].exists():
        return paths
    size = tuple(int(x) for x in args.size.split("x"))
    a = generate(SyntheticConfig(out=root / "videos-A", minutes=args.train_minutes, seed=args.seed_a, size=size,
                                 fps=10.0, views=("train",), anomalies=False))
    b = generate(SyntheticConfig(out=root / "videos-B", minutes=args.eval_minutes, seed=args.seed_b, size=size,
                                 fps=10.0, views=VIEWS, anomalies=True))
    for name, videos in (("A", root / "videos-A"), ("B", root / "videos-B")):
        summary = run_ingest([str(videos)], str(paths[name]), IngestConfig(crop_size=args.crop), show_progress=False)
        if not summary.ok:
            raise SystemExit(summary.format())
    labels = pa.concat_tables([pq.read_table(a.labels), pq.read_table(b.labels)])
    pq.write_table(labels, paths["labels"])
    return paths


def pretrain_flags(args: argparse.Namespace, data: dict[str, Path], run_dir: Path, epg_config: Path) -> list[str]:
    return [
        "--clips", str(data["A"]), "--run-dir", str(run_dir), "--preset", args.preset, "--crop-size", str(args.crop),
        "--epg-config", str(epg_config), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size),
        "--lr-visual", str(args.lr), "--lr-audio", str(args.lr), "--seed", str(args.seed),
        "--labels", str(data["labels"]), "--checkpoint-every", "100000", "--keep-checkpoints", "1", "--log-every", "50",
        "--max-failures", "2",  # a worker lost on a loaded machine resumes from the last epoch's checkpoint
    ]


def train(method: str, args: argparse.Namespace, data: dict[str, Path], work: Path) -> tuple[Path, float]:
    """The method's checkpoint (trained, or the seeded random init) and the training seconds."""
    run_dir = work / "run"
    finished = work / "train_seconds.json"  # written last: a run without it is resumed by run_pretrain
    if finished.exists():
        return max(run_dir.glob("checkpoint_step*")), float(json.loads(finished.read_text()))
    pairs = dict(METHODS[method] or {})
    if pairs.get("warmup_epochs") == "half":
        pairs["warmup_epochs"] = args.epochs // 2
    base = EPGConfig()
    epg = replace(base, pairs=replace(base.pairs, **pairs))
    epg_config = work / "epg_config.json"
    epg_config.write_text(json.dumps(epg.to_dict(), indent=1))
    flags = pretrain_flags(args, data, run_dir, epg_config)
    if pairs.get("enabled") is False:
        flags += ["--pairing", "tpg"]
    if method in NO_AUGMENT:
        flags += ["--no-augment"]
    config = config_from_args(parse_args(flags))
    began = time.perf_counter()
    if METHODS[method] is None:  # random encoders: the same model, seeded, saved as a checkpoint without a step
        torch.manual_seed(args.seed)
        model = build_model(config)
        checkpoint = run_dir / "checkpoint_step000000000"
        write_model(checkpoint, config, model.eval())
    else:
        checkpoint = Path(run_pretrain(config).checkpoint)
    seconds = time.perf_counter() - began
    finished.write_text(json.dumps(seconds))
    return checkpoint, seconds


def search_scores(embeddings: str, labels_path: Path, k: int = 5, window: int = 60) -> dict[str, dict[str, float]]:
    """P@k (exclusion + suppression) and mAP (exclusion only) of every labelled event second, per view."""
    emb = read_embeddings(embeddings)
    labels = read_labels(str(labels_path))
    out = {}
    for view in VIEWS:
        rows = emb.of_streams([view])
        second = align_labels(labels, rows.stream_id, rows.t)
        background = second.classes.index("background") if "background" in second.classes else -1
        index = SearchIndex(rows.stream_id, rows.t, rows.v, rows.a, lam=rows.lam)
        precisions, rankings, totals = [], [], []
        for q in np.flatnonzero(second.target != background):
            same = second.present[:, second.target[q]]
            hits = index.search(rows.v[q], rows.a[q], "both", k=k, exclude=(view, int(rows.t[q])),
                                exclusion=window, suppression=window)
            precisions.append(precision_at_k([bool(same[h.row]) for h in hits], k))
            far = np.abs(rows.t - rows.t[q]) > window
            order = np.argsort(index.distances(rows.v[q], rows.a[q], "both")[far], kind="stable")
            rankings.append(same[far][order])
            totals.append(int(same[far].sum()))
        out[view] = {"p_at_5": float(np.mean(precisions)) if precisions else float("nan"),
                     "map": mean_average_precision(rankings, totals) if rankings else float("nan"),
                     "queries": len(precisions)}
    return out


def last_epoch(run_dir: Path) -> dict[str, float]:
    path = run_dir / "metrics" / "epochs.csv"
    if not path.exists():
        return {}
    with open(path) as handle:
        rows = list(csv.DictReader(handle))
    keys = ("loss", "extra_positives_per_anchor", "mined_label_precision", "random_label_share", "mined_time_gap",
            "random_time_gap")
    return {k: float(rows[-1][k]) for k in keys if rows and rows[-1].get(k) not in (None, "")}


def evaluate(method: str, args: argparse.Namespace, data: dict[str, Path], work: Path) -> dict[str, Any]:
    cached = work / "result.json"
    if cached.exists():
        return json.loads(cached.read_text())
    checkpoint, train_seconds = train(method, args, data, work)
    embeddings = work / "embeddings"
    for name in ("A", "B"):
        summary = run_embed(str(checkpoint), str(embeddings), clips=str(data[name]), show_progress=False)
        if not summary.ok:
            raise SystemExit(summary.format())
    localize = run_localize(LocalizeJobConfig(
        embeddings=str(embeddings), labels=str(data["labels"]), output=str(work / "localize"), train=("train",),
        eval={v: (v,) for v in VIEWS}, features=FEATURES, heads=tuple(args.heads)))
    anomaly = run_anomaly(AnomalyJobConfig(embeddings=str(embeddings), output=str(work / "anomaly"),
                                           reference=("train",), streams=VIEWS, labels=str(data["labels"]),
                                           plots=False))
    result = {
        "method": method,
        "train_seconds": train_seconds,
        "localize": json.loads((work / "localize" / "summary.json").read_text())["accuracy"],
        "anomaly": {"roc_auc": anomaly.summary.get("roc_auc"), "average_precision": anomaly.summary.get("average_precision")},
        "search": search_scores(str(embeddings), data["labels"]),
        "mining": last_epoch(checkpoint.parent),
    }
    del localize
    cached.write_text(json.dumps(result, indent=1))
    return result


def _f(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, (int, float)) and value == value else "  -  "


def table(results: list[dict[str, Any]], heads: list[str]) -> str:
    """One markdown table: probe accuracy per view and features, anomaly, search, mining precision."""
    columns = []
    for head in heads:
        for view in VIEWS:
            for features in (FEATURES if head == "linear" else ("both",)):
                columns.append((f"{head} {view[:3]} {features}", ("localize", head, features, view)))
    columns += [("anom AUC", ("anomaly", "roc_auc")), ("anom AP", ("anomaly", "average_precision"))]
    columns += [(f"P@5 {v[:3]}", ("search", v, "p_at_5")) for v in VIEWS]
    columns += [(f"mAP {v[:3]}", ("search", v, "map")) for v in VIEWS]
    columns += [("mined/anchor", ("mining", "extra_positives_per_anchor")),
                ("mined prec", ("mining", "mined_label_precision")), ("random prec", ("mining", "random_label_share"))]

    def get(result: dict, path: tuple) -> Any:
        node: Any = result
        if path[0] == "localize":  # summary["accuracy"] is {features: {view: acc}} or {head: {features: {view}}}
            node = node["localize"]
            node = node.get(path[1], node) if isinstance(node, dict) else node
            path = path[2:]
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    ranks = mean_ranks(results, [path for name, path in columns if is_headline(name)], get)
    lines = ["| method | " + " | ".join(c for c, _ in columns) + " | mean rank |", "|---" * (len(columns) + 2) + "|"]
    for r in results:
        lines.append(f"| {r['method']} | " + " | ".join(_f(get(r, p)) for _, p in columns)
                     + f" | {ranks[r['method']]:.2f} |")
    return "\n".join(lines)


def is_headline(column: str) -> bool:
    """The columns the mean rank averages: both-feature localization, anomaly AUC/AP, search P@5/mAP."""
    return column.endswith(" both") or column.startswith(("anom", "P@5", "mAP"))


def mean_ranks(results: list[dict[str, Any]], paths: list[tuple], get: Any) -> dict[str, float]:
    """Each method's rank (1 = best, ties share the mean rank) averaged over ``paths``; missing values rank last."""
    totals = {r["method"]: 0.0 for r in results}
    for path in paths:
        values = np.array([v if isinstance(v := get(r, path), (int, float)) and v == v else -np.inf for r in results])
        order = (-values).argsort(kind="stable")
        rank = np.empty(len(values))
        rank[order] = np.arange(1, len(values) + 1)
        for value in np.unique(values):  # ties share their mean rank
            rank[values == value] = rank[values == value].mean()
        for r, x in zip(results, rank):
            totals[r["method"]] += x / max(len(paths), 1)
    return totals


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("out/quality"))
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--heads", default="linear,cpsp", help="localization heads: linear[,cpsp]")
    parser.add_argument("--train-minutes", type=float, default=20.0)
    parser.add_argument("--eval-minutes", type=float, default=10.0)
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--seed-a", type=int, default=1)
    parser.add_argument("--seed-b", type=int, default=2)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of both encoders (trained from scratch)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--write-results", action="store_true", help="also write the printed summary into its section of bench/RESULTS.md")
    args = parser.parse_args(argv)
    args.heads = [h for h in args.heads.split(",") if h]
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: unknown {unknown}; choose from {', '.join(METHODS)}")

    torch.set_num_threads(1)
    start_local_ray(num_cpus=2)
    data = prepare_data(args)
    # The library's augmentation, bank and loss defaults are part of the budget: a change of them starts new runs.
    budget_defaults = {k: v for k, v in EPGConfig().to_dict().items() if k in ("augment", "bank", "loss")}
    defaults = hashlib.sha256(json.dumps(budget_defaults, sort_keys=True).encode()).hexdigest()[:8]
    tag = f"{args.preset}-c{args.crop}-e{args.epochs}-b{args.batch_size}-lr{args.lr:g}-s{args.seed}-{defaults}"
    results = []
    for method in methods:
        work = data["labels"].parent / "methods" / tag / method
        work.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        results.append(evaluate(method, args, data, work))
        print(f"{method}: done in {time.perf_counter() - began:.0f} s", flush=True)
    budget = (f"Budget: pretraining on {args.train_minutes:g} min of timeline A's train view ({args.size}, crops "
              f"{args.crop} px), preset {args.preset}, {args.epochs} epochs, batch {args.batch_size} visual samples, "
              f"lr {args.lr:g} for both encoders, the library's augmentation and bank defaults (augmentation off for *-noaug), seed {args.seed}; evaluation on "
              f"{args.eval_minutes:g} min of timeline B (similar and challenging views).")
    text = budget + "\n\n" + table(results, args.heads)
    report = Printed()
    report("\n" + text)
    out = data["labels"].parent / "methods" / tag
    (out / "results.json").write_text(json.dumps({"budget": budget, "results": results}, indent=1))
    (out / "results.md").write_text(text + "\n")
    shutil.rmtree(out / "tmp", ignore_errors=True)
    if args.write_results:
        update_results("Quality benchmark", report.text,
                       command_line(__file__, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
