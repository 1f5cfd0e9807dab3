"""The run's metrics record on resume: rows beyond the resume point go, and so does a row cut short."""

from __future__ import annotations

import csv

from pipelines.train.metrics import MetricsLog


def test_a_resume_keeps_whole_rows_up_to_its_step_and_drops_a_row_cut_short(tmp_path):
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    (metrics / "steps.csv").write_text("epoch,step,loss\n0,1,0.9\n0,2,0.8\n0,3,0.7\n1,4,0.")  # a kill mid-row
    (metrics / "epochs.csv").write_text("epoch,steps,loss\n0,3,0.8\n1,1")
    log = MetricsLog(tmp_path, resume_step=4, epochs=2, resume_epoch=1)
    log.close()
    with (metrics / "steps.csv").open() as handle:
        assert [row["step"] for row in csv.DictReader(handle)] == ["1", "2", "3"]
    with (metrics / "epochs.csv").open() as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["0"]
    log = MetricsLog(tmp_path, resume_step=2, epochs=2, resume_epoch=0)
    log.close()
    assert (metrics / "steps.csv").read_text().splitlines() == ["epoch,step,loss", "0,1,0.9", "0,2,0.8"]
    assert (metrics / "epochs.csv").read_text() == ""
