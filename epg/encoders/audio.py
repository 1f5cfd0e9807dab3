"""f_a: ResNet-18 on a 1-channel log-mel, ending in a linear layer to d.

Written out here (torchvision is not a dependency) with torchvision's module
names, so ImageNet or audio ResNet-18 checkpoints in that layout load.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from epg.config import AudioConfig
from epg.encoders.checkpoint import load_matching, read_state_dict


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34 block)."""

    def __init__(self, dim_in: int, dim_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim_in, dim_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(dim_out, dim_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(dim_out)
        self.downsample: nn.Module | None = None
        if stride != 1 or dim_in != dim_out:
            self.downsample = nn.Sequential(
                nn.Conv2d(dim_in, dim_out, 1, stride=stride, bias=False), nn.BatchNorm2d(dim_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class AudioResNet(nn.Module):
    """Log-mel [B, 1, n_mels, T] in dB → embedding [B, d]."""

    def __init__(self, config: AudioConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.conv1 = nn.Conv2d(1, w[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        dims = (w[0],) + tuple(w)
        for index in range(4):
            blocks = [BasicBlock(dims[index], dims[index + 1], 1 if index == 0 else 2)]
            blocks += [BasicBlock(dims[index + 1], dims[index + 1], 1) for _ in range(config.blocks[index] - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.proj = nn.Linear(w[3], config.embed_dim)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if config.checkpoint is not None:
            load_audio_checkpoint(self, config.checkpoint)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        expected = (1, self.config.n_mels, self.config.frames)
        if logmel.dim() != 4 or tuple(logmel.shape[1:]) != expected:
            raise ValueError(f"AudioResNet expects log-mel [B, {', '.join(map(str, expected))}], got {tuple(logmel.shape)}")
        x = (logmel - self.config.input_mean_db) / self.config.input_std_db
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # type: ignore[operator]
        return self.proj(torch.flatten(self.avgpool(x), 1))


def load_audio_checkpoint(encoder: AudioResNet, path: str | Path, trust_pickle: bool = False) -> list[str]:
    """Load ResNet weights in torchvision's layout; ``fc.*`` and ``proj.*`` are excluded.

    A 3-channel ``conv1.weight`` (ImageNet) is summed over its input channels to fit
    the 1-channel log-mel input. Other mismatches raise ``CheckpointMismatchError``.
    """
    state = read_state_dict(path, trust_pickle=trust_pickle)

    def adapt(key: str, given: torch.Tensor, own: torch.Tensor) -> torch.Tensor:
        if key == "conv1.weight" and given.dim() == 4 and given.shape[1] == 3 and own.shape[1] == 1:
            return given.sum(dim=1, keepdim=True)
        return given

    return load_matching(
        encoder, state, exclude=lambda key: key.startswith(("fc.", "proj.")), source=str(path), adapt=adapt
    )
