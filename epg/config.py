"""Configuration of EPG pretraining: model, pairing, loss, bank, augmentation, optimisation.

Every default of the method lives here, in one place, so that a run can record
its whole configuration (``EPGConfig.to_dict``) and be reproduced from it
(``EPGConfig.from_dict``). Validation errors name the offending field
(``PairConfig.k must be >= 1, got 0``) because configs come from YAML files and
command lines where a bare ``ValueError`` would be hard to trace.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from epg.configs import Config, fail, non_negative, one_of, positive
from epg.temperature import MAX_TEMPERATURE, MIN_TEMPERATURE

VisualInit = Literal["scratch", "pytorchvideo"]
VisualInput = Literal["raw", "residual", "diff", "normalized"]
LossKind = Literal["hadsell", "infonce"]
MiningRule = Literal["adaptive", "topk", "consensus", "quantile"]
MinedAs = Literal["positive", "ignore"]
Schedule = Literal["joint", "audio_first", "alternating"]

VISUAL_INITS: tuple[str, ...] = get_args(VisualInit)
VISUAL_INPUTS: tuple[str, ...] = get_args(VisualInput)
LOSS_KINDS: tuple[str, ...] = get_args(LossKind)
MINING_RULES: tuple[str, ...] = get_args(MiningRule)
MINED_AS: tuple[str, ...] = get_args(MinedAs)
SCHEDULES: tuple[str, ...] = get_args(Schedule)


@dataclass(frozen=True)
class VisualConfig(Config):
    """f_v: X3D built by PyTorchVideo's ``create_x3d`` (defaults: X3D-M) plus a linear layer to d.

    ``checkpoint`` is a local path to a state dict in PyTorchVideo's layout
    (e.g. the published ``X3D_M.pyth``); its classification layer is not loaded.

    ``init`` (without a checkpoint): ``scratch`` gives every residual branch and the projection
    a working start (Kaiming convolutions, BatchNorm weights 1, PyTorch's default linear init);
    ``pytorchvideo`` keeps create_x3d's init, which zeroes the last BatchNorm of every residual
    branch and draws the projection from N(0, 0.01): a good start for fine-tuning deep nets from
    pretrained weights, but from scratch every branch is off, the stride-2 shortcuts read one
    position in four, and the output reacts only to the crop's top-left cell, which leaves a
    contrastive objective at a saddle.

    ``input`` is what the encoder sees of a clip (``epg.encoders.visual_input``): ``raw``
    pixels, or for a fixed camera the ``residual`` after the clip's static scene, temporal
    ``diff``erences, or per-clip ``normalized`` pixels. It is part of the model: scoring and
    live use what the checkpoint was trained with.
    """

    frames: int = 5
    crop_size: int = 160
    embed_dim: int = 512
    width_factor: float = 2.0
    depth_factor: float = 2.2
    bottleneck_factor: float = 2.25
    stem_dim: int = 12
    head_dim: int = 2048
    dropout: float = 0.5
    checkpoint: str | None = None
    init: VisualInit = "scratch"
    input: VisualInput = "residual"  # picked by bench/quality.py (bench/RESULTS.md)
    # Kinetics normalisation of X3D's published weights; input video is in [0, 1].
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.225, 0.225, 0.225)

    def __post_init__(self) -> None:
        positive(self, "frames", "crop_size", "embed_dim", "width_factor", "depth_factor",
                  "bottleneck_factor", "stem_dim", "head_dim")
        if self.crop_size % 32 != 0:
            fail(self, "crop_size", "a multiple of 32 (X3D's total spatial stride)", self.crop_size)
        if not 0.0 <= self.dropout < 1.0:
            fail(self, "dropout", "in [0, 1)", self.dropout)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            fail(self, "mean/std", "three values with std > 0", (self.mean, self.std))
        one_of(self, "init", VISUAL_INITS)
        one_of(self, "input", VISUAL_INPUTS)
        if self.input == "diff" and self.frames < 2:
            fail(self, "frames", ">= 2 for input 'diff'", self.frames)


@dataclass(frozen=True)
class AudioConfig(Config):
    """f_a: a ResNet-18 (BasicBlock, [2, 2, 2, 2]) on 1-channel log-mel [n_mels, T] plus a linear layer to d.

    ``checkpoint`` is a local path to a state dict in this encoder's layout, which
    is torchvision's ResNet layout (``conv1``, ``bn1``, ``layer1.0.conv1`` ...);
    a 3-channel ``conv1`` is summed over its input channels; ``fc``/``proj`` are not loaded.
    """

    n_mels: int = 128
    frames: int = 64
    embed_dim: int = 512
    widths: tuple[int, ...] = (64, 128, 256, 512)
    blocks: tuple[int, ...] = (2, 2, 2, 2)
    checkpoint: str | None = None
    # Fixed affine normalisation of the dB input (power_to_db with ref=1, silence at -100 dB).
    input_mean_db: float = -40.0
    input_std_db: float = 20.0

    def __post_init__(self) -> None:
        positive(self, "n_mels", "frames", "embed_dim", "input_std_db")
        if len(self.widths) != 4 or min(self.widths) <= 0:
            fail(self, "widths", "four positive ints", self.widths)
        if len(self.blocks) != 4 or min(self.blocks) <= 0:
            fail(self, "blocks", "four positive ints", self.blocks)


@dataclass(frozen=True)
class ModelConfig(Config):
    visual: VisualConfig = field(default_factory=VisualConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)

    def __post_init__(self) -> None:
        if self.visual.embed_dim != self.audio.embed_dim:
            fail(self, "visual.embed_dim/audio.embed_dim", "equal (one shared space)",
                  (self.visual.embed_dim, self.audio.embed_dim))

    @property
    def embed_dim(self) -> int:
        return self.visual.embed_dim

    @classmethod
    def tiny(cls, embed_dim: int = 16, crop_size: int = 32, n_mels: int = 128, frames: int = 64) -> "ModelConfig":
        """A few-thousand-parameter model with the real architecture, for tests."""
        return cls(
            visual=VisualConfig(crop_size=crop_size, embed_dim=embed_dim, width_factor=1.0, depth_factor=0.5,
                                bottleneck_factor=1.0, stem_dim=4, head_dim=32, dropout=0.0),
            audio=AudioConfig(n_mels=n_mels, frames=frames, embed_dim=embed_dim, widths=(4, 8, 8, 16),
                              blocks=(1, 1, 1, 1)),
        )

    @classmethod
    def small(cls, embed_dim: int = 64, crop_size: int = 64, n_mels: int = 128, frames: int = 64) -> "ModelConfig":
        """About 0.25 M parameters: big enough to learn the synthetic streams on a CPU in minutes (demo, benchmark)."""
        return cls(
            visual=VisualConfig(crop_size=crop_size, embed_dim=embed_dim, width_factor=1.0, depth_factor=0.5,
                                bottleneck_factor=1.5, stem_dim=8, head_dim=128, dropout=0.0),
            audio=AudioConfig(n_mels=n_mels, frames=frames, embed_dim=embed_dim, widths=(16, 32, 64, 64),
                              blocks=(1, 1, 1, 1)),
        )


@dataclass(frozen=True)
class PairConfig(Config):
    """TPG/EPG pair labels (DESIGN §4).

    tau: TPG positive iff same stream and |t_i - t_j| <= tau seconds.
    mining: EPG rule; k: neighbours per modality for ``topk``/``consensus``;
    quantile: batch quantile of same-modality distances for ``quantile``.
    cap: most mined positives per anchor (None = no cap; memory then grows with the bank).
    mined_weight: w, the loss weight of mined positives (aligned positives weigh 1).
    exclusion_window: W; same-stream candidates within ±W s are never mined.
    mined_as: ``positive`` (attract, the paper) or ``ignore`` (only drop from the negatives).
    warmup_epochs: epochs of TPG labels before mining starts.
    enabled: False gives the TPG baseline (no mining at all).
    """

    enabled: bool = True
    tau: int = 0
    mining: MiningRule = "consensus"  # the quality benchmark's pick (bench/RESULTS.md); DESIGN §4 proposed topk
    k: int = 4
    quantile: float = 0.01
    cap: int | None = 8
    mined_weight: float = 1.0
    exclusion_window: int = 10
    mined_as: MinedAs = "positive"
    warmup_epochs: int = 1

    def __post_init__(self) -> None:
        non_negative(self, "tau", "mined_weight", "exclusion_window", "warmup_epochs")
        positive(self, "k")
        one_of(self, "mining", MINING_RULES)
        one_of(self, "mined_as", MINED_AS)
        if not 0.0 < self.quantile < 1.0:
            fail(self, "quantile", "in (0, 1)", self.quantile)
        if self.cap is not None and self.cap < 1:
            fail(self, "cap", ">= 1 or None", self.cap)
        if self.exclusion_window < self.tau:
            fail(self, "exclusion_window", f">= tau ({self.tau}) so TPG positives are never mined", self.exclusion_window)

    def mining_active(self, epoch: int) -> bool:
        """Whether EPG mining runs in ``epoch`` (0-based); before that, TPG labels only."""
        return self.enabled and epoch >= self.warmup_epochs


@dataclass(frozen=True)
class LossConfig(Config):
    """The loss of pretraining and the distance D (Eq. 5) that goes with it.

    kind ``hadsell`` (the paper's reading): the multi-positive margin loss of Eq. 4 (``epg.loss_margin``) on
    D = λ·‖x−y‖ + (1−λ)·(1−cos), with margin m and negative weight ν (positives weigh 1 and w).
    kind ``infonce``: a multi-positive InfoNCE (``epg.loss_infonce``) on L2-normalised
    embeddings with ``temperature``; its distance downstream is the cosine one (λ = 0).
    learn_temperature (infonce only): T is a trained parameter starting at ``temperature``
    (``epg.temperature``), in its own optimiser group at ``OptimConfig.lr_audio`` without weight decay.
    negative_exclusion: same-stream candidates within ±N s of the anchor that are not
    positives are left out of the negatives (seconds of the same passing vehicle are not
    pushed apart; default ±2 s); 0 keeps every non-positive candidate a negative (the paper's reading).
    pool_crops: a clip's two crops (its visual samples of one (stream, t)) enter the loss as one
    sample, the mean of their embeddings, as scoring computes v; False (the paper's reading) keeps
    them as two samples. A passing vehicle is often in one crop only.
    """

    kind: LossKind = "infonce"  # picked by bench/quality.py (bench/RESULTS.md)
    lam: float = 0.5
    margin: float = 1.0
    negative_weight: float = 1.0
    temperature: float = 0.1
    negative_exclusion: int = 2
    pool_crops: bool = False
    learn_temperature: bool = False

    def __post_init__(self) -> None:
        one_of(self, "kind", LOSS_KINDS)
        if not 0.0 <= self.lam <= 1.0:
            fail(self, "lam", "in [0, 1]", self.lam)
        positive(self, "margin", "temperature")
        if self.learn_temperature and self.kind != "infonce":
            fail(self, "learn_temperature", "False unless kind is 'infonce' (the margin loss has no temperature)",
                 self.learn_temperature)
        if self.learn_temperature and not MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE:
            fail(self, "temperature", f"in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}] when learned", self.temperature)
        non_negative(self, "negative_weight", "negative_exclusion")

    @property
    def distance_lam(self) -> float:
        """λ of the distance that matches the loss: ``lam`` for hadsell, 0 (cosine) for infonce."""
        return self.lam if self.kind == "hadsell" else 0.0


@dataclass(frozen=True)
class BankConfig(Config):
    """FIFO bank of the last ``size`` gathered samples (0 = no bank); distances in chunks of ``chunk_size`` candidates.

    mining_only (default): bank rows are candidates of mining only; a mined bank row is
    a positive, and the aligned pairs and negatives of the loss come from the global
    batch. False: bank rows are also the loss's candidates (aligned pairs and
    negatives), as DESIGN §4 first read it. Bank rows are embeddings of earlier steps;
    as negatives and stale aligned pairs they let the encoders lower the loss without
    learning (drift away from where the bank sits), which kept TPG from learning in the
    quality benchmark (bench/RESULTS.md).
    """

    size: int = 16_384
    chunk_size: int = 8_192
    mining_only: bool = True

    def __post_init__(self) -> None:
        non_negative(self, "size")
        positive(self, "chunk_size")


@dataclass(frozen=True)
class AugmentConfig(Config):
    """Augmentation (DESIGN §4), on by default for TPG and EPG alike.

    Visual (video in [0, 1]): brightness ±, contrast ×[1−c, 1+c], per-channel colour gain
    ×[1−g, 1+g], spatial shift up to ``shift`` of the crop side (reflect padding).
    Audio (log-mel dB): gain ±dB; with probability noise_p, white noise at a level in
    [noise_db_min, noise_db_max] dB per mel bin, added in the power domain (white noise
    at -60 dBFS reads about -45 dB in ``epg.features.log_mel``); ``time_masks`` masks of
    up to ``time_mask`` frames and ``freq_masks`` of up to ``freq_mask`` mel bins
    (filled with the clip's mean).

    Defaults are the quality benchmark's choice (bench/RESULTS.md): fixed cameras, so no
    spatial shift, and mild photometric and audio jitter; stronger jitter swamps the few
    pixels a vehicle covers in a 32-160 px crop.
    """

    enabled: bool = True
    brightness: float = 0.1
    contrast: float = 0.1
    color: float = 0.05
    shift: float = 0.0
    gain_db: float = 3.0
    noise_p: float = 0.5
    noise_db_min: float = -60.0
    noise_db_max: float = -35.0
    time_masks: int = 1
    time_mask: int = 8
    freq_masks: int = 1
    freq_mask: int = 16

    def __post_init__(self) -> None:
        non_negative(self, "brightness", "contrast", "color", "shift", "gain_db", "noise_p",
                      "time_masks", "time_mask", "freq_masks", "freq_mask")
        for name in ("contrast", "color"):
            if getattr(self, name) >= 1:
                fail(self, name, "< 1", getattr(self, name))
        if self.shift >= 0.5:
            fail(self, "shift", "< 0.5", self.shift)
        if self.noise_p > 1:
            fail(self, "noise_p", "<= 1", self.noise_p)
        if self.noise_db_min > self.noise_db_max:
            fail(self, "noise_db_min", f"<= noise_db_max ({self.noise_db_max})", self.noise_db_min)


@dataclass(frozen=True)
class OptimConfig(Config):
    """Optimisation: separate learning rate and weight decay per encoder, and the schedule.

    schedule ``audio_first``: f_a alone (f_v frozen) for ``audio_only_epochs``, then joint;
    ``alternating``: f_a alone for ``audio_only_epochs``, then whole epochs alternate
    between f_v alone (f_a frozen) and f_a alone (f_v frozen), starting with f_v;
    ``joint``: both from the start.
    """

    epochs: int = 10
    batch_size: int = 64
    lr_visual: float = 1e-3  # from scratch (VisualConfig.init); ~1e-4 fine-tunes a pretrained X3D
    lr_audio: float = 1e-3
    weight_decay_visual: float = 1e-4
    weight_decay_audio: float = 1e-4
    schedule: Schedule = "audio_first"
    audio_only_epochs: int = 1
    grad_clip_norm: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        positive(self, "epochs", "batch_size", "lr_visual", "lr_audio")
        non_negative(self, "weight_decay_visual", "weight_decay_audio", "audio_only_epochs")
        one_of(self, "schedule", SCHEDULES)
        if self.grad_clip_norm is not None and self.grad_clip_norm <= 0:
            fail(self, "grad_clip_norm", "> 0 or None", self.grad_clip_norm)

    def train_visual(self, epoch: int) -> bool:
        """Whether f_v is trained in ``epoch`` (0-based)."""
        if self.schedule == "joint":
            return True
        if epoch < self.audio_only_epochs:
            return False
        return self.schedule == "audio_first" or (epoch - self.audio_only_epochs) % 2 == 0

    def train_audio(self, epoch: int) -> bool:
        """Whether f_a is trained in ``epoch`` (0-based)."""
        if self.schedule != "alternating" or epoch < self.audio_only_epochs:
            return True
        return (epoch - self.audio_only_epochs) % 2 == 1


@dataclass(frozen=True)
class EPGConfig(Config):
    model: ModelConfig = field(default_factory=ModelConfig)
    pairs: PairConfig = field(default_factory=PairConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    bank: BankConfig = field(default_factory=BankConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
