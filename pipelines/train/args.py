"""The pretraining command line as a library: flags -> ``PretrainConfig`` (through ``build_pretrain_config``).

``jobs/pretrain.py`` parses with it, and so do the benchmarks, so a run they start is exactly
the run ``jobs/pretrain.py`` would start with the same flags. Flags of ``PretrainConfig`` take
its defaults; flags of the EPG config default to "not given", so they override a
``--epg-config`` file (or ``EPGConfig()``) only when they are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from epg.config import LOSS_KINDS, MINING_RULES, SCHEDULES, VISUAL_INITS, VISUAL_INPUTS, EPGConfig
from pipelines.runtime.cli import add_deprecated_alias, add_ray_options, add_skip_bad_shards_option
from pipelines.train.config import PAIRINGS, PRECISIONS, PRESETS, PretrainConfig, build_pretrain_config

_EPG = EPGConfig()


def parse_args(argv: list[str] | None = None, description: str | None = None) -> argparse.Namespace:
    """The pretraining flags (``jobs/pretrain.py``'s command line); ``description`` is its --help text."""
    d = PretrainConfig.default_of
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", required=True, help="clips root written by jobs/ingest.py (path or URI)")
    p.add_argument("--run-dir", required=True, help="run directory: config, checkpoints, metrics (shared storage on a cluster)")
    p.add_argument("--preset", choices=sorted(PRESETS), default=d("preset"), help="model size (tiny: for tests)")
    p.add_argument("--crop-size", type=int, default=None, help="override the preset's crop size (must match the clips)")
    p.add_argument("--epg-config", default=None, help="JSON file with an EPGConfig (to_dict layout); flags below override it")
    p.add_argument("--pairing", choices=PAIRINGS, default=d("pairing"), help="epg (mining after warm-up) or tpg (timestamps only)")
    p.add_argument("--epochs", type=int, default=None, help=f"default {_EPG.optim.epochs}")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"visual samples per worker per step (even; default {_EPG.optim.batch_size})")
    p.add_argument("--workers", type=int, default=d("workers"))
    p.add_argument("--cpus-per-worker", type=float, default=d("cpus_per_worker"))
    p.add_argument("--gpus-per-worker", type=float, default=d("gpus_per_worker"))
    p.add_argument("--precision", choices=PRECISIONS, default=d("precision"), help="auto: bf16 autocast on GPU, fp32 on CPU")
    p.add_argument("--mining", choices=MINING_RULES, default=None, help=f"default {_EPG.pairs.mining}")
    p.add_argument("--mine-k", type=int, default=None,
                   help=f"neighbours per modality (topk/consensus; default {_EPG.pairs.k})")
    p.add_argument("--warmup-epochs", type=int, default=None,
                   help=f"epochs of TPG labels before mining (default {_EPG.pairs.warmup_epochs})")
    p.add_argument("--bank-size", type=int, default=None, help=f"default {_EPG.bank.size}")
    p.add_argument("--bank-negatives", action="store_true",
                   help="bank rows are also aligned pairs and negatives of the loss (default: mining candidates only)")
    p.add_argument("--loss", choices=LOSS_KINDS, default=None, help=f"loss family (default {_EPG.loss.kind})")
    p.add_argument("--temperature", type=float, default=None, help=f"InfoNCE temperature (default {_EPG.loss.temperature:g})")
    p.add_argument("--learn-temperature", action="store_true",
                   help="the InfoNCE temperature is trained, starting at --temperature (default: fixed)")
    p.add_argument("--negative-exclusion", type=int, default=None,
                   help=f"same-stream candidates within this many seconds are not negatives (default {_EPG.loss.negative_exclusion})")
    p.add_argument("--pool-crops", action="store_true",
                   help="a clip's two crops enter the loss as one sample (the mean embedding, as scoring does)")
    p.add_argument("--visual-init", choices=VISUAL_INITS, default=None,
                   help=f"visual encoder init without a checkpoint (default {_EPG.model.visual.init})")
    p.add_argument("--visual-input", choices=VISUAL_INPUTS, default=None,
                   help=f"what the visual encoder sees: raw pixels, or for a fixed camera the residual after the clip's "
                        f"static scene, temporal diffs, per-clip normalized pixels (default {_EPG.model.visual.input})")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--visual-checkpoint", default=None, help="pretrained X3D state dict (local path)")
    p.add_argument("--audio-checkpoint", default=None, help="pretrained audio ResNet state dict (local path)")
    p.add_argument("--schedule", choices=SCHEDULES, default=None,
                   help="default: audio_first with --visual-checkpoint, joint without")
    p.add_argument("--audio-only-epochs", type=int, default=None, help=f"default {_EPG.optim.audio_only_epochs}")
    p.add_argument("--lr-visual", type=float, default=None, help=f"default {_EPG.optim.lr_visual:g}")
    p.add_argument("--lr-audio", type=float, default=None, help=f"default {_EPG.optim.lr_audio:g}")
    p.add_argument("--weight-decay-visual", type=float, default=None, help=f"default {_EPG.optim.weight_decay_visual:g}")
    p.add_argument("--weight-decay-audio", type=float, default=None, help=f"default {_EPG.optim.weight_decay_audio:g}")
    p.add_argument("--lr-warmup-steps", type=int, default=d("lr_warmup_steps"))
    p.add_argument("--lr-schedule", choices=("constant", "cosine"), default=d("lr_schedule"),
                   help="after the warm-up: constant, or cosine decay to 0 at the last step")
    p.add_argument("--seed", type=int, default=None, help=f"default {_EPG.optim.seed}")
    p.add_argument("--labels", default=d("labels"), help="labels table (stream_id, t, label) for diagnostics only")
    p.add_argument("--checkpoint-every", type=int, default=d("checkpoint_every"),
                   help="steps between checkpoints (also at every epoch end)")
    p.add_argument("--keep-checkpoints", type=int, default=d("keep_checkpoints"))
    p.add_argument("--max-failures", type=int, default=d("max_failures"), help="worker failures to recover from (-1: forever)")
    p.add_argument("--stop-after-steps", type=int, default=d("stop_after_steps"),
                   help="stop with a checkpoint after this many steps")
    p.add_argument("--shuffle-buffer", type=int, default=d("shuffle_buffer"))
    p.add_argument("--holdout-fraction", type=float, default=d("holdout_fraction"),
                   help="last share of every stream's seconds kept out of training for the per-epoch learning diagnostics")
    p.add_argument("--no-global-shuffle", action="store_true",
                   help="read clips in file and time order (default: one seeded random order across all footage)")
    p.add_argument("--freeze-batchnorm", action="store_true", default=d("freeze_batchnorm"))
    p.add_argument("--log-every", type=int, default=d("log_every"))
    p.add_argument("--log-batches", action="store_true", default=d("log_batches"),
                   help="record every batch's (stream, t, crop) under the run dir")
    add_skip_bad_shards_option(p, d("skip_bad_shards"), "clips files")
    add_ray_options(p, progress=False)
    add_deprecated_alias(p, "--k", "--mine-k")
    return p.parse_args(argv)


def _given(values: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in values.items() if v is not None}


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    """The PretrainConfig those flags describe (the model from the preset, the EPG config from --epg-config + flags)."""
    base = EPGConfig.from_dict(json.loads(Path(args.epg_config).read_text())) if args.epg_config else EPGConfig()
    return build_pretrain_config(
        args.clips, args.run_dir, preset=args.preset, crop_size=args.crop_size, pairing=args.pairing, epg=base,
        visual_checkpoint=args.visual_checkpoint, audio_checkpoint=args.audio_checkpoint,
        pairs=_given({"mining": args.mining, "k": args.mine_k, "warmup_epochs": args.warmup_epochs}),
        optim=_given({"epochs": args.epochs, "batch_size": args.batch_size, "schedule": args.schedule,
                      "audio_only_epochs": args.audio_only_epochs, "lr_visual": args.lr_visual,
                      "lr_audio": args.lr_audio, "weight_decay_visual": args.weight_decay_visual,
                      "weight_decay_audio": args.weight_decay_audio, "seed": args.seed}),
        bank=_given({"size": args.bank_size, "mining_only": False if args.bank_negatives else None}),
        loss=_given({"kind": args.loss, "temperature": args.temperature, "negative_exclusion": args.negative_exclusion,
                     "pool_crops": True if args.pool_crops else None,
                     "learn_temperature": True if args.learn_temperature else None}),
        visual=_given({"init": args.visual_init, "input": args.visual_input}),
        augment=not args.no_augment,
        labels=args.labels, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker, precision=args.precision, checkpoint_every=args.checkpoint_every,
        keep_checkpoints=args.keep_checkpoints, max_failures=args.max_failures, stop_after_steps=args.stop_after_steps,
        shuffle_buffer=args.shuffle_buffer, global_shuffle=not args.no_global_shuffle,
        holdout_fraction=args.holdout_fraction,
        lr_warmup_steps=args.lr_warmup_steps, lr_schedule=args.lr_schedule,
        freeze_batchnorm=args.freeze_batchnorm, log_every=args.log_every, log_batches=args.log_batches,
        skip_bad_shards=args.skip_bad_shards,
    )
