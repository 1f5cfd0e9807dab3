"""f_v: PyTorchVideo X3D for 5-frame clips, its last layer a linear projection to d."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from epg.compat import import_create_x3d
from epg.config import VisualConfig
from epg.encoders.checkpoint import load_matching, read_state_dict
from epg.encoders.visual_input import prepare_visual_input

# The classification layer of create_x3d's head; in f_v it is the projection to d.
X3D_PROJECTION_PREFIX = "blocks.5.proj."


class X3DEncoder(nn.Module):
    """Video clip [B, 3, F, H, W] with values in [0, 1] → embedding [B, d].

    ``net`` is exactly ``create_x3d(...)`` (so its state dict is PyTorchVideo's layout)
    with ``model_num_class = d``, no softmax, and the input transform of ``config.input``
    (the Kinetics normalisation for ``raw``) applied here so callers pass plain [0, 1] pixels.
    """

    def __init__(self, config: VisualConfig) -> None:
        super().__init__()
        self.config = config
        create_x3d = import_create_x3d()
        self.net = create_x3d(
            input_channel=3,
            input_clip_length=config.frames,
            input_crop_size=config.crop_size,
            model_num_class=config.embed_dim,
            dropout_rate=config.dropout,
            width_factor=config.width_factor,
            depth_factor=config.depth_factor,
            bottleneck_factor=config.bottleneck_factor,
            stem_dim_in=config.stem_dim,
            head_dim_out=config.head_dim,
            head_activation=None,
        )
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1, 1), persistent=False)
        if config.checkpoint is not None:
            load_x3d_checkpoint(self, config.checkpoint)
        elif config.init == "scratch":
            init_from_scratch(self.net)

    @property
    def projection(self) -> nn.Linear:
        return self.net.blocks[-1].proj

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        expected = (3, self.config.frames, self.config.crop_size, self.config.crop_size)
        if video.dim() != 5 or tuple(video.shape[1:]) != expected:
            raise ValueError(f"X3DEncoder expects video [B, {', '.join(map(str, expected))}], got {tuple(video.shape)}")
        return self.net(prepare_visual_input(video, self.config.input, self.mean, self.std))


def init_from_scratch(net: nn.Module) -> None:
    """A start in which every residual branch and the projection carry signal (``VisualConfig.init``).

    Convolutions: Kaiming normal (fan-out, ReLU); BatchNorm: weight 1, bias 0 (create_x3d
    zeroes the last one of every residual branch); linear layers: PyTorch's default init
    (create_x3d draws them from N(0, 0.01)).
    """
    for module in net.modules():
        if isinstance(module, nn.Conv3d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            module.reset_parameters()


def load_x3d_checkpoint(encoder: X3DEncoder, path: str | Path, trust_pickle: bool = False) -> list[str]:
    """Load X3D weights in PyTorchVideo's layout (``blocks.*``, possibly wrapped as ``{"model_state": ...}``).

    The head's classification layer (``blocks.5.proj.*``, 400 Kinetics classes in the
    published ``x3d_m``) is excluded: f_v's projection to d takes its place. Any other
    missing, unexpected or mis-shaped key raises ``CheckpointMismatchError``.
    Returns the loaded keys.
    """
    state = read_state_dict(path, trust_pickle=trust_pickle)
    return load_matching(encoder.net, state, exclude=lambda key: key.startswith(X3D_PROJECTION_PREFIX), source=str(path))
