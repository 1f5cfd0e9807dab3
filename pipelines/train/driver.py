"""The pretraining driver (``jobs/pretrain.py``): check everything, record the config, run Ray Train.

    run_pretrain(PretrainConfig(...))      # checks, config record, TorchTrainer.fit()
      └─ pipelines.train.loop.train_loop   # every worker

Run directory (``--run-dir``; Ray Train's ``RunConfig(storage_path=parent, name=basename)``):
config.json (the full PretrainConfig, written before training), checkpoint_step<N>/
(``pipelines.train.checkpoint``), metrics/ and tensorboard/ (``pipelines.train.metrics``),
batches/rank-<r>.jsonl (``log_batches``). Rerunning with the same run dir resumes from its
latest checkpoint; its method settings must equal the recorded ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelines.media.storage import OutputStore
from pipelines.runtime.cluster import check_capacity, ensure_ray
from pipelines.runtime.lock import output_lock
from pipelines.runtime.shards import damaged_shards, shard_footer
from pipelines.train.checkpoint import CONFIG_FILE, RAY_TRAIN_SNAPSHOT, REGISTRY_KEY
from pipelines.train.config import (OPERATIONAL_FIELDS, STORAGE_ERRNOS, PretrainConfig, PretrainError, RunDirWriteError,
                                    storage_reason)
from pipelines.train.data import ClipsError, ClipsInfo, build_dataset, check_compatible, inspect_clips, load_label_index
from pipelines.train.holdout import holdout_cutoffs
from pipelines.train.loop import train_loop
from pipelines.train.metrics import follow_progress


@dataclass
class PretrainResult:
    run_dir: str
    checkpoint: str | None
    metrics: dict[str, Any]



def prepare_run(config: PretrainConfig) -> tuple[ClipsInfo, dict[str, dict[int, int]] | None, list[str]]:
    """All checks that need no Ray: clips, model shapes, labels, and a recorded config that matches."""
    try:
        info = inspect_clips(config.clips, config.skip_bad_shards)
        for damaged in info.skipped:
            print(f"pretrain: left out (--skip-bad-shards): {damaged}", file=sys.stderr)
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
              "crop_size": info.crop_size, "files": len(info.files)}, "label_classes": class_names,
              REGISTRY_KEY: RAY_TRAIN_SNAPSHOT}
    path = run_dir / CONFIG_FILE
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(json.dumps(record, indent=1))
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in STORAGE_ERRNOS:
            raise RunDirWriteError(f"writing {path}: {storage_reason(exc)}") from None
        raise
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


def estimated_steps(config: PretrainConfig, info: ClipsInfo) -> int:
    """The run's optimizer steps if every clip has audio and video (the cosine schedule ends there)."""
    per_epoch = int(2 * info.rows * (1 - config.holdout_fraction)) // (config.workers * config.epg.optim.batch_size)
    return max(1, per_epoch) * config.epg.optim.epochs


def forget_unregistered_checkpoints(run_dir: Path) -> None:
    """Before training resumes into ``run_dir`` (under its lock): checkpoint directories older than the newest
    one Ray Train registered that it does not list are removed (copies cut short, leftovers of its own
    clean-up); newer unregistered ones (a copy a killed run cut short) are left, since readers ignore them
    and the resumed run writes the same step again. A registry Ray Train left unreadable (its in-place
    rewrite cut short by a full disk) stops the run naming it: Ray Train could not resume from it."""
    snapshot = run_dir / RAY_TRAIN_SNAPSHOT
    try:
        text = snapshot.read_text()
    except FileNotFoundError:
        return  # nothing registered yet
    try:
        results = json.loads(text)["checkpoint_results"]
        registered = {r["checkpoint_dir_name"] for r in results}
    except (ValueError, KeyError, TypeError):
        raise PretrainError(f"{snapshot}: Ray Train's record of this run's checkpoints cannot be read (cut short by a "
                            f"full disk?); move it aside to train this run again from step 0, or use a new --run-dir") \
            from None
    steps = {name: _checkpoint_step(name) for name in registered}
    newest = max((step for step in steps.values() if step is not None), default=-1)
    for path in sorted(run_dir.glob("checkpoint_step*")):
        step = _checkpoint_step(path.name)
        if path.is_dir() and path.name not in registered and step is not None and step <= newest:
            shutil.rmtree(path, ignore_errors=True)


def _checkpoint_step(name: str) -> int | None:
    digits = name[len("checkpoint_step"):len("checkpoint_step") + 9]
    return int(digits) if name.startswith("checkpoint_step") and digits.isdigit() else None


def without_damaged_files(info: ClipsInfo, skip: bool) -> ClipsInfo:
    """``info`` once every clips file was read (``damaged_shards``): ``PretrainError`` naming a file whose data
    does not decode, or with ``skip`` the clips without those files (their rows no longer counted)."""
    damaged = damaged_shards(list(info.files), info.root)
    if damaged and not skip:
        more = f" (and {len(damaged) - 1} more damaged file(s))" if len(damaged) > 1 else ""
        raise PretrainError(next(iter(damaged.values())) + more)
    if not damaged:
        return info
    for why in damaged.values():
        print(f"pretrain: left out (--skip-bad-shards): {why.split('; ')[0]}", file=sys.stderr)
    files = tuple(f for f in info.files if f not in damaged)
    if not files:
        raise PretrainError(f"clips directory {info.root!r}: every file is damaged")
    rows = sum(shard_footer(f, OutputStore(info.root).fs).num_rows for f in files)  # the LR schedule's length
    return dataclasses.replace(info, files=files, rows=rows, skipped=info.skipped + tuple(damaged.values()))


def storage_failure(exc: Exception, run_dir: Path) -> RunDirWriteError | None:
    """The run dir's storage failure behind a failed ``trainer.fit()``, if that is what it was: a worker's
    ``RunDirWriteError`` (it names the file), or the controller's own write (Ray Train's checkpoint registry)
    refused by the storage."""
    failures = list(getattr(exc, "worker_failures", {}).values())  # ray.train.WorkerGroupError
    refused = [e for e in failures if isinstance(e, RunDirWriteError)]
    if refused:
        return RunDirWriteError(str(refused[0]))
    cause = getattr(exc, "controller_failure", None)  # ray.train.ControllerError
    if isinstance(cause, OSError) and cause.errno in STORAGE_ERRNOS:
        return RunDirWriteError(f"writing {cause.filename or run_dir}: {storage_reason(cause)}")
    return None


def run_pretrain(config: PretrainConfig, ray_address: str | None = None) -> PretrainResult:
    """Check everything, record the config, train. Resumes from the run dir's latest checkpoint.
    ``OutputInUse`` while another run trains into the run dir."""
    config = absolute_paths(config)
    info, labels, names = prepare_run(config)  # every check before anything is written
    ensure_ray(ray_address)
    check_capacity("workers", config.workers, config.cpus_per_worker, config.gpus_per_worker, PretrainError,
                   spare_for="the Ray Data decode tasks", hint="lower --workers or --cpus-per-worker")
    with output_lock(config.run_dir, "pretrain"):
        return _pretrain(config, info, labels, names)


def _pretrain(config: PretrainConfig, info: ClipsInfo, labels: dict[str, dict[int, int]] | None,
              names: list[str]) -> PretrainResult:
    from ray.data import ExecutionOptions
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from pipelines.train.process_group import BoundTorchConfig

    info = without_damaged_files(info, config.skip_bad_shards)
    write_config(config, info, names)
    run_dir = Path(config.run_dir).resolve()
    forget_unregistered_checkpoints(run_dir)

    dataset = build_dataset(info, labels, shuffle_seed=config.epg.optim.seed if config.global_shuffle else None,
                            holdout=holdout_cutoffs(info, config.holdout_fraction))
    options = ExecutionOptions(preserve_order=True)  # a deterministic split across workers (exact resume)
    dataset.context.max_errored_blocks = 0  # a clip that cannot be decoded stops training, never silently shrinks it
    dataset.context.enable_progress_bars = False  # the rank-0 progress line says how training goes
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"config": config.to_dict(), "total_steps": estimated_steps(config, info),
                           "files": list(info.files)},
        torch_config=BoundTorchConfig(backend="nccl" if config.use_gpu else "gloo"),
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
            logging_config=LoggingConfig(log_level="WARNING"),  # Ray Train's own INFO lines: log files only
        ),
        datasets={"train": dataset},
        dataset_config=DataConfig(execution_options=options),
    )
    with follow_progress(run_dir):  # rank 0's progress lines, printed here
        try:
            result = trainer.fit()
        except Exception as exc:  # a full disk or a lost filesystem: said as such, naming the path
            refused = storage_failure(exc, run_dir)
            if refused is not None:
                raise refused from None
            raise
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    return PretrainResult(str(run_dir), checkpoint, dict(result.metrics or {}))
