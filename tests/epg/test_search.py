"""Query-by-example search (epg.search): distances, modes, exclusion and suppression windows, a day-sized index."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from epg.distance import distance
from epg.search import SearchIndex, distance_exact


def torch_distance(x: np.ndarray, q: np.ndarray, lam: float) -> np.ndarray:
    xt = torch.from_numpy(np.asarray(x, np.float64))
    return distance(xt, torch.from_numpy(np.asarray(q, np.float64)).expand_as(xt), lam).numpy()


def line_index(seconds: int = 300, dim: int = 8, streams=("a", "b"), seed: int = 0, lam: float = 0.5):
    """Streams of random clips far from a query direction; tests plant near clips where they need them."""
    rng = np.random.default_rng(seed)
    n = seconds * len(streams)
    stream_id = np.repeat(np.array(streams, dtype=object), seconds)
    t = np.tile(np.arange(seconds), len(streams))
    v = rng.normal(size=(n, dim)).astype(np.float32) * 0.1 + 5.0 * np.eye(dim, dtype=np.float32)[1]
    a = rng.normal(size=(n, dim)).astype(np.float32) * 0.1 + 5.0 * np.eye(dim, dtype=np.float32)[2]
    return stream_id, t, v, a, lam


def row(stream_id, t, s, second) -> int:
    return int(np.flatnonzero((stream_id == s) & (t == second))[0])


def plant(v, a, r: int, closeness: float, dim: int = 8) -> None:
    """Make clip r near the query direction e0 (smaller closeness = nearer) in both modalities."""
    v[r] = a[r] = np.eye(dim, dtype=np.float32)[0] * (1.0 + closeness)


def test_distances_equal_D_in_every_mode():
    stream_id, t, v, a, _ = line_index(seconds=50, lam=0.3)
    index = SearchIndex(stream_id, t, v, a, lam=0.3)
    rng = np.random.default_rng(1)
    qv, qa = rng.normal(size=8), rng.normal(size=8)
    dv, da = torch_distance(v, qv, 0.3), torch_distance(a, qa, 0.3)
    assert index.distances(qv, qa, "visual") == pytest.approx(dv, abs=1e-5)
    assert index.distances(qv, qa, "audio") == pytest.approx(da, abs=1e-5)
    assert index.distances(qv, qa, "both") == pytest.approx((dv + da) / 2, abs=1e-5)
    assert distance_exact(v, qv, 0.3) == pytest.approx(dv, abs=1e-12)
    hits = index.search(qv, qa, "both", k=3, suppression=0)
    assert [h.distance for h in hits] == pytest.approx(np.sort((dv + da) / 2)[:3], abs=1e-9)
    assert [h.rank for h in hits] == [1, 2, 3]


def test_exclusion_window_around_the_query_is_inclusive():
    stream_id, t, v, a, lam = line_index()
    q = np.eye(8, dtype=np.float32)[0]
    for second, closeness in [(100, 0.0), (130, 0.01), (160, 0.02), (161, 0.03)]:
        plant(v, a, row(stream_id, t, "a", second), closeness)
    plant(v, a, row(stream_id, t, "b", 100), 0.015)
    index = SearchIndex(stream_id, t, v, a, lam)
    hits = index.search(q, q, "both", k=3, exclude=("a", 100), exclusion=60, suppression=0)
    # a:100 (the query) and a:130 and a:160 (|Δt| = 60) are excluded; the same second of stream b is not.
    assert [(h.stream_id, h.t) for h in hits] == [("b", 100), ("a", 161), (hits[2].stream_id, hits[2].t)]
    assert (hits[2].stream_id, hits[2].t) not in {("a", s) for s in range(40, 161)}
    no_window = index.search(q, q, "both", k=2, exclude=("a", 100), exclusion=0, suppression=0)
    assert [(h.stream_id, h.t) for h in no_window] == [("a", 130), ("b", 100)]


def test_suppression_keeps_one_hit_per_window_and_stream():
    stream_id, t, v, a, lam = line_index()
    q = np.eye(8, dtype=np.float32)[0]
    planted = [("a", 200, 0.00), ("a", 230, 0.01), ("a", 260, 0.02), ("a", 261, 0.03), ("b", 210, 0.04), ("b", 269, 0.05), ("b", 271, 0.06)]
    for s, second, closeness in planted:
        plant(v, a, row(stream_id, t, s, second), closeness)
    index = SearchIndex(stream_id, t, v, a, lam)
    hits = index.search(q, q, "both", k=4, suppression=60)
    # a:230 and a:260 fall within 60 s of a:200 (inclusive); a:261 does not. b:269 is within 60 of b:210, b:271 is not.
    assert [(h.stream_id, h.t) for h in hits] == [("a", 200), ("a", 261), ("b", 210), ("b", 271)]
    # Greedy: a suppressed result suppresses nothing (a:230 does not hide a:261 ... it never was a result).
    unsuppressed = index.search(q, q, "both", k=3, suppression=0)
    assert [(h.stream_id, h.t) for h in unsuppressed] == [("a", 200), ("a", 230), ("a", 260)]


def test_modes_search_their_own_modality():
    stream_id, t, v, a, lam = line_index()
    q = np.eye(8, dtype=np.float32)[0]
    rv, ra, rb = row(stream_id, t, "a", 10), row(stream_id, t, "b", 150), row(stream_id, t, "a", 250)
    v[rv] = q  # looks like the query, sounds like everything else
    a[ra] = q  # sounds like the query
    v[rb] = a[rb] = q * 1.5  # somewhat like it in both
    index = SearchIndex(stream_id, t, v, a, lam)
    top = {mode: (index.search(q, q, mode, k=1)[0].stream_id, index.search(q, q, mode, k=1)[0].t) for mode in ("visual", "audio", "both")}
    assert top == {"visual": ("a", 10), "audio": ("b", 150), "both": ("a", 250)}
    with pytest.raises(ValueError, match="mode"):
        index.search(q, q, "smell")
    with pytest.raises(ValueError, match="audio query"):
        index.search(q, None, "both")
    assert index.search(q, None, "visual", k=1)[0].t == 10


def test_small_index_returns_what_there_is_and_validates():
    stream_id, t, v, a, lam = line_index(seconds=100, streams=("a",))
    index = SearchIndex(stream_id, t, v, a, lam)
    q = v[50]
    hits = index.search(q, a[50], k=5, exclude=("a", 50), exclusion=10, suppression=30)
    # Fewer than k come back only when every other second is excluded or within 30 s of a hit.
    got = [h.t for h in hits]
    assert len(got) < 5 and all(abs(x - 50) > 10 for x in got)
    assert all(abs(x - y) > 30 for i, x in enumerate(got) for y in got[i + 1:])
    assert all(abs(s - 50) <= 10 or any(abs(s - x) <= 30 for x in got) for s in range(100))
    assert index.query_of("a", 7)[0] == pytest.approx(v[7])
    with pytest.raises(KeyError, match="'a', t 700"):
        index.query_of("a", 700)
    with pytest.raises(ValueError, match="k must be"):
        index.search(q, q, k=0)
    with pytest.raises(ValueError, match="exclusion and suppression"):
        index.search(q, q, exclusion=-1)
    with pytest.raises(ValueError, match="do not match"):
        SearchIndex(stream_id, t, v, a[:10], lam)


def brute_force(stream_id, t, v, a, qv, qa, lam, k, exclude, exclusion, suppression):
    """The definition, slowly: exact D (mean of both), sort everything, walk greedily."""
    d = (torch_distance(v, qv, lam) + torch_distance(a, qa, lam)) / 2
    chosen = []
    for r in np.lexsort((np.arange(len(d)), d)):
        if stream_id[r] == exclude[0] and abs(t[r] - exclude[1]) <= exclusion:
            continue
        if any(stream_id[c] == stream_id[r] and abs(t[c] - t[r]) <= suppression for c in chosen):
            continue
        chosen.append(int(r))
        if len(chosen) == k:
            break
    return chosen, d[chosen]


def test_a_day_of_clips_gives_the_brute_force_top_k():
    """86,400 clips × 512 (three 8-hour streams): the index's top-k equals the definition's."""
    rng = np.random.default_rng(7)
    n, dim, lam = 86_400, 512, 0.5
    stream_id = np.repeat(np.array(["cam1", "cam2", "cam3"], dtype=object), n // 3)
    t = np.tile(np.arange(n // 3), 3)
    v = rng.standard_normal((n, dim), dtype=np.float32)
    a = rng.standard_normal((n, dim), dtype=np.float32)
    query_row = 12_345
    qv, qa = v[query_row].copy(), a[query_row].copy()
    # Near copies of the query around it (excluded), and in bursts elsewhere (suppressed but the first).
    for r, noise in [(query_row + 5, 0.1), (query_row - 40, 0.2), (40_000, 0.3), (40_010, 0.25), (40_070, 0.35), (70_000, 0.4)]:
        v[r] = qv + rng.standard_normal(dim, dtype=np.float32) * noise
        a[r] = qa + rng.standard_normal(dim, dtype=np.float32) * noise
    index = SearchIndex(stream_id, t, v, a, lam)
    exclude = (str(stream_id[query_row]), int(t[query_row]))
    hits = index.search(qv, qa, "both", k=10, exclude=exclude, exclusion=60, suppression=60)
    expected_rows, expected_d = brute_force(stream_id, t, v, a, qv, qa, lam, 10, exclude, 60, 60)
    assert [h.row for h in hits] == expected_rows
    assert [h.distance for h in hits] == pytest.approx(expected_d.tolist(), rel=1e-9)
    # The planted copies rank first: 40,010 (40,000 lies 10 s from it and is suppressed), 70,000, then 40,070
    # (60 s from 40,010: suppressed too); the copies near the query are excluded.
    assert [h.row for h in hits[:2]] == [40_010, 70_000]
    assert not {40_000, 40_070, query_row + 5, query_row - 40} & {h.row for h in hits}
