"""Fuzzed media, a small seeded sample (bench/fuzz.py runs the long campaigns): mutants of real containers
(pipelines.synthetic.damage) and an input that never delivers a byte, through ingest and through scoring
from videos, on a real local Ray. Every clean file ends with the rows of a clean run, every mutant with
rows or a failed manifest naming the file and the reason, the hung input is stopped at its bound, and
nothing half-written is left. Also one window's decode hanging in native code, and one crashing, for real."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.ingest.config import IngestConfig
from pipelines.ingest.job import run_ingest
from pipelines.ingest.window import WindowTask, bounded_decode, decode_window_row
from pipelines.media.info import inspect_video
from pipelines.media.storage import OutputStore
from pipelines.runtime import isolated
from pipelines.runtime.isolated import ChildDied
from pipelines.score.config import EmbedConfig
from pipelines.score.job import run_embed
from pipelines.synthetic import SyntheticConfig, generate
from pipelines.synthetic.damage import CONTAINERS, MUTATIONS, recode, write_mutants
from tests.models import tiny_checkpoint

SECONDS = 8
MUTANTS = 12  # every container twice, every mutation at least twice
BOUND = 15.0  # seconds a window's decode or a file's inspection may take here


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("fuzz")
    footage = generate(SyntheticConfig(out=folder / "source", minutes=SECONDS / 60, seed=5, size=(96, 54),
                                       views=("train",)))
    clean_dir = folder / "clean"
    clean_dir.mkdir()
    clean = {name: recode(footage.videos["train"], clean_dir / f"clean-{name}{suffix}", name)
             for name, (suffix, *_) in CONTAINERS.items()}
    made = write_mutants(clean, folder / "mutants", MUTANTS, seed=0)
    pipe = folder / "mutants" / "never-delivers.mp4"
    os.mkfifo(pipe)  # opening it for reading blocks in native code until a writer comes: none does
    return {"folder": folder, "clean_dir": clean_dir, "clean": clean, "mutants": {m.path.stem: m for m in made},
            "pipe": pipe}


def manifests(root: Path) -> dict[str, dict]:
    return {p.parent.name.split("=", 1)[1]: json.loads(p.read_text()) for p in root.glob("stream_id=*/manifest.json")}


def stream(root: Path, stream_id: str) -> pa.Table:
    names = manifests(root)[stream_id]["files"]
    return pa.concat_tables([pq.read_table(root / f"stream_id={stream_id}" / n) for n in names]).sort_by("t")


def assert_fuzzed_run(out: Path, anchor: Path, corpus: dict, least_rows: int) -> dict[str, dict]:
    """The promises of a run over clean files + mutants (see the module docstring); the manifests. A complete
    mutant has at least ``least_rows`` rows (scoring gives none to clips without audio or video)."""
    found = manifests(out)
    for path in corpus["clean"].values():
        assert found[path.stem]["status"] == "complete", found[path.stem]["errors"]
        assert stream(out, path.stem).equals(stream(anchor, path.stem)), path.stem
    outcomes = {"rows": 0, "failed": 0}
    for stream_id, mutant in corpus["mutants"].items():
        data = found[stream_id]
        if data["status"] == "complete":
            assert data["rows"] >= least_rows and stream(out, stream_id).num_rows == data["rows"], stream_id
            outcomes["rows"] += 1
        else:
            assert data["status"] == "failed" and data["errors"], stream_id
            assert all(str(mutant.path) in e for e in data["errors"]), data["errors"]
            outcomes["failed"] += 1
    assert outcomes["rows"] >= 3 and outcomes["failed"] >= 3, outcomes  # both ends of the sample are exercised
    pipe = found[corpus["pipe"].stem]
    assert pipe["status"] == "failed" and len(pipe["errors"]) == 1
    assert str(corpus["pipe"]) in pipe["errors"][0] and f"did not finish within {BOUND:g} s" in pipe["errors"][0]
    # Nothing half-written: no temporaries, no staging, no Parquet file a complete manifest does not list.
    assert not list(out.rglob(".tmp-*")) and not list(out.glob("_staging*"))
    for stream_id, data in found.items():
        files = {p.name for p in (out / f"stream_id={stream_id}").glob("*.parquet")}
        assert files == (set(data["files"]) if data["status"] == "complete" else set()), stream_id
    return found


def test_ingest_of_mutants_keeps_clean_files_exact_and_names_every_failure(corpus, ray_local, tmp_path):
    config = IngestConfig(crop_size=32, window_seconds=4, shard_rows=8, decode_timeout=BOUND)
    anchor = tmp_path / "anchor"
    assert run_ingest([str(corpus["clean_dir"])], str(anchor), config, show_progress=False).ok
    out = tmp_path / "fuzzed"
    began = time.monotonic()
    summary = run_ingest([str(corpus["clean_dir"]), str(corpus["folder"] / "mutants")], str(out), config,
                         show_progress=False)
    assert time.monotonic() - began < 300
    assert not summary.ok and summary.hung == 1 and summary.crashed == 0
    found = assert_fuzzed_run(out, anchor, corpus, least_rows=1)
    kept = [d["damaged_packets"] for sid, d in found.items() if sid in corpus["mutants"] and d["status"] == "complete"]
    assert sum(kept) > 0  # damaged packets left out, the rows kept
    assert summary.damaged_packets == sum(d["damaged_packets"] for d in found.values())
    assert "1 hung past 15 s" in summary.format()
    assert {m.mutation for m in corpus["mutants"].values()} == set(MUTATIONS)


def test_scoring_videos_of_mutants_keeps_clean_files_exact_and_names_every_failure(corpus, ray_local, tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "run")
    settings = EmbedConfig(window_seconds=4, rows_per_file=8, batch_size=8, decode_timeout=BOUND)
    anchor = tmp_path / "anchor"
    assert run_embed(str(checkpoint), str(anchor), videos=[str(corpus["clean_dir"])], settings=settings,
                     show_progress=False).ok
    out = tmp_path / "fuzzed"
    summary = run_embed(str(checkpoint), str(out), videos=[str(corpus["clean_dir"]), str(corpus["folder"] / "mutants")],
                        settings=settings, show_progress=False)
    assert not summary.ok
    assert_fuzzed_run(out, anchor, corpus, least_rows=0)


def window_of(path: Path, config: IngestConfig, store: OutputStore, uri: str | None = None) -> dict:
    info = inspect_video(str(path))
    task = WindowTask(path.stem, uri or str(path), 0, 4, store.path("_staging", "w.parquet"),
                      json.dumps(info.to_dict()), "pyav")
    return {k: v for k, v in task.__dict__.items()}


def test_a_window_whose_decode_hangs_or_crashes_fails_alone_and_the_next_one_decodes(corpus, tmp_path):
    config = IngestConfig(crop_size=32, window_seconds=4, decode_timeout=3.0)
    store = OutputStore(str(tmp_path / "out"))
    good = corpus["clean"]["mp4"]
    isolated.shutdown()
    try:
        # Hung: the window's file is a pipe nobody writes to; PyAV blocks in open() until the bound.
        began = time.monotonic()
        hung = decode_window_row(window_of(good, config, store, uri=str(corpus["pipe"])), config, store)
        assert 3.0 <= time.monotonic() - began < 15
        assert not hung["ok"] and hung["stopped"] == "hung"
        assert hung["error"] == f"{corpus['pipe']}: window 0-4 s: decode did not finish within 3 s (its process was stopped)"
        # Crashed: the decode process dies by a signal mid-window (as a decoder crash does), once it reads the
        # pipe: opening the pipe's write end succeeds only while a reader has it open.
        pid = []

        def crash() -> None:
            while not pid:
                try:
                    writer = os.open(corpus["pipe"], os.O_WRONLY | os.O_NONBLOCK)
                except OSError:  # no reader yet (ENXIO)
                    time.sleep(0.01)
                    continue
                pid.append(isolated.child_pid())
                os.kill(pid[0], signal.SIGSEGV)  # while the decode waits for bytes that never come
                time.sleep(0.5)
                os.close(writer)

        killer = threading.Thread(target=crash, daemon=True)
        killer.start()
        crashed = decode_window_row(window_of(good, config, store, uri=str(corpus["pipe"])), config, store)
        killer.join(timeout=10)
        assert not crashed["ok"] and crashed["stopped"] == "crashed"
        assert "decode crashed (its process died: SIGSEGV)" in crashed["error"] and str(corpus["pipe"]) in crashed["error"]
        # The next window decodes in a new process (bounded generously: a new process on a busy machine).
        roomy = replace(config, decode_timeout=120.0)
        fine = decode_window_row(window_of(good, roomy, store), roomy, store)
        assert fine["ok"] and fine["rows"] == 4 and fine["stopped"] == "", fine
        assert isolated.child_pid() not in pid
    finally:
        isolated.shutdown()


@pytest.mark.parametrize(("signum", "retried"), [(signal.SIGKILL, True), (signal.SIGSEGV, False)])
def test_a_decode_killed_from_outside_is_tried_once_more_and_a_crash_is_not(signum, retried):
    """SIGKILL (the OOM killer, an operator) costs the window one more try in a new process, as a lost Ray
    worker would; a crash by the decoder's own fault (SIGSEGV) fails it at once."""
    isolated.shutdown()
    first = bounded_decode(os.getpid, timeout=30)  # the child, started
    killer = threading.Timer(0.5, os.kill, (first, signum))  # half a second into the next call
    killer.start()
    try:
        if retried:
            assert bounded_decode(time.sleep, 2, timeout=30) is None
            assert isolated.child_pid() not in (None, first)  # answered by a new child
        else:
            with pytest.raises(ChildDied, match="SIGSEGV"):
                bounded_decode(time.sleep, 2, timeout=30)
    finally:
        killer.join(10)
        isolated.shutdown()
