"""generate(): simulate the timeline once, render every view, encode, write labels."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .audio import AMBIENT_RMS, AUDIBLE_RMS, MASTER_GAIN, SR, Ambient, SoundBank, limiter, render_event_audio
from .classes import ANOMALY_CLASSES
from .config import GeneratedStreams, SyntheticConfig
from .encode import StreamWriter, encoder_settings
from .render import BEAM_M, ViewRenderer, object_at
from .scene import DAY_PERIOD_S, LIGHT_STEP_S, day_level, light_at, make_cameras, make_layout
from .timeline import SALT, Timeline, label_rows, sample_timeline

log = logging.getLogger(__name__)

GENERATOR_VERSION = "2"  # 2: the recordings are the bundled Ogg Vorbis copies
CHUNK_S = 2.0  # audio and video are rendered and encoded in chunks of this length

LABEL_SCHEMA = pa.schema(
    [
        ("stream_id", pa.string()),
        ("t", pa.int32()),
        ("label", pa.string()),
        ("audible", pa.bool_()),
        ("visible", pa.bool_()),
    ]
)


def build_timeline(config: SyntheticConfig, bank: SoundBank | None = None) -> Timeline:
    """The event timeline a config produces (no rendering)."""
    bank = bank if bank is not None else SoundBank()
    return sample_timeline(config.scene, config.seed, config.seconds, make_layout(config.scene), bank, config.anomalies, config.rate_scale)


def labels_table(tl: Timeline, views) -> pa.Table:
    rows = label_rows(tl)
    cols = {"stream_id": [], "t": [], "label": [], "audible": [], "visible": []}
    for v in views:
        for t, lab, a, vis in rows:
            cols["stream_id"].append(v)
            cols["t"].append(t)
            cols["label"].append(lab)
            cols["audible"].append(a)
            cols["visible"].append(vis)
    return pa.Table.from_pydict(cols, schema=LABEL_SCHEMA)


def _event_record(ev) -> dict:
    rec = {
        "id": ev.id,
        "class": ev.cls,
        "start": round(min(s for s, _ in ev.info["visible_clipped"] + ev.info["audible_clipped"]), 3),
        "end": round(max(e for _, e in ev.info["visible_clipped"] + ev.info["audible_clipped"]), 3),
        "audible": [list(s) for s in ev.info["audible_clipped"]],
        "visible": [list(s) for s in ev.info["visible_clipped"]],
        "anomaly": ev.cls in ANOMALY_CLASSES,
    }
    if ev.lane:
        rec["lane"] = ev.lane
        rec["direction"] = "left_to_right" if ev.direction > 0 else "right_to_left"
    if ev.rect:
        rec["rect_m"] = [round(v, 3) for v in ev.rect]
    for k, v in ev.info.items():
        if k not in ("visible_clipped", "audible_clipped"):
            rec[k] = v
    files = sorted({p["file"] for p in ev.audio.get("parts", []) + ev.audio.get("events", []) if "file" in p})
    if files:
        rec["sounds"] = files
    return rec


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def generate(config: SyntheticConfig, progress: bool = False) -> GeneratedStreams:
    """Write ``<out>/<view>.mp4`` per view, ``labels.parquet``, ``events.json`` and ``config.json``."""
    if not isinstance(config, SyntheticConfig):
        raise TypeError(f"generate() needs a SyntheticConfig, got {type(config).__name__}")
    wall0 = time.perf_counter()
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    W, H = config.size
    fps = config.fps
    seconds = config.seconds
    n_frames = config.n_frames
    n_samples = int(round(seconds * SR))

    layout = make_layout(config.scene)
    cams = make_cameras(config.scene, config.size, config.views)
    bank = SoundBank()
    tl = sample_timeline(config.scene, config.seed, seconds, layout, bank, config.anomalies, config.rate_scale)
    phase = tl.day_phase

    renderers = {}
    for name in config.views:
        renderers[name] = ViewRenderer(cams[name], layout, [SALT, config.scene, config.seed, 50 + ["train", "similar", "challenging"].index(name)])
    ambient = Ambient(bank, np.random.default_rng([SALT, config.scene, config.seed, 7]), lambda t: day_level(t, phase), level_seed=(config.scene * 1_000_003 + config.seed) % (2**31))

    drawn = sorted([e for e in tl.events if e.draw_range is not None and e.sprite], key=lambda e: e.draw_range[0])
    sounding = []
    for e in tl.events:
        if e.audio and e.audible:
            sounding.append((min(s for s, _ in e.audible), e))
    sounding.sort(key=lambda p: (p[0], p[1].id))

    writers: dict[str, StreamWriter] = {}
    try:
        for name in config.views:
            writers[name] = StreamWriter(out / f"{name}.mp4", W, H, fps)
        lead = writers[config.views[0]]
        followers = tuple(writers[n] for n in config.views[1:])
        vi_ptr = 0
        active_vis: list = []
        au_ptr = 0
        active_au: dict[int, tuple[int, np.ndarray]] = {}
        n_chunks = int(math.ceil(seconds / CHUNK_S))
        next_report = time.perf_counter() + 30
        for ci in range(n_chunks):
            t0, t1 = ci * CHUNK_S, min(seconds, (ci + 1) * CHUNK_S)
            # ---- audio
            a0 = int(round(t0 * SR))
            a1 = n_samples if ci == n_chunks - 1 else int(round(t1 * SR))
            mix = ambient.render(a1 - a0)
            while au_ptr < len(sounding) and sounding[au_ptr][0] - 1.0 < t1:
                ev = sounding[au_ptr][1]
                r = render_event_audio(ev, bank)
                if r is not None:
                    active_au[ev.id] = r
                au_ptr += 1
            for eid in list(active_au):
                s0, wave = active_au[eid]
                lo, hi = max(a0, s0), min(a1, s0 + len(wave))
                if hi > lo:
                    mix[lo - a0 : hi - a0] += wave[lo - s0 : hi - s0]
                if s0 + len(wave) <= a1:
                    del active_au[eid]
            mix = limiter(mix * MASTER_GAIN)
            lead.audio(mix, followers)
            # ---- video
            f0 = int(math.ceil(t0 * fps - 1e-9))
            f1 = n_frames if ci == n_chunks - 1 else int(math.ceil(t1 * fps - 1e-9))
            for k in range(f0, f1):
                t = k / fps
                while vi_ptr < len(drawn) and drawn[vi_ptr].draw_range[0] - BEAM_M <= t + 1e-9:
                    active_vis.append(drawn[vi_ptr])
                    vi_ptr += 1
                active_vis = [e for e in active_vis if e.draw_range[1] >= t - 1e-9]
                key = int(t // LIGHT_STEP_S)
                light = light_at((key + 0.5) * LIGHT_STEP_S, phase)
                objs = [o for e in active_vis for o in object_at(e, t, light.night)]
                for name, rnd in renderers.items():
                    rnd.set_light(key, light)
                    writers[name].video(rnd.render(objs))
            if progress and time.perf_counter() > next_report:
                el = time.perf_counter() - wall0
                log.info("%.0f / %.0f s of stream (%.1fx real time)", t1, seconds, t1 / max(el, 1e-9))
                next_report = time.perf_counter() + 30
        lead.flush_audio(followers)
        videos = {}
        for name, w in writers.items():
            videos[name] = w.close()
    except BaseException:
        for w in writers.values():
            w.abort()
        raise

    # ---- labels, events, config
    table = labels_table(tl, config.views)
    lab_tmp = out / ".labels.parquet.partial"
    pq.write_table(table, lab_tmp)
    os.replace(lab_tmp, out / "labels.parquet")
    counts = Counter(e.cls for e in tl.events)
    cfg = config.to_dict()
    events_doc = {
        "scene": config.scene,
        "seed": config.seed,
        "config": cfg,
        "seconds": seconds,
        "classes": tl.classes,
        "anomaly_classes": sorted(c for c in tl.classes if c in ANOMALY_CLASSES),
        "label_rule": "a class is audible/visible in second t when its merged spans cover >= min(0.5 s, half the span length) of [t, t+1)",
        "events": [_event_record(e) for e in tl.events],
    }
    _write_json(out / "events.json", events_doc)
    wall = time.perf_counter() - wall0
    _write_json(
        out / "config.json",
        {
            "config": cfg,
            "generator": "pipelines.synthetic",
            "generator_version": GENERATOR_VERSION,
            "seconds": seconds,
            "frames": n_frames,
            "sample_rate": SR,
            "encoder": encoder_settings(W, H, fps),
            "views": {n: {"file": f"{n}.mp4", "stream_id": n, **cams[n].params} for n in config.views},
            "day_period_s": DAY_PERIOD_S,
            "day_phase": phase,
            "ambient_rms": AMBIENT_RMS,
            "audible_rms": AUDIBLE_RMS,
            "sounds_dir": str(bank.root) if bank.root else None,
            "sounds_used": sorted(bank.used | {ambient.src_name}),
            "event_counts": {c: counts.get(c, 0) for c in tl.classes},
            "wall_seconds": round(wall, 3),
        },
    )
    return GeneratedStreams(
        videos=videos,
        labels=out / "labels.parquet",
        events=out / "events.json",
        seconds=seconds,
        wall_seconds=wall,
        config=out / "config.json",
        event_counts={c: counts.get(c, 0) for c in tl.classes},
    )
