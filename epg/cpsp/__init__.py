"""CPSP: the supervised audio-visual event localization head (DESIGN §5, second seed paper).

Contrastive Positive Sample Propagation (Zhou et al., extending PSP, CVPR 2021)
on sequences of T one-second segments: per-modality BiLSTMs, positive sample
propagation between the modalities, an event/background head per segment and a
category head, trained with L_avpsp, L_spsa and L_vpsa (fully supervised) or a
multiple-instance loss on video labels (weakly supervised, ``loss_mil``). Reads the public AVE
feature files (``epg.cpsp.ave``) and our embeddings (``pipelines.downstream.cpsp_windows``).
"""

from epg.cpsp.config import CPSPConfig, CPSPLossConfig, CPSPModelConfig, CPSPTrainConfig
from epg.cpsp.loss_avpsp import avpsp_loss
from epg.cpsp.loss_mil import mil_loss
from epg.cpsp.loss_spsa import spsa_loss
from epg.cpsp.loss_vpsa import vpsa_loss
from epg.cpsp.model import CPSPModel, CPSPOutput, predict_segments
from epg.cpsp.psp import PositiveSamplePropagation, propagation_weights
from epg.cpsp.train import CPSPData, CPSPResult, evaluate, predict, segment_accuracy, train_cpsp

__all__ = [
    "CPSPConfig", "CPSPData", "CPSPLossConfig", "CPSPModel", "CPSPModelConfig", "CPSPOutput", "CPSPResult",
    "CPSPTrainConfig", "PositiveSamplePropagation", "avpsp_loss", "evaluate", "mil_loss", "predict", "predict_segments",
    "propagation_weights", "segment_accuracy", "spsa_loss", "train_cpsp", "vpsa_loss",
]
