"""The event timeline: Poisson arrivals, trajectories, audible/visible spans, labels.

Everything here depends on ``(scene, seed, anomalies, rate_scale, duration)``
only, never on the frame size, fps or views, so every view shares one
timeline and one label table.

Labelling rule (DESIGN §3.3): for each class the spans of its events are
merged per modality; the class is *audible* (*visible*) in second ``t`` when
the merged spans cover at least ``min(0.5 s, half the span's length)`` of
``[t, t+1)``.  The second rule only matters for spans shorter than a second
(e.g. a glass break heard for 0.7 s), which are labelled in the second that
holds most of them.  A (second, class) row exists when the class is audible
or visible; seconds without rows are background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .audio import AUDIBLE_RMS, SR, SoundBank, received_gain
from .classes import CLASSES, class_index
from .scene import GAP_X0, GAP_X1, LANES, MIC_X, Layout
from .sprites import BOX_COLORS, BUS_COLORS, CAR_COLORS, SHIRT_COLORS, SPORT_COLORS, TRUCK_CAB_COLORS, sprite_size

DT = 0.05  # trajectory sampling step (s)
SALT = 0xE9C5


@dataclass
class TimelineEvent:
    id: int
    cls: str
    t_ref: float
    sprite: str | None = None
    sprite_params: dict = field(default_factory=dict)
    lane: str | None = None
    direction: int = 1
    traj_t: np.ndarray | None = None  # absolute times
    traj_x: np.ndarray | None = None  # object centre X
    traj_v: np.ndarray | None = None  # signed speed
    rect: tuple[float, float, float, float] | None = None  # static objects (glass)
    flash_end: float = 0.0
    visible: list[tuple[float, float]] = field(default_factory=list)
    audible: list[tuple[float, float]] = field(default_factory=list)
    draw_range: tuple[float, float] | None = None  # when any part of the sprite is in the gap
    anim_hz: float = 0.0
    audio: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def start(self) -> float:
        return min(s for s, _ in self.visible + self.audible)

    @property
    def end(self) -> float:
        return max(e for _, e in self.visible + self.audible)

    def size(self) -> tuple[float, float]:
        """(length, height) in metres after the lane's depth scale."""
        L, H = sprite_size(self.sprite, self.sprite_params)
        k = LANES[self.lane].depth if self.lane else 1.0
        return L * k, H * k


# --------------------------------------------------------------------------
# trajectories


def simulate(x0: float, direction: int, v0: float, plan: list[tuple], accel: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integrate a driving plan on a DT grid from time 0.

    Steps: ("go", x_until, v) drive (ramping speed at ``accel``) until x passes
    x_until; ("stop_at", x) brake smoothly to stand at x; ("wait", s); the last
    step is followed by nothing (the trajectory ends).
    """
    ts, xs, vs = [0.0], [x0], [v0 * direction]
    x, v, t = x0, v0, 0.0
    for step in plan:
        if step[0] == "go":
            _, xu, vt = step
            for _ in range(100000):
                if (x - xu) * direction >= 0:
                    break
                dv = np.clip(vt - v, -accel * DT, accel * DT)
                v = max(0.3, v + dv)
                x += direction * v * DT
                t += DT
                ts.append(t), xs.append(x), vs.append(direction * v)
        elif step[0] == "stop_at":
            _, xs_ = step
            dist = (xs_ - x) * direction
            if dist <= 0.5:
                v = 0.0
                continue
            dec = v * v / (2 * dist)
            while v > 0.05:
                v = max(0.0, v - dec * DT)
                x += direction * v * DT
                t += DT
                ts.append(t), xs.append(x), vs.append(direction * v)
            v = 0.0
        elif step[0] == "wait":
            for _ in range(int(round(step[1] / DT))):
                t += DT
                ts.append(t), xs.append(x), vs.append(0.0)
        elif step[0] == "reverse":
            direction = -direction
    return np.array(ts), np.array(xs), np.array(vs)


def mask_spans(t: np.ndarray, mask: np.ndarray) -> list[tuple[float, float]]:
    """Contiguous runs of True in mask as (start, end) times."""
    if not mask.any():
        return []
    m = np.concatenate([[False], mask, [False]]).astype(np.int8)
    d = np.diff(m)
    starts = np.nonzero(d == 1)[0]
    ends = np.nonzero(d == -1)[0] - 1
    step = t[1] - t[0] if len(t) > 1 else DT
    return [(float(t[a]), float(t[b] + step)) for a, b in zip(starts, ends)]


def _gap_overlap(x: np.ndarray, length: float) -> np.ndarray:
    lo = np.maximum(x - length / 2, GAP_X0)
    hi = np.minimum(x + length / 2, GAP_X1)
    return np.maximum(hi - lo, 0.0)


def _finish_mover(ev: TimelineEvent, src_rms: float | None) -> None:
    """Visible spans, draw range and (for sound sources) audible spans from the trajectory."""
    L, _ = ev.size()
    ov = _gap_overlap(ev.traj_x, L)
    need = 0.3 * min(L, GAP_X1 - GAP_X0)
    ev.visible = mask_spans(ev.traj_t, ov >= need)
    draw = np.nonzero(ov > 0)[0]
    if len(draw):
        ev.draw_range = (float(ev.traj_t[max(draw[0] - 1, 0)]), float(ev.traj_t[min(draw[-1] + 1, len(ev.traj_t) - 1)]))
    if src_rms:
        g = received_gain(ev.traj_x, ev.lane) * src_rms
        ev.audible = mask_spans(ev.traj_t, g >= AUDIBLE_RMS)


def _reach(src_rms: float, lane: str) -> float:
    """Distance along the street within which a source is audible."""
    lat = LANES[lane].lateral_m
    k = src_rms / AUDIBLE_RMS
    return lat * math.sqrt(max(k * k - 1, 0.0))


def _start_end_x(direction: int, length: float, reach: float) -> tuple[float, float]:
    margin = max(reach + 5.0, (GAP_X1 - GAP_X0) / 2 + length + 3.0)
    return MIC_X - direction * margin, MIC_X + direction * margin


def _time_at_x(ev: TimelineEvent, x: float) -> float:
    d = (ev.traj_x - x) * ev.direction
    i = int(np.argmax(d >= 0)) if (d >= 0).any() else len(d) - 1
    return float(ev.traj_t[i])


def _pick_file(bank: SoundBank, name: str, rng: np.random.Generator, min_s: float = 0.0) -> tuple[str, float]:
    src, y = bank.pick(name, rng, min_s)
    return src, len(y) / SR


# --------------------------------------------------------------------------
# one event per class


def _vehicle(ev: TimelineEvent, rng, bank: SoundBank, layout: Layout, lane: str) -> None:
    c = ev.cls
    ev.lane = lane
    ev.direction = 1 if lane == "near" else -1
    d = ev.direction
    events = []
    parts = []
    plan_extra = None
    if c == "car":
        body = int(rng.integers(3))
        ev.sprite = "car"
        ev.sprite_params = {"color": CAR_COLORS[int(rng.integers(len(CAR_COLORS)))], "body": body, "length": round(float(rng.uniform(4.0, 4.9)), 1), "height": round(float(rng.uniform(1.4, 1.55)), 2)}
        v = float(rng.uniform(7.0, 14.0))
        src = float(rng.uniform(0.055, 0.08))
        parts.append({"type": "engine", "f_idle": 25.0, "f_max": float(rng.uniform(40, 60)), "vmax": 14.0, "harmonics": 6, "rasp": 0.4, "tyre": 0.8, "level": 1.0})
    elif c == "speeding_car":
        ev.sprite = "car"
        ev.sprite_params = {"color": SPORT_COLORS[int(rng.integers(len(SPORT_COLORS)))], "body": 3, "length": 4.5, "height": 1.25}
        v = float(rng.uniform(22.0, 31.0))
        src = float(rng.uniform(0.14, 0.18))
        parts.append({"type": "engine", "f_idle": 60.0, "f_max": float(rng.uniform(85, 110)), "vmax": 30.0, "harmonics": 8, "rasp": 0.6, "tyre": 1.0, "level": 1.0, "tyre_band": (300, 4000)})
    elif c == "bus":
        ev.sprite = "bus"
        ev.sprite_params = {"color": BUS_COLORS[int(rng.integers(len(BUS_COLORS)))]}
        v = float(rng.uniform(6.0, 10.0))
        src = float(rng.uniform(0.07, 0.09))
        parts.append({"type": "engine", "f_idle": 18.0, "f_max": 32.0, "vmax": 10.0, "harmonics": 10, "rasp": 0.8, "tyre": 0.5, "level": 1.0, "tyre_band": (150, 1500)})
        if lane == "far" and rng.random() < 0.6:
            plan_extra = ("bus_stop", float(rng.uniform(4, 12)))
    elif c == "truck":
        ev.sprite = "truck"
        ev.sprite_params = {"color": TRUCK_CAB_COLORS[int(rng.integers(len(TRUCK_CAB_COLORS)))], "box": BOX_COLORS[int(rng.integers(len(BOX_COLORS)))], "stripe": CAR_COLORS[int(rng.integers(len(CAR_COLORS)))]}
        v = float(rng.uniform(6.0, 11.0))
        src = float(rng.uniform(0.075, 0.1))
        parts.append({"type": "engine", "f_idle": 22.0, "f_max": 38.0, "vmax": 11.0, "harmonics": 9, "rasp": 0.7, "tyre": 0.6, "level": 0.7, "tyre_band": (150, 1800)})
        f, _ = _pick_file(bank, "truck_engine", rng)
        parts.append({"type": "loop", "sound": "truck_engine", "file": f, "level": 0.7, "seg_s": (1.0, 2.5)})
    elif c == "motorcycle":
        ev.sprite = "motorcycle"
        ev.sprite_params = {"color": CAR_COLORS[int(rng.integers(len(CAR_COLORS)))], "jacket": (30, 30, 35) if rng.random() < 0.6 else (120, 30, 30), "helmet": SHIRT_COLORS[int(rng.integers(len(SHIRT_COLORS)))]}
        v = float(rng.uniform(9.0, 16.0))
        src = float(rng.uniform(0.06, 0.085))
        parts.append({"type": "engine", "f_idle": 50.0, "f_max": float(rng.uniform(110, 150)), "vmax": 16.0, "harmonics": 9, "rasp": 1.0, "tyre": 0.3, "level": 1.0, "wobble": 0.06})
    elif c == "emergency_vehicle":
        kind = ["fire_truck", "ambulance", "police"][int(rng.integers(3))]
        ev.sprite = "emergency"
        ev.sprite_params = {"kind": kind}
        ev.anim_hz = float(rng.uniform(2.0, 3.0))
        v = float(rng.uniform(11.0, 16.0))
        src = float(rng.uniform(0.16, 0.2))
        siren = {"fire_truck": "fire_siren", "ambulance": "wail_siren", "police": "police_siren"}[kind]
        f, _ = _pick_file(bank, siren, rng)
        parts.append({"type": "loop", "sound": siren, "file": f, "level": 1.0, "seg_s": (3.0, 8.0) if kind == "fire_truck" else (30.0, 30.0)})
        parts.append({"type": "engine", "f_idle": 25.0, "f_max": 45.0, "vmax": 16.0, "harmonics": 6, "rasp": 0.5, "tyre": 0.8, "level": 0.25})
        ev.info["vehicle"] = kind
    else:  # pragma: no cover
        raise ValueError(c)
    L, _ = ev.size()
    reach = _reach(src, lane)
    x0, x1 = _start_end_x(d, L, reach)
    if plan_extra and plan_extra[0] == "bus_stop":
        xs = layout.bus_stop_x
        plan = [("go", xs + 25 * (-d), v), ("stop_at", xs), ("wait", plan_extra[1]), ("go", x1, v)]
        ev.info["stops_s"] = round(plan_extra[1], 2)
    else:
        # a little speed change on the way for variety
        v2 = v * float(rng.uniform(0.85, 1.15))
        plan = [("go", MIC_X - d * 10, v), ("go", x1, v2)]
    t, x, vv = simulate(x0, d, v, plan)
    ev.traj_t, ev.traj_x, ev.traj_v = t + ev.t_ref, x, vv
    ev.info["speed_mps"] = round(v, 2)
    _finish_mover(ev, src)
    # attached sound events
    if c == "bus" and plan_extra:
        t_go = float(ev.traj_t[np.nonzero(np.abs(ev.traj_v) < 0.01)[0][-1]])
        f, dur = _pick_file(bank, "bus_start", rng)
        events.append({"sound": "bus_start", "file": f, "t": t_go - 0.3, "level": 1.3})
    if c == "car" and rng.random() < 0.12 and ev.visible:
        s, e = ev.visible[0]
        f, _ = _pick_file(bank, "car_horn", rng)
        events.append({"sound": "car_horn", "file": f, "t": float(rng.uniform(s, max(s, e - 0.7))), "level": 2.0})
    if c == "speeding_car":
        f, _ = _pick_file(bank, "skid", rng)
        events.append({"sound": "skid", "file": f, "t": _time_at_x(ev, MIC_X + d * float(rng.uniform(-6, 6))), "level": 1.5})
    ev.audio = {"kind": "vehicle", "src_rms": src, "parts": parts, "events": events}


def _make_event(cls: str, eid: int, t_ref: float, rng, bank: SoundBank, layout: Layout, lane: str | None) -> TimelineEvent:
    ev = TimelineEvent(eid, cls, t_ref)
    if cls in ("car", "speeding_car", "bus", "truck", "motorcycle", "emergency_vehicle"):
        _vehicle(ev, rng, bank, layout, lane)
    elif cls == "forklift":
        ev.sprite, ev.lane = "forklift", "far_walk"
        ev.direction = d = 1 if rng.random() < 0.5 else -1
        ev.sprite_params = {"color": [(235, 160, 20), (230, 200, 30), (200, 60, 30)][int(rng.integers(3))], "pallet": bool(rng.random() < 0.5)}
        v = float(rng.uniform(1.2, 2.2))
        L, _ = ev.size()
        x0, x1 = _start_end_x(d, L, 0.0)
        xstop = float(rng.uniform(6.0, 18.0))
        wait = float(rng.uniform(2.0, 6.0))
        if rng.random() < 0.4:  # stop, then back out the way it came
            plan = [("stop_at", xstop), ("wait", wait), ("reverse",), ("go", x0, v)]
            ev.info["reverses"] = True
        else:
            plan = [("stop_at", xstop), ("wait", wait), ("go", x1, v)]
        # drive in at cruising speed until near the stop (stop_at brakes from v)
        plan = [("go", xstop - d * 3.0, v)] + plan
        t, x, vv = simulate(x0, d, v, plan, accel=0.8)
        ev.traj_t, ev.traj_x, ev.traj_v = t + t_ref, x, vv
        _finish_mover(ev, None)
        ev.info["speed_mps"] = round(v, 2)
    elif cls == "scream":
        ev.sprite, ev.lane = "person", "near_walk"
        ev.direction = d = 1 if rng.random() < 0.5 else -1
        ev.sprite_params = {"shirt": SHIRT_COLORS[int(rng.integers(len(SHIRT_COLORS)))], "pants": (40, 45, 70)}
        ev.anim_hz = 3.0
        v = float(rng.uniform(3.5, 6.0))
        L, _ = ev.size()
        x0, x1 = _start_end_x(d, L, 0.0)
        t, x, vv = simulate(x0, d, v, [("go", x1, v)], accel=10)
        ev.traj_t, ev.traj_x, ev.traj_v = t + t_ref, x, vv
        _finish_mover(ev, None)
        t_s = _time_at_x(ev, MIC_X + d * float(rng.uniform(-10, 4)))
        parts = []
        for k in range(1 + int(rng.random() < 0.5)):
            f, dur = _pick_file(bank, "scream", rng, min_s=0.8)
            parts.append({"sound": "scream", "file": f, "t": t_s, "level": float(rng.uniform(0.1, 0.16))})
            ev.audible.append((t_s, t_s + dur))
            t_s += dur + float(rng.uniform(0.2, 1.0))
        ev.audible = _merge(ev.audible, 0.0)
        ev.audio = {"kind": "samples", "parts": parts}
        ev.info["speed_mps"] = round(v, 2)
    elif cls == "glass_break":
        ev.sprite = "glass"
        pane = layout.panes[int(rng.integers(len(layout.panes)))]
        ev.rect = pane
        ev.sprite_params = {"w": pane[2] - pane[0], "h": pane[3] - pane[1], "shape_seed": int(rng.integers(2**31))}
        ev.flash_end = t_ref + 0.25
        vis = float(rng.uniform(4.0, 9.0))
        ev.visible = [(t_ref, t_ref + vis)]
        ev.draw_range = (t_ref, t_ref + vis)
        f, dur = _pick_file(bank, "glass", rng)
        parts = [{"sound": "glass", "file": f, "t": t_ref, "level": float(rng.uniform(0.12, 0.18))}]
        end = t_ref + dur
        if rng.random() < 0.7:  # falling shards
            f2, dur2 = _pick_file(bank, "glass", rng)
            t2 = t_ref + dur * float(rng.uniform(0.5, 0.9))
            parts.append({"sound": "glass", "file": f2, "t": t2, "level": float(rng.uniform(0.04, 0.08))})
            end = max(end, t2 + dur2)
        ev.audible = [(t_ref, end)]
        ev.audio = {"kind": "samples", "parts": parts}
        ev.info["pane"] = [round(v, 3) for v in pane]
    elif cls == "train":
        bells_lead = float(rng.uniform(4.0, 8.0))
        passage = float(rng.uniform(8.0, 25.0))
        tail = float(rng.uniform(2.0, 4.0))
        total = bells_lead + passage + tail
        fb, _ = _pick_file(bank, "crossing_bells", rng)
        ft, _ = _pick_file(bank, "train_pass", rng)
        parts = [
            {"sound": "crossing_bells", "file": fb, "t": t_ref, "level": float(rng.uniform(0.022, 0.032)), "loop_s": total, "envelope": (0.05, 0.3), "seg_s": (2.0, 2.7)},
            {"sound": "train_pass", "file": ft, "t": t_ref + bells_lead, "level": float(rng.uniform(0.035, 0.055)), "loop_s": passage, "envelope": (2.0, 3.0), "seg_s": (2.0, 5.0)},
        ]
        if rng.random() < 0.7:
            fh, _ = _pick_file(bank, "train_horn", rng)
            parts.append({"sound": "train_horn", "file": fh, "t": t_ref + bells_lead - 1.0, "level": float(rng.uniform(0.04, 0.07))})
        ev.audible = [(t_ref, t_ref + total)]
        ev.audio = {"kind": "samples", "parts": parts, "rumble": {"t": t_ref + bells_lead, "dur": passage, "rise": 2.0, "fall": 3.0, "level": 0.02}}
        ev.info["passage_s"] = round(passage, 2)
    else:  # pragma: no cover
        raise ValueError(cls)
    return ev


def _merge(spans, gap: float = 0.0) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1] + gap:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(a, b) for a, b in out]


# --------------------------------------------------------------------------
# timeline


LANE_CLASSES = {"car": ("far", "near"), "speeding_car": ("far", "near"), "bus": ("far", "near"), "truck": ("far", "near"), "motorcycle": ("far", "near"), "emergency_vehicle": ("far", "near")}


@dataclass
class Timeline:
    seconds: float
    events: list[TimelineEvent]
    day_phase: float
    classes: list[str]


def sample_timeline(scene: int, seed: int, seconds: float, layout: Layout, bank: SoundBank, anomalies: bool = True, rate_scale: float = 1.0) -> Timeline:
    """Draw the events of one stream. Each class has its own random stream, so
    switching anomalies off leaves the other classes' events unchanged."""
    from .classes import class_names

    rng0 = np.random.default_rng([SALT, scene, seed, 0])
    day_phase = float(rng0.uniform(0, 1))
    lead = 25.0  # events may already be under way when the stream starts
    arrivals = []
    for spec in CLASSES:
        if spec.anomaly and not anomalies:
            continue
        ci = class_index(spec.name)
        rng = np.random.default_rng([SALT, scene, seed, 100 + ci])
        lam = spec.rate_per_hour * rate_scale * (seconds + lead) / 3600.0
        n = int(rng.poisson(lam))
        times = np.sort(rng.uniform(-lead, seconds, n))
        for k, t in enumerate(times):
            arrivals.append((spec.anomaly, float(t), ci, k))
    # normal classes claim lanes first, anomalies after, each in time order
    arrivals.sort()
    occupancy: dict[str, list[tuple[float, float]]] = {name: [] for name in LANES}
    events: list[TimelineEvent] = []
    for anomaly, t, ci, k in arrivals:
        cls = CLASSES[ci].name
        rng = np.random.default_rng([SALT, scene, seed, 100 + ci, k])
        lanes = list(LANE_CLASSES.get(cls, (None,)))
        if len(lanes) > 1 and rng.random() < 0.5:
            lanes.reverse()
        ev = None
        for attempt in range(6):
            placed = False
            for lane in lanes:
                cand = _make_event(cls, 0, t, np.random.default_rng([SALT, scene, seed, 100 + ci, k, 1]), bank, layout, lane)
                if cand.lane is None or cand.draw_range is None:
                    ev, placed = cand, True
                    break
                a, b = cand.draw_range
                clash = [iv for iv in occupancy[cand.lane] if a < iv[1] + 1.0 and iv[0] < b + 1.0]
                if not clash:
                    ev, placed = cand, True
                    break
            if placed:
                break
            # every lane busy: come later, entering after the lane clears
            target = max(iv[1] for iv in clash) + 1.0 + float(rng.uniform(0.5, 3.0))
            t = t + (target - cand.draw_range[0])
        if ev is None:
            continue
        if ev.lane is not None and ev.draw_range is not None:
            occupancy[ev.lane].append(ev.draw_range)
        if ev.audio:
            ev.audio["rng"] = [SALT, scene, seed, 100 + ci, k, 2]
        events.append(ev)
    # clip to the stream and drop what is not in it
    out = []
    for ev in sorted(events, key=lambda e: (e.start, e.cls)):
        vis = _clip(ev.visible, seconds)
        aud = _clip(ev.audible, seconds)
        if not vis and not aud:
            continue
        ev.info["visible_clipped"] = vis
        ev.info["audible_clipped"] = aud
        out.append(ev)
    for i, ev in enumerate(out):
        ev.id = i
    return Timeline(seconds, out, day_phase, class_names(anomalies))


def _clip(spans, seconds: float) -> list[tuple[float, float]]:
    out = []
    for s, e in spans:
        s2, e2 = max(0.0, s), min(seconds, e)
        if e2 - s2 > 1e-6:
            out.append((round(s2, 3), round(e2, 3)))
    return out


# --------------------------------------------------------------------------
# labels


def second_mask(spans, n_seconds: int) -> np.ndarray:
    """Seconds that a set of (merged) spans counts for, by the rule in the module docstring."""
    out = np.zeros(n_seconds, bool)
    for s, e in _merge(spans):
        need = min(0.5, 0.5 * (e - s))
        for t in range(max(0, int(math.floor(s))), min(n_seconds, int(math.ceil(e)))):
            ov = min(e, t + 1) - max(s, t)
            if ov >= need - 1e-9:
                out[t] = True
    return out


def label_rows(tl: Timeline) -> list[tuple[int, str, bool, bool]]:
    """(t, label, audible, visible) rows shared by all views, sorted by t then class order."""
    n = int(math.ceil(tl.seconds - 1e-9))
    rows = []
    masks = {}
    for ci, cls in enumerate(tl.classes):
        evs = [e for e in tl.events if e.cls == cls]
        aud = second_mask([s for e in evs for s in e.info["audible_clipped"]], n)
        vis = second_mask([s for e in evs for s in e.info["visible_clipped"]], n)
        masks[cls] = (aud, vis)
    for t in range(n):
        for cls in tl.classes:
            a, v = masks[cls][0][t], masks[cls][1][t]
            if a or v:
                rows.append((t, cls, bool(a), bool(v)))
    return rows
