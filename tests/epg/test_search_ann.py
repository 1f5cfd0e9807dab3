"""Approximate event search (epg.search_ann through epg.search.SearchIndex): the exact search is the reference."""

from __future__ import annotations

import numpy as np
import pytest

from epg.search import SearchIndex
from epg.search_ann import ApproximateConfig, ApproximateIndex


def clustered_streams(streams: int = 4, seconds: int = 3_000, dim: int = 32, seed: int = 0, lam: float = 0.0):
    """Camera-like embeddings: 10-60 s segments of 30 event types, a drift per stream, noise per second."""
    rng = np.random.default_rng(seed)
    types_v = rng.standard_normal((30, dim)).astype(np.float32)
    types_a = rng.standard_normal((30, dim)).astype(np.float32)
    v, a = [], []
    for _ in range(streams):
        lengths = rng.integers(10, 61, seconds // 10)
        kinds = np.repeat(rng.integers(0, 30, lengths.size), lengths)[:seconds]
        drift = rng.standard_normal(dim).astype(np.float32) * 0.3
        v.append(types_v[kinds] + drift + 0.4 * rng.standard_normal((seconds, dim)).astype(np.float32))
        a.append(types_a[kinds] + 0.4 * rng.standard_normal((seconds, dim)).astype(np.float32))
    stream_id = np.repeat(np.array([f"cam{i}" for i in range(streams)], dtype=object), seconds)
    t = np.tile(np.arange(seconds), streams)
    return stream_id, t, np.concatenate(v), np.concatenate(a), lam


def rows_of(hits) -> list[int]:
    return [h.row for h in hits]


@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_probing_every_list_gives_the_exact_results_with_the_rules(lam):
    stream_id, t, v, a, _ = clustered_streams(lam=lam)
    exact = SearchIndex(stream_id, t, v, a, lam)
    approximate = SearchIndex(stream_id, t, v, a, lam, approximate=ApproximateConfig(nlist=16, nprobe=16))
    assert approximate.kind == "approximate" and exact.kind == "exact"
    rng = np.random.default_rng(1)
    for mode in ("both", "visual", "audio"):
        for q in rng.integers(0, len(t), 5):
            exclude = (str(stream_id[q]), int(t[q]))
            for k, exclusion, suppression in [(10, 60, 60), (5, 0, 0), (3, 30, 120)]:
                args = (v[q], a[q], mode, k, exclude, exclusion, suppression)
                expected, got = exact.search(*args), approximate.search(*args)
                assert rows_of(got) == rows_of(expected), (mode, q, k)
                assert [h.distance for h in got] == pytest.approx([h.distance for h in expected], rel=1e-9)


def test_default_probing_reaches_the_exact_top_10_on_clustered_footage():
    """nprobe 16 of 256 lists (the default): at least 95 % of the exact top 10 (rules included) over 40 queries."""
    stream_id, t, v, a, lam = clustered_streams(streams=8, seconds=4_000)
    exact = SearchIndex(stream_id, t, v, a, lam)
    approximate = SearchIndex(stream_id, t, v, a, lam, approximate=ApproximateConfig())
    assert approximate.prepare("both").nlist == 256 and approximate.prepare("both").describe()["nprobe"] == 16
    rng = np.random.default_rng(2)
    found = []
    for q in rng.integers(0, len(t), 40):
        args = (v[q], a[q], "both", 10, (str(stream_id[q]), int(t[q])), 60, 60)
        found.append(len(set(rows_of(exact.search(*args))) & set(rows_of(approximate.search(*args)))) / 10)
    assert np.mean(found) >= 0.95, np.mean(found)


def test_rules_that_use_up_the_candidates_fetch_more_until_the_exact_answer():
    """One 1,500-s stream, k 8 hits 120 s apart: the first candidates cannot hold them; the search asks for more."""
    stream_id, t, v, a, lam = clustered_streams(streams=1, seconds=1_500)
    exact = SearchIndex(stream_id, t, v, a, lam)
    approximate = SearchIndex(stream_id, t, v, a, lam, approximate=ApproximateConfig(nlist=8, nprobe=1))
    for q in (100, 700, 1_400):
        args = (v[q], a[q], "both", 8, ("cam0", q), 100, 120)
        assert rows_of(approximate.search(*args)) == rows_of(exact.search(*args))
    everything = approximate.search(v[0], a[0], "both", 100, ("cam0", 0), 0, 200)  # fewer than k exist
    assert rows_of(everything) == rows_of(exact.search(v[0], a[0], "both", 100, ("cam0", 0), 0, 200))


def test_an_index_survives_bytes_and_must_fit_its_search_index():
    stream_id, t, v, a, lam = clustered_streams(streams=2, seconds=2_000)
    config = ApproximateConfig(nprobe=4)
    built = ApproximateIndex.build([v, a], lam, config)
    again = ApproximateIndex.from_bytes(built.to_bytes(), lam, config)
    assert (again.rows, again.dim, again.nlist) == (4_000, 64, built.nlist)
    query = [v[123], a[123]]
    assert np.array_equal(again.candidates(query, 50), built.candidates(query, 50))
    index = SearchIndex(stream_id, t, v, a, lam, approximate=config)
    assert index.prepare("both", again) is again
    with pytest.raises(ValueError, match="does not fit mode 'visual'"):
        index.prepare("visual", again)
    assert SearchIndex(stream_id, t, v, a, lam).prepare("both") is None  # exact: nothing to build


def test_config_is_validated_and_lists_follow_the_size():
    with pytest.raises(ValueError, match="ApproximateConfig.nprobe"):
        ApproximateConfig(nprobe=0)
    with pytest.raises(ValueError, match="ApproximateConfig.nlist"):
        ApproximateConfig(nlist=-1)
    assert ApproximateConfig().lists_for(2_592_000) == 4096
    assert ApproximateConfig().lists_for(86_400) == 512
    assert ApproximateConfig().lists_for(1_080) == 27  # at least 39 training rows per list
    assert ApproximateConfig().lists_for(20) == 1
    assert ApproximateConfig(nlist=64).lists_for(10) == 10
