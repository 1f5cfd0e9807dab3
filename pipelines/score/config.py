"""Scoring settings (``EmbedConfig``), the errors scoring raises, and what every row records of how it was made."""

from __future__ import annotations

import math
from dataclasses import dataclass

from epg.configs import Config
from pipelines.ingest.config import FRAME_BACKENDS, FRAME_SKIP_MODES

CONFIG_FILE = "_embed_config.json"
# How rows are made; part of every stream's config hash (a change re-scores).
SCORING = {"version": 2, "v_emb": "mean of the two crops' f_v", "a_emb": "f_a", "av_dist": "D(v, a) with the run's lambda",
           "spectrum": "the log-mel's mean over time",
           "rows": "clips with audio and video", "precision": "fp32", "mode": "eval"}


class EmbedError(ValueError):
    """Bad input to scoring (checkpoint, clips, videos, output); the message names it and says why."""


@dataclass(frozen=True)
class EmbedConfig(Config):
    """How scoring runs; only the video decode fields change the rows (they are in the hash via IngestConfig)."""

    batch_size: int = 64  # clips per model call in an actor
    # Model actors in the pool; 0 chooses from the cluster: one per GPU share with gpus_per_actor > 0,
    # else one per cpus_per_actor CPUs (CPU actors read and decode their own inputs, see decode_cpus).
    # The pool is never larger than the clips slices or the video windows to score; _embed_config.json
    # records the count the run used.
    actors: int = 0
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0  # 1 on a GPU cluster: one GPU per actor
    clips_per_task: int = 64  # clips input: rows per read-and-decode task (a slice of a file; one model batch)
    rows_per_file: int = 1200  # rows per embeddings Parquet part
    compression: str = "zstd"
    window_seconds: int = 60  # videos: seconds decoded per task
    frame_backend: str = "pyav"  # videos: as in ingest
    jpeg_quality: int = 90  # videos: the crops go through the same JPEG round trip as ingested clips
    # videos: True puts the crops through ingest's JPEG round trip (the embeddings of the same video ingested,
    # then scored); False hands the raw crops to the model (faster; bench/score.py says how far embeddings move)
    jpeg_round_trip: bool = True
    frame_skip: str = "none"  # videos: frames the decoder may leave out, as in ingest (IngestConfig.frame_skip)
    frame_skip_tolerance: float = 1.0  # videos: as in ingest
    decode_timeout: float = 600.0  # videos: seconds a window's decode may take, as in ingest (0: no bound)
    # clips: leave out a stream whose manifest or a file of it cannot be read (said in the summary), instead
    # of stopping with an error that names the file
    skip_bad_shards: bool = False

    config_error = EmbedError

    def __post_init__(self) -> None:
        for name in ("batch_size", "clips_per_task", "rows_per_file", "window_seconds"):
            if getattr(self, name) < 1:
                raise EmbedError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)!r}")
        if self.actors < 0:
            raise EmbedError(f"actors must be >= 0 (0: chosen from the cluster), got {self.actors!r}")
        if self.cpus_per_actor <= 0 or self.gpus_per_actor < 0:
            raise EmbedError(f"cpus-per-actor must be > 0 and gpus-per-actor >= 0, got {self.cpus_per_actor}, "
                             f"{self.gpus_per_actor}")
        if self.frame_backend not in FRAME_BACKENDS:
            raise EmbedError(f"frame-backend must be one of {FRAME_BACKENDS}, got {self.frame_backend!r}")
        if self.frame_skip not in FRAME_SKIP_MODES:
            raise EmbedError(f"frame-skip must be one of {FRAME_SKIP_MODES}, got {self.frame_skip!r}")
        if not math.isfinite(self.decode_timeout) or self.decode_timeout < 0:
            raise EmbedError(f"decode-timeout must be >= 0 (0: no bound), got {self.decode_timeout}")
        if self.frame_skip_tolerance < 1:
            raise EmbedError(f"frame-skip-tolerance must be >= 1 source frame, got {self.frame_skip_tolerance}")

    @property
    def decode_cpus(self) -> float:
        """CPUs of one decode task. With CPU actors it equals an actor's, so Ray Data fuses the decode
        into the actors: each actor decodes its own inputs and then runs the model, and no CPU is
        held back for a decode stage. GPU actors leave the decode to CPU tasks of their own."""
        return self.cpus_per_actor if self.gpus_per_actor == 0 else 1.0

    def actors_for(self, cpus: float, gpus: float, spare_cpus: float = 0.0) -> int:
        """The actor count to run on a cluster of ``cpus`` and ``gpus``: ``actors``, or when it is 0 as
        many as fit beside ``spare_cpus`` CPUs for the stages that run in tasks of their own; at least 1."""
        if self.actors:
            return self.actors
        if self.gpus_per_actor > 0:
            return max(1, int(gpus // self.gpus_per_actor))
        return max(1, int((cpus - spare_cpus) // self.cpus_per_actor))
