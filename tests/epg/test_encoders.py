import sys
from dataclasses import replace

import pytest
import torch

from epg.config import AudioConfig, ModelConfig, VisualConfig
from epg.encoders import (
    AudioResNet,
    AVEncoders,
    CheckpointMismatchError,
    X3DEncoder,
    build_encoders,
    load_audio_checkpoint,
    load_x3d_checkpoint,
    parameter_counts,
)

# The X3D-M forward/backward at 160x160 is the heaviest CPU test: both cores.
pytestmark = pytest.mark.torch_threads(2)


def test_pytorchvideo_imports_without_torchvision():
    from epg.compat import import_create_x3d

    create_x3d = import_create_x3d()
    assert callable(create_x3d)
    # The stub existed only during the import; nobody else is told torchvision is installed.
    assert "torchvision" not in sys.modules and "torchvision.ops" not in sys.modules


def test_default_encoders_forward_backward_and_parameter_counts():
    torch.manual_seed(0)
    model = build_encoders(ModelConfig())
    counts = parameter_counts(model)
    # X3D-M: 2.97M backbone + 2048×512 projection (the published x3d_m with its 400-class layer has 3.79M).
    assert 2.9e6 < counts["visual_backbone"] < 3.05e6
    assert counts["visual_projection"] == 2048 * 512 + 512
    assert 11.1e6 < counts["audio_backbone"] < 11.25e6  # ResNet-18 trunk with a 1-channel stem
    assert counts["audio_projection"] == 512 * 512 + 512
    video = torch.rand(2, 3, 5, 160, 160)
    audio = torch.randn(2, 1, 128, 64) * 20 - 40
    v, a = model(video, audio)
    assert v.shape == (2, 512) and a.shape == (2, 512)
    (v.square().mean() + a.square().mean()).backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    with pytest.raises(ValueError, match="X3DEncoder expects video"):
        model.visual(torch.rand(1, 3, 4, 160, 160))


def x3d_reference_layout(config: VisualConfig) -> dict[str, torch.Tensor]:
    """A state dict exactly as PyTorchVideo's create_x3d (Kinetics head, 400 classes) saves it."""
    from epg.compat import import_create_x3d

    net = import_create_x3d()(input_clip_length=16, input_crop_size=224, model_num_class=400,
                              width_factor=config.width_factor, depth_factor=config.depth_factor,
                              bottleneck_factor=config.bottleneck_factor, stem_dim_in=config.stem_dim,
                              head_dim_out=config.head_dim)
    for value in net.state_dict().values():
        if value.is_floating_point():
            value.uniform_(-1, 1)
    return net.state_dict()


@pytest.mark.parametrize("config", [VisualConfig(), ModelConfig.tiny().visual], ids=["x3d_m", "tiny"])
def test_x3d_loads_pytorchvideo_layout(tmp_path, config):
    reference = x3d_reference_layout(config)
    assert any(key.startswith("blocks.5.proj.") for key in reference)
    path = tmp_path / "X3D_M.pyth"
    torch.save({"model_state": reference, "epoch": 300}, path)
    # Converted checkpoints may lack BatchNorm's step counters; those are not weights.
    lean = {k: v for k, v in reference.items() if not k.endswith("num_batches_tracked")}
    torch.save({"model_state": lean}, tmp_path / "lean.pyth")
    assert len(load_x3d_checkpoint(X3DEncoder(config), tmp_path / "lean.pyth")) == len(lean) - 2
    encoder = X3DEncoder(config)
    loaded = load_x3d_checkpoint(encoder, path)
    own = encoder.net.state_dict()
    assert len(loaded) == len(own) - 2  # everything except the projection's weight and bias
    for key in loaded:
        assert torch.equal(own[key], reference[key]), key
    assert own["blocks.5.proj.weight"].shape == (config.embed_dim, config.head_dim)
    # Loading through the config path works too.
    from dataclasses import replace

    again = X3DEncoder(replace(config, checkpoint=str(path)))
    assert torch.equal(again.net.state_dict()["blocks.0.conv.conv_t.weight"], reference["blocks.0.conv.conv_t.weight"])


def test_x3d_mismatch_lists_keys(tmp_path):
    config = ModelConfig.tiny().visual
    reference = x3d_reference_layout(config)
    reference.pop("blocks.1.res_blocks.0.branch2.conv_a.weight")
    reference["blocks.9.extra.weight"] = torch.zeros(1)
    reference["blocks.0.norm.weight"] = torch.zeros(99)
    path = tmp_path / "bad.pt"
    torch.save(reference, path)
    with pytest.raises(CheckpointMismatchError) as error:
        load_x3d_checkpoint(X3DEncoder(config), path)
    message = str(error.value)
    assert "1 missing key(s) [blocks.1.res_blocks.0.branch2.conv_a.weight]" in message
    assert "1 unexpected key(s) [blocks.9.extra.weight]" in message
    assert "blocks.0.norm.weight: checkpoint (99,)" in message
    with pytest.raises(FileNotFoundError):
        load_x3d_checkpoint(X3DEncoder(config), tmp_path / "absent.pyth")


def test_audio_checkpoint_torchvision_layout(tmp_path):
    config = AudioConfig(widths=(4, 8, 8, 16), blocks=(2, 2, 2, 2), embed_dim=8)
    source = AudioResNet(config)
    state = {k: v.clone() for k, v in source.state_dict().items() if not k.startswith("proj.")}
    state["conv1.weight"] = torch.randn(4, 3, 7, 7)  # an ImageNet-style RGB stem
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 16), torch.randn(1000)
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    target = AudioResNet(config)
    load_audio_checkpoint(target, path)
    assert torch.allclose(target.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(target.layer3[1].conv2.weight, state["layer3.1.conv2.weight"])
    del state["layer4.0.downsample.1.running_mean"]
    torch.save(state, path)
    with pytest.raises(CheckpointMismatchError, match=r"1 missing key\(s\) \[layer4\.0\.downsample\.1\.running_mean\]"):
        load_audio_checkpoint(AudioResNet(config), path)


def test_av_encoders_pair_rows():
    model = AVEncoders(ModelConfig.tiny())
    with pytest.raises(ValueError, match="one row per sample"):
        model(torch.rand(2, 3, 5, 32, 32), torch.zeros(3, 1, 128, 64))


def cell_sensitivity(config: VisualConfig, seed: int = 0, cells: int = 8) -> torch.Tensor:
    """How much f_v's output moves when one cell of a cells x cells grid of the crop is redrawn
    (train mode, as the encoder trains: BatchNorm on batch statistics), relative to its norm."""
    torch.manual_seed(seed)
    encoder = X3DEncoder(config).train()
    side = config.crop_size // cells
    video = torch.rand(4, 3, config.frames, config.crop_size, config.crop_size)
    with torch.no_grad():
        base = encoder(video)[0]
        effect = torch.zeros(cells, cells)
        for i in range(cells):
            for j in range(cells):
                changed = video.clone()
                changed[:1, :, :, side * i:side * (i + 1), side * j:side * (j + 1)] = torch.rand(1, 3, config.frames, side, side)
                effect[i, j] = (encoder(changed)[0] - base).norm() / base.norm()
    return effect


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_from_scratch_the_visual_encoder_sees_every_cell_of_the_crop(preset):
    config = (ModelConfig.tiny() if preset == "tiny" else ModelConfig.small()).visual
    for seed in range(2):
        effect = cell_sensitivity(config, seed)
        assert effect.min() > 0.01 * effect.max(), effect  # no cell is ignored
        assert effect.median() > 0.2 * effect.max(), effect  # and none dominates
    # PyTorchVideo's init (zeroed residual branches, stride-2 shortcuts) sees the cells at multiples
    # of the total stride (the top-left one) and hardly anything else: the rest reach sample 0
    # through BatchNorm's batch statistics only.
    blind = cell_sensitivity(replace(config, init="pytorchvideo"))
    assert blind.median() < 0.05 * blind.max(), blind


def test_scratch_init_leaves_a_loaded_checkpoint_as_it_is(tmp_path):
    config = ModelConfig.tiny().visual
    torch.manual_seed(0)
    source = X3DEncoder(replace(config, init="pytorchvideo"))
    path = tmp_path / "x3d.pt"
    torch.save(source.net.state_dict(), path)
    loaded = X3DEncoder(replace(config, checkpoint=str(path)))
    for (name, mine), theirs in zip(loaded.net.state_dict().items(), source.net.state_dict().values()):
        if not name.startswith("blocks.5.proj."):
            assert torch.equal(mine, theirs), name
