"""Checkpoints of a pretraining run: what they hold, how they are written and read back.

    checkpoint_step<N>/   model.pt (encoders), config.json (the run's PretrainConfig), train_state.pt
                          (optimizer, LR scheduler, step/epoch/position, embedding bank, learned
                          temperature), rng-rank<r>.pt

``write_model``/``load_model`` are the model-only part that scoring reads; it needs neither Ray
nor the training driver.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from epg.bank import EmbeddingBank
from epg.encoders import AVEncoders, build_encoders
from pipelines.train.config import PretrainConfig

CONFIG_FILE = "config.json"
MODEL_FILE = "model.pt"
STATE_FILE = "train_state.pt"


def build_model(config: PretrainConfig) -> AVEncoders:
    """The encoders with their seeded initialisation (identical on every worker)."""
    torch.manual_seed(config.epg.optim.seed)
    return build_encoders(config.epg.model)



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

