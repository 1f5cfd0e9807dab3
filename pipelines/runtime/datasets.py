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


def _read_whole(item: dict) -> dict:
    from pipelines.ingest.clips_dataset import read_shard
    from pipelines.media.storage import OutputStore
    from pipelines.runtime.manifest import DamagedFile

    try:
        read_shard(item["path"], OutputStore(item["root"]).fs)
        return {"path": item["path"], "error": ""}
    except DamagedFile as exc:
        return {"path": item["path"], "error": str(exc)}


IN_DRIVER_BYTES = 512 * 2**20  # a dataset this small is checked by the driver itself (no Ray tasks to start)


def damaged_shards(paths: list[str], root: str, show_progress: bool = False) -> dict[str, str]:
    """Read every Parquet file of a dataset once: {path: why} for those that cannot be decoded.

    Footers are checked before a job starts (``inspect_clips``); damage inside a file's data pages shows
    only when its pages are decompressed, and deep in a Ray Data read it would name no file. So the job
    reads the data once more first: in the driver's threads when it is small, else in Ray tasks across
    the cluster (training reads it every epoch anyway; scoring's model costs far more than a read)."""
    from concurrent.futures import ThreadPoolExecutor

    from pipelines.media.storage import OutputStore

    items = [{"path": p, "root": root} for p in paths]
    size = sum(max(0, info.size or 0) for info in OutputStore(root).fs.get_file_info(paths))
    if size <= IN_DRIVER_BYTES:
        with ThreadPoolExecutor(max_workers=4) as pool:
            rows = list(pool.map(_read_whole, items))
    else:
        rows = run_map(items, _read_whole, 1.0, "checking", "file", show_progress)
    return {row["path"]: row["error"] for row in rows if row["error"]}
