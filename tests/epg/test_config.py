import pytest

from epg.config import (
    AugmentConfig,
    BankConfig,
    EPGConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    PairConfig,
    VisualConfig,
)


def test_defaults_follow_the_design_and_the_benchmark():
    config = EPGConfig()
    assert config.loss.lam == 0.5 and config.loss.margin == 1.0
    # Picked by bench/quality.py (bench/RESULTS.md): consensus mining, a mining-only bank, no spatial shift;
    # InfoNCE with ±2 s out of the negatives, the residual visual input, lr 1e-3 for f_v from scratch.
    assert (config.loss.kind, config.loss.negative_exclusion, config.loss.distance_lam) == ("infonce", 2, 0.0)
    assert config.model.visual.input == "residual" and config.optim.lr_visual == 1e-3
    assert config.pairs.mining == "consensus" and config.pairs.k == 4 and config.pairs.tau == 0
    assert config.bank.mining_only and config.augment.shift == 0.0
    assert config.pairs.mined_as == "positive" and config.augment.enabled
    assert config.loss.temperature == 0.1 and not config.loss.learn_temperature
    assert config.model.embed_dim == 512 and config.model.visual.frames == 5 and config.model.visual.crop_size == 160
    assert (config.model.audio.n_mels, config.model.audio.frames) == (128, 64)


@pytest.mark.parametrize(
    "build, field",
    [
        (lambda: PairConfig(k=0), "PairConfig.k"),
        (lambda: PairConfig(mining="nearest"), "PairConfig.mining"),
        (lambda: PairConfig(mined_as="drop"), "PairConfig.mined_as"),
        (lambda: PairConfig(cap=0), "PairConfig.cap"),
        (lambda: PairConfig(tau=5, exclusion_window=2), "PairConfig.exclusion_window"),
        (lambda: PairConfig(quantile=1.5), "PairConfig.quantile"),
        (lambda: LossConfig(lam=1.5), "LossConfig.lam"),
        (lambda: LossConfig(margin=0), "LossConfig.margin"),
        (lambda: LossConfig(kind="hadsell", learn_temperature=True), "LossConfig.learn_temperature"),
        (lambda: LossConfig(temperature=2.0, learn_temperature=True), "LossConfig.temperature"),
        (lambda: BankConfig(size=-1), "BankConfig.size"),
        (lambda: VisualConfig(crop_size=100), "VisualConfig.crop_size"),
        (lambda: AugmentConfig(contrast=1.0), "AugmentConfig.contrast"),
        (lambda: OptimConfig(schedule="later"), "OptimConfig.schedule"),
        (lambda: ModelConfig(visual=VisualConfig(embed_dim=8)), "ModelConfig.visual.embed_dim"),
    ],
)
def test_validation_names_the_bad_field(build, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        build()


def test_round_trip_and_unknown_fields():
    config = EPGConfig(model=ModelConfig.tiny(), pairs=PairConfig(mining="consensus", k=2, cap=None))
    data = config.to_dict()
    assert data["model"]["audio"]["widths"] == [4, 8, 8, 16]
    assert EPGConfig.from_dict(data) == config
    assert EPGConfig.from_dict({"pairs": {"k": 3}}).pairs.k == 3
    with pytest.raises(ValueError, match=r"EPGConfig\.pairs: unknown field\(s\) \['kk'\]"):
        EPGConfig.from_dict({"pairs": {"kk": 3}})


def test_schedules():
    assert PairConfig(warmup_epochs=2).mining_active(2) and not PairConfig(warmup_epochs=2).mining_active(1)
    assert not PairConfig(enabled=False, warmup_epochs=0).mining_active(5)
    assert not OptimConfig(schedule="audio_first", audio_only_epochs=1).train_visual(0)
    assert OptimConfig(schedule="audio_first", audio_only_epochs=1).train_visual(1)
    assert OptimConfig(schedule="joint").train_visual(0)
