"""The main job's configs, built directly in code, are the ones the job command lines would build."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.demo.config import DemoLayout, MainJobConfig
from pipelines.demo.stages import pretrain_config, run_dir_for
from pipelines.downstream.anomaly_job import DEFAULT_ANOMALY_CLASSES
from pipelines.synthetic import ANOMALY_CLASSES
from pipelines.train.args import config_from_args, parse_args


@pytest.mark.parametrize("overrides", [{}, {"batch_size": 32, "pairing": "tpg", "epochs": 2, "preset": "tiny"}])
def test_demo_trains_what_jobs_pretrain_would_with_the_same_flags(tmp_path, overrides):
    config = MainJobConfig(output=str(tmp_path), **overrides)
    layout = DemoLayout(tmp_path)
    argv = ["--clips", str(layout.clips), "--run-dir", str(layout.runs / "pending"), "--preset", config.preset,
            "--pairing", config.pairing, "--epochs", str(config.epochs), "--workers", "1", "--labels", str(layout.labels),
            "--seed", str(config.seed), "--log-every", "25"]
    if config.batch_size is not None:
        argv += ["--batch-size", str(config.batch_size)]
    assert pretrain_config(config, layout) == config_from_args(parse_args(argv))


def test_run_directory_is_keyed_by_settings_and_data(tmp_path):
    layout = DemoLayout(Path(tmp_path))
    base = run_dir_for(MainJobConfig(output=str(tmp_path)), layout, {"data": 1})
    assert base == run_dir_for(MainJobConfig(output=str(tmp_path), show_progress=False), layout, {"data": 1})
    assert base != run_dir_for(MainJobConfig(output=str(tmp_path), epochs=4), layout, {"data": 1})
    assert base != run_dir_for(MainJobConfig(output=str(tmp_path)), layout, {"data": 2})
    assert base.name.startswith("small-epg-")


def test_main_job_config_round_trips_and_names_bad_fields(tmp_path):
    config = MainJobConfig(output=str(tmp_path), views=("train", "similar"), size=(160, 90), start_time="2026-05-01T08:00:00")
    assert MainJobConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match=r"MainJobConfig\.anomaly_sigma must be >= 0"):
        MainJobConfig(anomaly_sigma=-1)
    with pytest.raises(ValueError, match=r"MainJobConfig\.size must be"):
        MainJobConfig.from_dict({"size": "320x180"})


def test_anomaly_job_defaults_to_the_synthetic_anomaly_classes():
    # The downstream job does not import the generator; this keeps its default in step with it.
    assert set(DEFAULT_ANOMALY_CLASSES) == set(ANOMALY_CLASSES)
