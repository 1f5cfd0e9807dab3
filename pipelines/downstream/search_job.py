"""Query-by-example search job (DESIGN §5): a clip or a video file → the k nearest moments, table and contact sheet.

    run_search(SearchJobConfig(embeddings=..., output=..., query="cam1:3600"))

Output directory:

    config.json             this run's SearchJobConfig
    results.parquet         rank, stream_id, t, distance, time (HH:MM:SS), label, relevant
    results.json            {"query": {...}, "mode", "k", "exclusion", "suppression", "results": [rank, stream_id,
                            t, distance, time, and with labels: label, relevant]}
    contact_sheet.png       query + hits: first frame, log-mel spectrogram, caption
    contact_sheet.html      the same, self-contained (images inlined as base64), with the table
    summary.json            query, mode, counts, the index that answered (exact or approximate, why, its
                            settings), timings; with labels: precision@k of the hits

Decisions (where the design is silent):
- ``query`` is ``STREAM:T`` with T in seconds (``cam1:3600``) or HH:MM:SS from the
  stream start (``cam1:01:00:00``); the HH:MM:SS reading is tried first.
- A video query (``video`` + ``checkpoint``) is embedded with
  ``pipelines.score.query.embed_video_file``; the query is the mean of its seconds' v and
  the mean of their a. It has no stream in the index, so nothing is excluded.
- With labels, a hit's ``label`` is its classes joined by "+" (background when none);
  a hit is ``relevant`` when it shares a class with the query clip (background
  counts as a class). ``relevant`` is null for video queries and without labels.
- Thumbnails and spectrograms need ``clips`` (the clips dataset); without it the
  sheet shows the text only.
- The index: exact below ``approximate_from`` clips, approximate from there on
  (``index = auto``; ``pipelines.downstream.search_index``); the hits of both are ranked
  by the same D and walked by the same exclusion and suppression rules.
"""

from __future__ import annotations

import sys
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from epg.configs import Config
from epg.metrics import precision_at_k
from epg.search import MODES, Hit, Mode
from epg.search_ann import ApproximateConfig
from pipelines.downstream import DownstreamError
from pipelines.downstream.clock import Clock, check_start_times
from pipelines.downstream.labels import align_labels, read_labels
from pipelines.downstream.outputs import CONFIG_FILE, OutputDir
from pipelines.downstream.plots import SheetCard, contact_sheet_html, contact_sheet_png
from pipelines.downstream.previews import clips_root_exists, load_previews
from pipelines.downstream.search_index import INDEX_KINDS, IndexChoice, open_index
from pipelines.score.embeddings import Embeddings, read_embeddings

_HHMMSS_QUERY = re.compile(r"^(?P<stream>.+?):(?P<h>\d+):(?P<m>[0-5]\d):(?P<s>[0-5]\d)$")
_SECONDS_QUERY = re.compile(r"^(?P<stream>.+):(?P<t>\d+)$")


def parse_query(text: str) -> tuple[str, int]:
    """``STREAM:T`` (seconds) or ``STREAM:HH:MM:SS`` → (stream, t); ValueError naming the text."""
    match = _HHMMSS_QUERY.match(text)
    if match:
        return match["stream"], int(match["h"]) * 3600 + int(match["m"]) * 60 + int(match["s"])
    match = _SECONDS_QUERY.match(text)
    if match:
        return match["stream"], int(match["t"])
    raise ValueError(f"query {text!r} is not STREAM:SECONDS or STREAM:HH:MM:SS (e.g. cam1:3600 or cam1:01:00:00)")


@dataclass(frozen=True)
class SearchJobConfig(Config):
    """One search; validated on creation (errors name the field)."""

    embeddings: str
    output: str
    query: str | None = None  # STREAM:T
    video: str | None = None
    checkpoint: str | None = None
    mode: Mode = "both"
    k: int = 5
    exclusion: int = 60
    suppression: int = 60
    clips: str | None = None
    labels: str | None = None
    start_times: dict[str, str] = field(default_factory=dict)
    index: str = "auto"  # auto (approximate from approximate_from clips on) | exact | approximate
    approximate_from: int = 250_000
    approximate: ApproximateConfig = field(default_factory=ApproximateConfig)
    index_cache: str | None = None  # directory that keeps built approximate indexes for the next search
    skip_bad_shards: bool = False  # leave out damaged embeddings files (each named) instead of stopping

    def __post_init__(self) -> None:
        if not self.embeddings:
            raise ValueError("SearchJobConfig.embeddings must name the embeddings directory")
        if self.index not in INDEX_KINDS:
            raise ValueError(f"SearchJobConfig.index must be one of {INDEX_KINDS}, got {self.index!r}")
        if self.approximate_from <= 0:
            raise ValueError(f"SearchJobConfig.approximate_from must be > 0 clips, got {self.approximate_from}")
        if not self.output:
            raise ValueError("SearchJobConfig.output must name an output directory")
        if (self.query is None) == (self.video is None):
            raise ValueError("SearchJobConfig: give exactly one of query (STREAM:T) and video (a file)")
        if self.query is not None:
            try:
                parse_query(self.query)
            except ValueError as exc:
                raise ValueError(f"SearchJobConfig.query: {exc}") from exc
        if self.video is not None and not self.checkpoint:
            raise ValueError("SearchJobConfig.checkpoint is needed to embed the query video")
        if self.mode not in MODES:
            raise ValueError(f"SearchJobConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.k <= 0:
            raise ValueError(f"SearchJobConfig.k must be > 0, got {self.k}")
        if self.exclusion < 0:
            raise ValueError(f"SearchJobConfig.exclusion must be >= 0 seconds, got {self.exclusion}")
        if self.suppression < 0:
            raise ValueError(f"SearchJobConfig.suppression must be >= 0 seconds, got {self.suppression}")
        check_start_times("SearchJobConfig.start_times", self.start_times)


@dataclass(frozen=True)
class QueryInfo:
    kind: str  # "clip" or "video"
    stream_id: str | None
    t: int | None
    video: str | None
    label: str | None
    time: str | None  # HH:MM:SS of a clip query


@dataclass(frozen=True)
class SearchResult:
    output: str
    query: QueryInfo
    hits: list[Hit]
    rows: list[dict]  # the rows of results.json
    summary: dict
    files: list[str]
    index: IndexChoice


def _video_query(config: SearchJobConfig) -> tuple[np.ndarray, np.ndarray, str]:
    """The query of a video file: the mean v and the mean a of its seconds (embedded with ``checkpoint``)."""
    try:
        from pipelines.score.query import embed_video_file  # lazy: needs the encoders, only for video queries
    except ImportError as exc:
        raise DownstreamError(f"--video needs pipelines.score.query.embed_video_file, which cannot be imported: {exc}") from exc
    try:
        embedded = embed_video_file(config.video, config.checkpoint)
    except (OSError, RuntimeError, ValueError) as exc:  # missing/undecodable file (MediaError), bad checkpoint
        raise DownstreamError(f"--video {config.video!r} with --checkpoint {config.checkpoint!r}: {exc}") from exc
    if len(embedded) == 0:
        raise DownstreamError(f"--video {config.video!r}: no whole second to embed")
    return embedded.v.mean(axis=0), embedded.a.mean(axis=0), embedded.model


def run_search(config: SearchJobConfig) -> SearchResult:
    """Answer one query: top-k after exclusion and suppression; write table, contact sheets and summary."""
    emb = read_embeddings(config.embeddings, skip_bad_shards=config.skip_bad_shards)
    for damaged in emb.skipped:
        print(f"search: left out (--skip-bad-shards): {damaged}", file=sys.stderr)
    if config.clips is not None and not clips_root_exists(config.clips):
        raise DownstreamError(f"--clips {config.clips!r} does not exist")
    labels_table = read_labels(config.labels) if config.labels else None
    clock = Clock(config.start_times)

    index, index_choice = open_index(emb, config.mode, config.index, config.approximate_from, config.approximate,
                                     config.index_cache)
    exclude, query_row, query_model = None, None, emb.model
    if config.query is not None:
        stream, t = parse_query(config.query)
        try:
            query_row = emb.index_of(stream, t)
        except KeyError as exc:
            known = ", ".join(emb.streams)
            raise DownstreamError(f"--query {config.query!r}: {exc.args[0]} in {config.embeddings!r} (streams: {known})") from exc
        query_v, query_a, exclude = emb.v[query_row], emb.a[query_row], (stream, t)
    else:
        query_v, query_a, query_model = _video_query(config)

    out = OutputDir(config.output)
    out.write_json(CONFIG_FILE, config.to_dict())
    started = time.perf_counter()
    hits = index.search(query_v, query_a, config.mode, config.k, exclude, config.exclusion, config.suppression)
    query_seconds = time.perf_counter() - started

    rows_of_interest = [h.row for h in hits] + ([query_row] if query_row is not None else [])
    labels = None
    if labels_table is not None:
        at = np.asarray(rows_of_interest, dtype=np.int64)
        aligned = align_labels(labels_table, emb.stream_id[at], emb.t[at])
        labels = {int(r): (aligned.text(i), aligned.present[i], bool(aligned.labelled[i])) for i, r in enumerate(at)}
    query_label = labels[query_row][0] if labels is not None and query_row is not None and labels[query_row][2] else None

    def relevant(row: int) -> bool | None:
        if labels is None or query_row is None or not labels[query_row][2] or not labels[row][2]:
            return None
        return bool((labels[query_row][1] & labels[row][1]).any())

    rows = [
        {"rank": h.rank, "stream_id": h.stream_id, "t": h.t, "distance": h.distance, "time": clock.format(h.stream_id, h.t),
         "label": labels[h.row][0] if labels is not None and labels[h.row][2] else None, "relevant": relevant(h.row)}
        for h in hits
    ]
    query = QueryInfo(
        kind="clip" if query_row is not None else "video",
        stream_id=exclude[0] if exclude else None,
        t=exclude[1] if exclude else None,
        video=config.video,
        label=query_label,
        time=clock.format(exclude[0], exclude[1]) if exclude else None,
    )
    out.write_parquet("results.parquet", pa.table({
        "rank": pa.array([r["rank"] for r in rows], pa.int32()),
        "stream_id": pa.array([r["stream_id"] for r in rows], pa.string()),
        "t": pa.array([r["t"] for r in rows], pa.int32()),
        "distance": pa.array([r["distance"] for r in rows], pa.float32()),
        "time": pa.array([r["time"] for r in rows], pa.string()),
        "label": pa.array([r["label"] for r in rows], pa.string()),
        "relevant": pa.array([r["relevant"] for r in rows], pa.bool_()),
    }))
    # Without labels a hit has no label (not "background"): the JSON rows leave the keys out.
    json_rows = rows if labels is not None else [{k: v for k, v in r.items() if k not in ("label", "relevant")} for r in rows]
    out.write_json("results.json", {"query": query, "mode": config.mode, "k": config.k, "exclusion": config.exclusion,
                                    "suppression": config.suppression, "results": json_rows})

    previews = {}
    if config.clips is not None:
        wanted = [(h.stream_id, h.t) for h in hits] + ([exclude] if exclude else [])
        previews = load_previews(config.clips, wanted)
    title, subtitle = _titles(config, query, emb)
    missing = "not in the clips\ndataset" if config.clips is not None else "no frame\n(run with --clips)"
    cards = [_query_card(query, previews, missing)] + [
        SheetCard(heading=f"#{r['rank']}", lines=_hit_lines(r), preview=previews.get((r["stream_id"], r["t"])), missing=missing)
        for r in rows
    ]
    out.write_bytes("contact_sheet.png", contact_sheet_png(cards, title, subtitle))
    out.write_bytes("contact_sheet.html", contact_sheet_html(cards, title, subtitle, rows).encode())

    judged = [r["relevant"] for r in rows if r["relevant"] is not None]
    summary = {
        "skipped_files": list(emb.skipped),  # --skip-bad-shards: damaged files left out
        "query": query, "mode": config.mode, "k": config.k, "n_results": len(hits), "exclusion": config.exclusion,
        "suppression": config.suppression, "n_indexed": len(index), "streams": emb.streams, "model": emb.model,
        "query_model": query_model, "lam": emb.lam, "index": {"kind": index_choice.kind, "reason": index_choice.reason,
        "cache": index_choice.cache, **index_choice.details}, "index_seconds": index_choice.build_seconds,
        "query_seconds": query_seconds,
        "clips": config.clips, "n_previews": len(previews),
    }
    if labels is not None:
        summary["labels"] = config.labels
        summary["precision_at_k"] = precision_at_k([bool(r["relevant"]) for r in rows], config.k) if len(judged) == len(rows) and judged else None
    out.write_json("summary.json", summary)
    return SearchResult(output=config.output, query=query, hits=hits, rows=rows, summary=summary, files=list(out.written),
                        index=index_choice)


def _hit_lines(row: dict) -> tuple[str, ...]:
    lines = [row["stream_id"], row["time"], f"D = {row['distance']:.4f}"]
    if row["label"] is not None:
        mark = {True: "  ✓", False: "  ✗"}.get(row["relevant"], "")
        lines.append(f"{row['label']}{mark}")
    return tuple(lines)


def _query_card(query: QueryInfo, previews: dict, missing: str) -> SheetCard:
    if query.kind == "clip":
        lines = [query.stream_id, query.time] + ([query.label] if query.label else [])
        return SheetCard("query", tuple(lines), previews.get((query.stream_id, query.t)), is_query=True, missing=missing)
    return SheetCard("query (video)", (str(query.video).rsplit("/", 1)[-1],), None, is_query=True, missing="query video")


def _titles(config: SearchJobConfig, query: QueryInfo, emb: Embeddings) -> tuple[str, str]:
    what = f"{query.stream_id} at {query.time}" if query.kind == "clip" else f"video {query.video}"
    title = f"Search: {what} — {config.mode} embeddings, top {config.k}"
    subtitle = (f"excluding ±{config.exclusion} s around the query, one hit per ±{config.suppression} s; "
                f"{len(emb)} clips of {len(emb.streams)} stream(s), model {emb.model}")
    return title, subtitle


def format_summary(result: SearchResult) -> str:
    q = result.query
    what = f"{q.stream_id} at {q.time}" + (f" ({q.label})" if q.label else "") if q.kind == "clip" else f"video {q.video}"
    lines = [f"search: {what}; {result.summary['mode']} mode; {result.summary['n_indexed']} clips, "
             f"query answered in {1000 * result.summary['query_seconds']:.1f} ms", f"  {result.index.describe()}"]
    if result.summary["query_model"] != result.summary["model"]:
        lines.append(f"  warning: the query was embedded with {result.summary['query_model']!r}, "
                     f"the index with {result.summary['model']!r}")
    for r in result.rows:
        label = f"  {r['label']}" + {True: " ✓", False: " ✗"}.get(r["relevant"], "") if r["label"] is not None else ""
        lines.append(f"  #{r['rank']:<3} {r['stream_id']:<20} {r['time']}  D {r['distance']:.4f}{label}")
    if result.summary.get("precision_at_k") is not None:
        lines.append(f"  precision@{result.summary['k']}: {result.summary['precision_at_k']:.2f}")
    lines.append(f"  outputs in {result.output}")
    return "\n".join(lines)
