"""Sounds of the synthetic scene: real recordings (bundled in ``sounds/``, see SOUNDS.md) and synthesis.

All audio is mono float32 at 44.1 kHz.  Levels are RMS amplitudes on a full
scale of 1.0: the ambient bed sits near ``AMBIENT_RMS`` (-37 dBFS, -41 dBFS after ``MASTER_GAIN``),
an event source counts as *audible* while its received level is at least
``AUDIBLE_RMS`` (0 dB SNR against the daytime ambient), and the final mix is
scaled by ``MASTER_GAIN`` and goes through a soft limiter so nothing clips.
"""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path

import numpy as np
from scipy import signal

from .scene import LANES, MIC_X

log = logging.getLogger(__name__)

SR = 44_100
AMBIENT_RMS = 0.014
AUDIBLE_RMS = 0.016
#: the whole mix (ambient and events alike, so audibility is unchanged) is scaled
#: by this before the limiter, leaving headroom for sirens over trains and for
#: AAC's overshoot
MASTER_GAIN = 0.6
FADE_S = 0.3  # event sounds fade out over this time outside their audible spans
SPEED_OF_SOUND = 343.0

#: the recordings that ship with the project (Ogg Vorbis, mono; credits and licences in SOUNDS.md)
BUNDLED_SOUNDS = Path(__file__).resolve().parent / "sounds"
#: a folder laid out like BUNDLED_SOUNDS to read the recordings from instead
SOUNDS_ENV = "EPG_SOUNDS"

#: logical sound name -> files (relative to the sounds folder) it may use
SOUND_FILES: dict[str, list[str]] = {
    "city": ["blanket/city.ogg"],
    "train_pass": ["blanket/train.ogg"],
    "crossing_bells": ["opensfx/14_Level_crossing.ogg"],
    "train_horn": ["opensfx/10_Diesel_electric_train_station_departure.ogg"],
    "bus_start": ["opensfx/27_Modern_bus_start.ogg", "opensfx/28_Old_bus_start.ogg"],
    "truck_engine": ["opensfx/25_Truck_old_bus_start_pull_away.ogg"],
    "car_horn": ["opensfx/35_Modern_car_horn.ogg", "micropolis/honkhonk-med.ogg"],
    "fire_siren": ["tuxpaint/firetruck.ogg"],
    "wail_siren": ["micropolis/siren.ogg"],
    "police_siren": ["micropolis/police.ogg"],
    "skid": ["micropolis/skid.ogg", "opensfx/23_Plane_wheels_touching_ground.ogg"],
    "glass": [f"noise-of-life/glassBreaking-{k:03d}.ogg" for k in range(1, 31)],
    "scream": [f"noise-of-life/femaleScream-{k:03d}.ogg" for k in range(1, 11)]
    + [f"noise-of-life/maleScream-{k:03d}.ogg" for k in range(1, 11)],
}

_CACHE: dict[tuple[str, str], np.ndarray | None] = {}
_LOCK = threading.Lock()


def sounds_dir() -> Path:
    """``$EPG_SOUNDS`` when set (it must be a folder), else the bundled recordings."""
    env = os.environ.get(SOUNDS_ENV)
    if not env:
        return BUNDLED_SOUNDS
    if not Path(env).is_dir():
        raise FileNotFoundError(f"{SOUNDS_ENV}={env}: no such folder (unset it to use the bundled recordings)")
    return Path(env)


def _load(root: Path, rel: str) -> np.ndarray | None:
    """Decode, mix to mono, resample to 44.1 kHz, trim silence, normalise to RMS 1 (cached per process)."""
    key = (str(root), rel)
    with _LOCK:
        if key in _CACHE:
            return _CACHE[key]
    path = root / rel
    y = None
    if path.is_file():
        try:
            import soundfile as sf

            data, sr = sf.read(str(path), dtype="float32", always_2d=True)
            data = data.mean(axis=1)
            if sr != SR:
                g = math.gcd(int(sr), SR)
                data = signal.resample_poly(data, SR // g, int(sr) // g).astype(np.float32)
            data = _trim(data, top_db=45.0)
            data = data - data.mean()
            rms = float(np.sqrt(np.mean(data.astype(np.float64) ** 2)))
            if len(data) > SR // 10 and rms > 1e-5:
                y = (data / rms).astype(np.float32)
        except Exception as e:  # a broken file falls back to synthesis
            log.warning("cannot read sound %s (%s); synthesizing instead", path, e)
    with _LOCK:
        _CACHE[key] = y
    return y


def _trim(y: np.ndarray, top_db: float = 45.0, frame: int = 2048, hop: int = 512) -> np.ndarray:
    """Cut leading and trailing parts more than top_db below the loudest frame."""
    if len(y) <= frame:
        return y
    n = 1 + (len(y) - frame) // hop
    idx = np.arange(frame)[None, :] + hop * np.arange(n)[:, None]
    rms = np.sqrt(np.mean(np.square(y[idx], dtype=np.float64), axis=1))
    db = 20 * np.log10(np.maximum(rms, 1e-10) / max(rms.max(), 1e-10))
    keep = np.nonzero(db > -top_db)[0]
    if len(keep) == 0:
        return y[:0]
    return y[keep[0] * hop : min(len(y), keep[-1] * hop + frame)]


class SoundBank:
    """Real recordings by logical name (from ``root``, default ``sounds_dir()``), with synthesized
    stand-ins for a name none of whose files can be read (and for every name when ``use_real`` is False)."""

    def __init__(self, root: Path | None = None, use_real: bool = True):
        self.root = (root if root is not None else sounds_dir()) if use_real else None
        self.used: set[str] = set()
        self._variants: dict[str, list[tuple[str, np.ndarray]]] = {}

    def variants(self, name: str) -> list[tuple[str, np.ndarray]]:
        """(source, waveform) pairs; source is a file path relative to the sounds folder or 'synth:<name>'."""
        if name not in self._variants:
            out = []
            if self.root is not None:
                for rel in SOUND_FILES.get(name, []):
                    y = _load(self.root, rel)
                    if y is not None:
                        out.append((rel, y))
            if not out:
                out = [(f"synth:{name}", _synth_fallback(name, k)) for k in range(3)]
            self._variants[name] = out
        return self._variants[name]

    def pick(self, name: str, rng: np.random.Generator, min_s: float = 0.0) -> tuple[str, np.ndarray]:
        vs = self.variants(name)
        long_enough = [v for v in vs if len(v[1]) >= min_s * SR] or vs
        src, y = long_enough[int(rng.integers(len(long_enough)))]
        self.used.add(src)
        return src, y


# --------------------------------------------------------------------------
# synthesis helpers


def _butter(kind: str, freq, order: int = 2):
    return signal.butter(order, freq, btype=kind, fs=SR, output="sos")


_SOS_CACHE: dict = {}


def _sos(kind: str, freq, order: int = 2):
    key = (kind, tuple(np.atleast_1d(freq)), order)
    if key not in _SOS_CACHE:
        _SOS_CACHE[key] = _butter(kind, freq, order)
    return _SOS_CACHE[key]


def _rms_norm(y: np.ndarray) -> np.ndarray:
    r = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))) if len(y) else 0.0
    return (y / r).astype(np.float32) if r > 0 else y.astype(np.float32)


def _slow_noise(rng: np.random.Generator, n: int, rate_hz: float) -> np.ndarray:
    """Smooth random curve with ~rate_hz variations, zero mean, unit-ish std."""
    k = max(2, int(n / SR * rate_hz) + 2)
    pts = rng.standard_normal(k)
    return np.interp(np.linspace(0, k - 1, n), np.arange(k), pts).astype(np.float32)


def engine(rng: np.random.Generator, f0: np.ndarray, harmonics: int, rasp: float, tyre: float, tyre_band=(250, 2500)) -> np.ndarray:
    """Engine-like tone following the fundamental curve f0 (Hz per sample), plus tyre noise; RMS 1."""
    n = len(f0)
    phase = 2 * np.pi * np.cumsum(f0, dtype=np.float64) / SR
    y = np.zeros(n, np.float64)
    for k in range(1, harmonics + 1):
        y += (1.0 / k**0.7) * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
    # combustion roughness: amplitude modulation by filtered noise
    if rasp > 0:
        am = signal.sosfilt(_sos("lowpass", 120.0), rng.standard_normal(n))
        y *= 1 + rasp * am / (np.std(am) + 1e-9) * 0.5
    y = _rms_norm(y)
    if tyre > 0:
        tn = _rms_norm(signal.sosfilt(_sos("bandpass", tyre_band), rng.standard_normal(n)))
        y = _rms_norm(y + tyre * tn)
    return y.astype(np.float32)


def loop_to(y: np.ndarray, n: int, rng: np.random.Generator, xfade_s: float = 0.08, seg_s=(1.5, 5.0)) -> np.ndarray:
    """n samples made of random segments of y joined by crossfades."""
    out = np.zeros(n + 1, np.float32)
    xf = int(xfade_s * SR)
    pos = 0
    ramp = np.linspace(0, 1, max(xf, 1), dtype=np.float32)
    while pos < n:
        L = int(rng.uniform(*seg_s) * SR)
        L = max(min(L, len(y)), xf * 2 + 1)
        off = int(rng.integers(0, max(1, len(y) - L + 1)))
        seg = np.resize(y[off : off + L], L).copy()
        if xf > 0:
            seg[:xf] *= ramp
            seg[-xf:] *= ramp[::-1]
        end = min(n + 1, pos + L)
        out[pos:end] += seg[: end - pos]
        pos += L - xf
    return out[:n]


def _synth_fallback(name: str, k: int) -> np.ndarray:
    """Stand-ins for recordings that cannot be read (deterministic)."""
    rng = np.random.default_rng([0x50D, k, sum(map(ord, name))])
    t = lambda s: np.arange(int(s * SR)) / SR  # noqa: E731
    if name == "city":
        n = int(20 * SR)
        y = signal.sosfilt(_sos("lowpass", 500.0), rng.standard_normal(n)) + 0.3 * signal.sosfilt(_sos("bandpass", (500, 3000)), rng.standard_normal(n))
        y *= 1 + 0.4 * _slow_noise(rng, n, 0.3)
    elif name in ("train_pass", "truck_engine"):
        n = int(6 * SR)
        f0 = np.full(n, 30.0 if name == "truck_engine" else 22.0) * (1 + 0.03 * _slow_noise(rng, n, 1))
        y = engine(rng, f0, 8, 0.8, 0.6, (100, 1200))
        if name == "train_pass":  # wheel clacks
            for c in np.arange(0.2, 6, 0.55):
                i = int(c * SR)
                y[i : i + 600] += 4 * rng.standard_normal(min(600, n - i)) * np.exp(-np.arange(min(600, n - i)) / 120)
    elif name == "crossing_bells":
        tt = t(1.0)
        ding = np.sin(2 * np.pi * 1150 * tt) * np.exp(-tt * 6) + 0.5 * np.sin(2 * np.pi * 2870 * tt) * np.exp(-tt * 9)
        y = np.tile(ding[: int(0.5 * SR)], 6)
    elif name in ("train_horn", "car_horn"):
        tt = t(1.5 if name == "train_horn" else 0.6)
        fs = (311, 370, 440) if name == "train_horn" else (420, 520)
        y = sum(signal.sawtooth(2 * np.pi * f * tt) for f in fs) * np.minimum(1, np.minimum(tt, tt[-1] - tt) * 30)
    elif name == "bus_start":
        n = int(3 * SR)
        f0 = np.linspace(20, 42, n)
        y = engine(rng, f0, 8, 0.8, 0.4, (100, 1500))
    elif name in ("fire_siren", "wail_siren"):
        tt = t(8.0 if name == "fire_siren" else 2.4)
        period = 4.0 if name == "fire_siren" else 2.4
        f = 700 + 600 * (0.5 - 0.5 * np.cos(2 * np.pi * tt / period))
        y = np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.3 * np.sin(4 * np.pi * np.cumsum(f) / SR)
    elif name == "police_siren":
        tt = t(0.8)
        f = 700 + 700 * ((tt * 8) % 1)
        y = np.sin(2 * np.pi * np.cumsum(f) / SR)
    elif name == "skid":
        tt = t(0.8)
        f = 1800 + 300 * np.sin(2 * np.pi * 13 * tt)
        y = (np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.5 * rng.standard_normal(len(tt))) * np.minimum(1, (tt[-1] - tt) * 5)
    elif name == "glass":
        n = int(0.9 * SR)
        y = np.zeros(n)
        for _ in range(40):
            i = int(rng.uniform(0, 0.6) * SR)
            f = rng.uniform(2500, 9000)
            d = np.arange(min(4000, n - i)) / SR
            y[i : i + len(d)] += np.sin(2 * np.pi * f * d) * np.exp(-d * rng.uniform(20, 60)) * rng.uniform(0.2, 1)
        y += 0.3 * signal.sosfilt(_sos("highpass", 3000.0), rng.standard_normal(n)) * np.exp(-np.arange(n) / (0.2 * SR))
    elif name == "scream":
        tt = t(rng.uniform(1.0, 2.0))
        f0 = rng.uniform(550, 900) * (1 + 0.04 * np.sin(2 * np.pi * 6 * tt)) * (1 + 0.1 * np.sin(np.pi * tt / tt[-1]))
        ph = 2 * np.pi * np.cumsum(f0) / SR
        y = sum(np.sin(k * ph) / k for k in range(1, 7)) * np.sin(np.pi * tt / tt[-1]) ** 0.5
    else:
        y = rng.standard_normal(SR)
    return _rms_norm(np.asarray(y, np.float64))


# --------------------------------------------------------------------------
# event sounds


def gate(t: np.ndarray, spans: list[tuple[float, float]], fade: float = FADE_S) -> np.ndarray:
    """1 inside the spans, linear fade to 0 over ``fade`` seconds outside them."""
    d = np.full(len(t), np.inf)
    for s, e in spans:
        d = np.minimum(d, np.maximum(np.maximum(s - t, t - e), 0.0))
    return np.clip(1.0 - d / fade, 0.0, 1.0).astype(np.float32)


def received_gain(x: np.ndarray, lane: str) -> np.ndarray:
    """Amplitude factor of a source at position x relative to its closest approach (1/r law)."""
    lat = LANES[lane].lateral_m
    return lat / np.sqrt((x - MIC_X) ** 2 + lat * lat)


def _place(y: np.ndarray, a0: float, sample: np.ndarray, t_start: float, level) -> None:
    i = int(round((t_start - a0) * SR))
    j0, j1 = max(0, i), min(len(y), i + len(sample))
    if j1 > j0:
        seg = sample[j0 - i : j1 - i]
        y[j0:j1] += seg * (level if np.isscalar(level) else level[j0:j1])


def render_event_audio(ev, bank: SoundBank) -> tuple[int, np.ndarray] | None:
    """The complete sound of one event: (first sample index, mono waveform) or None if silent."""
    a = ev.audio
    if not a or not ev.audible:
        return None
    a0 = min(s for s, _ in ev.audible) - FADE_S
    a1 = max(e for _, e in ev.audible) + FADE_S
    n0 = int(math.floor(a0 * SR))
    n1 = int(math.ceil(a1 * SR))
    n = n1 - n0
    t = (n0 + np.arange(n)) / SR
    a0 = n0 / SR
    rng = np.random.default_rng(a["rng"])
    kind = a["kind"]
    y = np.zeros(n, np.float32)
    if kind == "vehicle":
        x = np.interp(t, ev.traj_t, ev.traj_x)
        v = np.abs(np.interp(t, ev.traj_t, ev.traj_v))
        lane = ev.lane
        g = received_gain(x, lane).astype(np.float32)
        lat = LANES[lane].lateral_m
        r = np.sqrt((x - MIC_X) ** 2 + lat * lat)
        drdt = np.gradient(r) * SR
        rate = SPEED_OF_SOUND / (SPEED_OF_SOUND + drdt)
        pos = np.concatenate([[0.0], np.cumsum(rate[:-1])])
        m = int(math.ceil(pos[-1])) + 2
        vs = np.interp(np.arange(m) / SR + a0, t, v)
        src = np.zeros(m, np.float32)
        for part in a["parts"]:
            p = part["type"]
            if p == "engine":
                vmax = max(part["vmax"], 1e-3)
                f0 = part["f_idle"] + (part["f_max"] - part["f_idle"]) * np.clip(vs / vmax, 0, 1)
                f0 = f0 * (1 + part.get("wobble", 0.03) * _slow_noise(rng, m, 0.7))
                tyre = part["tyre"] * np.clip(vs / vmax, 0.2, 1.2)
                e = engine(rng, f0, part["harmonics"], part["rasp"], 0.0)
                tn = _rms_norm(signal.sosfilt(_sos("bandpass", tuple(part.get("tyre_band", (250, 2500)))), rng.standard_normal(m)))
                src += part["level"] * _rms_norm(e + tyre * tn)
            elif p == "loop":
                s = dict(bank.variants(part["sound"]))[part["file"]]
                src += part["level"] * loop_to(s, m, rng, seg_s=tuple(part.get("seg_s", (1.5, 5.0))))
        # doppler: read the source at a varying rate
        y += np.interp(pos, np.arange(m), src).astype(np.float32)
        y *= a["src_rms"] * g
        for part in a.get("events", []):  # horns, pull-away, skids: attached to the vehicle
            s = dict(bank.variants(part["sound"]))[part["file"]]
            i = int(round((part["t"] - a0) * SR))
            lvl = a["src_rms"] * part["level"] * g[min(max(i, 0), n - 1)]
            _place(y, a0, s, part["t"], lvl)
        y *= gate(t, ev.audible)
    elif kind == "samples":  # sounds at fixed times (glass, screams, trains)
        for part in a["parts"]:
            s = dict(bank.variants(part["sound"]))[part["file"]]
            if part.get("loop_s"):
                s = loop_to(s, int(part["loop_s"] * SR), rng, seg_s=tuple(part.get("seg_s", (1.5, 5.0))))
            if part.get("envelope"):
                rise, fall = part["envelope"]
                k = np.arange(len(s)) / SR
                env = np.minimum(1.0, np.minimum(k / max(rise, 1e-3), (k[-1] - k) / max(fall, 1e-3)))
                s = s * np.clip(env, 0, 1).astype(np.float32)
            _place(y, a0, s, part["t"], part["level"])
        if a.get("rumble"):
            rb = a["rumble"]
            k = t - rb["t"]
            env = np.clip(np.minimum(k / rb["rise"], (rb["dur"] - k) / rb["fall"]), 0, 1)
            noise = _rms_norm(signal.sosfilt(_sos("lowpass", 180.0), rng.standard_normal(n)))
            y += (rb["level"] * env * noise).astype(np.float32)
        y *= gate(t, ev.audible, 0.05)
    return n0, y


# --------------------------------------------------------------------------
# ambient bed


class Ambient:
    """Endless city ambience: random crossfaded segments of the city recording
    (or its stand-in), a low traffic rumble, slow level changes and a quieter
    night.  Generated sequentially, so memory stays bounded."""

    XF = int(0.5 * SR)

    def __init__(self, bank: SoundBank, rng: np.random.Generator, day_fn, level_seed: int = 0):
        self.src_name, self.city = bank.pick("city", rng)
        self.level_seed = int(level_seed)
        self.rng = rng
        self.day_fn = day_fn
        self.pending = np.zeros(self.XF, np.float32)
        self.emitted = 0
        self.sos = _sos("lowpass", 300.0)
        self.zi = np.zeros((self.sos.shape[0], 2))
        self.level_pts: dict[int, float] = {}
        self.ramp = np.linspace(0, 1, self.XF, dtype=np.float32)

    def _extend(self) -> None:
        L = int(self.rng.uniform(4.0, 10.0) * SR)
        off = int(self.rng.integers(0, max(1, len(self.city) - L)))
        seg = np.resize(self.city[off : off + L], L).astype(np.float32)
        head = seg[: self.XF] * self.ramp
        tail = self.pending[-self.XF :] * self.ramp[::-1]
        self.pending = np.concatenate([self.pending[: -self.XF], tail + head, seg[self.XF :]])

    def _level(self, sec: int) -> float:
        if sec not in self.level_pts:
            z = np.random.default_rng([self.level_seed, sec]).standard_normal()
            self.level_pts[sec] = float(np.exp(0.18 * z))
        return self.level_pts[sec]

    def render(self, n: int) -> np.ndarray:
        while len(self.pending) - self.XF < n:
            self._extend()
        city = self.pending[:n]
        self.pending = self.pending[n:]
        noise = self.rng.standard_normal(n)
        rumble, self.zi = signal.sosfilt(self.sos, noise, zi=self.zi)
        t = (self.emitted + np.arange(n)) / SR
        # slow level drift (knots every 10 s) and the day/night level
        k0 = int(t[0] // 10)
        k1 = int(t[-1] // 10) + 1
        knots = np.array([self._level(k) for k in range(k0, k1 + 1)])
        lev = np.interp(t / 10.0, np.arange(k0, k1 + 1), knots)
        d0, d1 = self.day_fn(t[0]), self.day_fn(t[-1])
        day = np.linspace(d0, d1, n)
        amp = (0.55 + 0.45 * day) * lev
        y = (AMBIENT_RMS * 0.8 * city + AMBIENT_RMS * 0.6 * 6.0 * rumble) * amp
        self.emitted += n
        return y.astype(np.float32)


def limiter(y: np.ndarray, knee: float = 0.5, ceiling: float = 0.8) -> np.ndarray:
    """Soft limiter: linear below the knee, tanh towards the ceiling above it."""
    a = np.abs(y)
    over = a > knee
    if over.any():
        r = ceiling - knee
        y = y.copy()
        y[over] = np.sign(y[over]) * (knee + r * np.tanh((a[over] - knee) / r))
    return y
