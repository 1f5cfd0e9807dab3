"""How far can the visual tower go when it is told the labels? A supervised ceiling for the quality benchmark.

    python bench/visual_ceiling.py                                 # tiny and small presets, residual input, seed 0
    python bench/visual_ceiling.py --presets small --inputs raw,residual --seeds 0,1 --epochs 15

Issue 13 asks the self-supervised visual tower for a visual-only probe of at least 0.80 balanced
accuracy (event seen vs background) on the challenging view of the quality benchmark's held-out
timeline. Before asking that of a contrastive objective, this measures what the same encoder,
preset, crop size and visual input reach when trained on the labels themselves: f_v plus a linear
layer, trained with class-balanced cross-entropy on timeline A's train view (both crops of every
clip, the benchmark's training footage), scored on timeline B's similar and challenging views on
background and visible-event seconds (the two crops' logits averaged), and again as the
benchmark reads it: a linear probe on the frozen embedding v. If the supervised tower cannot
reach the bar, no pair rule will.

The footage is the quality benchmark's (``bench/quality.py``'s cache and its data flags); it is
generated and ingested there on first use.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from quality import VIEWS, prepare_data, seen_flags  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402

from epg.config import VisualConfig  # noqa: E402
from epg.encoders.visual import X3DEncoder  # noqa: E402
from epg.metrics import balanced_accuracy  # noqa: E402
from epg.probe import ProbeConfig, train_probe  # noqa: E402
from pipelines.downstream.labels import LabelTable, align_labels, read_labels  # noqa: E402
from pipelines.runtime.cluster import start_local_ray  # noqa: E402
from pipelines.train.config import PRESETS  # noqa: E402
from pipelines.train.data import decode_clips, inspect_clips  # noqa: E402


def load_clips(root: Path) -> dict[str, np.ndarray]:
    """Every clip with video under ``root``: stream_id [N], t [N], video uint8 [N, 2 crops, 3, F, H, W]
    (decoded by the training pipeline's ``decode_clips``)."""
    info = inspect_clips(str(root))
    table = pa.concat_tables([pq.read_table(f, columns=["stream_id", "t", "frames", "logmel"],
                                            filters=[("has_video", "=", True)]) for f in info.files])
    decoded = decode_clips(table.to_pydict(), stream_index=info.stream_index(), frames_per_clip=info.frames_per_clip,
                           n_mels=info.n_mels, logmel_frames=info.logmel_frames)
    video = decoded["video"]
    return {"stream_id": np.asarray(table["stream_id"].to_pylist(), dtype=str),
            "t": np.asarray(table["t"].to_pylist(), dtype=np.int64),
            "video": video.reshape(-1, 2, *video.shape[1:])}  # a clip's two crops are adjacent rows


def labelled(labels: LabelTable, clips: dict[str, np.ndarray], stream: str) -> dict[str, np.ndarray]:
    """One stream's background and visible-event seconds: video, and ``event`` 0/1."""
    rows = np.flatnonzero(clips["stream_id"] == stream)
    t = clips["t"][rows]
    event = align_labels(labels, clips["stream_id"][rows], t).target != 0
    visible = seen_flags(labels, stream, t)["visible"]
    keep = ~event | visible
    return {"video": clips["video"][rows[keep]], "event": (event & visible)[keep].astype(np.int64)}


class Supervised(nn.Module):
    """f_v and a linear event-vs-background layer on its embedding."""

    def __init__(self, visual: VisualConfig) -> None:
        super().__init__()
        self.encoder = X3DEncoder(visual)
        self.head = nn.Linear(visual.embed_dim, 2)

    def forward(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = self.encoder(video)
        return v, self.head(v)


def as_input(video: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(video).float().div_(255.0)


@torch.no_grad()
def predict(model: Supervised, video: np.ndarray, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Per clip: the embedding of each crop [N, 2, d] and the crops' mean logits [N, 2]."""
    model.eval()
    embeddings, logits = [], []
    for start in range(0, len(video), batch):
        part = video[start:start + batch]
        v, z = model(as_input(part.reshape(-1, *part.shape[2:])))
        embeddings.append(v.reshape(len(part), 2, -1).numpy())
        logits.append(z.reshape(len(part), 2, -1).mean(dim=1).numpy())
    return np.concatenate(embeddings), np.concatenate(logits)


def run(preset: str, visual_input: str, seed: int, epochs: int, lr: float, batch: int, crop: int,
        train: dict[str, np.ndarray], tests: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """Train on ``train`` (every crop a sample), score each test view; the numbers of one run."""
    torch.manual_seed(seed)
    config = PRESETS[preset](crop).visual
    model = Supervised(dataclasses.replace(config, input=visual_input))
    samples = train["video"].reshape(-1, *train["video"].shape[2:])  # [2N, 3, F, H, W]
    targets = torch.from_numpy(np.repeat(train["event"], 2))
    weight = torch.tensor([len(targets) / (2 * max(1, int((targets == k).sum()))) for k in (0, 1)])
    optimiser = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(samples) + batch - 1) // batch)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.1)
    generator = torch.Generator().manual_seed(seed)
    began = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for index in torch.randperm(len(samples), generator=generator).split(batch):
            _, logits = model(as_input(samples[index.numpy()]))
            loss = nn.functional.cross_entropy(logits, targets[index], weight=weight)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
    seconds = time.perf_counter() - began
    train_v, _ = predict(model, train["video"])
    probe = train_probe(train_v.reshape(-1, train_v.shape[-1]), np.repeat(train["event"], 2), 2,
                        ProbeConfig(class_weight="balanced"))
    out: dict[str, Any] = {"train_seconds": seconds, "parameters": sum(p.numel() for p in model.encoder.parameters())}
    for view, test in tests.items():
        v, logits = predict(model, test["video"])
        head = balanced_accuracy(test["event"], logits.argmax(axis=1), 2)
        crop_votes = probe.predict(v.reshape(-1, v.shape[-1])).reshape(len(v), 2)
        linear = balanced_accuracy(np.repeat(test["event"], 2), crop_votes.reshape(-1), 2)
        out[view] = {"head": head, "linear_probe": linear}
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=Path("out/quality"), help="bench/quality.py's cache")
    parser.add_argument("--crops", default="64", help="crop sizes, comma-separated (footage ingested once per size)")
    parser.add_argument("--presets", default="tiny,small")
    parser.add_argument("--inputs", default="residual", help="VisualConfig.input values, comma-separated")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    # The footage: bench/quality.py's defaults, so its cache is reused.
    parser.add_argument("--train-minutes", type=float, default=20.0)
    parser.add_argument("--eval-minutes", type=float, default=60.0)
    parser.add_argument("--rate-scale", type=float, default=5.0)
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--seed-a", type=int, default=1)
    parser.add_argument("--seed-b", type=int, default=2)
    parser.add_argument("--write-results", action="store_true")
    args = parser.parse_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    if unknown := sorted(set(presets) - set(PRESETS)):
        parser.error(f"--presets: unknown {unknown}; choose from {sorted(PRESETS)}")
    torch.set_num_threads(2)
    start_local_ray(num_cpus=2)
    report = Printed()
    report(f"\nSupervised visual ceiling: f_v + a linear layer trained on the labels of timeline A's train view "
           f"(its background and visible-event seconds), {args.epochs} epochs, batch {args.batch_size}, AdamW lr "
           f"{args.lr:g} one-cycle; balanced accuracy on timeline B's background and visible-event seconds (chance "
           f"0.5): the trained layer ('head') and a linear probe on the frozen v, as bench/quality.py's visual-only "
           f"column reads it ('probe').\n")
    report("| crop | preset | input | seed | parameters | train s | similar head | similar probe | challenging head | "
           "challenging probe |")
    report("|---:|---|---|---:|---:|---:|---|---|---|---|")
    results, shares = [], ""
    for crop in [int(c) for c in args.crops.split(",") if c]:
        data = prepare_data(argparse.Namespace(**{**vars(args), "crop": crop}))
        labels = read_labels(str(data["labels"]))
        train = labelled(labels, load_clips(data["A"]), "train")
        clips_b = load_clips(data["B"])
        tests = {view: labelled(labels, clips_b, view) for view in VIEWS}
        del clips_b
        shares = (f"\nTraining clips (timeline A's train view): {len(train['event'])}, {train['event'].mean():.0%} "
                  f"with a visible event; evaluation clips: "
                  + ", ".join(f"{v} {len(t['event'])} ({t['event'].mean():.0%})" for v, t in tests.items()) + ".")
        for preset in presets:
            for visual_input in [i for i in args.inputs.split(",") if i]:
                for seed in [int(s) for s in args.seeds.split(",") if s]:
                    r = run(preset, visual_input, seed, args.epochs, args.lr, args.batch_size, crop, train, tests)
                    results.append({"crop": crop, "preset": preset, "input": visual_input, "seed": seed, **r})
                    report(f"| {crop} | {preset} | {visual_input} | {seed} | {r['parameters']:,} | "
                           f"{r['train_seconds']:.0f} | "
                           + " | ".join(f"{r[v][k]:.3f}" for v in VIEWS for k in ("head", "linear_probe")) + " |",
                           flush=True)
    report(shares)
    (args.cache / "visual_ceiling.json").write_text(json.dumps(results, indent=1))
    if args.write_results:
        update_results("Supervised visual ceiling", report.text,
                       command_line(__file__, sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
