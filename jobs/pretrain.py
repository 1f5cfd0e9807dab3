"""EPG pretraining on Ray Train: clips Parquet -> run dir with checkpoints and metrics.

Local:    python jobs/pretrain.py --clips data/clips --run-dir runs/epg0 --preset tiny --epochs 2 --workers 1
Cluster:  ray job submit --working-dir . -- python jobs/pretrain.py --clips s3://bucket/clips --run-dir /shared/runs/epg0 ...
Rerunning the same command with the same --run-dir resumes from its latest checkpoint.
Exit code 0 when training finished (or stopped at --stop-after-steps), 1 when training failed,
2 for bad arguments or input (checked before any training starts).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout / ray working dir

from pipelines.runtime.lock import OutputInUse  # noqa: E402
from pipelines.train import args as pretrain_args  # noqa: E402
from pipelines.train.args import config_from_args  # noqa: E402
from pipelines.train.config import PretrainError, RunDirWriteError  # noqa: E402
from pipelines.train.driver import run_pretrain  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return pretrain_args.parse_args(argv, description=__doc__)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = config_from_args(args)
        result = run_pretrain(config, ray_address=args.address)
    except (PretrainError, ValueError, FileNotFoundError, OutputInUse) as exc:
        print(f"pretrain: error: {exc}", file=sys.stderr)
        return 2
    except RunDirWriteError as exc:  # a full disk: the checkpoints written before it stay, a rerun resumes
        print(f"pretrain: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # ray.train.TrainingFailedError and the like: training started and failed
        print(f"pretrain: training failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"pretrain: done; run dir {result.run_dir}, latest checkpoint {result.checkpoint}")
    print(f"pretrain: last step: loss {result.metrics.get('loss', float('nan')):.4f}, step {result.metrics.get('step')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
