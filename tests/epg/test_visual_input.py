"""What f_v sees of a clip: a fixed camera's static scene and light level drop out where they should."""

from dataclasses import replace

import pytest
import torch

from epg.config import ModelConfig, VisualConfig
from epg.encoders.visual import X3DEncoder
from epg.encoders.visual_input import prepare_visual_input

MEAN = torch.tensor(VisualConfig().mean).view(1, 3, 1, 1, 1)
STD = torch.tensor(VisualConfig().std).view(1, 3, 1, 1, 1)


def moving_square(frames: int = 5, size: int = 32) -> torch.Tensor:
    """A bright 6-px square crossing a dark clip left to right, one clip [1, 3, F, H, W]."""
    video = torch.full((1, 3, frames, size, size), 0.1)
    for f in range(frames):
        video[:, :, f, 10:16, 4 + 5 * f:10 + 5 * f] = 0.9
    return video


@pytest.mark.parametrize("kind", ["residual", "diff"])
def test_a_static_scene_added_to_every_frame_drops_out(kind):
    video = moving_square()
    scene = torch.rand(1, 3, 1, 32, 32) * 0.3  # the same picture behind every frame
    with_scene = prepare_visual_input(video + scene, kind, MEAN, STD)
    assert torch.allclose(with_scene, prepare_visual_input(video, kind, MEAN, STD), atol=1e-5)
    # the raw input keeps it
    assert not torch.allclose(prepare_visual_input(video + scene, "raw", MEAN, STD),
                              prepare_visual_input(video, "raw", MEAN, STD), atol=1e-3)


@pytest.mark.parametrize("kind", ["residual", "diff"])
def test_what_moves_remains(kind):
    x = prepare_visual_input(moving_square(), kind, MEAN, STD)
    moved = x[0, 0, :, 10:16].abs().amax()
    assert moved > 1.0  # the square's pixels carry signal (0.8 / 0.225 in the raw scale)
    assert x[0, 0, :, 20:].abs().amax() == 0  # the empty rows below carry none


def test_normalized_removes_the_light_level_and_contrast():
    video = moving_square()
    darker = 0.5 * video + 0.02  # dusk: less light, less contrast
    assert torch.allclose(prepare_visual_input(darker, "normalized", MEAN, STD),
                          prepare_visual_input(video, "normalized", MEAN, STD), atol=1e-4)
    flat = torch.zeros(1, 3, 5, 32, 32)
    assert torch.isfinite(prepare_visual_input(flat, "normalized", MEAN, STD)).all()


def test_unknown_input_and_too_few_frames_are_named():
    with pytest.raises(ValueError, match="input"):
        VisualConfig(input="edges")
    with pytest.raises(ValueError, match="frames"):
        VisualConfig(input="diff", frames=1)


@pytest.mark.parametrize("kind", ["residual", "diff", "normalized"])
def test_the_encoder_applies_its_configured_input(kind):
    """The transform is part of the model: the encoder's output on a clip ignores a static scene under residual/diff."""
    config = replace(ModelConfig.tiny().visual, input=kind)
    torch.manual_seed(0)
    encoder = X3DEncoder(config).eval()
    video = moving_square().repeat(2, 1, 1, 1, 1)
    scene = torch.rand(1, 3, 1, 32, 32) * 0.3
    with torch.no_grad():
        plain, shifted = encoder(video), encoder(video + scene)
    if kind == "normalized":
        assert not torch.allclose(plain, shifted, atol=1e-4)  # it keeps the scene
    else:
        assert torch.allclose(plain, shifted, atol=1e-4)
