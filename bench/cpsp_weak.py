"""CPSP weak against full supervision on one set of frozen embeddings, over CPSP seeds.

The localize job's CPSP head (``pipelines.downstream.heads``) on the train view, scored on the
challenging view, for: full supervision (the anchor), weak supervision with the presence terms
of ``epg.cpsp.loss_mil`` (the default) and weak supervision without them (the attention means
alone). Per run it prints accuracy, how often the gate is right (event vs background), the
predicted background share and the class accuracy on seconds both call events.

    python bench/cpsp_weak.py --embeddings RUN/embeddings --labels DATA/labels.parquet

(``bench/quality.py --keep-embeddings`` keeps a run's embeddings.)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from epg.cpsp.config import CPSPLossConfig  # noqa: E402
from pipelines.downstream.heads import CPSPHead, CPSPHeadConfig, LabelledSeconds  # noqa: E402
from pipelines.downstream.labels import read_labels  # noqa: E402
from pipelines.downstream.localize_job import _labelled_seconds  # noqa: E402
from pipelines.score.embeddings import read_embeddings  # noqa: E402

VARIANTS = {
    "full": CPSPHeadConfig(supervision="full"),
    "weak": CPSPHeadConfig(supervision="weak"),
    "weak, no presence terms": CPSPHeadConfig(supervision="weak", loss=CPSPLossConfig(mil_presence_weight=0.0)),
}


def scores(head: CPSPHead, data: LabelledSeconds) -> dict[str, float]:
    predicted = head.predict(data)
    correct = data.present[np.arange(len(predicted)), predicted]
    true_bg, said_bg = data.target == 0, predicted == 0
    both_events = ~true_bg & ~said_bg
    return {"accuracy": float(correct.mean()), "gate": float((true_bg == said_bg).mean()),
            "said background": float(said_bg.mean()), "class on events": float(correct[both_events].mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--embeddings", required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--train", default="train", help="training stream")
    parser.add_argument("--eval", default="challenging", help="evaluation stream")
    parser.add_argument("--seeds", default="0,1,2", help="CPSP seeds")
    args = parser.parse_args()
    torch.set_num_threads(1)
    emb, labels = read_embeddings(args.embeddings), read_labels(args.labels)
    train = _labelled_seconds(emb.of_streams((args.train,)), labels)
    test = _labelled_seconds(emb.of_streams((args.eval,)), labels)
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = {}
    for name, config in VARIANTS.items():
        for seed in seeds:
            head = CPSPHead(dataclasses.replace(config, seed=seed))
            began = time.perf_counter()
            head.fit(train, labels.classes)
            rows.setdefault(name, []).append(scores(head, test))
            print(f"{name} seed {seed}: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[name][-1].items())
                  + f" ({time.perf_counter() - began:.0f} s)", flush=True)
    print(f"\n{args.embeddings}, {args.eval} view, mean ± std over CPSP seeds {args.seeds}; the true background share "
          f"is {float((test.target == 0).mean()):.3f}\n")
    keys = list(next(iter(rows.values()))[0])
    print("| head | " + " | ".join(keys) + " | accuracy − full |\n|---" + "|---" * (len(keys) + 1) + "|")
    full = np.array([r["accuracy"] for r in rows["full"]])
    for name, results in rows.items():
        cells = [np.array([r[k] for r in results]) for k in keys]
        gap = np.array([r["accuracy"] for r in results]) - full
        print(f"| {name} | " + " | ".join(f"{c.mean():.3f} ± {c.std(ddof=1):.3f}" for c in cells + [gap]) + " |")


if __name__ == "__main__":
    main()
