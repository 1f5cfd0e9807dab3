"""Which checkpoints of a run dir count: those Ray Train registered (a copy cut short never does), read from
its registry; a run dir pretraining did not write (a random-init checkpoint) keeps every checkpoint."""

from __future__ import annotations

import json
import shutil

import pytest

from pipelines.score.config import EmbedError
from pipelines.score.model import resolve_checkpoint
from pipelines.train.checkpoint import RAY_TRAIN_SNAPSHOT, REGISTRY_KEY, registered_checkpoints
from pipelines.train.config import PretrainError
from pipelines.train.driver import forget_unregistered_checkpoints
from tests.models import tiny_checkpoint


@pytest.fixture
def run_dir(tmp_path):
    """A run dir as pretraining leaves it: its record, checkpoints 2 and 4, Ray Train's registry of 2 only."""
    first = tiny_checkpoint(tmp_path / "run")
    for step in (2, 4):
        shutil.copytree(first, tmp_path / "run" / f"checkpoint_step{step:09d}")
    shutil.rmtree(first)
    (tmp_path / "run" / "config.json").write_text(json.dumps({"config": {}, REGISTRY_KEY: RAY_TRAIN_SNAPSHOT}))
    registry = {"checkpoint_results": [{"checkpoint_dir_name": "checkpoint_step000000002"}]}
    (tmp_path / "run" / RAY_TRAIN_SNAPSHOT).write_text(json.dumps(registry))
    return tmp_path / "run"


def test_only_registered_checkpoints_are_read(run_dir):
    assert registered_checkpoints(run_dir) == {"checkpoint_step000000002"}
    assert resolve_checkpoint(str(run_dir)).name == "checkpoint_step000000002"  # not the unregistered 4


def test_a_pretraining_run_dir_without_a_readable_registry_has_nothing_registered(run_dir):
    (run_dir / RAY_TRAIN_SNAPSHOT).write_text('{"checkpoint_results": [{"checkpo')  # cut short mid-write
    assert registered_checkpoints(run_dir) == set()
    (run_dir / RAY_TRAIN_SNAPSHOT).unlink()  # killed while copying its first checkpoint
    assert registered_checkpoints(run_dir) == set()
    with pytest.raises(EmbedError, match=r"none of its checkpoint_step\*/ directories is listed as complete"):
        resolve_checkpoint(str(run_dir))


def test_a_run_dir_pretraining_did_not_write_keeps_every_checkpoint(tmp_path):
    checkpoint = tiny_checkpoint(tmp_path / "random")
    assert registered_checkpoints(tmp_path / "random") is None
    assert resolve_checkpoint(str(tmp_path / "random")) == checkpoint.resolve()


def test_a_resumed_run_removes_older_unregistered_copies_and_stops_at_an_unreadable_registry(run_dir):
    shutil.copytree(run_dir / "checkpoint_step000000002", run_dir / "checkpoint_step000000001")  # Ray's leftover
    forget_unregistered_checkpoints(run_dir)
    # 1 (older than the newest registered, unlisted) goes; 4 (newer: a copy cut short) stays for the resumed
    # run to write again, unread meanwhile
    assert sorted(p.name for p in run_dir.glob("checkpoint_step*")) == ["checkpoint_step000000002",
                                                                         "checkpoint_step000000004"]
    (run_dir / RAY_TRAIN_SNAPSHOT).write_text("")  # Ray Train's in-place rewrite cut short by a full disk
    with pytest.raises(PretrainError, match=rf"^{run_dir / RAY_TRAIN_SNAPSHOT}: Ray Train's record .* cannot be read"):
        forget_unregistered_checkpoints(run_dir)
    assert sorted(p.name for p in run_dir.glob("checkpoint_step*")) == ["checkpoint_step000000002",
                                                                         "checkpoint_step000000004"]
