"""Procedural sprite textures (vehicles, people, broken glass).

A sprite is drawn in metres on a canvas of ``density`` texels per metre:
x from the back (0) to the front (length), y from the top (0) to the ground
(height).  The result is an RGBA texture plus an "emissive" mask (lights that
shine regardless of daylight).  Animated sprites have several frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Texture:
    rgb: np.ndarray  # float32 [th, tw, 3], 0-255 (day-lit colour, or light colour where emissive)
    alpha: np.ndarray  # bool [th, tw]
    emissive: np.ndarray  # bool [th, tw]
    length: float  # metres
    height: float


class Canvas:
    def __init__(self, length: float, height: float, density: float):
        self.L, self.H, self.d = length, height, density
        tw = max(2, int(round(length * density)))
        th = max(2, int(round(height * density)))
        self.x = ((np.arange(tw) + 0.5) / tw * length)[None, :]
        self.y = ((np.arange(th) + 0.5) / th * height)[:, None]
        self.rgb = np.zeros((th, tw, 3), np.float32)
        self.alpha = np.zeros((th, tw), bool)
        self.emis = np.zeros((th, tw), bool)

    def _paint(self, m, color, emissive=False):
        m = np.broadcast_to(m, self.alpha.shape)
        self.rgb[m] = np.asarray(color, np.float32)
        self.alpha |= m
        if emissive:
            self.emis |= m
        else:
            self.emis &= ~m

    def rect(self, x0, y0, x1, y1, color, emissive=False, cut=0.0):
        m = (self.x >= x0) & (self.x < x1) & (self.y >= y0) & (self.y < y1)
        if cut > 0:  # rounded-looking corners
            dx = np.minimum(self.x - x0, x1 - self.x)
            dy = np.minimum(self.y - y0, y1 - self.y)
            m &= (dx + dy) >= cut
        self._paint(m, color, emissive)

    def circle(self, cx, cy, r, color, emissive=False):
        m = (self.x - cx) ** 2 + (self.y - cy) ** 2 < r * r
        self._paint(m, color, emissive)

    def quad(self, y0, y1, x0_top, x1_top, x0_bot, x1_bot, color, emissive=False):
        """Trapezoid between rows y0 and y1 with linearly varying x limits."""
        t = np.clip((self.y - y0) / max(y1 - y0, 1e-6), 0, 1)
        xl = x0_top + (x0_bot - x0_top) * t
        xr = x1_top + (x1_bot - x1_top) * t
        m = (self.y >= y0) & (self.y < y1) & (self.x >= xl) & (self.x < xr)
        self._paint(m, color, emissive)

    def line(self, xa, ya, xb, yb, width, color, emissive=False):
        px, py = self.x - xa, self.y - ya
        dx, dy = xb - xa, yb - ya
        t = np.clip((px * dx + py * dy) / (dx * dx + dy * dy + 1e-9), 0, 1)
        m = (px - t * dx) ** 2 + (py - t * dy) ** 2 < (width / 2) ** 2
        self._paint(m, color, emissive)

    def texture(self) -> Texture:
        return Texture(self.rgb.copy(), self.alpha.copy(), self.emis.copy(), self.L, self.H)


GLASS = (70, 90, 105)
TYRE = (25, 25, 28)
HUB = (150, 150, 155)
HEAD = (255, 245, 200)
TAIL = (230, 30, 25)

CAR_COLORS = [
    (180, 30, 30),
    (30, 60, 150),
    (225, 225, 225),
    (160, 165, 170),
    (30, 30, 35),
    (30, 90, 60),
    (200, 160, 40),
    (110, 40, 90),
]
BUS_COLORS = [(200, 35, 30), (230, 180, 30), (40, 90, 170), (40, 140, 80)]
TRUCK_CAB_COLORS = [(30, 60, 150), (190, 30, 30), (240, 240, 240), (40, 110, 60), (230, 120, 20)]
BOX_COLORS = [(235, 235, 232), (200, 200, 195), (150, 170, 190), (210, 190, 150)]
SPORT_COLORS = [(255, 210, 0), (220, 20, 20), (20, 20, 20), (240, 100, 0)]
SHIRT_COLORS = [(200, 40, 40), (40, 90, 200), (240, 200, 40), (40, 160, 80), (230, 230, 230)]


def _wheels(c: Canvas, xs, r):
    for x in xs:
        c.circle(x, c.H - r, r, TYRE)
        c.circle(x, c.H - r, r * 0.45, HUB)


def draw_car(params: dict, density: float) -> list[Texture]:
    L, H = params.get("length", 4.4), params.get("height", 1.45)
    col = params["color"]
    body = params.get("body", 0)  # 0 sedan, 1 hatchback, 2 estate, 3 sports
    c = Canvas(L, H, density)
    roof_y = 0.05 if body != 3 else 0.25
    belt = H * 0.43
    if body == 0:
        c.quad(roof_y, belt, L * 0.33, L * 0.66, L * 0.22, L * 0.82, col)
        c.quad(roof_y + 0.08, belt - 0.02, L * 0.35, L * 0.64, L * 0.26, L * 0.79, GLASS)
    elif body == 1:
        c.quad(roof_y, belt, L * 0.1, L * 0.62, L * 0.05, L * 0.8, col)
        c.quad(roof_y + 0.08, belt - 0.02, L * 0.13, L * 0.6, L * 0.09, L * 0.77, GLASS)
    elif body == 2:
        c.quad(roof_y, belt, L * 0.06, L * 0.66, L * 0.04, L * 0.82, col)
        c.quad(roof_y + 0.08, belt - 0.02, L * 0.08, L * 0.64, L * 0.07, L * 0.79, GLASS)
    else:
        c.quad(roof_y, belt + 0.05, L * 0.35, L * 0.6, L * 0.18, L * 0.8, col)
        c.quad(roof_y + 0.06, belt, L * 0.37, L * 0.58, L * 0.24, L * 0.77, GLASS)
    # B pillar
    c.rect(L * 0.5, roof_y, L * 0.53, belt, col)
    c.rect(0.02, belt - 0.02, L - 0.02, H - 0.28, col, cut=0.18)
    shade = tuple(int(v * 0.72) for v in col)
    c.rect(0.1, H - 0.42, L - 0.1, H - 0.28, shade)
    c.rect(L - 0.16, belt + 0.06, L - 0.01, belt + 0.22, HEAD, emissive=True)
    c.rect(0.01, belt + 0.06, 0.13, belt + 0.24, TAIL, emissive=True)
    if body == 3:  # racing stripe
        c.rect(0.3, belt + 0.15, L - 0.3, belt + 0.24, (245, 245, 245))
    _wheels(c, (L * 0.19, L * 0.8), 0.33)
    return [c.texture()]


def draw_bus(params: dict, density: float) -> list[Texture]:
    L, H = 12.0, 3.2
    col = params["color"]
    c = Canvas(L, H, density)
    c.rect(0.05, 0.1, L - 0.02, H - 0.3, col, cut=0.2)
    c.rect(0.2, 0.05, L - 0.4, 0.2, (210, 210, 210))
    n = 7
    for k in range(n):
        x0 = 0.6 + k * 1.45
        c.rect(x0, 0.55, x0 + 1.3, 1.7, GLASS)
    c.rect(L - 0.9, 0.45, L - 0.08, 2.0, GLASS)  # windscreen
    c.rect(L - 2.2, 0.5, L - 1.15, H - 0.35, (60, 70, 80))  # front door
    c.rect(5.0, 0.5, 6.0, H - 0.35, (60, 70, 80))  # middle door
    c.rect(0.05, 1.85, L - 0.02, 2.05, (240, 240, 240))  # stripe
    c.rect(L - 2.6, 0.18, L - 0.5, 0.42, (255, 170, 30), emissive=True)  # destination display
    c.rect(L - 0.12, 2.25, L - 0.01, 2.45, HEAD, emissive=True)
    c.rect(0.01, 2.2, 0.1, 2.5, TAIL, emissive=True)
    _wheels(c, (2.4, L - 3.0), 0.5)
    return [c.texture()]


def draw_truck(params: dict, density: float) -> list[Texture]:
    L, H = 8.5, 3.4
    cab, box = params["color"], params["box"]
    c = Canvas(L, H, density)
    c.rect(0.0, 0.0, L - 2.55, H - 0.75, box, cut=0.05)
    c.rect(0.2, H - 1.6, L - 2.75, H - 1.35, params.get("stripe", (200, 40, 40)))
    c.rect(0.0, H - 0.75, L - 0.3, H - 0.5, (40, 40, 42))  # chassis
    c.quad(0.75, H - 0.45, L - 2.45, L - 0.7, L - 2.45, L - 0.02, cab)
    c.quad(0.9, 1.7, L - 1.6, L - 0.78, L - 1.6, L - 0.3, GLASS)
    c.rect(L - 0.14, H - 1.1, L - 0.01, H - 0.9, HEAD, emissive=True)
    c.rect(0.0, H - 1.05, 0.1, H - 0.8, TAIL, emissive=True)
    _wheels(c, (1.2, 2.3, L - 1.5), 0.48)
    return [c.texture()]


def draw_motorcycle(params: dict, density: float) -> list[Texture]:
    L, H = 2.1, 1.6
    col, jacket, helmet = params["color"], params["jacket"], params["helmet"]
    c = Canvas(L, H, density)
    c.quad(H - 0.75, H - 0.35, 0.45, 1.65, 0.6, 1.5, col)  # tank / frame
    c.line(1.55, H - 0.7, 1.8, H - 0.3, 0.08, (120, 120, 125))  # fork
    c.rect(0.55, 0.35, 1.05, H - 0.75, jacket, cut=0.06)  # torso
    c.line(0.95, 0.5, 1.45, 0.85, 0.12, jacket)  # arm
    c.line(0.75, H - 0.75, 1.1, H - 0.35, 0.14, (40, 40, 60))  # leg
    c.circle(0.9, 0.22, 0.17, helmet)
    c.rect(1.7, H - 0.8, 1.85, H - 0.66, HEAD, emissive=True)
    c.rect(0.25, H - 0.75, 0.36, H - 0.62, TAIL, emissive=True)
    _wheels(c, (0.38, L - 0.32), 0.32)
    return [c.texture()]


def draw_emergency(params: dict, density: float) -> list[Texture]:
    kind = params["kind"]
    frames = []
    for phase in (0, 1):
        if kind == "fire_truck":
            L, H = 8.0, 3.2
            c = Canvas(L, H, density)
            c.rect(0.0, 0.45, L - 0.02, H - 0.35, (200, 20, 20), cut=0.1)
            c.rect(0.2, 0.3, L - 2.5, 0.45, (170, 170, 175))  # ladder
            for k in range(10):
                c.rect(0.4 + k * 0.55, 0.22, 0.48 + k * 0.55, 0.45, (170, 170, 175))
            c.rect(L - 1.2, 0.75, L - 0.1, 1.6, GLASS)
            c.rect(0.0, 1.9, L - 0.02, 2.05, (240, 240, 230))
            for k in range(4):
                c.rect(0.5 + k * 1.3, 1.0, 1.5 + k * 1.3, 1.75, (160, 15, 15))
            bar = (L - 2.2, 0.2, L - 0.6, 0.45)
            wheels = (1.4, 2.6, L - 1.6)
            r = 0.5
        elif kind == "ambulance":
            L, H = 6.0, 2.7
            c = Canvas(L, H, density)
            c.rect(0.0, 0.3, L - 1.3, H - 0.35, (240, 240, 236), cut=0.08)
            c.quad(0.8, H - 0.35, L - 1.4, L - 0.5, L - 1.4, L - 0.02, (240, 240, 236))
            c.quad(0.9, 1.45, L - 1.1, L - 0.55, L - 1.1, L - 0.3, GLASS)
            c.rect(0.0, 1.55, L - 0.02, 1.8, (230, 90, 20))
            c.rect(1.7, 0.7, 2.0, 1.3, (220, 20, 20))
            c.rect(1.55, 0.85, 2.15, 1.15, (220, 20, 20))
            bar = (L - 2.4, 0.08, L - 1.4, 0.3)
            wheels = (1.1, L - 1.1)
            r = 0.4
        else:  # police car
            L, H = 4.7, 1.75
            c = Canvas(L, H, density)
            belt = 1.0
            c.quad(0.3, belt, L * 0.33, L * 0.66, L * 0.22, L * 0.82, (245, 245, 245))
            c.quad(0.38, belt - 0.02, L * 0.35, L * 0.64, L * 0.26, L * 0.79, GLASS)
            c.rect(0.02, belt - 0.02, L - 0.02, H - 0.28, (20, 40, 120), cut=0.18)
            c.rect(L * 0.3, belt + 0.05, L * 0.7, H - 0.4, (245, 245, 245))
            bar = (L * 0.38, 0.1, L * 0.62, 0.3)
            wheels = (L * 0.19, L * 0.8)
            r = 0.33
        x0, y0, x1, y1 = bar
        xm = (x0 + x1) / 2
        red_on, blue_on = (phase == 0), (phase == 1)
        c.rect(x0, y0, xm, y1, (255, 40, 30) if red_on else (110, 20, 20), emissive=red_on)
        c.rect(xm, y0, x1, y1, (60, 110, 255) if blue_on else (20, 30, 100), emissive=blue_on)
        c.rect(L - 0.14, H - 1.0, L - 0.01, H - 0.8, HEAD, emissive=True)
        c.rect(0.0, H - 0.95, 0.1, H - 0.75, TAIL, emissive=True)
        _wheels(c, wheels, r)
        frames.append(c.texture())
    return frames


def draw_forklift(params: dict, density: float) -> list[Texture]:
    L, H = 3.0, 2.3
    col = params["color"]
    c = Canvas(L, H, density)
    c.rect(0.0, 1.05, 0.55, H - 0.3, (50, 50, 55), cut=0.1)  # counterweight
    c.rect(0.45, 1.25, 2.05, H - 0.3, col)  # body
    c.rect(0.55, 0.2, 0.62, 1.3, (40, 40, 40))  # guard posts
    c.rect(1.75, 0.2, 1.82, 1.3, (40, 40, 40))
    c.rect(0.5, 0.15, 1.9, 0.25, (40, 40, 40))  # overhead guard
    c.rect(0.95, 0.65, 1.35, 1.25, (40, 80, 140))  # driver
    c.circle(1.15, 0.52, 0.13, (230, 190, 150))
    c.rect(2.05, 0.0, 2.18, H - 0.2, (120, 120, 125))  # mast
    c.rect(2.18, H - 0.32, L - 0.02, H - 0.24, (90, 90, 95))  # forks
    if params.get("pallet"):
        c.rect(2.2, H - 1.2, L - 0.05, H - 0.32, (160, 120, 70))
        c.rect(2.2, H - 1.2, L - 0.05, H - 1.1, (120, 90, 50))
    c.rect(0.45, 1.25, 2.05, 1.38, (30, 30, 30))
    _wheels(c, (0.6, 1.85), 0.28)
    return [c.texture()]


def draw_person(params: dict, density: float) -> list[Texture]:
    L, H = 0.9, 1.75
    shirt, pants, skin = params["shirt"], params["pants"], (225, 185, 150)
    frames = []
    for k in range(2):
        c = Canvas(L, H, density)
        c.circle(0.5, 0.14, 0.12, skin)
        c.rect(0.34, 0.28, 0.62, 0.95, shirt, cut=0.04)
        if k == 0:
            c.line(0.45, 0.92, 0.2, H - 0.04, 0.13, pants)
            c.line(0.52, 0.92, 0.82, H - 0.06, 0.13, pants)
            c.line(0.4, 0.35, 0.15, 0.7, 0.09, shirt)
            c.line(0.58, 0.35, 0.82, 0.55, 0.09, shirt)
        else:
            c.line(0.48, 0.92, 0.5, H - 0.02, 0.13, pants)
            c.line(0.5, 0.92, 0.68, H - 0.2, 0.13, pants)
            c.line(0.45, 0.35, 0.6, 0.75, 0.09, shirt)
        frames.append(c.texture())
    return frames


def draw_glass(params: dict, density: float) -> list[Texture]:
    """Frame 0: the flash of breaking glass; frame 1: the broken pane."""
    L, H = params["w"], params["h"]
    density = max(density, 16.0)
    rng = np.random.default_rng(params["shape_seed"])
    flash = Canvas(L, H, density)
    flash.rect(0, 0, L, H, (250, 250, 245), emissive=True)
    broken = Canvas(L, H, density)
    broken.rect(0, 0, L, H, (18, 18, 22))
    cx, cy = rng.uniform(0.3, 0.7) * L, rng.uniform(0.3, 0.7) * H
    # jagged glass left along the frame
    for k in range(10):
        e = rng.integers(4)
        a, b = rng.uniform(0, 1), rng.uniform(0.1, 0.3)
        if e == 0:
            broken.quad(0, b * H, a * L - 0.2, a * L + 0.2, a * L, a * L, (150, 175, 190))
        elif e == 1:
            broken.quad(H - b * H, H, a * L, a * L, a * L - 0.25, a * L + 0.25, (150, 175, 190))
        elif e == 2:
            broken.quad(a * H - 0.15, a * H + 0.15, 0, 0, b * L, 0, (150, 175, 190))
        else:
            broken.quad(a * H - 0.15, a * H + 0.15, L - b * L, L, L, L, (150, 175, 190))
    for k in range(9):
        ang = rng.uniform(0, 2 * np.pi)
        r = max(L, H)
        broken.line(cx, cy, cx + r * np.cos(ang), cy + r * np.sin(ang), 0.05, (230, 235, 240))
    broken.circle(cx, cy, 0.12, (230, 235, 240))
    return [flash.texture(), broken.texture()]


def draw_beam(params: dict, density: float) -> list[Texture]:
    """Headlight beam on the road: a light ellipse, brightest near the lamp (x = 0 is the far end)."""
    L, H = 3.5, 0.7
    c = Canvas(L, H, min(density, 16.0))
    lvl = params["level"]
    d = (c.x / L) ** 2 + ((c.y - H * 0.6) / (H * 0.55)) ** 2
    m = d < 1.0
    k = np.clip(1.0 - d, 0, 1)[..., None] ** 0.5
    c.rgb[:] = (np.array([120, 112, 88], np.float32) * (0.35 + 0.65 * k)) * lvl
    c.alpha |= m
    c.emis |= m
    return [c.texture()]


DRAWERS = {
    "beam": draw_beam,
    "car": draw_car,
    "bus": draw_bus,
    "truck": draw_truck,
    "motorcycle": draw_motorcycle,
    "emergency": draw_emergency,
    "forklift": draw_forklift,
    "person": draw_person,
    "glass": draw_glass,
}


def sprite_size(kind: str, params: dict) -> tuple[float, float]:
    """(length, height) in metres of a sprite before lane depth scaling."""
    if kind == "car":
        return params.get("length", 4.4), params.get("height", 1.45)
    if kind == "bus":
        return 12.0, 3.2
    if kind == "truck":
        return 8.5, 3.4
    if kind == "motorcycle":
        return 2.1, 1.6
    if kind == "emergency":
        return {"fire_truck": (8.0, 3.2), "ambulance": (6.0, 2.7), "police": (4.7, 1.75)}[params["kind"]]
    if kind == "forklift":
        return 3.0, 2.3
    if kind == "person":
        return 0.9, 1.75
    if kind == "glass":
        return params["w"], params["h"]
    if kind == "beam":
        return 3.5, 0.7
    raise KeyError(kind)
