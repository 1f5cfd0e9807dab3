"""Per-view frame rendering with numpy: lit background cache, sprite blits, sensor noise.

Per frame the work is one copy of the cached lit background, a few small
sprite gathers and one in-place uint8 add of a shifted window of a
precomputed noise tile.  Values are kept in ``[0, 255 - 2*headroom]`` until
the noise (``[0, 2*headroom]``) is added, so the add can never wrap.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np

from .scene import GAP_X0, GAP_X1, LANES, Camera, Layout, Light, render_background
from .sprites import DRAWERS, Texture

NOISE_PAD = 48
STREET_LIGHT = np.array([0.42, 0.36, 0.26], np.float32)  # warm lamp light on objects at night
BEAM_M = 3.5  # headlight beam length on the road ahead of a vehicle at night
NOISE_LEVELS = (1.0, 1.4, 1.8)  # noise multipliers (day ... night); the nearest one is used
TEX_CACHE_SIZE = 48
_TEX_CACHE: OrderedDict = OrderedDict()


def _freeze(params: dict):
    return tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in params.items()))


def base_textures(kind: str, params: dict, density: float) -> list[Texture]:
    """Sprite textures, cached (least recently used out) so memory stays bounded."""
    key = (kind, _freeze(params), density)
    tex = _TEX_CACHE.get(key)
    if tex is None:
        tex = DRAWERS[kind](params, density)
        _TEX_CACHE[key] = tex
        while len(_TEX_CACHE) > TEX_CACHE_SIZE:
            _TEX_CACHE.popitem(last=False)
    else:
        _TEX_CACHE.move_to_end(key)
    return tex


class ViewRenderer:
    def __init__(self, cam: Camera, layout: Layout, noise_seed: list[int]):
        self.cam = cam
        self.W, self.H = cam.width, cam.height
        self.bg_day, self.bg_emis = render_background(layout, cam.X, cam.Y)
        if cam.name == "challenging":
            yy, xx = np.mgrid[0 : self.H, 0 : self.W]
            r2 = ((xx - self.W / 2) / (self.W / 2)) ** 2 + ((yy - self.H / 2) / (self.H / 2)) ** 2
            self.vignette = (1.0 - 0.28 * r2 / 2).astype(np.float32)
        else:
            self.vignette = None
        self.hr = int(min(14, math.ceil(3 * cam.noise_sigma * NOISE_LEVELS[-1])))
        rng = np.random.default_rng(noise_seed)
        self.rng = np.random.default_rng(list(noise_seed) + [1])
        self.tiles = []
        for lvl in NOISE_LEVELS:
            z = rng.standard_normal((self.H + NOISE_PAD, self.W + NOISE_PAD, 3), dtype=np.float32)
            # mostly luminance noise with a little chroma
            z = 0.8 * z[..., :1] + 0.45 * z
            z = np.clip(np.rint(z * cam.noise_sigma * lvl), -self.hr, self.hr) + self.hr
            self.tiles.append(z.astype(np.uint8))
        self.density = float(2 ** int(np.clip(math.ceil(math.log2(max(cam.px_per_m, 1.0))), 2, 6)))
        self.frame = np.empty((self.H, self.W, 3), np.uint8)
        self.light_key = None
        self.light: Light | None = None
        self.bg_lit = None
        self.lit_cache: dict = {}

    # ------------------------------------------------------------------ light
    def _finish(self, col: np.ndarray, vignette=None) -> np.ndarray:
        col = self.cam.apply_color(col)
        if vignette is not None:
            col = col * vignette[..., None]
        return (np.clip(col, self.hr, 255 - self.hr) - self.hr).astype(np.uint8)

    def set_light(self, key, light: Light) -> None:
        if key == self.light_key:
            return
        col = self.bg_day * light.gain + light.night * self.bg_emis
        self.bg_lit = self._finish(col, self.vignette)
        self.light_key, self.light = key, light
        self.lit_cache.clear()
        self.noise_tile = self.tiles[int(np.argmin([abs(light.noise_scale - l) for l in NOISE_LEVELS]))]

    def lit_texture(self, kind: str, params: dict, frame: int) -> tuple[np.ndarray, np.ndarray]:
        key = (kind, _freeze(params), frame)
        hit = self.lit_cache.get(key)
        if hit is None:
            tex = base_textures(kind, params, self.density)[frame]
            # objects on the street are also lit by the street lamps at night
            g = self.light.gain + self.light.night * STREET_LIGHT
            col = np.where(tex.emissive[..., None], tex.rgb, tex.rgb * g)
            lit = self._finish(col)
            hit = (lit, tex.alpha)
            self.lit_cache[key] = hit
        return hit

    # ------------------------------------------------------------------ blit
    def blit(self, kind, params, frame, x0, y0, x1, y1, flip: bool, vig=True) -> None:
        cam = self.cam
        bb = cam.bbox(x0, y0, x1, y1)
        if bb is None:
            return
        r0, r1, c0, c1 = bb
        lit, alpha = self.lit_texture(kind, params, frame)
        th, tw = alpha.shape
        if cam.separable:
            xs = cam.xs[c0:c1]
            ys = cam.ys[r0:r1]
            u = np.floor((xs - x0) * (tw / (x1 - x0))).astype(np.int32)
            v = np.floor((ys - y0) * (th / (y1 - y0))).astype(np.int32)
            cu = np.nonzero((u >= 0) & (u < tw) & (xs >= GAP_X0) & (xs <= GAP_X1))[0]
            rv = np.nonzero((v >= 0) & (v < th))[0]
            if len(cu) == 0 or len(rv) == 0:
                return
            u = u[cu[0] : cu[-1] + 1]
            v = v[rv[0] : rv[-1] + 1]
            if flip:
                u = tw - 1 - u
            sub = lit[v[:, None], u[None, :]]
            a = alpha[v[:, None], u[None, :]]
            dst = self.frame[r0 + rv[0] : r0 + rv[-1] + 1, c0 + cu[0] : c0 + cu[-1] + 1]
        else:
            X = cam.X[r0:r1, c0:c1]
            Y = cam.Y[r0:r1, c0:c1]
            u = np.floor((X - x0) * (tw / (x1 - x0))).astype(np.int32)
            v = np.floor((Y - y0) * (th / (y1 - y0))).astype(np.int32)
            ok = (u >= 0) & (u < tw) & (v >= 0) & (v < th) & (X >= GAP_X0) & (X <= GAP_X1)
            if not ok.any():
                return
            np.clip(u, 0, tw - 1, out=u)
            np.clip(v, 0, th - 1, out=v)
            if flip:
                u = tw - 1 - u
            sub = lit[v, u]
            a = alpha[v, u] & ok
            if self.vignette is not None and vig:
                sub = (sub.astype(np.float32) * self.vignette[r0:r1, c0:c1, None]).astype(np.uint8)
            dst = self.frame[r0:r1, c0:c1]
        np.copyto(dst, sub, where=a[..., None])

    # ------------------------------------------------------------------ frame
    def render(self, objects) -> np.ndarray:
        """objects: (order, kind, params, frame, x0, y0, x1, y1, flip), drawn far to near."""
        np.copyto(self.frame, self.bg_lit)
        for o in sorted(objects, key=lambda o: o[0]):
            self.blit(*o[1:])
        dy, dx = self.rng.integers(0, NOISE_PAD, 2)
        self.frame += self.noise_tile[dy : dy + self.H, dx : dx + self.W]
        return self.frame


def object_at(ev, t: float, night: float = 0.0) -> list:
    """Drawing instructions for an event at time t (empty if nothing to draw).

    At night vehicles also throw a headlight beam on the road ahead of them."""
    if ev.sprite is None or ev.draw_range is None or not (ev.draw_range[0] - BEAM_M / 5 <= t <= ev.draw_range[1]):
        return []
    if ev.rect is not None:  # static (glass)
        if t < ev.draw_range[0]:
            return []
        x0, y0, x1, y1 = ev.rect
        return [(-1, ev.sprite, ev.sprite_params, 0 if t < ev.flash_end else 1, x0, y0, x1, y1, False)]
    xc = float(np.interp(t, ev.traj_t, ev.traj_x))
    L, H = ev.size()
    lane = LANES[ev.lane]
    out = []
    if night > 0.25 and ev.sprite in BEAM_SPRITES:
        level = round(min(night, 1.0) * 4) / 4
        b = BEAM_M * lane.depth
        if ev.direction > 0:
            bx0, bx1 = xc + L / 2 - 0.2, xc + L / 2 + b
        else:
            bx0, bx1 = xc - L / 2 - b, xc - L / 2 + 0.2
        out.append((lane.order - 0.5, "beam", {"level": level}, 0, bx0, lane.ground_y - 0.45 * lane.depth, bx1, lane.ground_y + 0.25, ev.direction < 0))
    if t < ev.draw_range[0]:
        return out
    frame = 0
    if ev.anim_hz > 0:
        if ev.sprite == "person":
            v = abs(float(np.interp(t, ev.traj_t, ev.traj_v)))
            frame = int(t * ev.anim_hz * 2) % 2 if v > 0.1 else 1
        else:
            frame = int(t * ev.anim_hz * 2) % 2
    out.append((lane.order, ev.sprite, ev.sprite_params, frame, xc - L / 2, lane.ground_y - H, xc + L / 2, lane.ground_y, ev.direction < 0))
    return out


BEAM_SPRITES = ("car", "bus", "truck", "motorcycle", "emergency")
