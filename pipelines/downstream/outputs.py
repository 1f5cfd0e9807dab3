"""A downstream job's output directory: atomic writes of tables, JSON, images and the run's config.

Every file is written under a hidden temporary name and renamed (``OutputStore``),
so a report page never embeds a half-written PNG. JSON is strict: NaN and ±inf
become null, NumPy scalars become numbers.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import uuid
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pipelines.media.storage import OutputStore

CONFIG_FILE = "config.json"


def json_ready(value: Any) -> Any:
    """A JSON-serialisable copy: NaN/inf → None, NumPy → Python, tuples → lists, dataclasses → dicts."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return json_ready(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class OutputDir:
    """Files of one job run under a root (local path or URI)."""

    def __init__(self, root: str):
        self.root = root
        self.store = OutputStore(root)
        self.written: list[str] = []

    def path(self, name: str) -> str:
        return self.store.path(name)

    def write_bytes(self, name: str, data: bytes) -> str:
        path = self.path(name)
        directory = path.rsplit("/", 1)[0]
        self.store.makedirs(directory)
        temp = f"{directory}/.tmp-{uuid.uuid4().hex[:8]}-{name.rsplit('/', 1)[-1]}"
        try:
            with self.store.fs.open_output_stream(temp) as out:
                out.write(data)
            self.store.fs.move(temp, path)
        except BaseException:
            self.store.delete_file(temp)
            raise
        self.written.append(name)
        return path

    def write_json(self, name: str, data: Any) -> str:
        text = json.dumps(json_ready(data), indent=2, allow_nan=False, ensure_ascii=False)
        return self.write_bytes(name, (text + "\n").encode())

    def write_parquet(self, name: str, table: pa.Table) -> str:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        return self.write_bytes(name, sink.getvalue())

    def write_csv(self, name: str, table: pa.Table) -> str:
        sink = io.BytesIO()
        pacsv.write_csv(table, sink)
        return self.write_bytes(name, sink.getvalue())

    def remove_stale(self, prefix: str, suffix: str, keep: set[str]) -> None:
        """Delete ``prefix*suffix`` files of an earlier run in this directory that this run did not write."""
        for path in self.store.list_files(self.store.path(), suffix):
            name = path.rsplit("/", 1)[-1]
            if name.startswith(prefix) and name not in keep:
                self.store.delete_file(path)
