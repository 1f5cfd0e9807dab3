"""EPG pretraining through the real Ray Train TorchTrainer (2 CPU workers, gloo) on real ingested clips."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch

from epg.bank import EmbeddingBank
from epg.config import AugmentConfig, BankConfig, EPGConfig, ModelConfig, OptimConfig, PairConfig
from epg.learning import INIT_DIAGNOSTICS_FILE
from epg.optim import apply_schedule, build_optimizer
from epg.samples import Samples
from epg.step import train_step
from epg.temperature import LearnedTemperature
from pipelines.ingest.clips_dataset import read_stream
from pipelines.score.model import resolve_checkpoint
from pipelines.train.args import config_from_args
from pipelines.train.args import parse_args as parse_pretrain_args
from pipelines.train.checkpoint import MODEL_FILE, build_model, load_model, registered_checkpoints
from pipelines.train.config import PretrainConfig, PretrainError
from pipelines.train.data import decode_clips, to_torch_batch
from pipelines.train.driver import run_pretrain
from pipelines.train.loop import build_scheduler, freeze_batchnorm
from tests.conftest import REPO
from tests.jobs import kill_job_when, start_job
from tests.pipelines.train.test_data import synthetic_clips

# 60 clips -> 120 visual samples; 2 workers x 16 -> 3 steps per epoch.
EPG = EPGConfig(
    model=ModelConfig.tiny(),
    pairs=PairConfig(warmup_epochs=1, k=2, exclusion_window=5),
    bank=BankConfig(size=64, chunk_size=64),
    optim=OptimConfig(epochs=3, batch_size=16, schedule="audio_first", audio_only_epochs=1, lr_visual=3e-3, lr_audio=3e-3),
)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, ray_local) -> tuple[Path, Path]:
    return synthetic_clips(tmp_path_factory, ray_local)


def make_config(clips_root: Path, run_dir: Path, **overrides) -> PretrainConfig:
    values = dict(clips=str(clips_root), run_dir=str(run_dir), epg=EPG, preset="tiny", workers=2, cpus_per_worker=0.5,
                  checkpoint_every=4, shuffle_buffer=32, log_every=1, holdout_fraction=0.2,  # 12 s held out
                  lr_schedule="constant", lr_warmup_steps=0)  # the step-equality tests replay a constant rate
    values.update(overrides)
    return PretrainConfig(**values)


def steps(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "metrics" / "steps.csv").open(newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def epochs(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "metrics" / "epochs.csv").open(newline="") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def parameters(checkpoint: Path) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint / MODEL_FILE, map_location="cpu")


@pytest.fixture(scope="module")
def epg_run(clips, tmp_path_factory) -> Path:
    """The reference run: 3 epochs x 3 steps; epoch 0 trains f_a alone (f_v frozen) with TPG labels,
    then both encoders with EPG labels; labels joined for diagnostics; every checkpoint kept."""
    root, labels = clips
    run_dir = tmp_path_factory.mktemp("runs") / "epg"
    result = run_pretrain(make_config(root, run_dir, labels=str(labels), keep_checkpoints=None))
    assert result.checkpoint is not None and result.metrics["step"] == 9
    return run_dir


def test_two_workers_train_end_to_end_and_record_everything(epg_run, clips):
    rows = steps(epg_run)
    assert [int(r["step"]) for r in rows] == list(range(1, 10))
    assert all(r["world_size"] == 2 and r["global_batch"] == 32 for r in rows)
    warmup, mined = [r for r in rows if r["epoch"] == 0], [r for r in rows if r["epoch"] > 0]
    assert all(r["mining_active"] == 0 and r["extra_positives_per_anchor"] == 0 for r in warmup)
    assert all(r["mining_active"] == 1 for r in mined)
    assert sum(r["extra_positives_per_anchor"] for r in mined) > 0  # consensus mining finds pairs (not in every step)
    # diagnostics with labels: mined-pair precision against random pairs, time gaps, δ, embedding spread
    # (NaN: undefined in a step, e.g. no mined pair within one stream, or no labelled anchor among them)
    for key in ("mined_label_precision", "random_label_share"):
        defined = [r[key] for r in mined if not math.isnan(r[key])]
        assert defined and all(0 <= value <= 1 for value in defined), key
    gaps = [r["mined_time_gap"] for r in mined if not math.isnan(r["mined_time_gap"])]
    assert gaps and all(gap >= 5 for gap in gaps)  # the exclusion window W = 5
    for key in ("mean_delta", "v_std", "a_std", "samples_per_s", "data_wait_fraction", "positives_per_anchor"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert all(0 <= r["data_wait_fraction"] <= 1 for r in rows)
    per_epoch = epochs(epg_run)
    assert [int(e["epoch"]) for e in per_epoch] == [0, 1, 2] and all(e["steps"] == 3 for e in per_epoch)
    # learning diagnostics on the held-out last fifth of the stream, every epoch
    for e in per_epoch:
        assert e["holdout_clips"] > 0 and 0 <= e["holdout_pair_auc"] <= 1 and e["holdout_collapsed"] in (0.0, 1.0)
        assert 0 <= e["holdout_recall_at_k"] <= 1 and 0 < e["holdout_recall_chance"] <= 1  # 12 clips: k = 10 is most
        assert e["holdout_v_spread"] > 0 and e["holdout_a_spread"] > 0
    # and once before the first step: the random-init anchor the epochs are read against
    initial = json.loads((epg_run / "metrics" / INIT_DIAGNOSTICS_FILE).read_text())
    assert initial["holdout_clips"] == per_epoch[0]["holdout_clips"] and 0 <= initial["holdout_pair_auc"] <= 1
    # the loss falls within the EPG phase (same labelling rule, recurring events)
    assert per_epoch[2]["loss"] < per_epoch[1]["loss"]
    assert rows[-1]["loss"] < rows[3]["loss"]
    # full config, TensorBoard events, checkpoints that load
    record = json.loads((epg_run / "config.json").read_text())
    assert PretrainConfig.from_dict(record["config"]) == make_config(clips[0], epg_run, labels=str(clips[1]), keep_checkpoints=None)
    assert record["label_classes"]
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(epg_run / "tensorboard"))
    checkpoints = sorted(p.name for p in epg_run.iterdir() if p.is_dir() and p.name.startswith("checkpoint_step"))
    assert checkpoints == ["checkpoint_step000000003_end_of_epoch0001", "checkpoint_step000000004",
                           "checkpoint_step000000006_end_of_epoch0002", "checkpoint_step000000008",
                           "checkpoint_step000000009_end_of_epoch0003"]
    model, config = load_model(str(epg_run / "checkpoint_step000000009_end_of_epoch0003"))
    assert config.epg == EPG and sum(p.numel() for p in model.parameters()) > 0


def test_audio_first_schedule_freezes_the_visual_encoder_in_epoch_0(epg_run, clips):
    rows = steps(epg_run)
    assert [r["train_visual"] for r in rows] == [0.0] * 3 + [1.0] * 6
    initial = build_model(make_config(clips[0], epg_run)).state_dict()
    after_epoch_0 = parameters(epg_run / "checkpoint_step000000003_end_of_epoch0001")
    after_epoch_1 = parameters(epg_run / "checkpoint_step000000006_end_of_epoch0002")
    for name, value in initial.items():
        if name.startswith("visual."):  # weights and BatchNorm statistics untouched while frozen
            assert torch.equal(after_epoch_0[name], value), name
    assert any(not torch.equal(after_epoch_0[n], v) for n, v in initial.items() if n.startswith("audio.") and v.is_floating_point())
    assert any(not torch.equal(after_epoch_1[n], v) for n, v in initial.items() if n.startswith("visual.") and v.is_floating_point())


def test_bank_state_keeps_its_block_layout():
    """The bank's blocks are the loss's candidate chunks; a restored bank must chunk like the original."""
    bank = EmbeddingBank(capacity=6, block_rows=4)
    for start in range(0, 12, 3):
        n = torch.arange(start, start + 3)
        bank.push(Samples(torch.randn(3, 2), torch.randn(3, 2), n * 0, n, n * 0 - 1))
    restored = EmbeddingBank(capacity=6, block_rows=4)
    restored.load_state_dict(bank.state_dict())
    assert [len(b) for b in restored.segments()] == [len(b) for b in bank.segments()] == [2, 4]  # one push of 6 would give [4, 2]
    for mine, theirs in zip(restored.segments(), bank.segments()):
        assert torch.equal(mine.v, theirs.v) and torch.equal(mine.t, theirs.t)


def test_tpg_differs_from_epg_only_in_the_labels(epg_run, clips, tmp_path):
    root, labels = clips
    tpg_dir = tmp_path / "tpg"
    tpg_config = make_config(root, tpg_dir, labels=str(labels), pairing="tpg", keep_checkpoints=None,
                             epg=replace(EPG, pairs=replace(EPG.pairs, enabled=False)))
    run_pretrain(tpg_config)
    epg_config = json.loads((epg_run / "config.json").read_text())["config"]
    tpg_record = json.loads((tpg_dir / "config.json").read_text())["config"]
    differing = {k for k in epg_config if epg_config[k] != tpg_record[k]}
    assert differing == {"pairing", "run_dir", "epg"}
    assert {k for k in epg_config["epg"] if epg_config["epg"][k] != tpg_record["epg"][k]} == {"pairs"}
    assert {k for k in epg_config["epg"]["pairs"] if epg_config["epg"]["pairs"][k] != tpg_record["epg"]["pairs"][k]} == {"enabled"}
    tpg, epg = steps(tpg_dir), steps(epg_run)
    assert all(r["extra_positives_per_anchor"] == 0 and r["mining_active"] == 0 for r in tpg)
    # during EPG's warm-up epoch both runs use TPG labels: identical data, steps and losses
    assert [r["loss"] for r in tpg[:3]] == [r["loss"] for r in epg[:3]]
    # then only the labels differ
    assert all(t["aligned_per_anchor"] == e["aligned_per_anchor"] for t, e in zip(tpg, epg))
    assert tpg[3]["loss"] != epg[3]["loss"]


def kill_a_worker_once(run_dir: Path, checkpoint: str, killed: list[int]) -> threading.Thread:
    """SIGKILL one training worker of this process's Ray once ``checkpoint`` is in the run dir."""
    def watch() -> None:
        deadline = time.monotonic() + 300
        while not list(run_dir.glob(checkpoint)) and time.monotonic() < deadline:
            time.sleep(0.05)
        for process in psutil.Process().children(recursive=True):
            try:
                if process.name().startswith("ray::RayTrainWorker"):
                    process.kill()
                    killed.append(process.pid)
                    return
            except psutil.NoSuchProcess:
                continue

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_a_killed_driver_and_a_killed_worker_lose_nothing_and_the_run_ends_as_the_uninterrupted_one(
        epg_run, clips, tmp_path):
    """``jobs/pretrain.py`` with its own local Ray is SIGKILLed with its whole process group once its step-4
    checkpoint is in the run dir (mid-epoch): the latest checkpoint a reader (scoring) picks then loads. The
    same command again resumes, and its worker is killed (SIGKILL) once it wrote its step-6 checkpoint: Ray
    Train (--max-failures 1) starts the workers again from that checkpoint, and the run ends with the same
    parameters, optimizer state and bank as the uninterrupted run after 9 steps."""
    root, labels = clips
    run_dir = tmp_path / "resumed"
    (tmp_path / "epg.json").write_text(json.dumps(EPG.to_dict()))
    argv = ["--clips", str(root), "--run-dir", str(run_dir), "--labels", str(labels), "--epg-config",
            str(tmp_path / "epg.json"), "--preset", "tiny", "--schedule", "audio_first", "--workers", "2",
            "--cpus-per-worker", "0.5", "--checkpoint-every", "4", "--shuffle-buffer", "32", "--log-every", "1",
            "--holdout-fraction", "0.2", "--lr-schedule", "constant", "--lr-warmup-steps", "0"]
    assert config_from_args(parse_pretrain_args(argv)) == make_config(root, run_dir, labels=str(labels))
    job = start_job("pretrain", argv)
    kill_job_when(job, lambda: bool(list(run_dir.glob("checkpoint_step000000004*")) and registered_checkpoints(run_dir)),
                  "its step-4 checkpoint, after one was registered")
    latest = resolve_checkpoint(str(run_dir))  # what scoring would read now: a registered, whole checkpoint
    model, _ = load_model(str(latest))
    assert latest.name in registered_checkpoints(run_dir) and int(latest.name[len("checkpoint_step"):][:9]) >= 3

    killed: list[int] = []
    killer = kill_a_worker_once(run_dir, "checkpoint_step000000006_*", killed)
    second = run_pretrain(make_config(root, run_dir, labels=str(labels), max_failures=1))  # the same command again
    killer.join(10)
    assert second.metrics["step"] == 9 and len(killed) == 1
    kept = sorted(p.name for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("checkpoint_step"))
    assert kept == ["checkpoint_step000000006_end_of_epoch0002", "checkpoint_step000000008",
                    "checkpoint_step000000009_end_of_epoch0003"]  # keep_checkpoints = 3
    resumed, reference = steps(run_dir), steps(epg_run)
    assert [int(r["step"]) for r in resumed] == list(range(1, 10))
    assert [r["loss"] for r in resumed] == [r["loss"] for r in reference]  # same bank, data, RNG throughout
    final = "checkpoint_step000000009_end_of_epoch0003"
    got, want = parameters(run_dir / final), parameters(epg_run / final)
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    state, ref_state = (torch.load(d / final / "train_state.pt") for d in (run_dir, epg_run))
    assert state["position"] == ref_state["position"] == {"epoch": 3, "batch": 0, "step": 9}
    assert state["scheduler"]["last_epoch"] == 9
    for key, value in ref_state["optimizer"]["state"].items():
        assert torch.equal(state["optimizer"]["state"][key]["exp_avg"], value["exp_avg"])
    assert all(torch.equal(state["bank"][k], ref_state["bank"][k]) for k in ("v", "a", "stream", "t"))
    assert [int(e["epoch"]) for e in epochs(run_dir)] == [0, 1, 2]


class PerRankForward(torch.nn.Module):
    """The reference's forward in the ranks' shapes: each rank's samples embedded apart, so the
    embeddings, and the mining decisions they drive, match the workers' to the bit (one forward of
    the whole batch differs in the last float bits, enough to flip a near-tie among neighbours)."""

    def __init__(self, model: torch.nn.Module, ranks: int) -> None:
        super().__init__()
        self.model, self.ranks = model, ranks

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [self.model(v, a) for v, a in zip(video.chunk(self.ranks), audio.chunk(self.ranks))]
        return torch.cat([v for v, _ in parts]), torch.cat([a for _, a in parts])


def test_distributed_step_equals_single_worker_step(clips, tmp_path):
    """Through the real TorchTrainer: 2 workers x 16 samples give the loss, the updated
    parameters and the learned temperature of one worker stepping on the concatenated 32 samples
    (EPG mining from step 0, bank in step 2; per-sample encoders: BatchNorm on running
    statistics, no augmentation)."""
    root, _ = clips
    epg = replace(EPG, pairs=replace(EPG.pairs, warmup_epochs=0), augment=AugmentConfig(enabled=False),
                  optim=replace(EPG.optim, schedule="joint"), loss=replace(EPG.loss, learn_temperature=True))
    config = make_config(root, tmp_path / "ddp", epg=epg, freeze_batchnorm=True, log_batches=True,
                         checkpoint_every=1, stop_after_steps=2)
    run_pretrain(config)
    batch_logs = [Path(config.run_dir) / "batches" / f"rank-{r}.jsonl" for r in (0, 1)]
    logged = [[json.loads(line) for line in path.read_text().splitlines()] for path in batch_logs]
    rows = read_stream(str(root), "train").to_pydict()
    decoded = decode_clips(rows, stream_index={"train": 0}, frames_per_clip=5, n_mels=128, logmel_frames=64)
    where = {(int(t), int(c)): i for i, (t, c) in enumerate(zip(decoded["t"], decoded["crop"]))}

    model = build_model(config)
    model.train()
    apply_schedule(model, epg.optim, 0)
    freeze_batchnorm(model)
    temperature = LearnedTemperature(epg.loss.temperature)
    optimizer = build_optimizer(model, epg.optim, temperature)
    scheduler = build_scheduler(optimizer, config)
    bank = EmbeddingBank.from_config(epg.bank)
    recorded = steps(Path(config.run_dir))
    for step in range(2):
        index = [where[(t, c)] for r in (0, 1) for t, c in zip(logged[r][step]["t"], logged[r][step]["crop"])]
        assert len(index) == 32 and all(logged[r][step]["step"] == step for r in (0, 1))
        batch = to_torch_batch({k: v[index] for k, v in decoded.items()}, torch.device("cpu"))
        out = train_step(PerRankForward(model, 2), batch, bank, epg, epoch=0, step=step, temperature=temperature)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        scheduler.step()
        assert out.metrics["extra_positives_per_anchor"] > 0
        assert recorded[step]["loss"] == pytest.approx(float(out.loss.detach()), rel=1e-5)
        assert recorded[step]["extra_positives_per_anchor"] == out.metrics["extra_positives_per_anchor"]
        trained = parameters(Path(config.run_dir) / f"checkpoint_step{step + 1:09d}")
        for name, value in model.state_dict().items():
            torch.testing.assert_close(trained[name], value, rtol=1e-4, atol=1e-5, msg=f"step {step + 1}: {name}")
        state = torch.load(Path(config.run_dir) / f"checkpoint_step{step + 1:09d}" / "train_state.pt")
        torch.testing.assert_close(state["temperature"]["log_temperature"], temperature.log_temperature.detach())
        assert recorded[step]["temperature"] == pytest.approx(out.metrics["temperature"], rel=1e-5)
    assert float(temperature().detach()) != pytest.approx(epg.loss.temperature, rel=1e-4)  # it was trained


def test_bad_input_is_refused_before_training(clips, tmp_path, ray_local):
    root, _ = clips
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}

    def job(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(REPO / "jobs" / "pretrain.py"), *args], capture_output=True, text=True,
                              env=env, timeout=120)

    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in [
        (["--clips", str(tmp_path / "missing")], "does not exist"),
        (["--clips", str(empty)], "no completely ingested stream"),
        (["--clips", str(root), "--preset", "tiny", "--crop-size", "64"], "crop size 32 != model visual.crop_size 64"),
        (["--clips", str(root), "--preset", "tiny", "--bogus"], "unrecognized arguments: --bogus"),
    ]:
        done = job(*args, "--run-dir", str(tmp_path / "run"))
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert not (tmp_path / "run").exists()
    with pytest.raises(PretrainError, match="5 workers x 0.5 CPU need 2.5 CPUs"):
        run_pretrain(make_config(root, tmp_path / "big", workers=5))
    with pytest.raises(PretrainError, match="1 GPU need 2 GPUs"):
        run_pretrain(make_config(root, tmp_path / "gpu", gpus_per_worker=1.0))
    assert not (tmp_path / "big").exists() and not (tmp_path / "gpu").exists()


def test_learning_rate_warms_up_then_follows_the_schedule():
    model = torch.nn.Linear(2, 2)
    rates = {}
    for schedule in ("constant", "cosine"):
        config = PretrainConfig(clips="c", run_dir="r", lr_warmup_steps=2, lr_schedule=schedule)
        optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
        scheduler = build_scheduler(optimizer, config, total_steps=6)
        seen = []
        for _ in range(7):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        rates[schedule] = seen
    assert rates["constant"] == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    cosine = rates["cosine"]
    assert cosine[:3] == [0.5, 1.0, 1.0] and cosine[3] == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert cosine[6] == pytest.approx(0.0, abs=1e-12) and all(a >= b for a, b in zip(cosine[2:], cosine[3:]))
    with pytest.raises(ValueError, match="total number of steps"):
        build_scheduler(optimizer, PretrainConfig(clips="c", run_dir="r", lr_schedule="cosine"))
