"""Checkpoints of a pretraining run: what they hold, how they are written and read back.

    checkpoint_step<N>/   model.pt (encoders), config.json (the run's PretrainConfig), train_state.pt
                          (optimizer, LR scheduler, step/epoch/position, embedding bank, learned
                          temperature), rng-rank<r>.pt

``write_model``/``load_model`` are the model-only part that scoring reads; it needs neither Ray
nor the training driver. ``write_random_init`` writes an untrained checkpoint (tests, benchmarks).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from epg.bank import EmbeddingBank
from epg.encoders import AVEncoders, build_encoders
from epg.config import EPGConfig, OptimConfig
from pipelines.train.config import PRESETS, PretrainConfig

CONFIG_FILE = "config.json"
MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"
# Ray Train's record, in the run dir, of the checkpoints it registered (after their copy was complete).
RAY_TRAIN_SNAPSHOT = "checkpoint_manager_snapshot.json"
# The run record's (run_dir/config.json) key naming where the run's registered checkpoints are listed.
REGISTRY_KEY = "checkpoint_registry"


def build_model(config: PretrainConfig) -> AVEncoders:
    """The encoders with their seeded initialisation (identical on every worker)."""
    torch.manual_seed(config.epg.optim.seed)
    return build_encoders(config.epg.model)


def write_random_init(run_dir: Path, preset: str = "tiny", clips: str = "unused", seed: int = 0) -> Path:
    """``run_dir/checkpoint_step000000000``: ``preset``'s encoders at their random initialisation (seed
    ``seed``), written as pretraining writes a checkpoint: what scoring reads when a test or a benchmark
    needs a model and no training (scoring speed and faults do not depend on the weights)."""
    epg = EPGConfig(model=PRESETS[preset](None), optim=OptimConfig(seed=seed))
    config = PretrainConfig(clips=str(clips), run_dir=str(run_dir), epg=epg, preset=preset)
    checkpoint = Path(run_dir) / "checkpoint_step000000000"
    write_model(checkpoint, config, build_model(config).eval())
    return checkpoint


def registered_checkpoints(run_dir: Path) -> set[str] | None:
    """The names of the checkpoint directories Ray Train registered in ``run_dir``: whole ones (a checkpoint is
    registered once its copy into the run dir completed; one whose copy a killed process or a full disk cut
    short is not). A pretraining run dir (its record names the registry, ``REGISTRY_KEY``) without a readable
    registry has none registered yet; None for a run dir without that record (a checkpoint written without
    Ray Train, or by an earlier version: every checkpoint directory counts)."""
    run_dir = Path(run_dir)
    registered_by_ray = _registry_of(run_dir) == RAY_TRAIN_SNAPSHOT
    for attempt in range(3):  # Ray rewrites the file in place: a read can meet it half-written
        try:
            data = json.loads((run_dir / RAY_TRAIN_SNAPSHOT).read_text())
            results = data["checkpoint_results"]
            return {r["checkpoint_dir_name"] for r in results
                    if isinstance(r, dict) and isinstance(r.get("checkpoint_dir_name"), str)}
        except FileNotFoundError:
            break
        except (OSError, ValueError, KeyError, TypeError):
            time.sleep(0.2)
    return set() if registered_by_ray else None


def _registry_of(run_dir: Path) -> str | None:
    try:
        record = json.loads((run_dir / CONFIG_FILE).read_text())
        return record.get(REGISTRY_KEY) if isinstance(record, dict) else None
    except (OSError, ValueError):
        return None


def load_model(checkpoint_dir: str) -> tuple[AVEncoders, PretrainConfig]:
    """The trained encoders (eval mode) and the run's config from a checkpoint directory."""
    config = PretrainConfig.from_dict(json.loads((Path(checkpoint_dir) / CONFIG_FILE).read_text())["config"])
    model = build_encoders(config.epg.model)
    model.load_state_dict(torch.load(Path(checkpoint_dir) / MODEL_FILE, map_location="cpu"))
    return model.eval(), config



@dataclass
class Position:
    """Where training stands: ``step`` optimizer steps done; ``batch`` batches of ``epoch`` done."""

    epoch: int = 0
    batch: int = 0
    step: int = 0


def save_checkpoint(directory: Path, rank: int, config: PretrainConfig, model: AVEncoders, optimizer, scheduler,
                    bank: EmbeddingBank, position: Position, temperature: torch.nn.Module | None = None) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    torch.save(rng, directory / f"rng-rank{rank}.pt")
    if rank != 0:
        return
    write_model(directory, config, model)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "bank": bank.state_dict(),
                "position": dataclasses.asdict(position),
                "temperature": temperature.state_dict() if temperature is not None else None}, directory / STATE_FILE)


def write_model(directory: Path, config: PretrainConfig, model: AVEncoders) -> None:
    """The part of a checkpoint that ``load_model`` (and scoring) reads: the encoders and the run's config."""
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), directory / MODEL_FILE)
    (directory / CONFIG_FILE).write_text(json.dumps({"config": config.to_dict()}, indent=1))


def load_checkpoint(directory: Path, rank: int, device: torch.device, model: AVEncoders, optimizer, scheduler,
                    bank: EmbeddingBank, temperature: torch.nn.Module | None = None) -> Position:
    model.load_state_dict(torch.load(directory / MODEL_FILE, map_location=device))
    state = torch.load(directory / STATE_FILE, map_location=device)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    bank.load_state_dict(state["bank"])
    if temperature is not None:
        temperature.load_state_dict(state["temperature"])
    rng_file = directory / f"rng-rank{rank}.pt"
    if rng_file.is_file():  # absent when the run resumes with more workers than it had
        rng = torch.load(rng_file, map_location="cpu")
        torch.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state(rng["cuda"])
    return Position(**state["position"])

