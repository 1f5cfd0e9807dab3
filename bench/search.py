"""Event search over a day and a month of clips: exact against approximate (issue 16), in the same run.

    python bench/search.py                                  # 1 day and 30 days of d = 512 (needs ~16 GB)
    python bench/search.py --days 1 --dim 64 --queries 20   # a quick look

The embeddings are synthetic but shaped like a camera's (what an approximate index
depends on; uniform random vectors have no neighbours worth the name): 30 streams,
one per camera, each a sequence of 5-120 s segments of 200 event types (background the
commonest) with a per-camera offset, a slow drift and per-second noise; the audio side
follows the same segments with its own type vectors. Unit-length rows, λ = 0 (cosine,
what InfoNCE training writes), mode ``both``, k 10, exclusion and suppression 60 s.

Per size: the exact index (build = norms, query = one pass over every row) and the
approximate one (faiss IVF with an HNSW graph over the centroids, 8-bit codes; build
time and memory of its codes), the median query time of each over the same queries,
the anchor (one matrix-vector product over the visual rows: the memory floor of an
exact query), and recall@10 of the approximate hits against the exact ones with the
rules applied (the job's answer) and without them (plain nearest neighbours).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from results import Printed, command_line, update_results  # noqa: E402
from scipy.signal import lfilter  # noqa: E402

from epg.search import SearchIndex  # noqa: E402
from epg.search_ann import ApproximateConfig  # noqa: E402

STREAMS = 30
TYPES = 200
K, EXCLUSION, SUPPRESSION = 10, 60, 60


def camera_embeddings(rows: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """stream_id, t, v, a of ``rows`` clips over STREAMS cameras (float32, unit rows); see the module docstring."""
    rng = np.random.default_rng(seed)
    types_v = rng.standard_normal((TYPES, dim), dtype=np.float32)
    types_a = rng.standard_normal((TYPES, dim), dtype=np.float32)
    weights = 1.0 / np.arange(1, TYPES + 1) ** 1.1  # type 0 (background) commonest, a long tail of rare events
    weights /= weights.sum()
    per_stream = -(-rows // STREAMS)
    v = np.empty((rows, dim), dtype=np.float32)
    a = np.empty((rows, dim), dtype=np.float32)
    for s in range(STREAMS):
        start, stop = s * per_stream, min(rows, (s + 1) * per_stream)
        n = stop - start
        if n <= 0:
            break
        lengths = rng.integers(5, 121, n // 5 + 1)
        kinds = np.repeat(rng.choice(TYPES, size=lengths.size, p=weights), lengths)[:n]
        offset = 0.5 * rng.standard_normal(dim, dtype=np.float32)
        drift = lfilter([0.02], [1.0, -0.98], rng.standard_normal((n, dim), dtype=np.float32), axis=0).astype(np.float32)
        v[start:stop] = types_v[kinds] + offset + 2.0 * drift + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
        a[start:stop] = types_a[kinds] + 2.0 * drift + 0.6 * rng.standard_normal((n, dim), dtype=np.float32)
    for x in (v, a):
        for start in range(0, rows, 1 << 18):
            block = x[start:start + (1 << 18)]
            block /= np.linalg.norm(block, axis=1, keepdims=True)
    stream_id = np.repeat(np.array([f"cam{i:02d}" for i in range(STREAMS)], dtype=object), per_stream)[:rows]
    t = np.tile(np.arange(per_stream), STREAMS)[:rows]
    return stream_id, t, v, a


def timed(fn, *args) -> tuple[float, object]:
    began = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - began, out


def measure(days: float, dim: int, queries: int, config: ApproximateConfig, nprobes: list[int]) -> list[dict]:
    """Exact and approximate search over ``days`` of clips: one row per nprobe (the index is built once)."""
    rows = int(days * 86_400)
    stream_id, t, v, a = camera_embeddings(rows, dim)
    exact_build, exact = timed(SearchIndex, stream_id, t, v, a, 0.0)
    approximate = SearchIndex(stream_id, t, v, a, 0.0, approximate=config)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    approx_build, ann = timed(approximate.prepare, "both")
    rss_growth = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1e6
    picks = np.random.default_rng(1).integers(0, rows, queries)
    args = {q: ((v[q], a[q], "both", K, (str(stream_id[q]), int(t[q])), EXCLUSION, SUPPRESSION),
                (v[q], a[q], "both", K, None, 0, 0)) for q in picks}
    expected, exact_times, anchor_times = {}, [], []
    for q in picks:
        seconds, expected[q] = timed(exact.search, *args[q][0])
        exact_times.append(seconds)
        expected[(q, "plain")] = exact.search(*args[q][1])
        anchor_times.append(timed(np.dot, v, v[q])[0])
    results = []
    for nprobe in nprobes:
        ann.set_nprobe(nprobe)
        times, ruled, plain = [], [], []
        for q in picks:
            seconds, got = timed(approximate.search, *args[q][0])
            times.append(seconds)
            ruled.append(len({h.row for h in expected[q]} & {h.row for h in got}) / K)
            plain.append(len({h.row for h in expected[(q, "plain")]} & {h.row for h in approximate.search(*args[q][1])}) / K)
        results.append({"rows": rows, "days": days, "exact_build_s": exact_build, "approx_build_s": approx_build,
                        "codes_gb": ann.memory_bytes / 1e9, "rss_growth_gb": rss_growth, "nlist": ann.nlist,
                        "nprobe": ann.nprobe, "recall_rules": float(np.mean(ruled)), "recall_rules_min": float(np.min(ruled)),
                        "recall_plain": float(np.mean(plain)), "exact_ms": 1000 * statistics.median(exact_times),
                        "approximate_ms": 1000 * statistics.median(times), "anchor_ms": 1000 * statistics.median(anchor_times)})
        print(f"measured {days:g} days: {results[-1]}", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", default="1,30", help="index sizes in days of one clip per second, comma-separated")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension per modality (512: the default preset)")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--nprobe", default=str(ApproximateConfig.default_of("nprobe")),
                        help="lists scanned per query, comma-separated to compare several on one index")
    parser.add_argument("--write-results", action="store_true", help="also write the printed summary into its section of bench/RESULTS.md")
    args = parser.parse_args()
    nprobes = [int(n) for n in args.nprobe.split(",")]
    config = ApproximateConfig(nprobe=nprobes[0])
    results = [r for days in args.days.split(",") for r in measure(float(days), args.dim, args.queries, config, nprobes)]

    report = Printed()
    report(f"search, d = {args.dim} per modality, {STREAMS} cameras, mode both, k {K}, exclusion and suppression "
           f"{EXCLUSION} s, median of {args.queries} queries; recall@10 of approximate against exact")
    report("| clips | index | build s | memory GB | query ms | × matvec | recall@10 (rules) | recall@10 (plain) |")
    report("|---:|---|---:|---:|---:|---:|---:|---:|")
    shown: set[int] = set()
    for r in results:
        exact_gb = r["rows"] * 2 * args.dim * 4 / 1e9
        if r["rows"] not in shown:  # the exact row once per size
            shown.add(r["rows"])
            report(f"| {r['rows']:,} | exact | {r['exact_build_s']:.2f} | {exact_gb:.1f} (the vectors) | {r['exact_ms']:.1f} | "
                   f"{r['exact_ms'] / r['anchor_ms']:.1f} | 1 | 1 |")
        report(f"| {r['rows']:,} | IVF{r['nlist']} nprobe {r['nprobe']}, SQ8 | {r['approx_build_s']:.1f} | "
               f"+{r['codes_gb']:.2f} (codes; peak RSS +{r['rss_growth_gb']:.2f}) | {r['approximate_ms']:.1f} | "
               f"{r['approximate_ms'] / r['anchor_ms']:.2f} | {r['recall_rules']:.3f} (min {r['recall_rules_min']:.1f}) | "
               f"{r['recall_plain']:.3f} |")
    anchors = {r["rows"]: r["anchor_ms"] for r in results}
    report("anchor (one matvec over the visual rows), ms: " + ", ".join(f"{rows:,}: {ms:.1f}" for rows, ms in anchors.items()))
    if args.write_results:
        update_results("Search over a month", report.text, command_line(__file__, sys.argv[1:]))


if __name__ == "__main__":
    main()
