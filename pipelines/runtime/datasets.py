"""Ray Data helpers for stages made of one map: one task per item, results back to the driver."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tqdm import tqdm


def single_map_dataset(items: list[dict], fn: Callable[[dict], dict], num_cpus: float) -> Any:
    """One Ray Data task per item, without Ray Data's per-operator resource reservation.

    The reservation keeps CPUs back for downstream operators; these datasets have none, and on
    a small node it holds part of the CPUs idle at the start and leaves gaps between tasks. The
    setting is captured by the dataset when it is made, so the process-wide context is restored
    right after (other pipelines in the same driver keep it).
    """
    import ray

    ctx = ray.data.DataContext.get_current()
    saved = ctx.op_resource_reservation_enabled
    ctx.op_resource_reservation_enabled = False
    try:
        return ray.data.from_items(items, override_num_blocks=len(items)).map(fn, num_cpus=num_cpus)
    finally:
        ctx.op_resource_reservation_enabled = saved


def run_map(items: list[dict], fn: Callable[[dict], dict], num_cpus: float, desc: str, unit: str,
            show_progress: bool) -> list[dict]:
    """``fn`` over ``items`` in Ray tasks, with a progress bar; the result rows in completion order."""
    if not items:
        return []
    dataset = single_map_dataset(items, fn, num_cpus)
    results = []
    with tqdm(total=len(items), desc=desc, unit=unit, disable=not show_progress, mininterval=1.0) as bar:
        for result in dataset.iter_rows():
            results.append(result)
            bar.update(1)
    return results

