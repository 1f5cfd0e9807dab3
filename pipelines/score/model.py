"""The scoring model: which checkpoint, its id, and the encoders that turn decoded clips into embeddings.

    ScoringModel.load(path)     checkpoint dir or run dir -> encoders (eval), λ, checkpoint id
    ClipEmbedder                a Ray Data callable class (one model per actor) that is also
                                called in-process (``embed_video_file``), so both paths share
                                every number: v = mean over the two crops of f_v, a = f_a,
                                av_dist = D(v, a) with the run's λ, and the clip's spectrum.

Decisions (where the design is silent):
- ``--checkpoint`` is a checkpoint directory (model.pt + config.json, as pretraining writes
  them) or a run directory, whose latest checkpoint by step is used (ties: the last name).
- The checkpoint id is ``<run dir name>/<checkpoint dir name>@<first 12 hex of sha256(model.pt)>``:
  readable, and it changes when the weights do even if a directory is reused.
- Encoders run in fp32 in eval mode (BatchNorm on running statistics), on CPU or one GPU
  per actor, so an embedding does not depend on the batch it was computed in.
- Actors build the encoders from the model config with the pretrained-weight paths cleared
  (model.pt holds every weight) and get the weights from the driver through the object store,
  so workers need neither the checkpoint directory nor the Kinetics file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch

from epg.config import ModelConfig
from epg.distance import distance
from epg.encoders import AVEncoders, build_encoders
from epg.features import spectrum
from pipelines.score.config import EmbedError
from pipelines.train.checkpoint import CONFIG_FILE, MODEL_FILE, RAY_TRAIN_SNAPSHOT, load_model, registered_checkpoints

_CHECKPOINT_DIR = re.compile(r"^checkpoint_step(\d+)")


def is_checkpoint_dir(path: Path) -> bool:
    return (path / MODEL_FILE).is_file() and (path / CONFIG_FILE).is_file()


def resolve_checkpoint(path: str) -> Path:
    """A checkpoint directory as given, or the latest ``checkpoint_step<N>*`` of a run directory (of those Ray
    Train registered, when it kept a record: ``registered_checkpoints``)."""
    given = Path(path)
    if "://" in path:
        raise EmbedError(f"checkpoint {path!r}: only local (or mounted shared) paths are supported")
    if not given.exists():
        raise EmbedError(f"checkpoint {path!r} does not exist")
    if given.is_dir() and is_checkpoint_dir(given):
        return given.resolve()
    candidates = _registered_candidates(given) if given.is_dir() else []
    if not candidates and given.is_dir():  # Ray Train may have replaced the listed ones meanwhile (--keep-checkpoints)
        candidates = _registered_candidates(given)
    if not candidates:
        if given.is_dir() and any(_CHECKPOINT_DIR.match(c.name) for c in given.iterdir()):
            raise EmbedError(f"run directory {path!r}: none of its checkpoint_step*/ directories is listed as complete "
                             f"in {RAY_TRAIN_SNAPSHOT} (absent or unreadable: a run still writing its first "
                             "checkpoint, one cut short, or a run dir copied without it); pass a checkpoint "
                             "directory itself to read it anyway")
        raise EmbedError(
            f"checkpoint {path!r} is neither a checkpoint directory ({MODEL_FILE} + {CONFIG_FILE}) "
            f"nor a run directory with checkpoint_step*/ directories"
        )
    return max(candidates)[2].resolve()


def _registered_candidates(run_dir: Path) -> list[tuple[int, str, Path]]:
    """(step, name, path) of the run dir's whole checkpoints: those Ray Train registered, when it keeps a record
    (a copy cut short is never registered: never read), else every checkpoint directory."""
    registered = registered_checkpoints(run_dir)
    found = []
    for child in run_dir.iterdir():
        match = _CHECKPOINT_DIR.match(child.name)
        if match and child.is_dir() and is_checkpoint_dir(child) and (registered is None or child.name in registered):
            found.append((int(match.group(1)), child.name, child))
    return found


def checkpoint_id(checkpoint_dir: Path) -> str:
    digest = hashlib.sha256()
    with (checkpoint_dir / MODEL_FILE).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return f"{checkpoint_dir.parent.name}/{checkpoint_dir.name}@{digest.hexdigest()[:12]}"


def _without_weight_paths(config: ModelConfig) -> ModelConfig:
    return dataclasses.replace(
        config,
        visual=dataclasses.replace(config.visual, checkpoint=None),
        audio=dataclasses.replace(config.audio, checkpoint=None),
    )


@dataclass
class ScoringModel:
    """A loaded checkpoint: the encoders (eval, CPU), the run's model config and λ, and its id."""

    path: Path
    model_id: str
    model: AVEncoders
    model_config: ModelConfig
    lam: float

    @property
    def dim(self) -> int:
        return self.model_config.visual.embed_dim

    @property
    def n_mels(self) -> int:
        return self.model_config.audio.n_mels

    @classmethod
    def load(cls, checkpoint: str) -> "ScoringModel":
        path = resolve_checkpoint(checkpoint)
        try:
            model, config = load_model(str(path))
        except Exception as exc:
            raise EmbedError(f"checkpoint {str(path)!r} cannot be loaded: {type(exc).__name__}: {exc}") from None
        model_config = config.epg.model
        if model_config.visual.embed_dim != model_config.audio.embed_dim:
            raise EmbedError(f"checkpoint {str(path)!r}: visual and audio embedding sizes differ")
        return cls(path, checkpoint_id(path), model, model_config, float(config.epg.loss.distance_lam))

    def actor_args(self, state: Any) -> dict[str, Any]:
        """Constructor kwargs of ``ClipEmbedder`` (``state``: the state dict or an ObjectRef of it)."""
        return {"model_config": _without_weight_paths(self.model_config), "state": state, "lam": self.lam}


class ClipVectors(NamedTuple):
    """What scoring stores of each clip: v, a [n, d], D(v, a) [n] and the clip's spectrum [n, n_mels]."""

    v: np.ndarray
    a: np.ndarray
    av_dist: np.ndarray
    spectrum: np.ndarray


class ClipEmbedder:
    """Decoded clips -> ``ClipVectors``. One instance loads the model once (a Ray Data actor).

    In: ``video`` uint8 [n, 2, 3, F, H, W] (crop 0, crop 1), ``audio`` float32 [n, 1, n_mels, T],
    ``t`` int32 [n] (rows with t < 0 or a non-empty ``error`` carry no clip and get zeros);
    every other column is passed through. Out: the same rows with ``v_emb``, ``a_emb``
    float32 [n, d], ``av_dist`` float32 [n] and ``spectrum`` float32 [n, n_mels] (the log-mel's mean
    over time) instead of video and audio.
    A failure of the model becomes the rows' ``error`` (the stream fails, the job goes on).
    """

    def __init__(self, model_config: ModelConfig, state: Any, lam: float, num_gpus: float = 0.0,
                 num_cpus: float = 1.0, batch_size: int = 64) -> None:
        import ray

        if isinstance(state, ray.ObjectRef):
            state = ray.get(state)
        if num_gpus > 0:
            if not torch.cuda.is_available():
                raise RuntimeError("scoring actor was given a GPU but torch sees no CUDA device")
            self.device = torch.device("cuda")
        else:
            self.device = torch.device("cpu")
            torch.set_num_threads(max(1, int(num_cpus)))
        model = build_encoders(model_config)
        model.load_state_dict(state)
        self.model = model.to(self.device).eval()
        self.lam = lam
        self.dim = model_config.visual.embed_dim
        self.batch_size = batch_size

    @classmethod
    def in_process(cls, scoring: ScoringModel, batch_size: int = 32, device: str = "cpu") -> "ClipEmbedder":
        """The same embedder in this process (no Ray, torch threads untouched), on ``device``."""
        embedder = cls.__new__(cls)
        embedder.device = torch.device(device)
        embedder.model = scoring.model.to(embedder.device).eval()
        embedder.lam, embedder.dim, embedder.batch_size = scoring.lam, scoring.dim, batch_size
        return embedder

    @torch.inference_mode()
    def embed(self, video: np.ndarray, audio: np.ndarray) -> ClipVectors:
        """video uint8 [n, 2, 3, F, H, W], audio [n, 1, n_mels, T] -> the clips' vectors."""
        n = video.shape[0]
        vs, as_, ds = [], [], []
        for lo in range(0, n, self.batch_size):
            clips = torch.as_tensor(np.ascontiguousarray(video[lo:lo + self.batch_size]))
            m = clips.shape[0]
            pixels = clips.to(self.device).reshape(m * 2, *clips.shape[2:]).float().div_(255.0)
            v = self.model.visual(pixels).float().reshape(m, 2, -1).mean(dim=1)
            mel = torch.as_tensor(np.asarray(audio[lo:lo + self.batch_size], dtype=np.float32)).to(self.device)
            a = self.model.audio(mel).float()
            vs.append(v.cpu().numpy())
            as_.append(a.cpu().numpy())
            ds.append(distance(v, a, self.lam).cpu().numpy())
        spectra = spectrum(np.asarray(audio)[:, 0])
        if not vs:
            empty = np.zeros((0, self.dim), np.float32)
            return ClipVectors(empty, empty.copy(), np.zeros(0, np.float32), spectra)
        return ClipVectors(np.concatenate(vs), np.concatenate(as_), np.concatenate(ds).astype(np.float32), spectra)

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["t"])
        out = {k: np.asarray(v) for k, v in batch.items() if k not in ("video", "audio")}
        error = np.asarray(batch["error"], dtype=object).copy()
        scored = (np.asarray(batch["t"]) >= 0) & (error == "")
        v = np.zeros((n, self.dim), np.float32)
        a = np.zeros((n, self.dim), np.float32)
        d = np.zeros(n, np.float32)
        spectra = np.zeros((n, np.shape(batch["audio"])[-2]), np.float32)
        if scored.any():
            try:
                v[scored], a[scored], d[scored], spectra[scored] = self.embed(batch["video"][scored],
                                                                             batch["audio"][scored])
            except Exception as exc:  # e.g. out of GPU memory: these clips' streams fail, with the reason
                error[scored] = f"scoring failed: {type(exc).__name__}: {exc}"
        out.update(v_emb=v, a_emb=a, av_dist=d, spectrum=spectra, error=error)
        return out
