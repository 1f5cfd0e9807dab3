"""The single log-mel function of the project.

Ingest (clips Parquet), raw-video scoring and every test compute audio
features here, so training and scoring see exactly the same numbers.
torchaudio is not used (its registry build is CUDA-only); librosa is.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

from epg.configs import Config


@dataclass(frozen=True)
class LogMelConfig(Config):
    """Audio feature settings (DESIGN §3.1). One clip is one second of audio."""

    sample_rate: int = 44_100
    n_fft: int = 2048
    hop_length: int = 694
    n_mels: int = 128
    fmin: float = 0.0
    fmax: float | None = None
    amin: float = 1e-10

    def __post_init__(self) -> None:
        for name in ("sample_rate", "n_fft", "hop_length", "n_mels"):
            if getattr(self, name) <= 0:
                raise ValueError(f"LogMelConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.hop_length > self.n_fft:
            raise ValueError(f"LogMelConfig.hop_length ({self.hop_length}) must be <= n_fft ({self.n_fft})")
        if self.fmax is not None and not (self.fmin < self.fmax <= self.sample_rate / 2):
            raise ValueError(f"LogMelConfig.fmax must be in (fmin, sample_rate/2], got {self.fmax}")

    @property
    def frames_per_clip(self) -> int:
        """T: log-mel frames for one second (64 with the defaults; centred STFT)."""
        return 1 + self.sample_rate // self.hop_length

    @property
    def silence_db(self) -> float:
        """The value a silent input maps to (10·log10(amin))."""
        return float(10.0 * np.log10(self.amin))


def log_mel(waveforms: np.ndarray, config: LogMelConfig = LogMelConfig()) -> np.ndarray:
    """Log-mel spectrograms of 1-s mono clips.

    waveforms: float array [..., sample_rate] at ``config.sample_rate``.
    Returns float32 [..., n_mels, T] in dB (power_to_db with ref=1 and no
    top_db clipping, so every clip is on one absolute scale and silence is
    ``config.silence_db``).
    """
    waveforms = np.asarray(waveforms, dtype=np.float32)
    if waveforms.shape[-1] != config.sample_rate:
        raise ValueError(
            f"log_mel expects clips of exactly {config.sample_rate} samples (1 s), got shape {waveforms.shape}"
        )
    mel = librosa.feature.melspectrogram(
        y=waveforms,
        sr=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        n_mels=config.n_mels,
        fmin=config.fmin,
        fmax=config.fmax,
        power=2.0,
        center=True,
        pad_mode="constant",
    )
    db = librosa.power_to_db(mel, ref=1.0, amin=config.amin, top_db=None)
    return db.astype(np.float32)


def mel_bin_of_frequency(frequency_hz: float, config: LogMelConfig = LogMelConfig()) -> int:
    """Index of the mel band whose centre is nearest to ``frequency_hz``."""
    fmax = config.fmax if config.fmax is not None else config.sample_rate / 2
    centres = librosa.mel_frequencies(n_mels=config.n_mels + 2, fmin=config.fmin, fmax=fmax)[1:-1]
    return int(np.argmin(np.abs(centres - frequency_hz)))


def spectrum(logmel: np.ndarray) -> np.ndarray:
    """A second's spectrum: its log-mel [..., n_mels, T] averaged over time → float32 [..., n_mels] (dB).

    Scoring stores it beside the learned embeddings, so the anomaly job can measure how novel a
    second sounds without a model (``knn_spectrum``), in batch and live alike.
    """
    logmel = np.asarray(logmel, dtype=np.float32)
    if logmel.ndim < 2:
        raise ValueError(f"spectrum expects log-mel [..., n_mels, T], got shape {logmel.shape}")
    return logmel.mean(axis=-1, dtype=np.float32)
