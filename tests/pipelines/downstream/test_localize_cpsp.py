"""jobs/localize.py --head cpsp: the CPSP sequence head through the real job, beside the linear probe."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.downstream.heads import CPSPHeadConfig
from pipelines.downstream.labels import BACKGROUND, read_labels
from pipelines.downstream.localize_job import LocalizeJobConfig, localize
from pipelines.score.embeddings import read_embeddings
from tests.conftest import REPO
from tests.embeddings_data import make_scene, write_embeddings

sys.path.insert(0, str(REPO / "jobs"))
import localize as localize_cli  # noqa: E402

SECONDS = 357  # not a multiple of the 10-s window: the last seconds need an end-aligned window
GAP = range(100, 105)  # seconds missing from the "gappy" view




@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The three labelled views of tests.embeddings_data, plus 'gappy': the similar view without seconds 100-104."""
    directory = tmp_path_factory.mktemp("cpsp_scene")
    built = make_scene(directory, seconds=SECONDS)
    emb = read_embeddings(str(built.embeddings), ["similar"])
    keep = ~np.isin(emb.t, list(GAP))
    write_embeddings(built.embeddings, {"gappy": (emb.t[keep], emb.v[keep], emb.a[keep])}, spectra={"gappy": emb.spectrum[keep]})
    labels = pq.read_table(built.labels).to_pandas()
    gappy = labels[labels.stream_id == "similar"].assign(stream_id="gappy")
    frame = pd.concat([labels, gappy], ignore_index=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), built.labels)
    return built


def base_args(built, out: Path) -> list[str]:
    return ["--embeddings", str(built.embeddings), "--labels", str(built.labels), "--train", "train",
            "--eval", "similar=similar", "--eval", "challenging=challenging", "--eval", "gappy=gappy",
            "--output", str(out)]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_cpsp_head_beside_the_linear_probe_on_held_out_streams(scene, tmp_path, capsys):
    out = tmp_path / "localize"
    code = localize_cli.main(base_args(scene, out) + ["--head", "linear,cpsp", "--features", "both", "--cpsp-epochs", "20"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "cpsp    both" in printed and "linear  both" in printed and "validation window" in printed

    accuracy = read_json(out / "accuracy.json")
    summary = read_json(out / "summary.json")
    assert set(accuracy) == {"linear", "cpsp"} and set(accuracy["cpsp"]) == {"both"}
    cpsp, linear = accuracy["cpsp"]["both"]["per_view"], accuracy["linear"]["both"]["per_view"]
    # The same seconds, classes and targets for both heads: every second of the eval streams, tail and gap included.
    for view in ("similar", "challenging", "gappy"):
        assert cpsp[view]["n_seconds"] == linear[view]["n_seconds"]
        assert cpsp[view]["per_class_n"] == linear[view]["per_class_n"]
        assert cpsp[view]["majority_baseline"] == linear[view]["majority_baseline"]
    assert cpsp["similar"]["n_seconds"] == SECONDS and cpsp["gappy"]["n_seconds"] == SECONDS - len(GAP)
    assert list(cpsp["similar"]["per_class"]) == summary["classes"] == [
        BACKGROUND, "car", "forklift", "glass_break", "motorcycle", "train"]
    # Separable embeddings: CPSP localizes held-out views per second, the silent forklift and the unseen train included.
    assert cpsp["similar"]["accuracy"] >= 0.95 and cpsp["gappy"]["accuracy"] >= 0.95
    assert cpsp["challenging"]["accuracy"] >= 0.9
    assert cpsp["similar"]["per_class"]["forklift"] >= 0.8 and cpsp["similar"]["per_class"]["train"] >= 0.8
    assert cpsp["similar"]["accuracy"] > cpsp["similar"]["majority_baseline"] + 0.2
    assert summary["accuracy"]["cpsp"]["both"]["similar"] == cpsp["similar"]["accuracy"]

    # Model selection: on the last 20 % of the training stream, once per epoch.
    record = summary["cpsp"]
    assert record["settings"]["supervision"] == "full" and record["settings"]["input_norm"] == "l2"
    assert set(record["val_from"]) == {"train"} and record["val_from"]["train"] >= 0.75 * SECONDS
    assert record["train_windows"] > record["val_windows"] > 0
    assert len(record["val_accuracy"]) == record["settings"]["epochs"] == 20
    assert record["best_val_accuracy"] == max(record["val_accuracy"])
    assert record["val_accuracy"][record["best_epoch"]] == record["best_val_accuracy"]
    assert record["cpsp_config"]["model"]["num_classes"] == 5 and record["cpsp_config"]["model"]["visual_dim"] == 32

    table = pd.read_csv(out / "accuracy.csv")
    assert len(table) == 2 * 3 * (1 + 6)
    row = table[(table["head"] == "cpsp") & (table.view == "gappy") & (table["class"] == "all")]
    assert row.accuracy.item() == pytest.approx(cpsp["gappy"]["accuracy"]) and row.n_seconds.item() == SECONDS - len(GAP)
    assert (out / "accuracy.png").stat().st_size > 10_000
    config = LocalizeJobConfig.from_dict(read_json(out / "config.json"))
    assert config.heads == ("linear", "cpsp") and config.cpsp == CPSPHeadConfig(epochs=20)


def test_eval_views_never_influence_the_cpsp_model(scene):
    """The Python API (what a benchmark calls): the chosen epoch and its curve depend on the training streams only."""
    emb, labels = read_embeddings(str(scene.embeddings)), read_labels(str(scene.labels))
    records, scores = [], []
    for views in ({"similar": ("similar",)}, {"challenging": ("challenging",), "gappy": ("gappy",)}):
        config = LocalizeJobConfig(embeddings=str(scene.embeddings), labels=str(scene.labels), output="unused",
                                   train=("train",), eval=views, features=("both",), heads=("linear", "cpsp"),
                                   cpsp=CPSPHeadConfig(epochs=8))
        result = localize(config, emb, labels)
        records.append({k: result.summary["cpsp"][k] for k in ("best_epoch", "val_accuracy", "train_windows")})
        scores.append(result.train_accuracy["cpsp"]["both"])
        assert set(result.scores) == {"linear", "cpsp"} and set(result.scores["cpsp"]["both"]) == set(views)
    assert records[0] == records[1] and scores[0] == scores[1]


def test_weak_supervision_runs_and_is_recorded(scene, tmp_path):
    out = tmp_path / "weak"
    code = localize_cli.main(base_args(scene, out) + ["--head", "cpsp", "--weak", "--cpsp-epochs", "3",
                                                      "--features", "all"])
    assert code == 0
    accuracy = read_json(out / "accuracy.json")
    assert set(accuracy) == {"cpsp"} and set(accuracy["cpsp"]) == {"both"}  # features all: cpsp reads both only
    for view in ("similar", "challenging", "gappy"):
        assert 0.0 <= accuracy["cpsp"]["both"]["per_view"][view]["accuracy"] <= 1.0
    summary = read_json(out / "summary.json")
    assert summary["cpsp"]["settings"]["supervision"] == "weak" and len(summary["cpsp"]["val_accuracy"]) == 3
    assert "probe" not in summary
    recorded = LocalizeJobConfig.from_dict(read_json(out / "config.json")).cpsp
    assert recorded.supervision == "weak" and recorded.local_heads
    assert summary["cpsp"]["cpsp_config"]["model"]["local_heads"] is True


def test_bad_cpsp_options_exit_2_with_a_clear_message(scene, tmp_path, capsys):
    base = base_args(scene, tmp_path / "bad")
    cases = [
        (["--head", "cpsp", "--features", "audio", "visual"], "cpsp head can use (it reads both)"),
        (["--head", "linear,transformer"], "choose from linear, cpsp or all"),
        (["--head", "cpsp", "--cpsp-epochs", "0"], "CPSPHeadConfig.epochs must be > 0"),
        (["--head", "cpsp", "--cpsp-val-fraction", "1.5"], "CPSPHeadConfig.val_fraction must be in (0, 1)"),
        (["--head", "cpsp", "--cpsp-device", "gpu0"], "CPSPHeadConfig.device"),
        (["--head", "cpsp", "--cpsp-window", "400"], "needs training windows and validation windows of 400"),
        (["--head", "cpsp", "--cpsp-category-head", "video"], "CPSPHeadConfig.local_heads must be False"),
        (["--head", "cpsp", "--weak", "--cpsp-category-head", "video", "--no-cpsp-local-heads"],
         "CPSPHeadConfig.category_head must be 'segment' for weak supervision"),
    ]
    for extra, message in cases:
        assert localize_cli.main(base + extra) == 2, extra
        assert message in capsys.readouterr().err, extra
    with pytest.raises(SystemExit) as exited:
        localize_cli.main(base + ["--head", "cpsp", "--cpsp-supervision", "partial"])
    assert exited.value.code == 2 and "invalid choice: 'partial'" in capsys.readouterr().err
