import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from epg.bank import EmbeddingBank, sum_gradients
from epg.config import AugmentConfig, BankConfig, EPGConfig, LossConfig, ModelConfig, PairConfig
from epg.encoders import build_encoders
from epg.loss_margin import multi_positive_margin_loss
from epg.pairs import PairLabels, tpg_labels
from epg.samples import CandidateSet, Samples
from epg.step import NonFiniteLossError, step_metrics, train_step

CONFIG = EPGConfig(
    model=ModelConfig.tiny(),
    pairs=PairConfig(mining="topk", k=1, warmup_epochs=0, exclusion_window=2),
    bank=BankConfig(size=10, chunk_size=3),
    augment=AugmentConfig(enabled=False),
    loss=LossConfig(kind="hadsell"),
)
CONFIGS = {"hadsell": CONFIG, "infonce": replace(CONFIG, loss=LossConfig(kind="infonce", temperature=0.2)),
           "hadsell-pooled": replace(CONFIG, loss=LossConfig(kind="hadsell", pool_crops=True))}
TWIN, TWIN_OF = 6, 1  # global sample 6 (rank 1) repeats sample 1's inputs (rank 0) in another stream


def global_batch(seed: int) -> dict[str, torch.Tensor]:
    """8 visual samples = 4 clips × 2 crops; crops share (stream, t); each sample has its own audio row."""
    g = torch.Generator().manual_seed(seed)
    n = 8
    level = torch.linspace(0.1, 0.8, n)[torch.randperm(n, generator=g)]
    video = (0.2 * torch.rand(n, 3, 5, 32, 32, generator=g) + level.view(n, 1, 1, 1, 1)).clamp(0, 1)
    audio = torch.randn(n, 1, 128, 64, generator=g) * 10 - 40 + 20 * level.view(n, 1, 1, 1)
    if seed == 0:
        video[TWIN], audio[TWIN] = video[TWIN_OF], audio[TWIN_OF]
    return {
        "video": video,
        "audio": audio,
        "stream": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]) + seed,
        "t": torch.tensor([5, 5, 9, 9, 30, 30, 7, 7]) + 100 * seed,
        "label": torch.tensor([0, 0, 1, 1, -1, -1, 0, 0]),
    }


def split(batch: dict[str, torch.Tensor], start: int, stop: int) -> dict[str, torch.Tensor]:
    return {key: value[start:stop] for key, value in batch.items()}


def make_model():
    torch.manual_seed(0)
    return build_encoders(CONFIG.model).eval()  # per-sample encoders: BatchNorm on running statistics


def grads(model) -> dict[str, torch.Tensor]:
    return {name: p.grad.detach().clone() for name, p in model.named_parameters()}


def run_steps(model, slices, group_sum, config: EPGConfig = CONFIG) -> dict:
    """Step 1 (empty bank) and step 2 (bank holding step 1), losses, gradients, labels, bank."""
    bank = EmbeddingBank(config.bank.size, config.bank.chunk_size)
    record: dict = {"loss": [], "grads": [], "mined": [], "metrics": []}
    for step, batch in enumerate(slices):
        model.zero_grad()
        out = train_step(model, batch, bank, config, epoch=0, step=step)
        out.loss.backward()
        if group_sum:
            sum_gradients(model)
        record["loss"].append(out.loss.detach())
        record["grads"].append(grads(model))
        record["mined"].append(out.labels.mined_index)
        record["metrics"].append(out.metrics)
    record["bank"] = bank.state_dict()
    return record


def _worker(rank: int, init: str, out_dir: str, kind: str) -> None:
    config = CONFIGS[kind]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        model = make_model()
        first, second = global_batch(0), global_batch(1)
        # Step 1: 4 + 4 samples; step 2: 5 + 3 (unequal local batches, as at an epoch's end).
        bounds = [(0, 4), (4, 8)][rank], [(0, 5), (5, 8)][rank]
        record = run_steps(model, [split(first, *bounds[0]), split(second, *bounds[1])], group_sum=True, config=config)
        # The same first step under DDP (which averages gradients): backward ddp_loss.
        ddp = torch.nn.parallel.DistributedDataParallel(make_model())
        ddp.zero_grad()
        out = train_step(ddp, split(first, *bounds[0]), EmbeddingBank(10, 3), config, epoch=0, step=0)
        out.ddp_loss.backward()
        record["ddp_grads"] = grads(ddp.module)
        torch.save(record, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_two_workers_equal_one_worker_with_the_whole_batch(tmp_path, kind):
    mp.spawn(_worker, args=(f"file://{tmp_path / 'init'}", str(tmp_path), kind), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    reference = run_steps(make_model(), [global_batch(0), global_batch(1)], group_sum=False, config=CONFIGS[kind])
    for step in range(2):
        for record in ranks:
            torch.testing.assert_close(record["loss"][step], reference["loss"][step], rtol=1e-5, atol=1e-6)
            assert torch.equal(record["mined"][step], reference["mined"][step])
            for name, expected in reference["grads"][step].items():
                torch.testing.assert_close(record["grads"][step][name], expected, rtol=1e-4, atol=1e-6, msg=name)
    for name, expected in reference["grads"][0].items():
        torch.testing.assert_close(ranks[0]["ddp_grads"][name], expected, rtol=1e-4, atol=1e-6, msg=name)
    pooled = CONFIGS[kind].loss.pool_crops
    # Step 2 had a non-empty bank (step 1's 8 rows, or its 4 clips when pooled) as candidates, and gradients agree.
    assert [m["candidates"] for m in ranks[0]["metrics"]] == ([4, 8] if pooled else [8, 16])
    assert all(m["extra_positives_per_anchor"] > 0 for m in ranks[0]["metrics"])
    assert ranks[0]["metrics"][1]["world_size"] == 2 and reference["metrics"][1]["world_size"] == 1
    # The banks are identical on both ranks (bit for bit) and hold the last 10 gathered rows in order.
    for key in ("v", "a", "stream", "t", "label"):
        assert torch.equal(ranks[0]["bank"][key], ranks[1]["bank"][key]), key
        torch.testing.assert_close(ranks[0]["bank"][key], reference["bank"][key], rtol=1e-5, atol=1e-6)
    if pooled:  # one row per clip, in (stream, t) order; step 1's clips were split 2 + 2 across the ranks
        assert ranks[0]["bank"]["t"].tolist() == [5, 9, 30, 7, 105, 109, 130, 107]
        return
    assert ranks[0]["bank"]["t"].tolist() == [7, 7, 105, 105, 109, 109, 130, 130, 107, 107]
    # Cross-worker mining: the twin held by rank 1 is the nearest neighbour of sample 1 on rank 0, and back.
    for record in ranks:
        assert TWIN in record["mined"][0][TWIN_OF].tolist()
        assert TWIN_OF in record["mined"][0][TWIN].tolist()


def test_step_metrics_hand_computed():
    # 3 anchors; candidates = anchors + 3 bank rows (global indices 3..5).
    anchors = Samples(torch.eye(3), torch.eye(3), torch.tensor([0, 0, 1]), torch.tensor([0, 20, 0]), torch.tensor([2, -1, 5]))
    bank = Samples(torch.eye(3), torch.eye(3), torch.tensor([0, 1, 1]), torch.tensor([50, 3, 9]), torch.tensor([2, 2, 7]))
    candidates = CandidateSet([anchors, bank])
    base = tpg_labels(anchors, candidates, 0, 0.5)
    mined = torch.tensor([[3, 4], [0, -1], [5, -1]])
    labels = PairLabels(base.anchor_stream, base.anchor_t, 0, mined, torch.zeros(3, 2), base.delta, 6, True)
    terms = multi_positive_margin_loss(anchors, candidates, labels, CONFIG.loss, 1.0, "positive", 4)
    metrics = step_metrics(anchors, candidates, labels, terms, step=0)
    assert metrics["extra_positives_per_anchor"] == pytest.approx(4 / 3)
    assert metrics["positives_per_anchor"] == pytest.approx((3 + 4) / 3)
    # Same-stream mined pairs: (0, 3) gap 50, (1, 0) gap 20, (2, 5) gap 9; (0, 4) crosses streams.
    assert metrics["mined_time_gap"] == pytest.approx((50 + 20 + 9) / 3)
    assert metrics["mined_same_stream"] == pytest.approx(3 / 4)
    # Labelled anchors 0 (label 2) and 2 (label 5): mined (0,3) 2=2 yes, (0,4) 2=2 yes, (2,5) 5≠7 no.
    assert metrics["mined_label_precision"] == pytest.approx(2 / 3)
    assert 0 <= metrics["random_label_share"] <= 1 and metrics["random_time_gap"] > 0
    assert metrics["mean_delta"] == pytest.approx(0.0, abs=1e-6)


def test_single_process_step_with_warmup_bank_and_augmentation():
    torch.manual_seed(0)
    config = EPGConfig(model=ModelConfig.tiny(), pairs=PairConfig(warmup_epochs=1), bank=BankConfig(size=16, chunk_size=4))
    model = build_encoders(config.model).train()
    bank = EmbeddingBank(config.bank.size, config.bank.chunk_size)
    batch = global_batch(0)
    warm = train_step(model, batch, bank, config, epoch=0, step=0)
    assert warm.metrics["mining_active"] == 0 and warm.metrics["extra_positives_per_anchor"] == 0
    assert warm.metrics["aligned_per_anchor"] == 2  # itself and the other crop of its clip
    warm.loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    mined = train_step(model, batch, bank, config, epoch=1, step=1)
    assert mined.metrics["mining_active"] == 1 and mined.metrics["candidates"] == 16
    assert mined.metrics["extra_positives_per_anchor"] > 0 and len(bank) == 16
    assert not math.isnan(mined.metrics["mined_label_precision"])
    # Augmentation is seeded by (seed, rank, step): the same step gives the same loss.
    model.eval()
    plain = train_step(model, batch, None, config, epoch=1, step=1).loss
    model.train()
    model.visual.net.blocks[0].norm.momentum = 0.0  # leave running stats alone between the two calls
    a = train_step(model, batch, None, config, epoch=1, step=5).loss
    b = train_step(model, batch, None, config, epoch=1, step=5).loss
    c = train_step(model, batch, None, config, epoch=1, step=6).loss
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, plain)


class NaNModel(torch.nn.Module):
    def forward(self, video, audio):
        v = video.flatten(1)[:, :4].clone()
        v[0, 0] = float("nan")
        return v, audio.flatten(1)[:, :4]


def test_non_finite_loss_names_step_and_statistics():
    bank = EmbeddingBank(8, 4)
    batch = split(global_batch(0), 0, 4)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2 step 17: loss=nan.*non_finite_v=1, non_finite_a=0"):
        train_step(NaNModel(), batch, bank, CONFIG, epoch=2, step=17)
    assert len(bank) == 0  # nothing non-finite reached the bank


def test_batch_validation():
    batch = split(global_batch(0), 0, 2)
    with pytest.raises(KeyError, match="'stream'"):
        train_step(NaNModel(), {k: v for k, v in batch.items() if k != "stream"}, None, CONFIG, epoch=0, step=0)
    with pytest.raises(ValueError, match="one audio row per visual sample"):
        train_step(NaNModel(), {**batch, "audio": batch["audio"][:1]}, None, CONFIG, epoch=0, step=0)
    learned = replace(CONFIGS["infonce"], loss=replace(CONFIGS["infonce"].loss, learn_temperature=True))
    with pytest.raises(ValueError, match="learn_temperature is True but a learned temperature was not given"):
        train_step(NaNModel(), batch, None, learned, epoch=0, step=0)
