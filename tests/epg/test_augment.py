import torch

from epg.augment import (
    AdditiveNoise,
    Brightness,
    ColorGain,
    Compose,
    Contrast,
    Gain,
    Mask,
    SpatialShift,
    audio_augment,
    visual_augment,
)
from epg.config import AugmentConfig


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def video() -> torch.Tensor:
    return torch.rand(4, 3, 5, 32, 32, generator=gen(100))


def logmel() -> torch.Tensor:
    return torch.randn(4, 1, 128, 64, generator=gen(101)) * 10 - 40


def test_seeded_and_composable():
    config = AugmentConfig(shift=0.1)
    for build, x in ((visual_augment, video()), (audio_augment, logmel())):
        first, again, other = build(config)(x, gen(1)), build(config)(x, gen(1)), build(config)(x, gen(2))
        assert first.shape == x.shape and torch.equal(first, again) and not torch.equal(first, other)
        assert not torch.equal(first, x)
    assert torch.equal(Compose([])(video(), gen(0)), video())


def test_visual_transforms():
    x = video()
    bright = Brightness(0.2)(x, gen(0))
    shift = (bright - x).flatten(1)
    unclipped = (x > 0.25) & (x < 0.75)
    per_clip = [shift[i][unclipped[i].flatten()] for i in range(4)]
    assert all(torch.allclose(s, s[0].expand_as(s), atol=1e-6) and s[0].abs() <= 0.2 for s in per_clip)
    assert len({round(float(s[0]), 6) for s in per_clip}) == 4  # one draw per clip, shared by its frames
    for transform in (Brightness(0.5), Contrast(0.5), ColorGain(0.5)):
        out = transform(x, gen(3))
        assert out.min() >= 0 and out.max() <= 1
    constant = torch.full_like(x, 0.5)
    assert torch.allclose(Contrast(0.5)(constant, gen(0)), constant)
    gains = ColorGain(0.3)(constant, gen(0)) / constant
    assert not torch.allclose(gains[:, 0], gains[:, 1])
    assert torch.equal(Brightness(0.0)(x, gen(0)), x)
    ramp = torch.arange(32.0).view(1, 1, 1, 1, 32).expand(2, 3, 5, 32, 32) / 32
    moved = SpatialShift(0.1)(ramp, gen(5))
    assert moved.shape == ramp.shape
    # A shift keeps the ramp's slope in the interior and moves it by at most 3 px.
    delta = (moved - ramp)[..., 4:28]
    assert delta.abs().max() <= 3 / 32 + 1e-6
    assert torch.equal(SpatialShift(0.0)(ramp, gen(5)), ramp)


def test_audio_transforms():
    x = logmel()
    gained = Gain(6.0)(x, gen(0)) - x
    assert all(torch.allclose(g, g.flatten()[0].expand_as(g), atol=1e-4) for g in gained)
    assert gained.abs().max() <= 6.0
    silent = torch.full((2, 1, 128, 64), -100.0)
    noisy = AdditiveNoise(1.0, -40.0, -40.0)(silent, gen(0))
    assert noisy.mean() > -45 and noisy.mean() < -38  # noise at -40 dB dominates -100 dB silence
    assert torch.equal(AdditiveNoise(0.0, -40.0, -40.0)(silent, gen(0)), silent)
    loud = torch.zeros(2, 1, 128, 64)
    assert (AdditiveNoise(1.0, -60.0, -60.0)(loud, gen(0)) - loud).abs().max() < 0.01  # adding in power, not dB
    masked = Mask(1, 10, dim=-1)(x, gen(4))
    changed_frames = (masked != x).any(dim=2).squeeze(1)  # [B, T]
    assert changed_frames.sum(1).max() <= 10 and changed_frames.any()
    freq = Mask(2, 16, dim=-2)(x, gen(4))
    changed_bins = (freq != x).any(dim=3).squeeze(1)
    assert changed_bins.sum(1).max() <= 32 and changed_bins.any()
    assert torch.equal(Mask(0, 10, dim=-1)(x, gen(4)), x)
