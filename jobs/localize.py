"""Audio-visual event localization on frozen embeddings (DESIGN §5): heads per feature set, accuracy per view.

Local:    python jobs/localize.py --embeddings data/emb --labels data/synth/labels.parquet --train train \
              --eval similar=similar --eval challenging=challenging --output reports/localize
          [--head linear | cpsp | linear,cpsp | all] [--features audio visual both | --features all]
          linear probe: [--epochs 50] [--batch-size 1024] [--lr 3e-3] [--weight-decay 1e-4]
                        [--class-weight none|balanced] [--seed 0]
          cpsp head:    [--cpsp-supervision full|weak | --weak] [--cpsp-epochs 45] [--cpsp-batch-size 16]
                        [--cpsp-lr 1e-3] [--cpsp-weight-decay 0] [--cpsp-window 10] [--cpsp-stride 5]
                        [--cpsp-val-fraction 0.2] [--cpsp-input-norm l2|layer|none]
                        [--cpsp-category-head segment|video] [--cpsp-hidden 128] [--no-cpsp-local-heads]
                        [--cpsp-device cpu] (its seed is --seed)
Cluster:  ray job submit --working-dir . -- python jobs/localize.py --embeddings s3://bucket/emb ...
--eval VIEW=STREAM[,STREAM] names a view of held-out streams (repeat for several views).
--features applies to the linear head; the cpsp head always reads both modalities and runs
for the feature set "both" only (so --head cpsp --features audio is an error).
Writes accuracy.json/.csv/.png, summary.json and config.json (see pipelines/downstream/localize_job.py).
Exit code 0 when done, 2 for bad arguments or input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout / ray working dir

from epg.cpsp.config import CATEGORY_HEADS, INPUT_NORMS, SUPERVISIONS  # noqa: E402
from epg.probe import CLASS_WEIGHTS, FEATURE_SETS, ProbeConfig  # noqa: E402
from pipelines.downstream.heads import HEADS, CPSPHeadConfig  # noqa: E402
from pipelines.downstream.localize_job import LocalizeJobConfig, format_summary, run_localize  # noqa: E402
from pipelines.runtime.cli import add_output_option, add_skip_bad_shards_option  # noqa: E402


def parse_eval(values: list[str]) -> dict[str, tuple[str, ...]]:
    """``["similar=cam2", "challenging=cam3,cam4"]`` → {view: streams}; ValueError naming a bad value."""
    views: dict[str, tuple[str, ...]] = {}
    for value in values:
        view, sep, streams = value.partition("=")
        names = tuple(s for s in streams.split(",") if s)
        if not sep or not view or not names:
            raise ValueError(f"--eval {value!r} is not VIEW=STREAM[,STREAM]")
        if view in views:
            raise ValueError(f"--eval names view {view!r} twice")
        views[view] = names
    return views


def parse_heads(values: list[str]) -> tuple[str, ...]:
    """``["linear,cpsp"]``, ``["linear", "cpsp"]`` or ``["all"]`` → head names; ValueError naming an unknown one."""
    names = [n for value in values for n in value.split(",") if n]
    if "all" in names:
        return tuple(HEADS)
    unknown = sorted(set(names) - set(HEADS))
    if unknown or not names:
        raise ValueError(f"--head {','.join(values)!r}: choose from {', '.join(HEADS)} or all (comma-separated)")
    return tuple(dict.fromkeys(names))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    probe = ProbeConfig()
    cpsp = CPSPHeadConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--embeddings", required=True, help="embeddings root written by jobs/embed.py (path or URI)")
    p.add_argument("--labels", required=True, help="labels table (Parquet/CSV): stream_id, t, label[, audible, visible]")
    p.add_argument("--train", nargs="+", required=True, metavar="STREAM", help="labelled streams to train on")
    p.add_argument("--eval", action="append", required=True, metavar="VIEW=STREAM[,STREAM]", help="held-out view(s)")
    p.add_argument("--features", nargs="+", default=["all"], choices=[*FEATURE_SETS, "all"],
                   help="feature sets to probe (all: audio visual both)")
    p.add_argument("--head", nargs="+", default=["linear"], metavar="HEAD",
                   help=f"head(s): {', '.join(HEADS)}, comma-separated, or all")
    p.add_argument("--epochs", type=int, default=probe.epochs)
    p.add_argument("--batch-size", type=int, default=probe.batch_size, help="0: full batch")
    p.add_argument("--lr", type=float, default=probe.lr)
    p.add_argument("--weight-decay", type=float, default=probe.weight_decay)
    p.add_argument("--class-weight", choices=CLASS_WEIGHTS, default=probe.class_weight)
    p.add_argument("--seed", type=int, default=probe.seed)
    p.add_argument("--cpsp-supervision", choices=SUPERVISIONS, default=cpsp.supervision,
                   help="full: per-second targets; weak: only the classes present in each window")
    p.add_argument("--weak", dest="cpsp_supervision", action="store_const", const="weak",
                   help="same as --cpsp-supervision weak")
    p.add_argument("--cpsp-epochs", type=int, default=cpsp.epochs)
    p.add_argument("--cpsp-batch-size", type=int, default=cpsp.batch_size, help="windows per batch")
    p.add_argument("--cpsp-lr", type=float, default=cpsp.lr)
    p.add_argument("--cpsp-weight-decay", type=float, default=cpsp.weight_decay)
    p.add_argument("--cpsp-window", type=int, default=cpsp.length, help="seconds per window")
    p.add_argument("--cpsp-stride", type=int, default=cpsp.stride, help="seconds between training windows")
    p.add_argument("--cpsp-val-fraction", type=float, default=cpsp.val_fraction,
                   help="last share of each training stream kept for model selection")
    p.add_argument("--cpsp-input-norm", choices=INPUT_NORMS, default=cpsp.input_norm)
    p.add_argument("--cpsp-category-head", choices=CATEGORY_HEADS, default=cpsp.category_head)
    p.add_argument("--cpsp-hidden", type=int, default=cpsp.hidden, help="projection and BiLSTM size")
    p.add_argument("--cpsp-local-heads", action=argparse.BooleanOptionalAction, default=cpsp.local_heads,
                   help="each second's gate and category also read its own embeddings (segment head only)")
    p.add_argument("--cpsp-device", default=cpsp.device, help="torch device, e.g. cuda")
    add_skip_bad_shards_option(p, LocalizeJobConfig.default_of("skip_bad_shards"), "embeddings files")
    add_output_option(p, "output directory (path or URI)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        features = FEATURE_SETS if "all" in args.features else tuple(dict.fromkeys(args.features))
        config = LocalizeJobConfig(
            embeddings=args.embeddings, labels=args.labels, output=args.output, train=tuple(args.train),
            eval=parse_eval(args.eval), features=features, heads=parse_heads(args.head),
            probe=ProbeConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
                              class_weight=args.class_weight, seed=args.seed),
            cpsp=CPSPHeadConfig(supervision=args.cpsp_supervision, epochs=args.cpsp_epochs,
                                batch_size=args.cpsp_batch_size, lr=args.cpsp_lr, weight_decay=args.cpsp_weight_decay,
                                seed=args.seed, device=args.cpsp_device, length=args.cpsp_window,
                                stride=args.cpsp_stride, val_fraction=args.cpsp_val_fraction,
                                input_norm=args.cpsp_input_norm, category_head=args.cpsp_category_head,
                                local_heads=args.cpsp_local_heads, hidden=args.cpsp_hidden),
            skip_bad_shards=args.skip_bad_shards,
        )
        result = run_localize(config)
    except (ValueError, FileNotFoundError) as exc:  # DownstreamError, EmbeddingsError, LabelsError are ValueErrors
        print(f"localize: error: {exc}", file=sys.stderr)
        return 2
    print(format_summary(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
