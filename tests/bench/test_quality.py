"""bench/quality.py's class-level ceiling of v→a recall, on labels small enough to count by hand."""

from __future__ import annotations

import sys
from math import comb

import pandas as pd
import pytest

from pipelines.downstream.labels import read_labels
from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import quality  # noqa: E402


def test_the_recall_ceiling_of_class_level_features_is_the_expected_recall_of_the_oracle(tmp_path):
    # 30 seconds: a car seen and heard in 10-12, a siren heard (not seen) in 20-21, nothing else
    rows = [("cam", t, "car", True, True) for t in (10, 11, 12)] + [("cam", t, "siren", True, False) for t in (20, 21)]
    path = tmp_path / "labels.parquet"
    pd.DataFrame(rows, columns=["stream_id", "t", "label", "audible", "visible"]).to_parquet(path)

    # The car's three pictures rank the car's three sounds first (Jaccard 1): a hit within ±2 s, sure.
    # Every other picture shows nothing (the siren is not seen): the 25 silent sounds tie at 1, the 5 others
    # at 0, 10 of the 25 are drawn, and a hit is a silent second within ±2 s of the query.
    silent = [t for t in range(30) if t not in (10, 11, 12, 20, 21)]
    expected = 3.0
    for query in [t for t in range(30) if t not in (10, 11, 12)]:
        hits = sum(abs(t - query) <= 2 for t in silent)
        expected += 1.0 - comb(25 - hits, 10) / comb(25, 10)
    found = quality.class_level_recall_bound(read_labels(str(path)), "cam", 30)
    assert found == pytest.approx(expected / 30, abs=1e-12)
