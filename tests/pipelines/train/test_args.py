"""jobs/pretrain.py's flags → PretrainConfig → the checkpoint that scoring loads."""

from __future__ import annotations

import pytest
import torch

from epg.config import EPGConfig
from pipelines.train.args import config_from_args, parse_args
from pipelines.train.checkpoint import build_model, load_model, write_model


def test_visual_input_defaults_to_the_dataclass_and_travels_with_the_checkpoint(tmp_path):
    base = ["--clips", "clips", "--run-dir", str(tmp_path / "run"), "--preset", "tiny"]
    assert config_from_args(parse_args(base)).epg.model.visual.input == EPGConfig().model.visual.input
    config = config_from_args(parse_args([*base, "--visual-input", "residual", "--visual-init", "pytorchvideo"]))
    assert (config.epg.model.visual.input, config.epg.model.visual.init) == ("residual", "pytorchvideo")

    write_model(tmp_path / "ckpt", config, build_model(config).eval())
    model, loaded = load_model(str(tmp_path / "ckpt"))
    assert loaded.epg.model.visual.input == "residual" and model.visual.config.input == "residual"
    # the loaded model applies it: a static scene behind the clip does not change its embedding
    video = torch.rand(2, 3, 5, 32, 32) * 0.5
    scene = torch.rand(1, 3, 1, 32, 32) * 0.3
    with torch.no_grad():
        assert torch.allclose(model.visual(video), model.visual(video + scene), atol=1e-4)


def test_an_unknown_visual_input_is_refused_by_name(capsys):
    with pytest.raises(SystemExit):
        parse_args(["--clips", "c", "--run-dir", "r", "--visual-input", "edges"])
    assert "--visual-input" in capsys.readouterr().err
