"""What f_v sees of a clip: the pixels, or what moves in them (``VisualConfig.input``).

A fixed camera's static scene and its slow light (day, night, clouds) dominate the pixel
variance, while the events are what moves. These transforms run inside the encoder's
forward, on one clip at a time, so ingest, training, scoring and a live service compute
them identically and the checkpoint's config records which one the model was trained on.

- ``raw``: the pixels, with the Kinetics normalisation of X3D's published weights.
- ``residual``: each frame minus the clip's per-pixel temporal median (the static scene
  within the second), scaled by the same std: what moved during the second remains.
- ``diff``: temporal differences ``x[t] - x[t-1]`` (the first slot repeats the first
  difference, so the clip keeps its length), scaled by the same std.
- ``normalized``: per-clip, per-channel standardisation (clip mean 0, std 1): removes the
  light level and contrast of the moment but keeps the static scene.
"""

from __future__ import annotations

import torch

# A floor on a clip's std for ``normalized``, so a flat (black) clip is not amplified into noise.
MIN_CLIP_STD = 0.02


def prepare_visual_input(video: torch.Tensor, kind: str, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``video`` [B, 3, F, H, W] in [0, 1] → the encoder's input of the same shape (see the module docstring).

    ``mean`` and ``std`` broadcast over [B, 3, F, H, W] (one value per channel).
    """
    if kind == "raw":
        return (video - mean) / std
    if kind == "residual":
        return (video - video.median(dim=2, keepdim=True).values) / std
    if kind == "diff":
        if video.shape[2] < 2:
            raise ValueError(f"visual input 'diff' needs at least 2 frames, got {video.shape[2]}")
        steps = video[:, :, 1:] - video[:, :, :-1]
        return torch.cat([steps[:, :, :1], steps], dim=2) / std
    if kind == "normalized":
        centred = video - video.mean(dim=(2, 3, 4), keepdim=True)
        spread = video.std(dim=(2, 3, 4), keepdim=True).clamp_min(MIN_CLIP_STD)
        return centred / spread
    raise ValueError(f"visual input must be raw, residual, diff or normalized, got {kind!r}")
