"""The pretraining command line as a library: flags -> ``PretrainConfig``.

``jobs/pretrain.py`` parses with it, and so do the main job (``pipelines/demo/``)
and the benchmarks, so a run they start is exactly the run ``jobs/pretrain.py`` would
start with the same flags. It lives here because ``jobs/`` is not an importable package.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from epg.config import MINING_RULES, SCHEDULES, EPGConfig, ModelConfig
from pipelines.train.driver import PAIRINGS, PRECISIONS, PRESETS, PretrainConfig


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """The pretraining flags (``jobs/pretrain.py``'s command line); ``description`` is its --help text."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", required=True, help="clips root written by jobs/ingest.py (path or URI)")
    p.add_argument("--run-dir", required=True, help="run directory: config, checkpoints, metrics (shared storage on a cluster)")
    p.add_argument("--preset", choices=sorted(PRESETS), default="x3d_m", help="model size (tiny: for tests)")
    p.add_argument("--crop-size", type=int, default=None, help="override the preset's crop size (must match the clips)")
    p.add_argument("--epg-config", default=None, help="JSON file with an EPGConfig (to_dict layout); flags below override it")
    p.add_argument("--pairing", choices=PAIRINGS, default="epg", help="epg (mining after warm-up) or tpg (timestamps only)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="visual samples per worker per step (even)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--gpus-per-worker", type=float, default=0.0)
    p.add_argument("--precision", choices=PRECISIONS, default="auto", help="auto: bf16 autocast on GPU, fp32 on CPU")
    p.add_argument("--mining", choices=MINING_RULES, default=None)
    p.add_argument("--k", type=int, default=None, help="neighbours per modality (topk/consensus)")
    p.add_argument("--warmup-epochs", type=int, default=None, help="epochs of TPG labels before mining")
    p.add_argument("--bank-size", type=int, default=None)
    p.add_argument("--bank-negatives", action="store_true",
                   help="bank rows are also aligned pairs and negatives of the loss (default: mining candidates only)")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--visual-checkpoint", default=None, help="pretrained X3D state dict (local path)")
    p.add_argument("--audio-checkpoint", default=None, help="pretrained audio ResNet state dict (local path)")
    p.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="default: audio_first with --visual-checkpoint, joint without")
    p.add_argument("--audio-only-epochs", type=int, default=None)
    p.add_argument("--lr-visual", type=float, default=None)
    p.add_argument("--lr-audio", type=float, default=None)
    p.add_argument("--weight-decay-visual", type=float, default=None)
    p.add_argument("--weight-decay-audio", type=float, default=None)
    p.add_argument("--lr-warmup-steps", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--labels", default=None, help="labels table (stream_id, t, label) for diagnostics only")
    p.add_argument("--checkpoint-every", type=int, default=500, help="steps between checkpoints (also at every epoch end)")
    p.add_argument("--keep-checkpoints", type=int, default=3)
    p.add_argument("--max-failures", type=int, default=0, help="worker failures to recover from (-1: forever)")
    p.add_argument("--stop-after-steps", type=int, default=None, help="stop with a checkpoint after this many steps")
    p.add_argument("--shuffle-buffer", type=int, default=512)
    p.add_argument("--freeze-batchnorm", action="store_true")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--log-batches", action="store_true", help="record every batch's (stream, t, crop) under the run dir")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or a new local Ray)")
    return p.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """The PretrainConfig those flags describe (the model from the preset, the EPG config from --epg-config + flags)."""
    base = EPGConfig.from_dict(json.loads(Path(args.epg_config).read_text())) if args.epg_config else EPGConfig()
    model: ModelConfig = PRESETS[args.preset](args.crop_size)
    model = replace(model, visual=replace(model.visual, checkpoint=args.visual_checkpoint),
                    audio=replace(model.audio, checkpoint=args.audio_checkpoint))
    pairs = {"enabled": args.pairing == "epg", "mining": args.mining, "k": args.k, "warmup_epochs": args.warmup_epochs}
    schedule = args.schedule or ("audio_first" if args.visual_checkpoint else "joint")
    optim = {"epochs": args.epochs, "batch_size": args.batch_size, "schedule": schedule,
             "audio_only_epochs": args.audio_only_epochs, "lr_visual": args.lr_visual, "lr_audio": args.lr_audio,
             "weight_decay_visual": args.weight_decay_visual, "weight_decay_audio": args.weight_decay_audio,
             "seed": args.seed}
    epg = replace(
        base,
        model=model,
        pairs=replace(base.pairs, **{k: v for k, v in pairs.items() if v is not None}),
        optim=replace(base.optim, **{k: v for k, v in optim.items() if v is not None}),
        bank=replace(base.bank, **({"size": args.bank_size} if args.bank_size is not None else {}),
                     **({"mining_only": False} if args.bank_negatives else {})),
        augment=replace(base.augment, enabled=False) if args.no_augment else base.augment,
    )
    return PretrainConfig(
        clips=args.clips, run_dir=args.run_dir, epg=epg, pairing=args.pairing, preset=args.preset, labels=args.labels,
        workers=args.workers, cpus_per_worker=args.cpus_per_worker, gpus_per_worker=args.gpus_per_worker,
        precision=args.precision, checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
        max_failures=args.max_failures, stop_after_steps=args.stop_after_steps, shuffle_buffer=args.shuffle_buffer,
        lr_warmup_steps=args.lr_warmup_steps, freeze_batchnorm=args.freeze_batchnorm, log_every=args.log_every,
        log_batches=args.log_batches,
    )
