"""The per-worker training loop (Ray Train's ``train_loop_per_worker``): resume, then one EPG step per batch.

On CPU (gloo) each rank's share of the gradient is summed after backward; on GPUs DDP overlaps
the all-reduce with the backward pass, with bf16 autocast of the encoders (``auto``) and
SyncBatchNorm across workers. The loss and the mining always run in fp32.
"""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from epg.bank import EmbeddingBank, sum_gradients
from epg.optim import apply_schedule, build_optimizer
from epg.step import train_step
from epg.temperature import LearnedTemperature
from pipelines.train.checkpoint import Position, build_model, load_checkpoint, save_checkpoint
from pipelines.train.config import STORAGE_ERRNOS, PretrainConfig, RunDirWriteError, storage_reason
from pipelines.train.data import inspect_clips, to_torch_batch
from pipelines.train.holdout import (describe, holdout_cutoffs, holdout_diagnostics, load_holdout,
                                     write_init_diagnostics)
from pipelines.train.metrics import MetricsLog


def build_scheduler(optimizer: torch.optim.Optimizer, config: PretrainConfig,
                    total_steps: int | None = None) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear learning-rate warm-up over ``lr_warmup_steps`` steps, then constant (``lr_schedule="constant"``)
    or a cosine decay to 0 at ``total_steps`` (``"cosine"``; the driver estimates the run's step count)."""
    warmup = config.lr_warmup_steps
    if config.lr_schedule == "cosine" and not total_steps:
        raise ValueError("the cosine learning-rate schedule needs the run's total number of steps")

    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.lr_schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


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



def train_loop(loop_config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: resume, then one EPG step per batch until the last epoch. A write
    into the run dir that the storage refuses is ``RunDirWriteError``, naming the path."""
    try:
        _train(loop_config)
    except OSError as exc:
        if isinstance(exc, RunDirWriteError) or exc.errno not in STORAGE_ERRNOS:
            raise
        where = exc.filename or PretrainConfig.from_dict(loop_config["config"]).run_dir
        raise RunDirWriteError(f"writing {where}: {storage_reason(exc)}") from exc


def _train(loop_config: dict[str, Any]) -> None:
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
    temperature = LearnedTemperature(epg.loss.temperature).to(device) if epg.loss.learn_temperature else None
    optimizer = build_optimizer(model, optim, temperature)
    scheduler = build_scheduler(optimizer, config, loop_config.get("total_steps"))
    bank = EmbeddingBank.from_config(epg.bank)
    position = Position()
    torch.manual_seed(optim.seed * 1_000 + rank + 1)  # per-rank stream (dropout); saved in checkpoints
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            position = load_checkpoint(Path(directory), rank, device, model, optimizer, scheduler, bank,
                                       temperature)
    bf16 = config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")
    forward: nn.Module = Autocast(model, device.type) if bf16 else model
    log = MetricsLog(run_dir, position.step, optim.epochs, position.epoch) if rank == 0 else None
    holdout = None
    if rank == 0 and config.holdout_fraction > 0:
        info = inspect_clips(config.clips, config.skip_bad_shards)
        if "files" in loop_config:  # without the files the driver found damaged (--skip-bad-shards)
            info = dataclasses.replace(info, files=tuple(loop_config["files"]))
        holdout = load_holdout(info, holdout_cutoffs(info, config.holdout_fraction), config.holdout_max_clips)
        if holdout is not None and position.step == 0:  # the random-init anchor, before the first step
            initial = holdout_diagnostics(model, holdout, epg.loss.distance_lam, device)
            write_init_diagnostics(run_dir / "metrics", initial)
            log.progress(f"random init{describe(initial, trained=False)}")
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
        """Every rank reports (a barrier); rank 0 writes the model and state, every rank its RNG. A checkpoint
        that cannot be copied into the run dir is removed there (Ray Train never registered it) and the error
        names it."""
        metrics = {**{k: v for k, v in last_metrics.items() if math.isfinite(v)}, "step": position.step,
                   "epoch": position.epoch, "batch": position.batch}
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(Path(tmp), rank, config, model, optimizer, scheduler, bank, position, temperature)
            try:
                ray.train.report(metrics, checkpoint=Checkpoint.from_directory(tmp), checkpoint_dir_name=name)
            except OSError as exc:
                if rank == 0:
                    shutil.rmtree(run_dir / name, ignore_errors=True)
                raise RunDirWriteError(f"writing checkpoint {run_dir / name}: {storage_reason(exc)}") from exc

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
                out = train_step(wrapped, batch, bank, epg, epoch=epoch, step=position.step,
                                 temperature=temperature)
                optimizer.zero_grad(set_to_none=True)
                if isinstance(wrapped, nn.parallel.DistributedDataParallel):
                    out.ddp_loss.backward()
                    if temperature is not None:  # outside DDP: its gradient is the same on every rank, × world
                        temperature.log_temperature.grad /= world
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
                diagnostics = holdout_diagnostics(model, holdout, epg.loss.distance_lam, device) if holdout else {}
                summary = log.epoch_end(epoch, diagnostics)
                log.progress(f"epoch {epoch + 1}/{optim.epochs} done: {int(summary['steps'])} steps, "
                             f"mean loss {summary.get('loss', math.nan):.4f}{describe(diagnostics)}")
            position.epoch, position.batch = epoch + 1, 0
            report(f"checkpoint_step{position.step:09d}_end_of_epoch{epoch + 1:04d}")
    finally:
        if log is not None:
            log.close()
        if batch_log is not None:
            batch_log.close()
