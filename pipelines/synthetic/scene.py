"""The street scene: world layout, background, camera views and lighting.

World coordinates are metres in the image plane of the training camera:
``X`` to the right along the street, ``Y`` downwards.  The camera looks at the
street through a gap between two foreground pillars; everything at
``GAP_X0 <= X <= GAP_X1`` is in view of every camera, everything outside is
hidden by the pillars.  That makes the visible time of an object the same in
every view, so labels can be shared by the views.

A camera is a projective map from its pixels to world coordinates (affine for
``train`` and ``similar``, a homography for ``challenging``); the background
is a procedural function of world coordinates evaluated once per camera.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

# --------------------------------------------------------------------------
# world constants (metres)
GAP_X0, GAP_X1 = 0.0, 24.0  # the part of the street every camera sees
MIC_X = 12.0  # microphone (and camera) position along the street
FACADE_BOTTOM = 12.0
FAR_WALK = (12.0, 13.0)
ROAD = (13.0, 18.0)
NEAR_WALK = (18.0, 19.8)
CENTRE_LINE = (15.55, 15.7)
#: region that every view must show completely (the gap, from the first
#: floor windows down to the near sidewalk)
MUST_SEE = (GAP_X0, 6.5, GAP_X1, 20.2)
#: region the training camera is fitted to (gap plus a bit of the pillars)
TRAIN_FIT = (-2.0, 5.0, 26.0, 20.5)

DAY_PERIOD_S = 4 * 3600.0  # one day/night cycle every 4 hours of stream
LIGHT_STEP_S = 5.0  # lighting is re-evaluated every LIGHT_STEP_S seconds


@dataclass(frozen=True)
class Lane:
    name: str
    ground_y: float  # Y where the object touches the ground
    depth: float  # sprite size factor (far lanes are smaller)
    lateral_m: float  # distance from the microphone to the lane
    order: int  # drawing order (larger is nearer)


LANES: dict[str, Lane] = {
    "far_walk": Lane("far_walk", 12.75, 0.80, 13.0, 0),
    "far": Lane("far", 15.25, 0.88, 10.5, 1),
    "near": Lane("near", 17.65, 1.00, 7.5, 2),
    "near_walk": Lane("near_walk", 19.45, 1.06, 5.5, 3),
}


# --------------------------------------------------------------------------
# deterministic hash noise in world coordinates


def hash01(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """Pseudo-random float32 in [0, 1) per integer cell, identical in every view."""
    with np.errstate(over="ignore"):
        h = ix.astype(np.int64).astype(np.uint32) * np.uint32(374761393)
        h = h + iy.astype(np.int64).astype(np.uint32) * np.uint32(668265263)
        h = h + np.uint32((salt * 2246822519) & 0xFFFFFFFF)
        h = (h ^ (h >> np.uint32(13))) * np.uint32(1274126177)
        h = h ^ (h >> np.uint32(16))
    return (h & np.uint32(0xFFFFFF)).astype(np.float32) / np.float32(0x1000000)


def _smoothstep(e0: float, e1: float, x):
    t = np.clip((np.asarray(x, dtype=np.float64) - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


# --------------------------------------------------------------------------
# layout


@dataclass
class Building:
    x0: float
    x1: float
    top: float
    color: np.ndarray
    trim: np.ndarray
    floors: int
    win_w: float
    win_h: float
    pitch: float
    awning: np.ndarray | None
    idx: int


@dataclass
class Layout:
    """Street furniture of one scene (drawn from the scene number only)."""

    scene: int
    buildings: list[Building]
    lamps: list[float]
    trees: list[tuple[float, float]]  # (x, radius)
    bus_stop_x: float
    panes: list[tuple[float, float, float, float]]  # shop-window panes (x0, y0, x1, y1) inside the gap
    pillar_color: np.ndarray
    asphalt: float
    zebra_x: float


_FACADE_COLORS = np.array(
    [
        [150, 78, 62],
        [196, 170, 130],
        [170, 170, 165],
        [210, 196, 160],
        [120, 120, 130],
        [180, 120, 90],
        [214, 208, 190],
        [140, 150, 120],
        [200, 150, 140],
    ],
    dtype=np.float32,
)
_AWNINGS = np.array([[30, 110, 60], [170, 40, 40], [40, 70, 150], [200, 150, 30]], dtype=np.float32)


def make_layout(scene: int) -> Layout:
    rng = np.random.default_rng([0x57EE7, scene, 1])
    buildings = []
    x = -48.0 + rng.uniform(0, 4)
    i = 0
    while x < 80:
        w = float(rng.uniform(6.5, 12.5))
        floors = int(rng.integers(2, 5))
        top = FACADE_BOTTOM - 3.0 - 2.9 * floors - float(rng.uniform(0.2, 0.9))
        col = _FACADE_COLORS[rng.integers(len(_FACADE_COLORS))] * rng.uniform(0.9, 1.08, 3).astype(np.float32)
        trim = np.clip(col * 0.7, 0, 255)
        aw = _AWNINGS[rng.integers(len(_AWNINGS))].copy() if rng.random() < 0.5 else None
        buildings.append(
            Building(
                x,
                x + w,
                top,
                np.clip(col, 0, 255),
                trim,
                floors,
                float(rng.uniform(1.0, 1.4)),
                float(rng.uniform(1.4, 1.8)),
                float(rng.uniform(2.0, 2.6)),
                aw,
                i,
            )
        )
        x += w + (float(rng.uniform(0.0, 1.5)) if rng.random() < 0.3 else 0.0)
        i += 1
    lamps = []
    x = -40.0 + rng.uniform(0, 6)
    while x < 75:
        lamps.append(float(x))
        x += float(rng.uniform(13, 18))
    bus_stop_x = float(rng.uniform(12.0, 18.0))
    trees = []
    for tx in np.arange(-40.0, 75.0, 1.0):
        if rng.random() < 0.06 and all(abs(tx - lx) > 3 for lx in lamps) and abs(tx - bus_stop_x) > 4:
            if all(abs(tx - t[0]) > 6 for t in trees):
                trees.append((float(tx), float(rng.uniform(1.4, 2.0))))
    # shop-window panes of the ground floor (candidates for glass_break)
    panes = []
    for b in buildings:
        for p in _shop_panes(b):
            x0, y0, x1, y1 = p
            if x0 < GAP_X0 + 1.0 or x1 > GAP_X1 - 1.0:
                continue
            if any(abs((x0 + x1) / 2 - tx) < r + 1.0 for tx, r in trees):
                continue
            if abs((x0 + x1) / 2 - bus_stop_x) < 3.5:
                continue
            panes.append(p)
    if not panes:  # never happens with the ranges above, but stay safe
        panes.append((12.0, 9.4, 14.0, 11.5))
    pillar = np.array([118, 114, 108], dtype=np.float32) * rng.uniform(0.85, 1.1, 3).astype(np.float32)
    return Layout(
        scene,
        buildings,
        lamps,
        trees,
        bus_stop_x,
        panes,
        np.clip(pillar, 0, 255),
        float(rng.uniform(52, 70)),
        float(rng.uniform(2.0, 7.0)),
    )


def _shop_panes(b: Building) -> list[tuple[float, float, float, float]]:
    """Ground floor: shop-window panes from the left, a door at the right end."""
    y0, y1 = FACADE_BOTTOM - 2.6, FACADE_BOTTOM - 0.5
    x0, x1 = b.x0 + 0.7, b.x1 - 2.2
    if x1 - x0 < 1.0:
        return []
    n = max(1, int(round((x1 - x0) / 2.4)))
    w = (x1 - x0) / n
    return [(x0 + k * w + 0.06, y0, x0 + (k + 1) * w - 0.06, y1) for k in range(n)]


# --------------------------------------------------------------------------
# background as a function of world coordinates


def render_background(layout: Layout, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Day-lit colour and night-only emission (both float32 [..., 3], 0-255)."""
    shape = X.shape
    rgb = np.empty(shape + (3,), np.float32)
    emis = np.zeros(shape + (3,), np.float32)
    s = layout.scene

    def paint(mask, color):
        rgb[mask] = color

    # sky
    sky_t = np.clip((Y + 6.0) / 14.0, 0, 1)[..., None]
    rgb[:] = (1 - sky_t) * np.array([92, 142, 210], np.float32) + sky_t * np.array([178, 206, 232], np.float32)

    cellx = np.floor(X * 8).astype(np.int64)
    celly = np.floor(Y * 8).astype(np.int64)
    grain = hash01(cellx, celly, s * 7 + 1)  # fine texture

    # buildings
    for b in layout.buildings:
        m = (X >= b.x0) & (X < b.x1) & (Y >= b.top) & (Y < FACADE_BOTTOM)
        if not m.any():
            continue
        xb, yb = X[m], Y[m]
        g = grain[m][:, None]
        col = b.color[None, :] * (0.94 + 0.1 * g)
        lx = xb - b.x0
        ly = FACADE_BOTTOM - yb  # height above ground
        # cornice and floor bands
        band = (np.abs((ly - 3.0) % 2.9) < 0.12) & (ly > 2.9)
        col[band] = b.trim
        col[yb < b.top + 0.35] = b.trim * 0.9
        em = np.zeros_like(col)
        # upper windows
        fl = np.floor((ly - 3.0) / 2.9)
        fy = (ly - 3.0) - fl * 2.9
        ncol = max(1, int((b.x1 - b.x0 - 0.6) // b.pitch))
        margin = (b.x1 - b.x0 - ncol * b.pitch) / 2
        cx = np.floor((lx - margin) / b.pitch)
        fx = (lx - margin) - cx * b.pitch
        inwin = (
            (ly > 3.0)
            & (fl < b.floors)
            & (cx >= 0)
            & (cx < ncol)
            & (fx > (b.pitch - b.win_w) / 2)
            & (fx < (b.pitch + b.win_w) / 2)
            & (fy > 0.55)
            & (fy < 0.55 + b.win_h)
        )
        refl = hash01(cx.astype(np.int64), fl.astype(np.int64), s * 31 + b.idx)
        wcol = np.stack([60 + 40 * refl, 80 + 40 * refl, 100 + 45 * refl], -1).astype(np.float32)
        col[inwin] = wcol[inwin]
        lit = inwin & (hash01(cx.astype(np.int64) + 7, fl.astype(np.int64), s * 131 + b.idx) < 0.35)
        em[lit] = np.array([235, 190, 110], np.float32)
        # sills
        sill = (ly > 3.0) & (fl < b.floors) & (cx >= 0) & (cx < ncol) & (np.abs(fx - b.pitch / 2) < b.win_w / 2 + 0.1) & (np.abs(fy - 0.5) < 0.06)
        col[sill] = np.array([225, 225, 220], np.float32)
        # ground floor: shop windows and door
        for x0, y0, x1, y1 in _shop_panes(b):
            pm = (xb >= x0) & (xb < x1) & (yb >= y0) & (yb < y1)
            gl = grain[m][pm]
            col[pm] = np.stack([70 + 30 * gl, 95 + 30 * gl, 110 + 30 * gl], -1)
            em[pm] = np.array([200, 170, 120], np.float32) * 0.55
            frame = (xb >= x0 - 0.08) & (xb < x1 + 0.08) & (yb >= y0 - 0.08) & (yb < y1 + 0.08) & ~pm
            col[frame] = np.array([50, 50, 55], np.float32)
        dm = (lx > (b.x1 - b.x0) - 1.8) & (lx < (b.x1 - b.x0) - 0.7) & (ly < 2.3)
        col[dm] = np.array([90, 60, 40], np.float32) * (0.9 + 0.2 * g[dm])
        if b.awning is not None:
            am = (ly > 2.65) & (ly < 3.05) & (lx > 0.3) & (lx < (b.x1 - b.x0) - 0.3)
            stripes = (np.floor(lx * 2) % 2 == 0)
            col[am] = np.where(stripes[am][:, None], b.awning, np.array([235, 235, 230], np.float32))
        rgb[m] = col
        emis[m] = em

    # far sidewalk, road, near sidewalk, foreground pavement
    m = (Y >= FAR_WALK[0]) & (Y < FAR_WALK[1])
    rgb[m] = (np.array([165, 162, 155], np.float32) * (0.92 + 0.12 * grain[m])[:, None])
    tile = (np.abs(X % 1.5) < 0.04) & m
    rgb[tile] = np.array([135, 132, 126], np.float32)
    m = (Y >= ROAD[0]) & (Y < ROAD[1])
    a = layout.asphalt
    rgb[m] = np.array([a, a, a * 1.04], np.float32) * (0.85 + 0.3 * grain[m])[:, None]
    curb = ((np.abs(Y - ROAD[0]) < 0.12) | (np.abs(Y - ROAD[1]) < 0.12))
    rgb[curb] = np.array([190, 188, 182], np.float32)
    dash = (Y >= CENTRE_LINE[0]) & (Y < CENTRE_LINE[1]) & ((X % 6.0) < 3.0)
    rgb[dash] = np.array([225, 225, 215], np.float32)
    zebra = m & (X >= layout.zebra_x) & (X < layout.zebra_x + 4.0) & ((np.floor((X - layout.zebra_x) * 2) % 2) == 0) & (Y > ROAD[0] + 0.3) & (Y < ROAD[1] - 0.3)
    rgb[zebra] = np.array([215, 215, 210], np.float32) * (0.9 + 0.1 * grain[zebra])[:, None]
    m = (Y >= NEAR_WALK[0]) & (Y < NEAR_WALK[1])
    rgb[m] = np.array([172, 168, 160], np.float32) * (0.92 + 0.12 * grain[m])[:, None]
    m = Y >= NEAR_WALK[1]
    rgb[m] = np.array([96, 104, 88], np.float32) * (0.85 + 0.3 * grain[m])[:, None]

    # trees on the far sidewalk
    for tx, r in layout.trees:
        trunk = (np.abs(X - tx) < 0.18) & (Y > 8.0) & (Y < FAR_WALK[0] + 0.5)
        rgb[trunk] = np.array([85, 62, 45], np.float32)
        cy = 8.8 - r * 0.6
        d2 = ((X - tx) / r) ** 2 + ((Y - cy) / (r * 0.85)) ** 2
        leaves = d2 < 1.0
        leafg = hash01(np.floor(X * 3).astype(np.int64), np.floor(Y * 3).astype(np.int64), s * 13 + 5)
        rgb[leaves] = np.stack([50 + 30 * leafg[leaves], 100 + 50 * leafg[leaves], 45 + 20 * leafg[leaves]], -1)

    # bus stop shelter and sign
    bx = layout.bus_stop_x
    roof = (np.abs(X - bx) < 2.0) & (Y > 9.3) & (Y < 9.55)
    rgb[roof] = np.array([70, 75, 80], np.float32)
    glass = (np.abs(X - bx) < 1.9) & (Y >= 9.55) & (Y < FAR_WALK[0] + 0.6)
    rgb[glass] = rgb[glass] * 0.75 + np.array([150, 190, 200], np.float32) * 0.25
    post = (np.abs(X - (bx - 2.0)) < 0.06) & (Y > 9.3) & (Y < FAR_WALK[0] + 0.6)
    post |= (np.abs(X - (bx + 2.0)) < 0.06) & (Y > 9.3) & (Y < FAR_WALK[0] + 0.6)
    rgb[post] = np.array([60, 60, 65], np.float32)
    sign_pole = (np.abs(X - (bx + 3.0)) < 0.05) & (Y > 8.6) & (Y < FAR_WALK[0] + 0.6)
    rgb[sign_pole] = np.array([80, 80, 85], np.float32)
    sign = (np.abs(X - (bx + 3.0)) < 0.35) & (Y > 8.2) & (Y < 8.9)
    rgb[sign] = np.array([30, 90, 170], np.float32)
    emis[glass] = np.array([120, 150, 160], np.float32) * 0.4

    # lamp posts (far sidewalk) with a warm glow at night
    for lx in layout.lamps:
        pole = (np.abs(X - lx) < 0.09) & (Y > 6.8) & (Y < FAR_WALK[0] + 0.7)
        rgb[pole] = np.array([55, 58, 62], np.float32)
        arm = (X > lx - 0.05) & (X < lx + 0.8) & (np.abs(Y - 6.85) < 0.06)
        rgb[arm] = np.array([55, 58, 62], np.float32)
        head = (X > lx + 0.5) & (X < lx + 1.0) & (Y > 6.88) & (Y < 7.05)
        rgb[head] = np.array([200, 200, 190], np.float32)
        d2 = ((X - (lx + 0.75)) ** 2 + (Y - 7.0) ** 2) / 2.2**2
        glow = np.exp(-d2)[..., None] * np.array([255, 200, 120], np.float32) * 0.8
        pool = np.exp(-(((X - (lx + 0.75)) / 4.0) ** 2) - ((Y - 14.0) / 2.5) ** 2)[..., None] * np.array([200, 160, 90], np.float32) * 0.55
        emis += glow + pool * (Y >= FAR_WALK[0])[..., None]
        emis[head] = np.array([255, 235, 190], np.float32)

    # foreground pillars (the camera looks out through a gap) and top beam
    pm = (X < GAP_X0) | (X > GAP_X1) | (Y < 3.0)
    pg = hash01(np.floor(X * 2).astype(np.int64), np.zeros(shape, np.int64), s * 17 + 3)
    pc = layout.pillar_color[None, :] * (0.9 + 0.12 * pg[pm][:, None] + 0.06 * grain[pm][:, None])
    rgb[pm] = pc
    edge = pm & ((np.abs(X - GAP_X0) < 0.25) | (np.abs(X - GAP_X1) < 0.25) | (np.abs(Y - 3.0) < 0.25))
    rgb[edge] = layout.pillar_color * 0.7
    emis[pm] = 0.0
    return rgb, emis


# --------------------------------------------------------------------------
# cameras


def homography_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 H with dst ~ H @ src for four point pairs (DLT)."""
    A, b = [], []
    for (x, y), (u, v) in zip(src, dst):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        b.append(u)
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        b.append(v)
    h = np.linalg.solve(np.array(A, float), np.array(b, float))
    return np.append(h, 1.0).reshape(3, 3)


def apply_h(H: np.ndarray, x, y):
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = H[2, 0] * x + H[2, 1] * y + H[2, 2]
    return (H[0, 0] * x + H[0, 1] * y + H[0, 2]) / w, (H[1, 0] * x + H[1, 1] * y + H[1, 2]) / w


@dataclass
class Camera:
    """One view: pixel -> world map plus its colour rendering."""

    name: str
    width: int
    height: int
    v2w: np.ndarray  # 3x3, pixel centre (u+0.5, v+0.5) -> world
    separable: bool
    color_matrix: np.ndarray  # 3x3 applied to linear RGB 0-255
    color_bias: np.ndarray
    noise_sigma: float  # sensor noise (grey levels) in daylight
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.w2v = np.linalg.inv(self.v2w)
        W, H = self.width, self.height
        u = np.arange(W) + 0.5
        v = np.arange(H) + 0.5
        if self.separable:
            self.xs = (self.v2w[0, 0] * u + self.v2w[0, 2]).astype(np.float32)
            self.ys = (self.v2w[1, 1] * v + self.v2w[1, 2]).astype(np.float32)
            self.X = np.broadcast_to(self.xs[None, :], (H, W))
            self.Y = np.broadcast_to(self.ys[:, None], (H, W))
        else:
            uu, vv = np.meshgrid(u, v)
            X, Y = apply_h(self.v2w, uu, vv)
            self.X = X.astype(np.float32)
            self.Y = Y.astype(np.float32)
        # pixels per metre, the largest over the region every view must show
        xs = np.linspace(MUST_SEE[0], MUST_SEE[2], 9)
        ys = np.linspace(MUST_SEE[1], MUST_SEE[3], 9)
        gx, gy = np.meshgrid(xs, ys)
        pu, pv = apply_h(self.w2v, gx, gy)
        pu2, pv2 = apply_h(self.w2v, gx + 0.01, gy)
        self.px_per_m = float(np.max(np.hypot(pu2 - pu, pv2 - pv)) / 0.01)

    def to_view(self, x, y):
        return apply_h(self.w2v, x, y)

    def bbox(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int] | None:
        """Pixel rectangle (r0, r1, c0, c1) covering a world rectangle, clipped; None if outside."""
        u, v = apply_h(self.w2v, np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1]))
        c0 = max(0, int(math.floor(u.min())) - 1)
        c1 = min(self.width, int(math.ceil(u.max())) + 1)
        r0 = max(0, int(math.floor(v.min())) - 1)
        r1 = min(self.height, int(math.ceil(v.max())) + 1)
        if c0 >= c1 or r0 >= r1:
            return None
        return r0, r1, c0, c1

    def contains(self, region) -> bool:
        x0, y0, x1, y1 = region
        u, v = self.to_view(np.array([x0, x1, x1, x0]), np.array([y0, y0, y1, y1]))
        return bool(np.all((u >= 0) & (u <= self.width) & (v >= 0) & (v <= self.height)))

    def apply_color(self, rgb: np.ndarray) -> np.ndarray:
        """Colour balance of the camera on float RGB [..., 3]."""
        if self.color_matrix is None:
            return rgb
        return rgb @ self.color_matrix.T.astype(np.float32) + self.color_bias.astype(np.float32)


def _fit_affine(width: int, height: int, fit, zoom: float = 1.0, shift=(0.0, 0.0)) -> np.ndarray:
    x0, y0, x1, y1 = fit
    s = min(width / (x1 - x0), height / (y1 - y0)) * zoom  # pixels per metre
    cx = (x0 + x1) / 2 + shift[0]
    cy = (y0 + y1) / 2 + shift[1]
    return np.array([[1 / s, 0, cx - width / (2 * s)], [0, 1 / s, cy - height / (2 * s)], [0, 0, 1]], float)


def make_cameras(scene: int, size: tuple[int, int], names) -> dict[str, Camera]:
    """The views of a scene. Depends on ``scene`` and ``size`` only, never on the seed."""
    W, H = size
    rng = np.random.default_rng([0x57EE7, scene, 2])
    # draw every view's parameters in a fixed order so a subset of views gets the same cameras
    sim_zoom = float(rng.uniform(0.94, 1.07))
    sim_shift = rng.uniform(-1, 1, 2)
    sim_gain = rng.uniform(0.96, 1.04, 3)
    ch_zoom = float(rng.uniform(0.74, 0.84))
    ch_persp = float(rng.uniform(0.18, 0.28)) * (1 if rng.random() < 0.5 else -1)
    ch_rot = float(rng.uniform(2.5, 5.0)) * (1 if rng.random() < 0.5 else -1)
    ch_shift = rng.uniform(-1, 1, 2)
    ch_tint = int(rng.integers(3))
    ch_contrast = float(rng.uniform(0.75, 0.88))
    cams: dict[str, Camera] = {}
    for name in names:
        if name == "train":
            cams[name] = Camera(name, W, H, _fit_affine(W, H, TRAIN_FIT), True, None, None, 1.6, {})
        elif name == "similar":
            # shift as far as the must-see region allows, at most 1.2 m
            for shrink in (1.0, 0.6, 0.3, 0.0):
                m = _fit_affine(W, H, TRAIN_FIT, sim_zoom, (0, 0))
                vw = W * m[0, 0]
                vh = H * m[1, 1]
                mx = max(0.0, (vw - (MUST_SEE[2] - MUST_SEE[0])) / 2 - 0.3)
                my = max(0.0, (vh - (MUST_SEE[3] - MUST_SEE[1])) / 2 - 0.3)
                sh = (float(np.clip(sim_shift[0] * 1.2, -mx, mx)) * shrink, float(np.clip(sim_shift[1] * 1.2, -my, my)) * shrink)
                # keep the vertical centre over the must-see region
                m = _fit_affine(W, H, TRAIN_FIT, sim_zoom, sh)
                cm = np.diag(sim_gain).astype(np.float32)
                cam = Camera(name, W, H, m, True, cm, np.zeros(3, np.float32), 1.8, {"zoom": sim_zoom, "shift_m": list(sh)})
                if cam.contains(MUST_SEE):
                    break
            else:  # pragma: no cover - the zoom range always fits
                raise RuntimeError("similar view cannot show the street")
            cams[name] = cam
        elif name == "challenging":
            for k in range(20):
                zoom = ch_zoom * (0.97**k)
                base = _fit_affine(W, H, TRAIN_FIT, zoom, (ch_shift[0] * 1.5, ch_shift[1] * 0.8))
                corners_v = np.array([[0, 0], [W, 0], [W, H], [0, H]], float)
                cw = np.array([apply_h(base, u, v) for u, v in corners_v])
                cx, cy = cw[:, 0].mean(), cw[:, 1].mean()
                # perspective: one side of the view covers more height (is farther away)
                k_left, k_right = 1 + ch_persp, 1 - ch_persp
                pts = cw.copy()
                for i, kk in ((0, k_left), (3, k_left), (1, k_right), (2, k_right)):
                    pts[i, 1] = cy + (pts[i, 1] - cy) * kk
                th = math.radians(ch_rot)
                R = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
                pts = (pts - [cx, cy]) @ R.T + [cx, cy]
                v2w = homography_from_points(corners_v, pts)
                # pixel centres: shift by half a pixel
                v2w = v2w @ np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]])
                tints = [
                    np.array([[1.12, 0.05, 0.0], [0.02, 1.0, 0.0], [0.0, 0.05, 0.78]]),  # warm sodium
                    np.array([[0.85, 0.05, 0.05], [0.03, 1.0, 0.05], [0.0, 0.08, 1.15]]),  # cool
                    np.array([[0.95, 0.1, 0.0], [0.05, 1.08, 0.0], [0.0, 0.1, 0.85]]),  # green cast
                ][ch_tint]
                cm = (tints * ch_contrast).astype(np.float32)
                bias = np.full(3, (1 - ch_contrast) * 128 + 6, np.float32)
                cam = Camera(
                    name,
                    W,
                    H,
                    v2w,
                    False,
                    cm,
                    bias,
                    2.2,
                    {"zoom": zoom, "perspective": ch_persp, "roll_deg": ch_rot, "tint": ["warm", "cool", "green"][ch_tint], "contrast": ch_contrast},
                )
                if cam.contains(MUST_SEE):
                    break
            else:  # pragma: no cover
                raise RuntimeError("challenging view cannot show the street")
            cams[name] = cam
        else:
            raise ValueError(f"unknown view {name!r}")
    return cams


# --------------------------------------------------------------------------
# lighting


@dataclass(frozen=True)
class Light:
    gain: np.ndarray  # per-channel multiplier of reflected light
    night: float  # 0 by day, 1 at night: street lights, lit windows, headlights
    day: float  # 1 at noon, 0 at midnight (smooth)
    noise_scale: float  # sensor noise multiplier (more gain at night)


def day_level(t: float, phase: float) -> float:
    c = 0.5 + 0.5 * math.cos(2 * math.pi * (t / DAY_PERIOD_S + phase))
    return float(_smoothstep(0.2, 0.8, c))


def light_at(t: float, phase: float) -> Light:
    d = day_level(t, phase)
    night_rgb = np.array([0.16, 0.18, 0.28])
    g = night_rgb + (1 - night_rgb) * d
    dusk = math.exp(-(((d - 0.35) / 0.15) ** 2))
    g = g * (1 + dusk * np.array([0.12, 0.0, -0.12]))
    n = float(_smoothstep(0.55, 0.15, d)) if d < 0.55 else 0.0
    return Light(g.astype(np.float32), n, d, 1.0 + 0.8 * (1 - d))
