import torch

from epg.config import ModelConfig, OptimConfig
from epg.encoders import build_encoders
from epg.optim import apply_schedule, build_optimizer


def test_groups_and_audio_first_schedule():
    torch.manual_seed(0)
    model = build_encoders(ModelConfig.tiny())
    config = OptimConfig(lr_visual=1e-5, lr_audio=1e-3, weight_decay_visual=0.0, schedule="audio_first", audio_only_epochs=1)
    optimizer = build_optimizer(model, config)
    groups = {g["name"]: g for g in optimizer.param_groups}
    assert groups["visual"]["lr"] == 1e-5 and groups["audio"]["lr"] == 1e-3 and groups["visual"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(model.parameters()))
    model.train()
    assert apply_schedule(model, config, epoch=0) is False
    assert not any(p.requires_grad for p in model.visual.parameters()) and not model.visual.training
    assert all(p.requires_grad for p in model.audio.parameters()) and model.audio.training
    v, a = model(torch.rand(2, 3, 5, 32, 32), torch.randn(2, 1, 128, 64))
    (v.sum() + a.sum()).backward()
    assert all(p.grad is None for p in model.visual.parameters())
    model.train()
    assert apply_schedule(model, config, epoch=1) is True
    assert all(p.requires_grad for p in model.visual.parameters()) and model.visual.training


def test_alternating_schedule_freezes_one_encoder_per_epoch():
    torch.manual_seed(0)
    model = build_encoders(ModelConfig.tiny())
    config = OptimConfig(schedule="alternating", audio_only_epochs=1)
    phases = []
    for epoch in range(5):
        model.train()
        apply_schedule(model, config, epoch)
        visual = all(p.requires_grad for p in model.visual.parameters())
        audio = all(p.requires_grad for p in model.audio.parameters())
        assert visual == model.visual.training and audio == model.audio.training
        phases.append(("v" if visual else "") + ("a" if audio else ""))
    assert phases == ["a", "v", "a", "v", "a"]
    model.train()
    apply_schedule(model, config, 1)
    v, a = model(torch.rand(2, 3, 5, 32, 32), torch.randn(2, 1, 128, 64))
    (v.sum() + a.sum()).backward()
    assert all(p.grad is None for p in model.audio.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.visual.parameters())
