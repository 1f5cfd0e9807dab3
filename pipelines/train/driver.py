"""EPG pretraining on Ray Train (DESIGN §4): config, input checks, the per-worker loop, checkpoints, metrics.

    run_pretrain(PretrainConfig(...))      # driver: checks, config record, TorchTrainer.fit()
      └─ train_loop (every worker)         # one EPG step per batch, gathered bank, DDP/sum of shares

Run directory (``--run-dir``; Ray Train's ``RunConfig(storage_path=parent, name=basename)``):

    config.json                 the full PretrainConfig (with the EPGConfig), written before training
    checkpoint_step<N>/         Ray Train checkpoints (``ray.train.report``): model.pt (encoders),
                                train_state.pt (optimizer, LR scheduler, step, epoch, position in
                                the epoch, embedding bank), rng-rank<r>.pt (every rank's RNG),
                                config.json
    metrics/steps.csv           one row per step (rank 0): loss, positives per anchor, extra
                                positives (EPG beyond TPG), mined label precision vs random pairs
                                (with --labels), mined/random time gaps, mean δ, embedding std,
                                samples/s, share of time waiting for data, learning rates ...
    metrics/epochs.csv          per epoch: the mean of the step metrics
    tensorboard/                the same as TensorBoard scalars (step/*, epoch/*)
    batches/rank-<r>.jsonl      (``log_batches``) the (stream, t, crop) of every local batch

Decisions (where the design is silent):
- ``optim.batch_size`` is visual samples *per worker* per step (even: both crops of a
  clip travel together); the global batch is ``workers × batch_size``.
- Resume: rerunning with the same run dir continues from the latest checkpoint
  (Ray Train finds it in the run dir; worker failures retry the same way, up to
  ``max_failures``). The embedding bank is *saved* in the checkpoint (it is
  identical on every rank), so a resumed run continues with the same bank. The
  data order is deterministic (``preserve_order``; a seeded local shuffle per
  epoch), so a run resumed mid-epoch skips the batches already trained and
  reaches the same parameters as an uninterrupted run.
- Method settings (the EPG config, pairing, clips, labels, workers) of a resumed
  run must equal the recorded ones; operational ones (stop_after_steps,
  max_failures, logging) may change.
- Schedule: ``audio_first`` freezes f_v for ``optim.audio_only_epochs`` epochs,
  then both train jointly; ``alternating`` then trains one encoder per epoch in
  turn (f_v first); the CLI picks ``audio_first`` when a visual checkpoint is given
  and ``joint`` otherwise (``--schedule`` overrides; the choice is in config.json).
- Precision: bf16 autocast of the encoders on GPU (``auto``), plain fp32 on CPU; the
  loss and the mining always run in fp32.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping, get_args

import torch
import torch.nn as nn

from epg.bank import EmbeddingBank, sum_gradients
from epg.config import EPGConfig, ModelConfig, VisualConfig, _from_dict
from epg.encoders import AVEncoders, build_encoders
from epg.optim import apply_schedule, build_optimizer
from epg.step import train_step
from pipelines.train.data import (
    ClipsError,
    ClipsInfo,
    build_dataset,
    check_compatible,
    inspect_clips,
    load_label_index,
    to_torch_batch,
)

Pairing = Literal["epg", "tpg"]
Precision = Literal["auto", "bf16", "fp32"]
PAIRINGS: tuple[str, ...] = get_args(Pairing)
PRECISIONS: tuple[str, ...] = get_args(Precision)

# Model presets: preset(crop_size or None) -> ModelConfig. tiny is the real architecture at a few thousand
# parameters (tests); small (~0.25 M) learns the synthetic streams on a CPU (demo, bench/quality.py).
PRESETS: dict[str, Callable[[int | None], ModelConfig]] = {
    "tiny": lambda crop: ModelConfig.tiny(crop_size=crop or 32),
    "small": lambda crop: ModelConfig.small(crop_size=crop or 64),
    "x3d_m": lambda crop: ModelConfig(visual=VisualConfig(crop_size=crop or 160)),
}

CONFIG_FILE = "config.json"
MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
# Fields a resumed run may change; everything else must equal the recorded config.
OPERATIONAL_FIELDS = frozenset({"stop_after_steps", "max_failures", "log_every", "prefetch_batches", "keep_checkpoints",
                                "checkpoint_every", "log_batches", "cpus_per_worker", "gpus_per_worker", "precision"})


class PretrainError(ValueError):
    """Bad input or configuration, found before any training starts."""


@dataclass(frozen=True)
class PretrainConfig:
    """One pretraining run: data, method (``epg``), cluster shape, checkpoints and logging. Validated on creation."""

    clips: str
    run_dir: str
    epg: EPGConfig = field(default_factory=EPGConfig)
    pairing: Pairing = "epg"
    preset: str = "x3d_m"
    labels: str | None = None
    workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    precision: Precision = "auto"
    checkpoint_every: int = 500  # steps; a checkpoint is also written at every epoch end
    keep_checkpoints: int | None = 3
    max_failures: int = 0
    stop_after_steps: int | None = None  # stop (with a checkpoint) after this many steps in total
    shuffle_buffer: int = 512  # visual samples per worker; 0 = no shuffle
    prefetch_batches: int = 2
    lr_warmup_steps: int = 0
    freeze_batchnorm: bool = False  # BatchNorm on running statistics (exact data-parallel equivalence on CPU)
    sync_batchnorm: bool = True  # SyncBatchNorm across GPU workers
    log_every: int = 10
    log_batches: bool = False

    def __post_init__(self) -> None:
        def fail(name: str, rule: str, value: object) -> None:
            raise PretrainError(f"PretrainConfig.{name} must be {rule}, got {value!r}")

        if not self.clips:
            fail("clips", "a clips directory", self.clips)
        if not self.run_dir:
            fail("run_dir", "a run directory", self.run_dir)
        if self.preset not in PRESETS:
            fail("preset", f"one of {sorted(PRESETS)}", self.preset)
        if self.pairing not in PAIRINGS:
            fail("pairing", f"one of {PAIRINGS}", self.pairing)
        if self.epg.pairs.enabled != (self.pairing == "epg"):
            fail("epg.pairs.enabled", f"{self.pairing == 'epg'} for pairing {self.pairing!r}", self.epg.pairs.enabled)
        if self.precision not in PRECISIONS:
            fail("precision", f"one of {PRECISIONS}", self.precision)
        if self.workers < 1:
            fail("workers", ">= 1", self.workers)
        if self.cpus_per_worker <= 0:
            fail("cpus_per_worker", "> 0", self.cpus_per_worker)
        if self.gpus_per_worker < 0:
            fail("gpus_per_worker", ">= 0", self.gpus_per_worker)
        if self.epg.optim.batch_size % 2:
            fail("epg.optim.batch_size", "even (two visual samples per clip)", self.epg.optim.batch_size)
        if self.checkpoint_every < 1:
            fail("checkpoint_every", ">= 1", self.checkpoint_every)
        if self.keep_checkpoints is not None and self.keep_checkpoints < 1:
            fail("keep_checkpoints", ">= 1 or None", self.keep_checkpoints)
        if self.max_failures < -1:
            fail("max_failures", ">= -1 (-1 = retry forever)", self.max_failures)
        if self.stop_after_steps is not None and self.stop_after_steps < 1:
            fail("stop_after_steps", ">= 1 or None", self.stop_after_steps)
        for name in ("shuffle_buffer", "prefetch_batches", "lr_warmup_steps"):
            if getattr(self, name) < 0:
                fail(name, ">= 0", getattr(self, name))
        if self.log_every < 1:
            fail("log_every", ">= 1", self.log_every)

    @property
    def use_gpu(self) -> bool:
        return self.gpus_per_worker > 0

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["epg"] = self.epg.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PretrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PretrainError(f"PretrainConfig: unknown field(s) {unknown}")
        values = dict(data)
        if "epg" in values:
            values["epg"] = _from_dict(EPGConfig, values["epg"], "EPGConfig")
        return cls(**values)


@dataclass
class PretrainResult:
    run_dir: str
    checkpoint: str | None
    metrics: dict[str, Any]


# -- driver side ------------------------------------------------------------------


def check_cluster(config: PretrainConfig) -> None:
    """``PretrainError`` when the running Ray cluster cannot host the workers (and leave a CPU for data)."""
    import ray

    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    need_cpu = config.workers * config.cpus_per_worker
    need_gpu = config.workers * config.gpus_per_worker
    if need_gpu > gpus:
        raise PretrainError(f"{config.workers} workers x {config.gpus_per_worker:g} GPU need {need_gpu:g} GPUs; "
                            f"the cluster has {gpus:g}")
    if need_cpu + 1 > cpus:
        raise PretrainError(f"{config.workers} workers x {config.cpus_per_worker:g} CPU need {need_cpu:g} CPUs plus one "
                            f"for the Ray Data decode tasks; the cluster has {cpus:g} (lower --workers or --cpus-per-worker)")


def prepare_run(config: PretrainConfig) -> tuple[ClipsInfo, dict[str, dict[int, int]] | None, list[str]]:
    """All checks that need no Ray: clips, model shapes, labels, and a recorded config that matches."""
    try:
        info = inspect_clips(config.clips)
        check_compatible(info, config.epg.model)
        labels, names = (None, []) if config.labels is None else load_label_index(config.labels, info.stream_ids)
    except ClipsError as exc:
        raise PretrainError(str(exc)) from None
    for name, path in (("visual", config.epg.model.visual.checkpoint), ("audio", config.epg.model.audio.checkpoint)):
        if path is not None and not Path(path).is_file():
            raise PretrainError(f"{name} checkpoint {path!r} does not exist (a local file on every worker)")
    if info.rows * 2 < config.workers * config.epg.optim.batch_size:
        raise PretrainError(f"{info.rows} clips give {2 * info.rows} visual samples, fewer than one global batch "
                            f"({config.workers} workers x {config.epg.optim.batch_size})")
    recorded = Path(config.run_dir) / CONFIG_FILE
    if recorded.is_file():
        old = json.loads(recorded.read_text())["config"]
        new = config.to_dict()
        changed = sorted(k for k in new if k not in OPERATIONAL_FIELDS and old.get(k) != json.loads(json.dumps(new[k])))
        if changed:
            raise PretrainError(f"run dir {config.run_dir!r} holds a run with other settings ({', '.join(changed)} differ); "
                                f"use a new --run-dir to start another run")
    return info, labels, names


def write_config(config: PretrainConfig, info: ClipsInfo, class_names: list[str]) -> Path:
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {"config": config.to_dict(), "clips": {"streams": list(info.stream_ids), "rows": info.rows,
              "crop_size": info.crop_size, "files": len(info.files)}, "label_classes": class_names}
    path = run_dir / CONFIG_FILE
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)
    return path


def absolute_paths(config: PretrainConfig) -> PretrainConfig:
    """Local paths made absolute on the driver (Ray Train workers run in another working directory)."""
    def local(path: str) -> str:
        return path if "://" in path else str(Path(path).resolve())

    model = config.epg.model
    visual, audio = model.visual, model.audio
    if visual.checkpoint is not None:
        visual = dataclasses.replace(visual, checkpoint=local(visual.checkpoint))
    if audio.checkpoint is not None:
        audio = dataclasses.replace(audio, checkpoint=local(audio.checkpoint))
    epg = dataclasses.replace(config.epg, model=dataclasses.replace(model, visual=visual, audio=audio))
    return dataclasses.replace(config, clips=local(config.clips), run_dir=str(Path(config.run_dir).resolve()),
                               labels=None if config.labels is None else local(config.labels), epg=epg)


def ensure_ray(address: str | None = None) -> None:
    """Join the cluster (``ray job submit`` sets RAY_ADDRESS) or start a local Ray."""
    import ray

    from pipelines.ingest.job import WORKER_ENV

    if not ray.is_initialized():
        ray.init(address=address, runtime_env={"env_vars": WORKER_ENV})


def run_pretrain(config: PretrainConfig, ray_address: str | None = None) -> PretrainResult:
    """Check everything, record the config, train. Resumes from the run dir's latest checkpoint."""
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    config = absolute_paths(config)
    info, labels, names = prepare_run(config)
    ensure_ray(ray_address)
    check_cluster(config)
    write_config(config, info, names)

    dataset = build_dataset(info, labels)
    options = DataConfig.default_ingest_options()
    options.preserve_order = True  # a deterministic split across workers (exact resume)
    dataset.context.max_errored_blocks = 0  # a clip that cannot be decoded stops training, never silently shrinks it
    dataset.context.enable_progress_bars = False  # the rank-0 progress line says how training goes
    run_dir = Path(config.run_dir).resolve()
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"config": config.to_dict()},
        torch_config=TorchConfig(backend="nccl" if config.use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=config.workers,
            use_gpu=config.use_gpu,
            resources_per_worker={"CPU": config.cpus_per_worker, **({"GPU": config.gpus_per_worker} if config.use_gpu else {})},
        ),
        run_config=RunConfig(
            storage_path=str(run_dir.parent),
            name=run_dir.name,
            checkpoint_config=CheckpointConfig(num_to_keep=config.keep_checkpoints),
            failure_config=FailureConfig(max_failures=config.max_failures),
        ),
        datasets={"train": dataset},
        dataset_config=DataConfig(execution_options=options),
    )
    result = trainer.fit()
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    return PretrainResult(str(run_dir), checkpoint, dict(result.metrics or {}))


# -- model, optimisation ------------------------------------------------------------


def build_model(config: PretrainConfig) -> AVEncoders:
    """The encoders with their seeded initialisation (identical on every worker)."""
    torch.manual_seed(config.epg.optim.seed)
    return build_encoders(config.epg.model)


def build_scheduler(optimizer: torch.optim.Optimizer, config: PretrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear learning-rate warm-up over ``lr_warmup_steps`` steps, then constant."""
    warmup = config.lr_warmup_steps
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 if warmup == 0 else min(1.0, (step + 1) / warmup))


class Autocast(nn.Module):
    """Runs the encoders under bf16 autocast and hands fp32 embeddings to the loss."""

    def __init__(self, inner: nn.Module, device_type: str) -> None:
        super().__init__()
        self.inner = inner
        self.device_type = device_type

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.autocast(self.device_type, dtype=torch.bfloat16):
            v, a = self.inner(video, audio)
        return v.float(), a.float()


def freeze_batchnorm(model: nn.Module) -> None:
    """BatchNorm layers on their running statistics (per-sample encoders; call after ``model.train()``)."""
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def load_model(checkpoint_dir: str) -> tuple[AVEncoders, PretrainConfig]:
    """The trained encoders (eval mode) and the run's config from a checkpoint directory."""
    config = PretrainConfig.from_dict(json.loads((Path(checkpoint_dir) / CONFIG_FILE).read_text())["config"])
    model = build_encoders(config.epg.model)
    model.load_state_dict(torch.load(Path(checkpoint_dir) / MODEL_FILE, map_location="cpu"))
    return model.eval(), config


# -- checkpoints --------------------------------------------------------------------


@dataclass
class Position:
    """Where training stands: ``step`` optimizer steps done; ``batch`` batches of ``epoch`` done."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


def save_checkpoint(directory: Path, rank: int, config: PretrainConfig, model: AVEncoders, optimizer, scheduler,
                    bank: EmbeddingBank, position: Position) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, directory / f"rng-rank{rank}.pt")
    if rank != 0:
        return
    write_model(directory, config, model)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "bank": bank.state_dict(),
                "position": dataclasses.asdict(position)}, directory / STATE_FILE)


def write_model(directory: Path, config: PretrainConfig, model: AVEncoders) -> None:
    """The part of a checkpoint that ``load_model`` (and scoring) reads: the encoders and the run's config."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / MODEL_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps({"config": config.to_dict()}, indent=1))


def load_checkpoint(directory: Path, rank: int, device: torch.device, model: AVEncoders, optimizer, scheduler,
                    bank: EmbeddingBank) -> Position:
    model.load_state_dict(torch.load(directory / MODEL_FILE, map_location=device))
    state = torch.load(directory / STATE_FILE, map_location=device)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    bank.load_state_dict(state["bank"])
    rng_file = directory / f"rng-rank{rank}.pt"
    if rng_file.is_file():  # absent when the run resumes with more workers than it had
        rng = torch.load(rng_file, map_location="cpu")
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return Position(**state["position"])


# -- metrics ------------------------------------------------------------------------


class MetricsLog:
    """Rank 0's record: steps.csv, epochs.csv and TensorBoard scalars under the run dir, plus the progress line."""

    def __init__(self, run_dir: Path, resume_step: int, epochs: int) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.dir = run_dir / "metrics"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.epochs = epochs
        self.steps_path, self.epochs_path = self.dir / "steps.csv", self.dir / "epochs.csv"
        self.step_rows = [r for r in _read_csv(self.steps_path) if int(float(r["step"])) <= resume_step]
        _write_csv(self.steps_path, self.step_rows)  # drop steps of an interrupted run beyond its checkpoint
        done_epochs = {int(float(r["epoch"])) for r in self.step_rows}
        _write_csv(self.epochs_path, [r for r in _read_csv(self.epochs_path) if int(float(r["epoch"])) in done_epochs])
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def step(self, row: dict[str, float], log: bool) -> None:
        self.step_rows.append({k: str(v) for k, v in row.items()})
        _append_csv(self.steps_path, row)
        for key, value in row.items():
            if key not in ("step", "epoch"):
                self.writer.add_scalar(f"step/{key}", value, int(row["step"]))
        if log:
            progress(
                f"epoch {int(row['epoch']) + 1}/{self.epochs} step {int(row['step'])} loss {row['loss']:.4f} "
                f"pos/anchor {row['positives_per_anchor']:.2f} (+{row['extra_positives_per_anchor']:.2f} mined) "
                f"{row['samples_per_s']:.1f} samples/s, waiting for data {row['data_wait_fraction']:.0%}"
            )

    def epoch_end(self, epoch: int) -> dict[str, float]:
        rows = [r for r in self.step_rows if int(float(r["epoch"])) == epoch]
        keys = [k for k in rows[0] if k not in ("epoch", "step")] if rows else []
        means = {"epoch": float(epoch), "steps": float(len(rows))}
        for key in keys:
            values = [float(r[key]) for r in rows if not math.isnan(float(r[key]))]
            means[key] = sum(values) / len(values) if values else math.nan
        _append_csv(self.epochs_path, means)
        for key, value in means.items():
            if key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        self.writer.flush()
        return means

    def close(self) -> None:
        self.writer.close()


def progress(line: str) -> None:
    """The progress line, written to the worker's stdout (Ray forwards it to the driver).

    Not ``print``: Ray Train patches ``print`` in workers into its logger, which shows some lines twice.
    """
    sys.stdout.write(f"[pretrain] {line}\n")
    sys.stdout.flush()


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with tmp.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)


def _append_csv(path: Path, row: Mapping[str, Any]) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


# -- the per-worker loop -------------------------------------------------------------


def train_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: resume, then one EPG step per batch until the last epoch."""
    import tempfile

    import ray.train
    import ray.train.torch
    from ray.train import Checkpoint

    config = PretrainConfig.from_dict(loop_config["config"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if config.use_gpu else torch.device("cpu")
    if not config.use_gpu:
        torch.set_num_threads(max(1, int(config.cpus_per_worker)))
    epg, optim = config.epg, config.epg.optim
    run_dir = Path(config.run_dir).resolve()

    model = build_model(config)
    if config.use_gpu and world > 1 and config.sync_batchnorm:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device)
    optimizer = build_optimizer(model, optim)
    scheduler = build_scheduler(optimizer, config)
    bank = EmbeddingBank.from_config(epg.bank)
    position = Position()
    torch.manual_seed(optim.seed * 1_000 + rank + 1)  # per-rank stream (dropout); saved in checkpoints
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            position = load_checkpoint(Path(directory), rank, device, model, optimizer, scheduler, bank)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    forward: nn.Module = Autocast(model, device.type) if bf16 else model
    log = MetricsLog(run_dir, position.step, optim.epochs) if rank == 0 else None
    batch_log = None
    if config.log_batches:
        (run_dir / "batches").mkdir(parents=True, exist_ok=True)
        path = run_dir / "batches" / f"rank-{rank}.jsonl"
        kept = [line for line in (path.read_text().splitlines() if path.is_file() else [])
                if json.loads(line)["step"] < position.step]  # an interrupted run's steps beyond its checkpoint go
        path.write_text("".join(f"{line}\n" for line in kept))
        batch_log = path.open("a")
    shard = ray.train.get_dataset_shard("train")
    last_metrics: dict[str, float] = {}

    def report(name: str) -> None:
        """Every rank reports (a barrier); rank 0 writes the model and state, every rank its RNG."""
        metrics = {**{k: v for k, v in last_metrics.items() if math.isfinite(v)}, "step": position.step,
                   "epoch": position.epoch, "batch": position.batch}
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(Path(tmp), rank, config, model, optimizer, scheduler, bank, position)
            ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp), checkpoint_dir_name=name)

    def stop_reached() -> bool:
        return config.stop_after_steps is not None and position.step >= config.stop_after_steps

    try:
        while position.epoch < optim.epochs and not stop_reached():
            epoch = position.epoch
            model.train()
            train_visual = apply_schedule(model, optim, epoch)
            if config.freeze_batchnorm:
                freeze_batchnorm(model)
            wrapped = forward  # on CPU (gloo) each rank's share of the gradient is summed after backward
            if world > 1 and device.type == "cuda":  # DDP overlaps the all-reduce with the backward pass
                wrapped = nn.parallel.DistributedDataParallel(forward, device_ids=[device.index])
            batches = shard.iter_batches(
                batch_size=optim.batch_size, batch_format="numpy", drop_last=True,
                prefetch_batches=config.prefetch_batches,
                local_shuffle_buffer_size=config.shuffle_buffer or None,
                local_shuffle_seed=optim.seed * 100_003 + epoch if config.shuffle_buffer else None,
            )
            skip = position.batch
            waited, started = 0.0, time.perf_counter()
            for index, numpy_batch in enumerate(batches):
                if index < skip:
                    started = time.perf_counter()
                    continue
                got = time.perf_counter()
                waited = got - started
                batch = to_torch_batch(numpy_batch, device)
                if batch_log is not None:
                    batch_log.write(json.dumps({"step": position.step, "epoch": epoch, "stream": batch["stream"].tolist(),
                                                "t": batch["t"].tolist(), "crop": numpy_batch["crop"].tolist()}) + "\n")
                    batch_log.flush()
                out = train_step(wrapped, batch, bank, epg, epoch=epoch, step=position.step)
                optimizer.zero_grad(set_to_none=True)
                if isinstance(wrapped, nn.parallel.DistributedDataParallel):
                    out.ddp_loss.backward()
                else:
                    out.loss.backward()
                    sum_gradients(model)
                if optim.grad_clip_norm is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), optim.grad_clip_norm)
                optimizer.step()
                scheduler.step()
                position.step += 1
                position.batch += 1
                done = time.perf_counter()
                last_metrics = {
                    "epoch": float(epoch), "step": float(position.step), **out.metrics,
                    "train_visual": float(train_visual),
                    "lr_visual": optimizer.param_groups[0]["lr"], "lr_audio": optimizer.param_groups[1]["lr"],
                    "samples_per_s": out.metrics["global_batch"] / max(done - started, 1e-9),
                    "data_wait_fraction": waited / max(done - started, 1e-9),
                }
                if log is not None:
                    log.step(last_metrics, log=position.step % config.log_every == 0 or position.step == 1)
                if stop_reached() or position.step % config.checkpoint_every == 0:
                    report(f"checkpoint_step{position.step:09d}")
                if stop_reached():
                    return
                started = time.perf_counter()
            if log is not None:
                summary = log.epoch_end(epoch)
                progress(f"epoch {epoch + 1}/{optim.epochs} done: {int(summary['steps'])} steps, "
                         f"mean loss {summary.get('loss', math.nan):.4f}")
            position.epoch, position.batch = epoch + 1, 0
            report(f"checkpoint_step{position.step:09d}_end_of_epoch{epoch + 1:04d}")
    finally:
        if log is not None:
            log.close()
        if batch_log is not None:
            batch_log.close()
