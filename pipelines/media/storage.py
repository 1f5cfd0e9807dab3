"""Output storage on any pyarrow filesystem, with atomic writes.

Every file is written under a hidden temporary name in its final directory
and then renamed, so readers (and a resumed run) never see a half-written
Parquet shard or manifest. Hidden ('.') and '_' prefixed paths are skipped
by Parquet dataset readers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


class OutputStore:
    """A root directory given as a local path or a filesystem URI. Picklable:
    only the root string travels; the filesystem is re-created on use."""

    def __init__(self, root: str):
        self.root = root.rstrip("/") or "/"
        self._fs: pafs.FileSystem | None = None
        self._base: str | None = None

    def __getstate__(self) -> dict:
        return {"root": self.root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"])

    @property
    def fs(self) -> pafs.FileSystem:
        if self._fs is None:
            if "://" in self.root:
                from pipelines.media.sources import filesystem_from_uri

                self._fs, self._base = filesystem_from_uri(self.root)
            else:
                import os

                self._fs, self._base = pafs.LocalFileSystem(), os.path.abspath(self.root)
        return self._fs

    def path(self, *parts: str) -> str:
        _ = self.fs
        return "/".join([self._base.rstrip("/"), *parts]) if parts else self._base

    def exists(self, path: str) -> bool:
        return self.fs.get_file_info(path).type != pafs.FileType.NotFound

    def makedirs(self, path: str) -> None:
        self.fs.create_dir(path, recursive=True)

    def _temp_name(self, path: str) -> str:
        directory, name = path.rsplit("/", 1)
        return f"{directory}/.tmp-{uuid.uuid4().hex[:8]}-{name}"

    @contextmanager
    def _atomic(self, path: str) -> Iterator[str]:
        """The temporary name to write ``path`` under; renamed into place when the block ends, removed when it
        fails (the error then names ``path``)."""
        self.makedirs(path.rsplit("/", 1)[0])
        temp = self._temp_name(path)
        try:
            yield temp
            self.fs.move(temp, path)
        except BaseException as exc:
            self.delete_file(temp)
            if not isinstance(exc, OSError) or path in str(exc):
                raise
            raise _naming(exc, path) from exc

    def write_parquet(self, path: str, tables: Iterable[pa.Table], schema: pa.Schema, compression: str) -> int:
        """Stream tables into one Parquet file (one row group each); return rows."""
        rows = 0
        with self._atomic(path) as temp:
            # Page checksums: a flipped bit in a page is an error when read (``read_shard``), not other data.
            with pq.ParquetWriter(temp, schema, filesystem=self.fs, compression=compression,
                                  write_page_checksum=True) as writer:
                for table in tables:
                    writer.write_table(table)
                    rows += table.num_rows
        return rows

    def write_json(self, path: str, data: dict) -> None:
        with self._atomic(path) as temp, self.fs.open_output_stream(temp) as out:
            out.write(json.dumps(data, indent=2, sort_keys=True, default=str).encode())

    def read_json(self, path: str) -> dict | None:
        try:
            with self.fs.open_input_stream(path) as handle:
                return json.loads(handle.read().decode())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def list_files(self, directory: str, suffix: str = "") -> list[str]:
        infos = self.fs.get_file_info(pafs.FileSelector(directory, allow_not_found=True))
        names = [i.path for i in infos if i.is_file and i.path.endswith(suffix)]
        return sorted(n for n in names if not n.rsplit("/", 1)[-1].startswith("."))

    def delete_file(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except (FileNotFoundError, OSError):
            pass

    def delete_dir(self, path: str) -> None:
        if self.exists(path):
            self.fs.delete_dir(path)


def _naming(exc: OSError, path: str) -> OSError:
    """A storage error that names the file it was writing (pyarrow's say only "Error writing bytes")."""
    return OSError(exc.errno, f"writing {path}: {exc.strerror or exc}") if exc.errno else OSError(f"writing {path}: {exc}")
