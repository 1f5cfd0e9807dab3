"""Rank 0's record of a run: metrics/steps.csv, metrics/epochs.csv, TensorBoard scalars, and the progress line.

The progress lines go to ``metrics/progress.log``; the driver follows that file and prints them
(``follow_progress``). They do not travel through the workers' stdout, which Ray forwards to the
driver's console only when it joins a cluster (a local Ray keeps workers' output in its log files).
"""

from __future__ import annotations

import csv
import math
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping

PROGRESS_FILE = "progress.log"
PROGRESS_PREFIX = "[pretrain] "


class MetricsLog:
    """Rank 0's record: steps.csv, epochs.csv and TensorBoard scalars under the run dir, plus the progress line."""

    def __init__(self, run_dir: Path, resume_step: int, epochs: int, resume_epoch: int = 0) -> None:
        """Resuming at ``resume_step``, in epoch ``resume_epoch``: the rows an interrupted run wrote beyond
        them go (its steps after the checkpoint, the summary of an epoch the resumed run finishes again)."""
        from torch.utils.tensorboard import SummaryWriter

        self.dir = run_dir / "metrics"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.epochs = epochs
        self.steps_path, self.epochs_path = self.dir / "steps.csv", self.dir / "epochs.csv"
        self.progress_path = self.dir / PROGRESS_FILE
        self.step_rows = [r for r in _read_csv(self.steps_path) if int(float(r["step"])) <= resume_step]
        _write_csv(self.steps_path, self.step_rows)  # drop steps of an interrupted run beyond its checkpoint
        _write_csv(self.epochs_path, [r for r in _read_csv(self.epochs_path) if int(float(r["epoch"])) < resume_epoch])
        self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)

    def step(self, row: dict[str, float], log: bool) -> None:
        self.step_rows.append({k: str(v) for k, v in row.items()})
        _append_csv(self.steps_path, row)
        for key, value in row.items():
            if key not in ("step", "epoch"):
                self.writer.add_scalar(f"step/{key}", value, int(row["step"]))
        if log:
            self.progress(
                f"epoch {int(row['epoch']) + 1}/{self.epochs} step {int(row['step'])} loss {row['loss']:.4f} "
                f"pos/anchor {row['positives_per_anchor']:.2f} (+{row['extra_positives_per_anchor']:.2f} mined) "
                f"{row['samples_per_s']:.1f} samples/s, waiting for data {row['data_wait_fraction']:.0%}"
            )

    def epoch_end(self, epoch: int, extra: Mapping[str, float] | None = None) -> dict[str, float]:
        """The epoch's means of the step metrics, plus ``extra`` (the held-out diagnostics), into epochs.csv."""
        rows = [r for r in self.step_rows if int(float(r["epoch"])) == epoch]
        keys = [k for k in rows[0] if k not in ("epoch", "step")] if rows else []
        means = {"epoch": float(epoch), "steps": float(len(rows))}
        for key in keys:
            values = [float(r[key]) for r in rows if not math.isnan(float(r[key]))]
            means[key] = sum(values) / len(values) if values else math.nan
        means.update(extra or {})
        _append_csv(self.epochs_path, means)
        for key, value in means.items():
            if key != "epoch":
                self.writer.add_scalar(f"epoch/{key}", value, epoch)
        self.writer.flush()
        return means

    def progress(self, line: str) -> None:
        """One progress line, appended to ``metrics/progress.log`` (the driver prints it)."""
        with self.progress_path.open("a") as handle:
            handle.write(line + "\n")

    def close(self) -> None:
        self.writer.close()


def follow(path: Path, offset: int, stop: threading.Event, interval: float = 0.5) -> None:
    """Print every line appended to ``path`` past ``offset`` (with ``PROGRESS_PREFIX``) until ``stop`` is set."""
    pending = b""
    while True:
        stopping = stop.wait(interval)
        if path.is_file():
            with path.open("rb") as handle:
                handle.seek(offset)
                data = handle.read()
            offset += len(data)
            *lines, pending = (pending + data).split(b"\n")
            for line in lines:
                sys.stdout.write(f"{PROGRESS_PREFIX}{line.decode()}\n")
            sys.stdout.flush()
        if stopping:
            return


@contextmanager
def follow_progress(run_dir: Path) -> Iterator[None]:
    """While the block runs, the driver prints the run's new progress lines (``metrics/progress.log``);
    lines already there (a resumed run's) are not printed again."""
    path = run_dir / "metrics" / PROGRESS_FILE
    stop = threading.Event()
    thread = threading.Thread(target=follow, args=(path, path.stat().st_size if path.is_file() else 0, stop),
                              daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _read_csv(path: Path) -> list[dict[str, str]]:
    """The file's whole rows: a last row cut short (a killed process, a full disk: no line end) is left out."""
    if not path.is_file():
        return []
    text = path.read_text()
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return [row for row in csv.DictReader(text.splitlines()) if None not in row and None not in row.values()]


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    with tmp.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    os.replace(tmp, path)


def _append_csv(path: Path, row: Mapping[str, Any]) -> None:
    new = not path.is_file() or path.stat().st_size == 0
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)

