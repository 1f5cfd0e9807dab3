"""The downstream jobs (jobs/anomaly.py, jobs/search.py, jobs/localize.py) end to end on real embeddings and clips
directories, plus the pieces they share: labels alignment, HH:MM:SS clocks, previews."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import warnings
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from epg.timecode import hhmmss, parse_start_time
from pipelines.downstream.anomaly_job import AnomalyJobConfig
from pipelines.downstream.clock import Clock, parse_start_time_args
from pipelines.downstream.labels import BACKGROUND, LabelsError, align_labels, read_labels
from pipelines.downstream.localize_job import LocalizeJobConfig
from pipelines.downstream.previews import load_previews
from pipelines.downstream.search_job import SearchJobConfig, parse_query
from pipelines.score.embeddings import read_embeddings
from tests.conftest import REPO
from tests.embeddings_data import SCENE_CLASSES, VIEWS, make_scene, write_clips

sys.path.insert(0, str(REPO / "jobs"))
import anomaly as anomaly_cli  # noqa: E402
import localize as localize_cli  # noqa: E402
import search as search_cli  # noqa: E402

GLASS = SCENE_CLASSES["glass_break"][2]




@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """Three labelled views of a 6-minute timeline; clips (frames + log-mels) for two of them."""
    directory = tmp_path_factory.mktemp("scene")
    built = make_scene(directory)
    firsts = {view: write_clips(directory / "clips", view, i, built.seconds) for i, view in enumerate(VIEWS[:2])}
    return built, directory / "clips", firsts


def assert_real_png(path: Path, min_width: int = 600, min_height: int = 250) -> None:
    """A PNG a person can look at: opens, has a sensible size and is not blank."""
    image = Image.open(path)
    image.load()
    assert image.format == "PNG"
    assert image.width >= min_width and image.height >= min_height, image.size
    grey = np.asarray(image.convert("L"), dtype=np.float32)
    assert grey.std() > 5 and len(np.unique(grey)) > 20


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


# -- anomaly --------------------------------------------------------------------------------


def test_anomaly_job_finds_the_planted_anomalies(scene, tmp_path, capsys):
    built, _, _ = scene
    out = tmp_path / "anomaly"
    code = anomaly_cli.main(["--embeddings", str(built.embeddings), "--reference", "train", "--labels", str(built.labels),
                             "--start-time", "2026-05-01T23:59:00", "--output", str(out), "--score", "av_dist"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "threshold" in printed and "ROC-AUC 1.000" in printed

    emb = read_embeddings(str(built.embeddings))
    reference = emb.of_streams(["train"]).av_dist.astype(np.float64)
    summary = read_json(out / "summary.json")
    assert summary["threshold"] == pytest.approx(reference.mean() + 2 * reference.std(), rel=1e-9)
    assert summary["k"] == 2.0 and summary["streams"] == sorted(VIEWS)

    scores = pq.read_table(out / "scores.parquet").to_pandas()
    assert len(scores) == 3 * built.seconds and list(scores.columns) == ["stream_id", "t", "score", "anomalous"]
    assert (scores.anomalous == (scores.score > summary["threshold"])).all()

    # Exactly the glass breaks (v and a pointing apart) are events, in every view, merged per contiguous run.
    events = pq.read_table(out / "events.parquet").to_pandas()
    assert sorted(zip(events.stream_id, events.start, events.end)) == sorted((v, lo, hi) for v in VIEWS for lo, hi in GLASS)
    assert set(events.labels) == {"glass_break"}
    assert ((events.peak_t >= events.start) & (events.peak_t < events.end)).all()
    assert summary["roc_auc"] == 1.0 and summary["average_precision"] == 1.0
    assert summary["event_recall"] == 1.0 and summary["event_precision"] == 1.0
    assert summary["per_stream"]["similar"] == {"n_seconds": 360, "n_anomalous_seconds": 7, "n_events": 2, "reference": False}

    # Wall-clock times: the stream started a minute before midnight, so second 100 is 00:00:40 the next day.
    first = next(e for e in read_json(out / "events.json")["events"] if e["stream_id"] == "similar" and e["start"] == 100)
    assert (first["start_hhmmss"], first["end_hhmmss"]) == ("00:00:40+1d", "00:00:44+1d")

    for view in VIEWS:
        assert_real_png(out / f"timeline-{view}.png", min_width=1200, min_height=350)
    config = read_json(out / "config.json")
    assert AnomalyJobConfig.from_dict(config) == AnomalyJobConfig(
        embeddings=str(built.embeddings), output=str(out), reference=("train",), labels=str(built.labels),
        start_times={"*": "2026-05-01T23:59:00"}, score="av_dist")


def test_anomaly_rerun_with_max_gap_rewrites_the_directory(scene, tmp_path):
    built, _, _ = scene
    out = tmp_path / "anomaly"
    base = ["--embeddings", str(built.embeddings), "--reference", "train", "--score", "av_dist"]  # the planted scores
    assert anomaly_cli.main([*base, "--output", str(out)]) == 0
    assert (out / "timeline-train.png").exists()
    assert anomaly_cli.main([*base, "--streams", "similar", "--max-gap", "70", "--no-plots", "--output", str(out)]) == 0
    events = pq.read_table(out / "events.parquet").to_pylist()
    # The two glass breaks, 66 s apart, become one event; its peak is the highest second of both.
    assert [(e["stream_id"], e["start"], e["end"]) for e in events] == [("similar", 100, 173)]
    summary = read_json(out / "summary.json")
    assert "roc_auc" not in summary and summary["max_gap"] == 70
    assert not list(out.glob("timeline-*.png"))  # the first run's timelines are gone


def test_anomaly_bad_input_exits_2_naming_it(scene, tmp_path, capsys):
    built, _, _ = scene
    base = ["--embeddings", str(built.embeddings), "--output", str(tmp_path / "out")]
    cases = [
        (["--reference", "nosuch"], "nosuch"),
        (["--reference", "train", "--streams", "other"], "other"),
        (["--reference", "train", "--labels", str(tmp_path / "missing.parquet")], "missing.parquet"),
        (["--reference", "train", "--start-time", "yesterday"], "yesterday"),
        (["--reference", "train", "--sigma", "-1"], "AnomalyJobConfig.sigma"),
        (["--reference", "train", "--k", "-1"], "--k is deprecated; use --sigma"),  # the old spelling still reaches sigma
        (["--reference", "train", "--labels", str(built.labels), "--anomaly-classes", "meteor"], "meteor"),
    ]
    for extra, named in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            assert anomaly_cli.main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert named in err, extra
        assert extra[-2] != "--k" or "AnomalyJobConfig.sigma must be" in err
    assert anomaly_cli.main(["--embeddings", str(tmp_path / "none"), "--reference", "x", "--output", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_anomaly_command_line_runs_from_a_checkout(scene, tmp_path):
    built, _, _ = scene
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "jobs" / "anomaly.py"), "--embeddings", str(built.embeddings),
                           "--reference", "train", "--output", str(tmp_path / "a")], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "strongest events" in done.stdout and (tmp_path / "a" / "events.json").exists()
    usage = subprocess.run([sys.executable, str(REPO / "jobs" / "anomaly.py"), "--reference", "train"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert usage.returncode == 2 and "--embeddings" in usage.stderr


# -- search ---------------------------------------------------------------------------------


def test_search_job_finds_the_other_glass_breaks_with_thumbnails(scene, tmp_path, capsys):
    built, clips, firsts = scene
    out = tmp_path / "search"
    code = search_cli.main(["--embeddings", str(built.embeddings), "--query", "train:100", "--k", "4", "--clips", str(clips),
                            "--labels", str(built.labels), "--output", str(out)])
    assert code == 0
    assert "precision@4: 1.00" in capsys.readouterr().out
    results = read_json(out / "results.json")
    hits = results["results"]
    assert results["query"] == {"kind": "clip", "stream_id": "train", "t": 100, "video": None, "label": "glass_break",
                                "time": "00:01:40"}
    assert [h["rank"] for h in hits] == [1, 2, 3, 4]
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    assert all(h["label"] == "glass_break" and h["relevant"] for h in hits)
    assert all(not (h["stream_id"] == "train" and abs(h["t"] - 100) <= 60) for h in hits)  # exclusion
    for i, x in enumerate(hits):  # suppression
        assert all(not (x["stream_id"] == y["stream_id"] and abs(x["t"] - y["t"]) <= 60) for y in hits[i + 1:])
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert [(r["rank"], r["stream_id"], r["t"], r["time"], r["label"]) for r in table] == [
        (h["rank"], h["stream_id"], h["t"], h["time"], h["label"]) for h in hits]
    assert read_json(out / "summary.json")["precision_at_k"] == 1.0

    # The sheet shows each clip's own first frame (the clips encode (stream, t) in the colour) ...
    page = (out / "contact_sheet.html").read_text()
    assert base64.b64encode(firsts["train"][100]).decode() in page
    for h in hits:
        if h["stream_id"] in firsts:
            assert base64.b64encode(firsts[h["stream_id"]][h["t"]]).decode() in page
    # ... and says so where the clips dataset lacks the stream (no clips were written for 'challenging').
    assert ("challenging" in {h["stream_id"] for h in hits}) == ("not in the clips" in page)
    assert page.count("data:image/png;base64,") == sum(h["stream_id"] in firsts for h in hits) + 1  # spectrograms
    assert_real_png(out / "contact_sheet.png", min_width=900, min_height=400)
    assert SearchJobConfig.from_dict(read_json(out / "config.json")).query == "train:100"

    # HH:MM:SS queries name the same clip.
    again = tmp_path / "again"
    assert search_cli.main(["--embeddings", str(built.embeddings), "--query", "train:00:01:40", "--k", "4",
                            "--output", str(again)]) == 0
    assert [(h["stream_id"], h["t"]) for h in read_json(again / "results.json")["results"]] == [(h["stream_id"], h["t"]) for h in hits]
    assert "run with --clips" in (again / "contact_sheet.html").read_text()
    assert "label" not in read_json(again / "results.json")["results"][0]  # no labels given: no label, not "background"
    assert_real_png(again / "contact_sheet.png", min_width=900, min_height=400)


def test_search_modes_use_their_modality(scene, tmp_path):
    """A forklift is only seen: the visual search finds the other forklifts, the audio search cannot tell them apart."""
    built, _, _ = scene
    labels = {}
    for mode in ("visual", "audio", "both"):
        out = tmp_path / mode
        assert search_cli.main(["--embeddings", str(built.embeddings), "--query", "similar:87", "--mode", mode, "--k", "3",
                                "--labels", str(built.labels), "--output", str(out)]) == 0
        assert read_json(out / "summary.json")["mode"] == mode
        labels[mode] = [h["label"] for h in read_json(out / "results.json")["results"]]
    assert labels["visual"] == ["forklift"] * 3
    assert "forklift" not in labels["audio"]


def test_search_picks_the_approximate_index_by_size_and_caches_it(scene, tmp_path, capsys):
    """The approximate index answers as the exact one here; a cached index is loaded, a damaged one rebuilt."""
    built, _, _ = scene
    base = ["--embeddings", str(built.embeddings), "--query", "train:100", "--k", "4", "--labels", str(built.labels)]

    def search(name: str, *extra: str) -> tuple[dict, list]:
        assert search_cli.main(base + ["--output", str(tmp_path / name), *extra]) == 0
        return read_json(tmp_path / name / "summary.json"), read_json(tmp_path / name / "results.json")["results"]

    exact_summary, exact_hits = search("exact")
    assert exact_summary["index"]["kind"] == "exact" and "< approximate_from 250,000" in exact_summary["index"]["reason"]
    assert "exact index" in capsys.readouterr().out
    cache = tmp_path / "cache"
    summary, hits = search("auto", "--approximate-from", "1000", "--index-cache", str(cache))
    assert summary["index"]["kind"] == "approximate" and summary["index"]["cache"] == "written"
    assert summary["index"]["nlist"] == 27 and summary["index"]["nprobe"] == 16  # 1,080 rows: 39 per list
    assert "approximate index IVF27 (nprobe 16" in capsys.readouterr().out
    assert hits == exact_hits
    cached = list(cache.glob("*-both.faiss"))
    assert len(cached) == 1 and not list(cache.glob(".tmp-*"))
    summary, hits = search("again", "--index", "approximate", "--index-cache", str(cache))
    assert summary["index"]["cache"] == "hit" and hits == exact_hits
    assert "loaded from the cache" in capsys.readouterr().out
    cached[0].write_bytes(b"not an index")
    summary, hits = search("damaged", "--index", "approximate", "--index-cache", str(cache))
    assert summary["index"]["cache"] == "written" and hits == exact_hits
    assert len(cached[0].read_bytes()) > 1000
    summary, _ = search("visual", "--index", "approximate", "--index-cache", str(cache), "--mode", "visual")
    assert summary["index"]["cache"] == "written" and len(list(cache.glob("*.faiss"))) == 2  # one index per mode
    assert SearchJobConfig.from_dict(read_json(tmp_path / "visual" / "config.json")).approximate.nprobe == 16


def test_search_bad_input_exits_2_naming_it(scene, tmp_path, capsys):
    built, _, _ = scene
    base = ["--embeddings", str(built.embeddings), "--output", str(tmp_path / "out")]
    cases = [
        (["--query", "nosuch:5"], "--query 'nosuch:5'"),
        (["--query", "train:999"], "t 999"),
        (["--query", "train"], "STREAM:SECONDS"),
        (["--query", "train:5", "--clips", str(tmp_path / "noclips")], "--clips"),
        (["--query", "train:5", "--k", "0"], "SearchJobConfig.k"),
        (["--video", "q.mp4"], "checkpoint"),
    ]
    for extra, named in cases:
        assert search_cli.main(base + extra) == 2, extra
        assert named in capsys.readouterr().err, extra
    with pytest.raises(SystemExit) as exited:
        search_cli.main(base + ["--query", "train:5", "--video", "q.mp4"])
    assert exited.value.code == 2


def test_query_parsing():
    assert parse_query("cam1:3600") == ("cam1", 3600)
    assert parse_query("cam1:01:00:05") == ("cam1", 3605)
    assert parse_query("my:cam:12") == ("my:cam", 12)
    with pytest.raises(ValueError, match="STREAM:SECONDS"):
        parse_query("cam1:soon")


# -- localize -------------------------------------------------------------------------------


def test_localize_job_reports_accuracy_per_view_features_and_class(scene, tmp_path, capsys):
    built, _, _ = scene
    out = tmp_path / "localize"
    code = localize_cli.main(["--embeddings", str(built.embeddings), "--labels", str(built.labels), "--train", "train",
                              "--eval", "similar=similar", "--eval", "challenging=challenging", "--output", str(out)])
    assert code == 0
    assert "baseline" in capsys.readouterr().out
    accuracy = read_json(out / "accuracy.json")
    summary = read_json(out / "summary.json")
    assert summary["classes"] == [BACKGROUND, "car", "forklift", "glass_break", "motorcycle", "train"]
    assert summary["majority_class"] == BACKGROUND and summary["heads"] == ["linear"]
    assert set(accuracy) == {"linear"} and "cpsp" not in summary
    scores = accuracy["linear"]
    assert set(scores) == {"audio", "visual", "both"}
    similar = {f: scores[f]["per_view"]["similar"] for f in scores}
    assert similar["both"]["accuracy"] >= 0.97
    assert scores["both"]["per_view"]["challenging"]["accuracy"] >= 0.9
    assert summary["accuracy"]["linear"]["both"]["similar"] == similar["both"]["accuracy"]
    # What each modality can know: the forklift is silent, the train is never seen.
    assert similar["audio"]["per_class"]["forklift"] <= 0.2 and similar["audio"]["per_class"]["train"] >= 0.9
    assert similar["visual"]["per_class"]["train"] <= 0.2 and similar["visual"]["per_class"]["forklift"] >= 0.9
    # Four seconds hold a car and a train: their target is the car (seen and heard), so 24 train seconds count 20.
    assert similar["both"]["per_class_n"]["train"] == 20 and similar["both"]["per_class_n"]["car"] == 50
    busy = sum(hi - lo for _, _, spans in SCENE_CLASSES.values() for lo, hi in spans) - 4
    assert similar["both"]["majority_baseline"] == pytest.approx((built.seconds - busy) / built.seconds)
    counts = similar["both"]["per_class_n"]
    weighted = sum(counts[c] * similar["both"]["per_class"][c] for c in counts) / sum(counts.values())
    assert weighted == pytest.approx(similar["both"]["accuracy"])

    table = pd.read_csv(out / "accuracy.csv")
    assert len(table) == 3 * 2 * (1 + 6) and set(table["head"]) == {"linear"}
    row = table[(table.features == "audio") & (table.view == "similar") & (table["class"] == "all")]
    assert row.accuracy.item() == pytest.approx(similar["audio"]["accuracy"])
    assert_real_png(out / "accuracy.png", min_width=900, min_height=600)
    assert {v: (b["head"], b["features"]) for v, b in summary["best"].items()} == {
        "similar": ("linear", "both"), "challenging": ("linear", "both")}
    config = LocalizeJobConfig.from_dict(read_json(out / "config.json"))
    assert config.eval == {"similar": ("similar",), "challenging": ("challenging",)} and config.probe.epochs == 50
    assert config.heads == ("linear",)


def test_localize_reads_csv_labels_the_same_way(scene, tmp_path):
    built, _, _ = scene
    csv_path = tmp_path / "labels.csv"
    pq.read_table(built.labels).to_pandas().to_csv(csv_path, index=False)
    results = {}
    for name, labels in (("parquet", built.labels), ("csv", csv_path)):
        out = tmp_path / name
        assert localize_cli.main(["--embeddings", str(built.embeddings), "--labels", str(labels), "--train", "train",
                                  "--eval", "both_views=similar,challenging", "--features", "both", "--output", str(out)]) == 0
        results[name] = read_json(out / "accuracy.json")
    assert results["csv"] == results["parquet"]
    assert results["csv"]["linear"]["both"]["per_view"]["both_views"]["n_seconds"] == 720


def test_localize_bad_input_exits_2_naming_it(scene, tmp_path, capsys):
    built, _, _ = scene
    partial = tmp_path / "partial.csv"
    frame = pq.read_table(built.labels).to_pandas()
    frame[frame.stream_id != "challenging"].to_csv(partial, index=False)
    base = ["--embeddings", str(built.embeddings), "--output", str(tmp_path / "out"), "--train", "train"]
    cases = [
        (["--labels", str(built.labels), "--eval", "x=train"], "training stream"),
        (["--labels", str(built.labels), "--eval", "x=nosuch"], "nosuch"),
        (["--labels", str(built.labels), "--eval", "similar"], "VIEW=STREAM"),
        (["--labels", str(partial), "--eval", "c=challenging"], "challenging"),
        (["--labels", str(built.labels), "--eval", "s=similar", "--epochs", "0"], "ProbeConfig.epochs"),
    ]
    for extra, named in cases:
        assert localize_cli.main(base + extra) == 2, extra
        assert named in capsys.readouterr().err, extra


# -- shared pieces: labels, clocks, previews --------------------------------------------------


def test_labels_align_with_one_target_per_second_by_the_documented_rule(tmp_path):
    path = tmp_path / "labels.csv"
    pd.DataFrame({
        "stream_id": ["s", "s", "s", "s", "s", "s", "s", "s", "s"],
        "t": [1, 1, 2, 2, 3, 3, 4, 5, 6],
        "label": ["car", "train", "car", "bus", "bus", "zebra", "car", "car", "background"],
        "audible": [True, True, True, True, True, True, True, True, True],
        "visible": [True, False, True, True, True, True, True, True, True],
    }).to_csv(path, index=False)
    labels = read_labels(str(path))
    assert labels.classes == (BACKGROUND, "bus", "car", "train", "zebra")
    aligned = align_labels(labels, np.array(["s"] * 8 + ["other"], dtype=object), np.array([0, 1, 2, 3, 4, 5, 6, 7, 1]))
    names = [labels.classes[i] for i in aligned.target]
    # t1: car (seen and heard) beats train (heard only); t2: bus (2 s in the table) is rarer than car (4 s);
    # t3: zebra (1 s) is rarer than bus (2 s); t6: a "background" row is background; 'other' is not in the table.
    assert names == [BACKGROUND, "car", "bus", "zebra", "car", "car", BACKGROUND, BACKGROUND, BACKGROUND]
    assert aligned.text(1) == "car+train" and aligned.text(0) == BACKGROUND
    assert aligned.present[:, 0].tolist() == [True, False, False, False, False, False, True, True, True]
    assert aligned.labelled.tolist() == [True] * 8 + [False]
    assert aligned.any_of({"train", "meteor"}).tolist() == [False, True] + [False] * 7


def test_labels_errors_name_the_file(tmp_path):
    with pytest.raises(LabelsError, match="nope.parquet.*does not exist"):
        read_labels(str(tmp_path / "nope.parquet"))
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"stream_id": ["s"], "second": [1], "label": ["car"]}).to_csv(bad, index=False)
    with pytest.raises(LabelsError, match=r"bad.csv.*lacks column\(s\) \['t'\]"):
        read_labels(str(bad))
    fractional = tmp_path / "fractional.csv"
    pd.DataFrame({"stream_id": ["s"], "t": [1.5], "label": ["car"]}).to_csv(fractional, index=False)
    with pytest.raises(LabelsError, match="whole seconds"):
        read_labels(str(fractional))


def test_times_read_as_hhmmss_and_wall_clock():
    assert hhmmss(0) == "00:00:00" and hhmmss(3725.9) == "01:02:05" and hhmmss(90_000) == "25:00:00"
    assert hhmmss(-5) == "-00:00:05"
    start = parse_start_time("2026-05-01T22:30:00+02:00")
    assert hhmmss(0, start) == "22:30:00" and hhmmss(5400, start) == "00:00:00+1d"
    assert hhmmss(86_400 * 2, start) == "22:30:00+2d"
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_start_time("5 pm")
    starts = parse_start_time_args(["2026-05-01T08:00:00", "cam2=2026-05-01T09:00:00"])
    clock = Clock(starts)
    assert clock.format("cam1", 61) == "08:01:01" and clock.format("cam2", 61) == "09:01:01"
    assert Clock().format("cam1", 61) == "00:01:01" and clock.start("cam2") == datetime(2026, 5, 1, 9)
    with pytest.raises(ValueError, match="twice"):
        parse_start_time_args(["2026-05-01T08:00:00", "2026-05-01T09:00:00"])


def test_previews_read_only_the_wanted_seconds(scene):
    _, clips, firsts = scene
    found = load_previews(str(clips), [("train", 5), ("similar", 300), ("challenging", 5), ("train", 10_000)])
    assert set(found) == {("train", 5), ("similar", 300)}
    assert found[("train", 5)].frame == firsts["train"][5]
    assert found[("similar", 300)].logmel.shape == (128, 64)
    assert found[("similar", 300)].logmel.max() == pytest.approx(0.0 - 300 % 40, abs=0.1)


def test_anomaly_knn_and_fusion_scores_with_a_loudness_baseline(scene, tmp_path):
    from epg.anomaly import knn_novelty

    built, clips, _ = scene
    out = tmp_path / "knn"
    base = ["--embeddings", str(built.embeddings), "--reference", "train", "--streams", "train", "similar",
            "--labels", str(built.labels), "--no-plots"]
    assert anomaly_cli.main(base + ["--score", "knn_audio", "--knn-k", "5", "--clips", str(clips), "--output", str(out)]) == 0
    summary = read_json(out / "summary.json")
    train = read_embeddings(str(built.embeddings)).of_streams(["train"])
    expected = knn_novelty(train.a, train.stream_id, train.t, train.a, train.stream_id, train.t, k=5, exclusion=60,
                           lam=train.lam)
    assert summary["score"] == "knn_audio"
    assert summary["threshold"] == pytest.approx(expected.mean() + 2 * expected.std(), rel=1e-6)
    scores = pq.read_table(out / "scores.parquet").to_pandas()
    np.testing.assert_allclose(scores[scores.stream_id == "train"].score.to_numpy(), expected, rtol=1e-5)
    baseline = summary["loudness_baseline"]
    assert 0 < baseline["roc_auc"] < 1 and 0 <= baseline["average_precision"] <= 1
    assert anomaly_cli.main(base + ["--score", "fusion", "--output", str(tmp_path / "fusion")]) == 0
    fused = read_json(tmp_path / "fusion" / "summary.json")
    assert fused["score"] == "fusion" and 0 <= fused["roc_auc"] <= 1
    assert fused["loudness_baseline"] == baseline  # from the stored spectrum: --clips is not needed
    assert AnomalyJobConfig.from_dict(read_json(tmp_path / "fusion" / "config.json")).score == "fusion"


def rewrite_spectrum(source: Path, target: Path, change) -> None:
    """A copy of the embeddings ``source`` whose spectrum column is ``change(table)`` (None: dropped)."""
    shutil.copytree(source, target)
    for part in target.glob("stream_id=*/*.parquet"):
        table = pq.read_table(part)
        spectrum, rest = change(table), table.drop_columns(["spectrum"])
        pq.write_table(rest if spectrum is None else rest.append_column("spectrum", spectrum), part)


def test_the_loudness_baseline_is_the_stored_spectrum_or_for_older_embeddings_the_clips(scene, tmp_path):
    """Louder = the spectrum's mean over the bands: the spectrum negated turns the baseline's ROC-AUC into
    1 - itself. Embeddings without a spectrum take it from --clips, and have none without them."""
    import pyarrow as pa
    import pyarrow.compute as pc

    built, clips, _ = scene
    base = ["--reference", "train", "--streams", "train", "similar", "--labels", str(built.labels), "--no-plots",
            "--score", "knn_audio"]

    def baseline(embeddings: Path, *extra: str) -> dict | None:
        out = tmp_path / f"out-{embeddings.name}-{len(extra)}"
        assert anomaly_cli.main(base + ["--embeddings", str(embeddings), "--output", str(out), *extra]) == 0
        return read_json(out / "summary.json").get("loudness_baseline")

    heard = baseline(built.embeddings)
    negated = tmp_path / "negated"
    bands = pq.read_schema(next(built.embeddings.glob("stream_id=*/*.parquet"))).field("spectrum").type.list_size
    rewrite_spectrum(built.embeddings, negated, lambda table: pa.FixedSizeListArray.from_arrays(
        pc.negate(pc.list_flatten(table.column("spectrum").combine_chunks())), bands))
    assert baseline(negated)["roc_auc"] == pytest.approx(1 - heard["roc_auc"], abs=1e-9)
    older = tmp_path / "older"
    rewrite_spectrum(built.embeddings, older, lambda table: None)
    assert baseline(older) is None
    assert "--clips" in read_json(tmp_path / "out-older-0" / "summary.json")["loudness_baseline_missing"]
    from_clips = baseline(older, "--clips", str(clips))
    assert 0 <= from_clips["roc_auc"] <= 1 and from_clips != heard  # the clips' own log-mels, not the scene's spectrum
    mixed = tmp_path / "mixed"  # 'train' with its spectrum, 'similar' from before: each second from its own source
    shutil.copytree(built.embeddings / "stream_id=train", mixed / "stream_id=train")
    shutil.copytree(older / "stream_id=similar", mixed / "stream_id=similar")
    assert baseline(mixed) is None
    both = baseline(mixed, "--clips", str(clips))
    assert both is not None and both not in (heard, from_clips)


def test_anomaly_spectrum_scores_standardise_on_the_reference(scene, tmp_path):
    from epg.anomaly import knn_novelty

    built, _, _ = scene
    base = ["--embeddings", str(built.embeddings), "--reference", "train", "--streams", "train", "similar",
            "--labels", str(built.labels), "--no-plots", "--knn-k", "5"]
    emb = read_embeddings(str(built.embeddings))
    train, similar = emb.of_streams(["train"]), emb.of_streams(["similar"])
    centre, scale = train.spectrum.mean(axis=0), np.maximum(train.spectrum.std(axis=0), 0.1)

    def novelty(rows, x, ref, lam):  # by hand: Euclidean on the spectrum standardised per band on the reference
        return knn_novelty(x, rows.stream_id, rows.t, ref, train.stream_id, train.t, k=5, exclusion=60, lam=lam)

    spectrum = {name: novelty(rows, (rows.spectrum - centre) / scale, (train.spectrum - centre) / scale, 1.0)
                for name, rows in (("train", train), ("similar", similar))}
    assert anomaly_cli.main(base + ["--score", "knn_spectrum", "--output", str(tmp_path / "spectrum")]) == 0
    scores = pq.read_table(tmp_path / "spectrum" / "scores.parquet").to_pandas()
    for name in ("train", "similar"):
        np.testing.assert_allclose(scores[scores.stream_id == name].score.to_numpy(), spectrum[name], rtol=1e-5)
    summary = read_json(tmp_path / "spectrum" / "summary.json")
    assert summary["threshold"] == pytest.approx(spectrum["train"].mean() + 2 * spectrum["train"].std(), rel=1e-6)

    visual = {name: novelty(rows, rows.v, train.v, train.lam) for name, rows in (("train", train), ("similar", similar))}
    z = lambda x, ref: (x - ref.mean()) / ref.std()  # noqa: E731
    fused = {name: (z(visual[name], visual["train"]) + z(spectrum[name], spectrum["train"])) / 2 for name in visual}
    assert anomaly_cli.main(base + ["--score", "fusion_visual_spectrum", "--output", str(tmp_path / "fused")]) == 0
    scores = pq.read_table(tmp_path / "fused" / "scores.parquet").to_pandas()
    for name in ("train", "similar"):
        np.testing.assert_allclose(scores[scores.stream_id == name].score.to_numpy(), fused[name], rtol=1e-5, atol=1e-9)


def test_anomaly_spectrum_score_needs_the_spectrum_only_of_the_streams_it_reads(scene, tmp_path, capsys):
    built, _, _ = scene
    mixed = tmp_path / "mixed"  # 'similar' as scoring wrote it before it stored the spectrum, 'train' as now
    for name in ("train", "similar"):
        shutil.copytree(built.embeddings / f"stream_id={name}", mixed / f"stream_id={name}")
    part = mixed / "stream_id=similar" / "part-00000.parquet"
    pq.write_table(pq.read_table(part).drop_columns(["spectrum"]), part)
    emb = read_embeddings(str(mixed))
    lacking = np.isnan(emb.spectrum).any(axis=1)
    assert set(emb.stream_id[lacking]) == {"similar"} and not np.isnan(emb.of_streams(["train"]).spectrum).any()
    args = ["--embeddings", str(mixed), "--reference", "train", "--no-plots", "--output", str(tmp_path / "out")]
    assert anomaly_cli.main(args + ["--streams", "train"]) == 0  # the default score, a spectrum one
    assert anomaly_cli.main(args + ["--streams", "train", "similar"]) == 2
    err = capsys.readouterr().err
    assert "['similar']" in err and "no spectrum" in err and "jobs/embed.py" in err
    assert anomaly_cli.main(args + ["--streams", "train", "similar", "--score", "knn_audio"]) == 0


def test_a_band_that_never_changes_in_the_reference_does_not_blow_up_the_spectrum_score():
    from pipelines.downstream.anomaly_job import fit_score
    from pipelines.score.embeddings import Embeddings

    rng = np.random.default_rng(0)
    n = 200
    spectra = np.column_stack([rng.normal(-40, 3, n), rng.normal(-50, 3, n), np.full(n, -100.0)]).astype(np.float32)
    emb = Embeddings(np.full(n, "ref", object), np.arange(n), np.zeros((n, 2), np.float32), np.zeros((n, 2), np.float32),
                     np.zeros(n, np.float32), "m", 0.5, spectrum=spectra)
    fitted = fit_score(AnomalyJobConfig(embeddings="e", output="o", reference=("ref",), score="knn_spectrum"), emb, 0.5)
    query = emb.select(np.arange(n) < 1)
    query.stream_id = np.array(["live"], object)
    query.spectrum = query.spectrum.copy()
    query.spectrum[0, 2] = -99.9  # 0.1 dB off in the silent band: a tenth of a unit, not 10^5
    assert fitted.score(query)[0] < fitted.threshold.value
