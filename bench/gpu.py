"""GPU figures in one run, for a machine with PyTorch + CUDA and no Ray (issue 16).

    bench/gpu.sh                       # on the GPU machine: the carried wheels, then this script
    python bench/gpu.py                # x3d_m at 160 px, bf16, on cuda:0
    python bench/gpu.py --dry          # CPU, tiny sizes, seconds: the same code paths (the test suite runs it)

One table, three parts:
- **Pretraining**: the project's training step (``epg.step.train_step``) on the preset's
  encoders, under bf16 autocast (``pipelines.train.loop.Autocast``), wrapped in DDP with
  SyncBatchNorm over a one-process NCCL group (gloo in --dry), with the embedding bank and
  the default pairing. Batches come from a torch DataLoader whose worker processes run the
  training pipeline's own decode (``pipelines.train.data.decode_clips``: JPEG crops and
  log-mels of synthetic clip rows) into pinned memory. Reported: visual samples/s per GPU,
  the share of step time spent waiting for the next batch and inside pair mining, and the
  peak GPU memory.
- **Mining + loss against bank sizes**: ``bench/pairs.py``'s measurement on this device.
- **Scoring**: the scoring job's embedder (``pipelines.score.model.ClipEmbedder``) on the
  device, clips/s from clip rows (their JPEG decode in DataLoader workers, as above),
  against the embedder alone on one in-memory batch of the same size.

What it does not cover of the Ray GPU path: Ray Train's worker group and its NCCL set-up
over several GPUs or nodes (DDP here has one rank), Ray Data's streaming into the workers
(a DataLoader stands in), Ray's actor pool for scoring (one in-process model here), and
scoring fused from raw video (its decode needs PyAV and librosa, not on that machine).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
from PIL import Image  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402

import epg.step  # noqa: E402
from epg.bank import EmbeddingBank  # noqa: E402
from epg.optim import build_optimizer  # noqa: E402
from pipelines.train.checkpoint import build_model  # noqa: E402
from pipelines.train.config import build_pretrain_config  # noqa: E402
from pipelines.train.data import decode_clips, to_torch_batch  # noqa: E402
from pipelines.train.loop import Autocast  # noqa: E402

FULL = {"preset": "x3d_m", "crop": 160, "batch": 64, "steps": 30, "warmup": 5, "workers": 8, "banks": (0, 16_384, 65_536),
        "score_clips": 2_048, "pair_batch": 1_024}
DRY = {"preset": "tiny", "crop": 32, "batch": 8, "steps": 3, "warmup": 1, "workers": 1, "banks": (0, 256),
       "score_clips": 32, "pair_batch": 64}


def synthetic_rows(n: int, crop: int, frames: int, n_mels: int, logmel_frames: int, seed: int = 0) -> dict[str, list]:
    """Clip rows in the clips table's layout: two crops × ``frames`` JPEGs each (drawn from a pool of 64
    encoded noise pictures: decoding costs what it costs, encoding them all would not), a log-mel, (stream, t)."""
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(64):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (crop, crop, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
        pool.append(buffer.getvalue())
    rows: dict[str, list] = {"stream_id": [], "t": [], "frames": [], "logmel": []}
    for i in range(n):
        jpegs = [pool[j] for j in rng.integers(0, len(pool), 2 * frames)]
        rows["stream_id"].append(f"cam{i % 4}")
        rows["t"].append(i // 4)
        rows["frames"].append(jpegs)
        rows["logmel"].append(rng.normal(-40, 10, n_mels * logmel_frames).astype(np.float32))
    return rows


class ClipBatches(torch.utils.data.Dataset):
    """Item i = the decoded batch of clip rows [i·clips, (i+1)·clips): the training pipeline's decode per batch."""

    def __init__(self, rows: dict[str, list], clips: int, frames: int, n_mels: int, logmel_frames: int):
        self.rows, self.clips = rows, clips
        self.decode = {"stream_index": {f"cam{i}": i for i in range(4)}, "frames_per_clip": frames, "n_mels": n_mels,
                       "logmel_frames": logmel_frames}

    def __len__(self) -> int:
        return len(self.rows["t"]) // self.clips

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        part = {k: v[i * self.clips:(i + 1) * self.clips] for k, v in self.rows.items()}
        return decode_clips(part, **self.decode)


def loader(dataset: ClipBatches, workers: int, pin: bool) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(dataset, batch_size=None, shuffle=True, num_workers=workers, pin_memory=pin,
                                       persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                                       collate_fn=lambda batch: batch)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def timed_mining(device: torch.device, seconds: list[float]):
    """Times ``pair_labels`` inside ``train_step`` (synchronised, so the GPU's share is counted where it runs)."""
    original = epg.step.pair_labels

    def timed(*args, **kwargs):
        sync(device)
        began = time.perf_counter()
        out = original(*args, **kwargs)
        sync(device)
        seconds.append(time.perf_counter() - began)
        return out

    epg.step.pair_labels = timed
    try:
        yield
    finally:
        epg.step.pair_labels = original


def one_rank_group(device: torch.device) -> None:
    """A one-process group (NCCL on a GPU, gloo on CPU), so DDP and SyncBatchNorm run as on the cluster."""
    if not dist.is_initialized():
        store = dist.FileStore(tempfile.mktemp(prefix="epg-gpu-bench-"), 1)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=store, rank=0, world_size=1)


def pretraining(sizes: dict, device: torch.device, work: Path) -> dict:
    config = build_pretrain_config(str(work / "clips"), str(work / "run"), preset=sizes["preset"], crop_size=sizes["crop"],
                                   optim={"batch_size": sizes["batch"]})
    model_config = config.epg.model
    frames, n_mels, logmel_frames = model_config.visual.frames, model_config.audio.n_mels, model_config.audio.frames
    clips = sizes["batch"] // 2  # two visual samples per clip row
    total = sizes["steps"] + sizes["warmup"]
    rows = synthetic_rows(clips * total, sizes["crop"], frames, n_mels, logmel_frames)
    data = loader(ClipBatches(rows, clips, frames, n_mels, logmel_frames), sizes["workers"], device.type == "cuda")

    one_rank_group(device)
    model = build_model(config)
    if device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(device).train()
    forward = Autocast(model, device.type)  # bf16 on the GPU; on CPU (--dry) the same wrapper, CPU autocast
    wrapped = nn.parallel.DistributedDataParallel(forward, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = build_optimizer(model, config.epg.optim, None)
    bank = EmbeddingBank.from_config(config.epg.bank)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    steps, waits, mining = [], [], []
    with timed_mining(device, mining):
        batches = iter(data)
        for step in range(total):
            began = time.perf_counter()
            numpy_batch = next(batches)
            got = time.perf_counter()
            batch = to_torch_batch(numpy_batch, device)
            out = epg.step.train_step(wrapped, batch, bank, config.epg, epoch=1, step=step)
            optimizer.zero_grad(set_to_none=True)
            out.ddp_loss.backward()
            optimizer.step()
            sync(device)
            if step >= sizes["warmup"]:
                steps.append(time.perf_counter() - began)
                waits.append(got - began)
    mined = mining[-len(steps):]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return {"preset": sizes["preset"], "crop": sizes["crop"], "batch": sizes["batch"],
            "samples_per_s": sizes["batch"] * len(steps) / sum(steps), "wait_share": sum(waits) / sum(steps),
            "mining_share": sum(mined) / sum(steps), "peak_gib": peak, "loss": float(out.metrics["loss"])}


def mining_and_loss(sizes: dict, device: torch.device) -> list[dict]:
    from pairs import run_one  # bench/pairs.py: the same measurement as on CPU

    threads = torch.get_num_threads()
    return [run_one(sizes["pair_batch"], bank, 512 if sizes is FULL else 16, 4096, rule, device.type, threads, 3)
            for rule in ("topk", "consensus") for bank in sizes["banks"]]


def embedder_of(sizes: dict, device: torch.device, work: Path):
    """The scoring job's embedder (``ClipEmbedder``) of a seeded random model of the preset, on ``device``."""
    from pipelines.score.model import ClipEmbedder, ScoringModel

    config = build_pretrain_config(str(work / "clips"), str(work / "run"), preset=sizes["preset"], crop_size=sizes["crop"])
    scoring_model = ScoringModel(work / "random", "random", build_model(config), config.epg.model, config.epg.loss.distance_lam)
    return ClipEmbedder.in_process(scoring_model, batch_size=sizes["batch"], device=device.type), config.epg.model


def as_clips(decoded: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """decode_clips' visual samples (two per clip, adjacent) -> the embedder's clips [n, 2, ...] and their audio."""
    video = decoded["video"]
    return video.reshape(video.shape[0] // 2, 2, *video.shape[1:]), decoded["audio"][::2]


def scoring(sizes: dict, device: torch.device, work: Path) -> dict:
    embedder, model_config = embedder_of(sizes, device, work)
    frames, n_mels, logmel_frames = model_config.visual.frames, model_config.audio.n_mels, model_config.audio.frames
    clips = sizes["batch"]
    rows = synthetic_rows(sizes["score_clips"], sizes["crop"], frames, n_mels, logmel_frames, seed=1)
    data = loader(ClipBatches(rows, clips, frames, n_mels, logmel_frames), sizes["workers"], False)
    video, audio = as_clips(next(iter(data)))
    embedder.embed(video, audio)  # warm-up: kernels, allocator
    sync(device)
    repeats = max(1, sizes["score_clips"] // clips)
    began = time.perf_counter()
    for _ in range(repeats):
        embedder.embed(video, audio)
    sync(device)
    model_only = repeats * clips / (time.perf_counter() - began)
    began, embedded = time.perf_counter(), 0
    for decoded in data:
        embedded += len(embedder.embed(*as_clips(decoded))[0])
    sync(device)
    return {"model_only": model_only, "from_clips": embedded / (time.perf_counter() - began)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry", action="store_true", help="CPU, tiny sizes: check the code paths in seconds")
    parser.add_argument("--write-results", action="store_true", help="also write the table into bench/RESULTS.md")
    args = parser.parse_args()
    sizes = DRY if args.dry else FULL
    if not args.dry and not torch.cuda.is_available():
        raise SystemExit("bench/gpu.py: no CUDA device (use --dry to check the code paths on CPU)")
    device = torch.device("cpu") if args.dry else torch.device("cuda", 0)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="epg-gpu-") as tmp:
        work = Path(tmp)
        began = time.perf_counter()
        train = pretraining(sizes, device, work)
        pairs = mining_and_loss(sizes, device)
        score = scoring(sizes, device, work)
        wall = time.perf_counter() - began
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU (dry run)"
    report = Printed()
    report(f"GPU benchmark on {name}, torch {torch.__version__}, {'dry run, tiny sizes' if args.dry else 'full sizes'}, "
           f"{wall:.0f} s")
    report("| part | setting | figure |")
    report("|---|---|---|")
    report(f"| pretraining | {train['preset']} {train['crop']} px, batch {train['batch']} visual samples, bf16 autocast, "
           f"DDP{' + SyncBatchNorm' if device.type == 'cuda' else ''} (1 rank, {dist.get_backend() if dist.is_initialized() else ''}), "
           f"bank on, {sizes['workers']} decode workers | {train['samples_per_s']:.1f} samples/s; waiting for data "
           f"{100 * train['wait_share']:.1f} %; pair mining {100 * train['mining_share']:.1f} %; peak memory "
           f"{train['peak_gib']:.2f} GiB |")
    for r in pairs:
        report(f"| mining + loss | {r['rule']}, batch {sizes['pair_batch']}, bank {r['bank']:,} | mining {1000 * r['mine']:.1f} ms, "
               f"loss forward {1000 * r['forward']:.1f} ms, backward {1000 * r['backward']:.1f} ms; peak {r['peak_mib']:.0f} MiB |")
    report(f"| scoring | {train['preset']} {train['crop']} px, batch {sizes['batch']} clips, from decoded clip rows "
           f"| {score['from_clips']:.1f} clips/s ({score['from_clips'] / score['model_only']:.2f}× the model alone, "
           f"{score['model_only']:.1f} clips/s) |")
    report("Not covered: Ray Train's multi-GPU worker group, Ray Data streaming, Ray's scoring actor pool, fused video decode.")
    report(f"Ray imported: {'yes' if 'ray' in sys.modules else 'no'} (the GPU machine has none)")
    if args.write_results and not args.dry:
        update_results("GPU", report.text, command_line(__file__, sys.argv[1:]))
    if os.environ.get("EPG_GPU_BENCH_OUT"):
        Path(os.environ["EPG_GPU_BENCH_OUT"]).write_text(report.text + "\n")
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
