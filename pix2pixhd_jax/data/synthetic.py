"""Procedural street scenes: seeded (label map, instance map, photo) triplets in Cityscapes ids.

A scene is a pinhole camera looking down a street: a ground plane (road with lane markings,
tiled sidewalks, grass beyond), two rows of facades (vertical planes parallel to the road, cut
into buildings with window grids and tree hedges), a far skyline, and objects standing on the
ground drawn far to near: poles with signs/traffic lights, trees, parked rows and moving cars
(rear/front face plus the visible side), and groups of persons. Parked rows and groups overlap
on purpose, so instance boundaries carry information the label map does not.

Three random streams keep the parts independent: the layout stream (`seed`, `index`) fixes the
geometry, i.e. the label and instance maps; the appearance stream (`appearance_seed`, default
`seed`) draws every colour (car bodies from a named palette, clothing, facades, sky, light
level); a texture stream draws noise. So one label map can be rendered as many photos, and the
drawn appearance of every instance is returned as metadata (ground truth for feature control).
Geometry is in metres and scaled by the image width, so a scene looks the same at any size.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from pix2pixhd_jax.data import cityscapes as cs

ROAD, SIDEWALK, BUILDING, POLE = cs.NAME_TO_ID["road"], cs.NAME_TO_ID["sidewalk"], cs.NAME_TO_ID["building"], cs.NAME_TO_ID["pole"]
TRAFFIC_LIGHT, TRAFFIC_SIGN = cs.NAME_TO_ID["traffic light"], cs.NAME_TO_ID["traffic sign"]
VEGETATION, TERRAIN, SKY = cs.NAME_TO_ID["vegetation"], cs.NAME_TO_ID["terrain"], cs.NAME_TO_ID["sky"]
PERSON, CAR = cs.NAME_TO_ID["person"], cs.NAME_TO_ID["car"]

# Named appearance palettes (RGB, before scene lighting). At least 8 car colours (issue 3).
CAR_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (225, 225, 222), "black": (28, 28, 32), "silver": (165, 168, 172), "grey": (95, 98, 104),
    "red": (170, 25, 30), "blue": (35, 70, 160), "navy": (25, 35, 80), "green": (40, 110, 60),
    "yellow": (215, 180, 40), "orange": (210, 100, 30), "beige": (190, 170, 130), "brown": (105, 65, 40),
}
CLOTHING_COLOURS: dict[str, tuple[int, int, int]] = {
    "white": (220, 220, 215), "black": (30, 30, 34), "grey": (120, 120, 125), "red": (180, 35, 40),
    "blue": (45, 80, 170), "denim": (60, 85, 125), "green": (60, 120, 60), "yellow": (220, 190, 60),
    "brown": (110, 75, 50), "purple": (110, 60, 140), "orange": (220, 120, 40), "khaki": (170, 150, 100),
}
FACADE_COLOURS: dict[str, tuple[int, int, int]] = {
    "cream": (220, 205, 170), "beige": (200, 180, 145), "grey": (140, 140, 140), "white": (225, 222, 215),
    "brick": (150, 70, 55), "ochre": (200, 150, 80), "pink": (205, 160, 150), "brown": (120, 90, 70),
    "slate": (105, 115, 130), "sand": (185, 170, 140),
}
SKIN_TONES = ((240, 200, 170), (215, 170, 135), (180, 130, 95), (125, 85, 60), (85, 55, 40))
SIGN_COLOURS = {"blue": (30, 70, 170), "red": (190, 30, 35), "yellow": (225, 185, 30), "white": (230, 230, 230)}

# Scene facts (metres): where facades stop being drawn, and the camera height above the road.
_Z_FAR = 400.0
_CAMERA_HEIGHT = 1.4


@dataclasses.dataclass(frozen=True)
class Camera:
    """Pinhole camera at height `cam_h` looking along +Z; pixel coordinates are (y down, x right)."""

    height: int
    width: int
    focal: float
    horizon: float
    vp_x: float
    cam_h: float = _CAMERA_HEIGHT

    def x_of(self, x_m: float | np.ndarray, z: float | np.ndarray) -> Any:
        """Image column of lateral position `x_m` at depth `z`."""
        return self.vp_x + self.focal * x_m / z

    def y_of(self, y_m: float | np.ndarray, z: float | np.ndarray) -> Any:
        """Image row of height `y_m` above ground at depth `z`."""
        return self.horizon + self.focal * (self.cam_h - y_m) / z


@dataclasses.dataclass
class _Canvas:
    label: np.ndarray  # (H, W) uint8
    inst: np.ndarray  # (H, W) int32
    image: np.ndarray  # (H, W, 3) float32, 0..255 before lighting
    fine: np.ndarray  # (H, W) float32 unit noise
    coarse: np.ndarray  # (H, W) float32 smooth noise


# ----------------------------------------------------------------------------- layout (geometry)


def _segments(rng: np.random.Generator, veg_prob: float) -> list[dict[str, Any]]:
    """Cut one street side into consecutive facade segments from z=0 to the far plane."""
    segs, z = [], 0.0
    while z < _Z_FAR:
        length = float(rng.uniform(8.0, 30.0))
        kind = "vegetation" if rng.random() < veg_prob else "building"
        height = float(rng.uniform(3.0, 9.0) if kind == "vegetation" else rng.uniform(8.0, 32.0))
        segs.append({"z0": z, "z1": z + length, "kind": kind, "height": height,
                     "phase": float(rng.uniform(0, 2 * np.pi)), "floor_h": float(rng.uniform(2.9, 3.6)),
                     "win_spacing": float(rng.uniform(2.0, 3.5)), "win_frac": float(rng.uniform(0.35, 0.65)),
                     "ground_floor": float(rng.uniform(3.5, 5.0))})
        z += length
    return segs


def sample_layout(rng: np.random.Generator) -> dict[str, Any]:
    """Draw a resolution-independent scene geometry (metres, fractions of the image)."""
    road_l, road_r = float(rng.uniform(3.5, 9.0)), float(rng.uniform(3.0, 7.0))
    walk_l, walk_r = float(rng.uniform(2.0, 5.0)), float(rng.uniform(2.0, 5.0))
    lay: dict[str, Any] = {
        "focal_rel": float(rng.uniform(0.55, 0.8)), "horizon_rel": float(rng.uniform(0.40, 0.52)),
        "vp_rel": float(rng.uniform(0.42, 0.58)), "road": (-road_l, road_r),
        "walls": (-(road_l + walk_l), road_r + walk_r),
        "segments": (_segments(rng, 0.2), _segments(rng, 0.2)),
        "skyline": [(float(a), float(h)) for a, h in zip(np.sort(rng.uniform(-0.2, 0.2, 12)), rng.uniform(0.0, 0.04, 12))],
        "objects": [],
    }
    objs = lay["objects"]
    counters: dict[int, int] = {}

    def new_id(cls: int) -> int:
        counters[cls] = counters.get(cls, 0) + 1
        return cls * cs.INSTANCE_ID_OFFSET + counters[cls] - 1

    # Parked rows along one or both curbs: spacing below a car length so neighbours overlap.
    for side, edge in ((-1, road_l), (1, road_r)):
        if rng.random() < 0.85:
            z = float(rng.uniform(4.0, 18.0))
            for _ in range(int(rng.integers(2, 7))):
                length = float(rng.uniform(3.8, 4.9))
                objs.append({"type": "car", "id": new_id(CAR), "x": side * (edge - 1.1), "z": z,
                             "w": float(rng.uniform(1.65, 1.95)), "h": float(rng.uniform(1.35, 1.7)),
                             "length": length, "facing": "rear" if side > 0 else str(rng.choice(["rear", "front"]))})
                z += length + float(rng.uniform(0.3, 1.8))
    # Moving traffic: cars in lanes ahead (rear view) and oncoming on the left (front view).
    for _ in range(int(rng.integers(0, 4))):
        lane_x = float(rng.uniform(-0.5, max(0.0, road_r - 2.5)))
        objs.append({"type": "car", "id": new_id(CAR), "x": lane_x, "z": float(rng.uniform(9.0, 70.0)),
                     "w": float(rng.uniform(1.65, 1.95)), "h": float(rng.uniform(1.35, 1.8)),
                     "length": float(rng.uniform(3.8, 4.9)), "facing": "rear"})
    if road_l > 5.0:
        for _ in range(int(rng.integers(0, 3))):
            objs.append({"type": "car", "id": new_id(CAR), "x": -float(rng.uniform(2.5, road_l - 2.2)),
                         "z": float(rng.uniform(12.0, 80.0)), "w": float(rng.uniform(1.65, 1.95)),
                         "h": float(rng.uniform(1.35, 1.8)), "length": float(rng.uniform(3.8, 4.9)), "facing": "front"})
    # Groups of persons on the sidewalks, close enough to overlap.
    for _ in range(int(rng.integers(1, 5))):
        side = int(rng.choice([-1, 1]))
        edge, walk = (road_r, walk_r) if side > 0 else (road_l, walk_l)
        x0, z0 = side * float(edge + rng.uniform(0.5, walk - 0.4)), float(rng.uniform(3.0, 30.0))
        for _ in range(int(rng.integers(1, 5))):
            objs.append({"type": "person", "id": new_id(PERSON), "x": x0 + float(rng.normal(0, 0.35)),
                         "z": z0 + float(rng.uniform(-0.6, 0.6)), "h": float(rng.uniform(1.55, 1.95)),
                         "stride": float(rng.uniform(-0.25, 0.25))})
    # Street furniture: poles (with a sign or a traffic light) near the curb, trees further out.
    for side, edge, walk in ((-1, road_l, walk_l), (1, road_r, walk_r)):
        z = float(rng.uniform(5.0, 25.0))
        while z < 90.0:
            objs.append({"type": "pole", "x": side * (edge + 0.4), "z": z, "h": float(rng.uniform(3.5, 7.5)),
                         "attachment": str(rng.choice(["sign", "light", "none"], p=[0.5, 0.3, 0.2]))})
            z += float(rng.uniform(15.0, 35.0))
        if rng.random() < 0.6:
            z = float(rng.uniform(4.0, 15.0))
            while z < 80.0:
                objs.append({"type": "tree", "x": side * (edge + walk - 0.9), "z": z,
                             "trunk": float(rng.uniform(2.0, 3.5)), "r": float(rng.uniform(1.4, 3.0)),
                             "shape": rng.uniform(0, 2 * np.pi, 3).tolist()})
                z += float(rng.uniform(7.0, 15.0))
    return lay


# ----------------------------------------------------------------------------- appearance


def sample_appearance(rng: np.random.Generator, layout: dict[str, Any]) -> dict[str, Any]:
    """Draw every colour of the scene, independent of the label map geometry."""
    car_names, cloth_names, facade_names = list(CAR_COLOURS), list(CLOTHING_COLOURS), list(FACADE_COLOURS)
    sky = str(rng.choice(["clear", "hazy", "overcast", "evening"]))
    app: dict[str, Any] = {
        "sky": sky, "light": float(rng.uniform(0.7, 1.15)),
        "tint": (1.0 + rng.normal(0, 0.04, 3)).round(4).tolist(),
        "sun_side": int(rng.choice([-1, 1])), "asphalt": float(rng.uniform(70, 115)),
        "sidewalk": (np.array([175.0, 170, 160]) * rng.uniform(0.75, 1.05)).tolist(),
        "facades": [], "instances": {},
    }
    for segs in layout["segments"]:
        side_cols = []
        for seg in segs:
            if seg["kind"] == "building":
                name = str(rng.choice(facade_names))
                colour = np.clip(np.array(FACADE_COLOURS[name]) * rng.uniform(0.85, 1.1), 0, 255)
            else:
                name, colour = "green", np.array([60.0, 95, 45]) * rng.uniform(0.7, 1.2)
            side_cols.append({"name": name, "color": colour.round(1).tolist(),
                              "lit": float(rng.uniform(0.0, 0.35))})
        app["facades"].append(side_cols)
    for obj in layout["objects"]:
        if obj["type"] == "car":
            name = str(rng.choice(car_names))
            app["instances"][obj["id"]] = {"color_name": name, "body_color": list(CAR_COLOURS[name])}
        elif obj["type"] == "person":
            shirt, trousers = str(rng.choice(cloth_names)), str(rng.choice(cloth_names))
            app["instances"][obj["id"]] = {
                "shirt_name": shirt, "shirt_color": list(CLOTHING_COLOURS[shirt]),
                "trousers_name": trousers, "trousers_color": list(CLOTHING_COLOURS[trousers]),
                "skin_color": list(SKIN_TONES[int(rng.integers(len(SKIN_TONES)))]),
                "hair_color": (np.array([60.0, 45, 30]) * rng.uniform(0.3, 2.2)).clip(0, 255).round().tolist()}
        elif obj["type"] == "pole":
            obj_key = ("pole", obj["x"], obj["z"])
            app["instances"][obj_key] = {"sign": str(rng.choice(list(SIGN_COLOURS))), "lamp": int(rng.integers(3))}
        elif obj["type"] == "tree":
            app["instances"][("tree", obj["x"], obj["z"])] = {
                "leaf": (np.array([55.0, 100, 40]) * rng.uniform(0.7, 1.25, 3)).tolist()}
    return app


# ----------------------------------------------------------------------------- textures


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: float) -> np.ndarray:
    """Value noise: a random grid every `cell` pixels, smoothstep-interpolated to (h, w)."""
    gh, gw = int(h / cell) + 2, int(w / cell) + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    ty, tx = np.arange(h, dtype=np.float32) / cell, np.arange(w, dtype=np.float32) / cell
    iy, ix = ty.astype(np.int64), tx.astype(np.int64)
    fy, fx = ty - iy, tx - ix
    fy, fx = (fy * fy * (3 - 2 * fy))[:, None], (fx * fx * (3 - 2 * fx))[None, :]
    top = grid[iy][:, ix] * (1 - fx) + grid[iy][:, ix + 1] * fx
    bot = grid[iy + 1][:, ix] * (1 - fx) + grid[iy + 1][:, ix + 1] * fx
    return top * (1 - fy) + bot * fy


def _window(cam: Camera, y0: float, y1: float, x0: float, x1: float) -> tuple[int, int, int, int] | None:
    """Clip a float pixel box to the image; None when nothing is left."""
    iy0, iy1 = max(0, int(np.floor(y0))), min(cam.height, int(np.ceil(y1)) + 1)
    ix0, ix1 = max(0, int(np.floor(x0))), min(cam.width, int(np.ceil(x1)) + 1)
    return (iy0, iy1, ix0, ix1) if iy0 < iy1 and ix0 < ix1 else None


def _paint(c: _Canvas, win: tuple[int, int, int, int], mask: np.ndarray, label: int, inst: int,
           colour: np.ndarray) -> None:
    """Write label, instance id and colour (per pixel (h, w, 3) or constant (3,)) under `mask`."""
    y0, y1, x0, x1 = win
    mask = np.broadcast_to(mask, (y1 - y0, x1 - x0))
    c.label[y0:y1, x0:x1][mask] = label
    c.inst[y0:y1, x0:x1][mask] = inst
    c.image[y0:y1, x0:x1][mask] = np.broadcast_to(colour, mask.shape + (3,))[mask] if colour.ndim == 3 else colour


# ----------------------------------------------------------------------------- scene parts


def _draw_sky(c: _Canvas, cam: Camera, app: dict[str, Any]) -> None:
    """Sky gradient from zenith to horizon with soft clouds; everything starts as sky."""
    top, bottom, cloud = {"clear": ((60, 115, 200), (175, 205, 235), 0.25), "hazy": ((120, 150, 190), (205, 210, 215), 0.4),
                          "overcast": ((150, 155, 165), (200, 200, 205), 0.8),
                          "evening": ((70, 80, 150), (240, 170, 120), 0.3)}[app["sky"]]
    c.label[:] = SKY
    c.inst[:] = SKY
    rows = min(cam.height, int(np.ceil(cam.horizon + 0.5)))  # the ground covers everything below
    t = np.clip(np.arange(rows, dtype=np.float32) / max(cam.horizon, 1.0), 0, 1)[:, None, None]
    grad = np.asarray(top, np.float32) * (1 - t) + np.asarray(bottom, np.float32) * t
    # Clouds: large, horizontally stretched blobs from two octaves of the smooth noise.
    density = c.coarse[:rows, ::-1] * 0.6 + c.coarse[rows - 1::-1] * 0.4 if rows else c.coarse[:0]
    clouds = (np.clip(density * 0.9 + cloud - 0.45, 0, 1) * (1 - 0.6 * t[..., 0]))[..., None] * 0.8
    c.image[:rows] = grad * (1 - clouds) + 235.0 * clouds


def _draw_ground(c: _Canvas, cam: Camera, lay: dict[str, Any], app: dict[str, Any]) -> None:
    """Road (asphalt noise, dashed lane lines), curbs, tiled sidewalks and grass, on the ground plane."""
    y0 = int(np.ceil(cam.horizon - 0.5))
    if y0 >= cam.height:
        return
    ys = np.arange(y0, cam.height, dtype=np.float32) + 0.5
    xs = np.arange(cam.width, dtype=np.float32) + 0.5
    zg = (cam.focal * cam.cam_h / np.maximum(ys - cam.horizon, 1e-3))[:, None]
    xg = (xs[None, :] - cam.vp_x) * zg / cam.focal
    (road_l, road_r), (wall_l, wall_r) = lay["road"], lay["walls"]
    road = (xg >= road_l) & (xg <= road_r)
    walk = ~road & (xg >= wall_l) & (xg <= wall_r)
    kind = np.where(road, 0, np.where(walk, 1, 2))
    fine, coarse = c.fine[y0:], c.coarse[y0:]
    # Metres covered by one pixel row: pattern contrast fades where it would alias.
    fade = np.clip(1.5 - 2.0 * zg * zg / (cam.focal * cam.cam_h), 0, 1)
    lanes = np.zeros_like(road)
    for lx in np.arange(road_l + 3.2, road_r - 1.0, 3.2):
        lanes |= (np.abs(xg - lx) < 0.08) & ((zg % 9.0) < 4.5)
    tiles = ((xg % 0.8) < 0.05) | ((zg % 0.8) < 0.05)
    curb = (np.abs(xg - road_l) < 0.25) | (np.abs(xg - road_r) < 0.25)
    # One grey-level shade per pixel times one colour per surface keeps this to a single RGB op.
    road_shade = np.where(lanes, (215.0 / app["asphalt"]) * (0.6 + 0.4 * fade), 1 + 0.06 * coarse + 0.07 * fine)
    walk_shade = (1 - 0.25 * tiles * fade) * (1 + 0.04 * fine + 0.05 * coarse) * np.where(curb, 1.15, 1.0)
    grass_shade = 1 + 0.15 * fine + 0.1 * coarse
    shade = np.where(kind == 0, road_shade, np.where(kind == 1, walk_shade, grass_shade))
    table = np.array([[app["asphalt"]] * 3, app["sidewalk"], [70, 110, 50]], np.float32)
    c.image[y0:] = table[kind] * shade[..., None]
    label = np.array([ROAD, SIDEWALK, TERRAIN], np.uint8)[kind]
    c.label[y0:] = label
    c.inst[y0:] = label


def _draw_skyline(c: _Canvas, cam: Camera, lay: dict[str, Any], app: dict[str, Any]) -> None:
    """A hazy band of distant buildings sitting on the horizon (seen through the street's end)."""
    xs = (np.arange(cam.width, dtype=np.float32) + 0.5 - cam.vp_x) / cam.width
    edges = np.array([a for a, _ in lay["skyline"]], np.float32)
    heights = np.array([0.0] + [h for _, h in lay["skyline"]], np.float32)
    top = cam.horizon - heights[np.searchsorted(edges, xs)] * cam.width
    row0, row1 = max(0, int(np.floor(top.min()))), min(cam.height, int(np.ceil(cam.horizon + 0.5)))
    if row0 >= row1:
        return
    ys = np.arange(row0, row1, dtype=np.float32)[:, None] + 0.5
    mask = (ys >= top[None, :]) & (ys < cam.horizon + 0.5)
    haze = np.array({"evening": (200, 150, 130)}.get(app["sky"], (170, 180, 190)), np.float32)
    colour = haze * (0.85 + 0.03 * c.fine[row0:row1])[..., None]
    _paint(c, (row0, row1, 0, cam.width), mask, BUILDING, BUILDING, colour)


def _draw_facades(c: _Canvas, cam: Camera, lay: dict[str, Any], app: dict[str, Any], side: int) -> None:
    """One row of facades (a vertical plane x = wall) cut into buildings with windows and hedges."""
    wall_x = lay["walls"][0 if side < 0 else 1]
    segs, cols = lay["segments"][0 if side < 0 else 1], app["facades"][0 if side < 0 else 1]
    xs = np.arange(cam.width, dtype=np.float32) + 0.5
    dx = (xs - cam.vp_x) * side
    cols_on = np.nonzero(dx > 0.5)[0]
    if cols_on.size == 0:
        return
    x0, x1 = int(cols_on[0]), int(cols_on[-1]) + 1
    z = cam.focal * abs(wall_x) / dx[x0:x1]  # depth of the facade seen in each column
    z0s = np.array([s["z0"] for s in segs], np.float32)
    k = np.clip(np.searchsorted(z0s, z, side="right") - 1, 0, len(segs) - 1)
    seg_arr = {key: np.array([s[key] for s in segs], np.float32) for key in
               ("z0", "height", "phase", "floor_h", "win_spacing", "win_frac", "ground_floor")}
    is_veg_col = np.array([s["kind"] == "vegetation" for s in segs])[k]
    # Hedges/park trees get a bumpy top that follows depth, so it stays put under perspective.
    top_col = seg_arr["height"][k] * np.where(is_veg_col, 1 + 0.18 * np.sin(z * 0.9 + seg_arr["phase"][k])
                                              + 0.1 * np.sin(z * 2.3 + 2 * seg_arr["phase"][k]), 1.0)
    top_col = np.where(z < _Z_FAR, top_col, -1.0)
    # Only rows between the highest roof and the ground line can hold facade pixels.
    row0 = max(0, int(np.floor(np.min(cam.y_of(top_col, z)))))
    row1 = min(cam.height, int(np.ceil(np.max(cam.y_of(0.0, z)))) + 1)
    if row0 >= row1:
        return
    ys = np.arange(row0, row1, dtype=np.float32)[:, None] + 0.5
    y_full = cam.cam_h - (ys - cam.horizon) * z[None, :] / cam.focal  # height on the facade
    mask = (y_full >= 0) & (y_full <= top_col[None, :])
    # Everything below runs on the facade pixels only (1-D), which is most of the cost saved.
    rows, qs = np.nonzero(mask)
    y_m, zq, kq = y_full[rows, qs], z[qs], k[qs]
    p = {key: v[kq] for key, v in seg_arr.items()}
    is_veg, top = is_veg_col[qs], top_col[qs]
    base = np.array([col["color"] for col in cols], np.float32)[kq]
    lit = np.array([col["lit"] for col in cols], np.float32)[kq]
    # Window grid in facade coordinates (depth along the street, height): perspective for free.
    floor_i = np.floor((y_m - p["ground_floor"]) / p["floor_h"])
    col_i = np.floor((zq - p["z0"]) / p["win_spacing"])
    fy = y_m - p["ground_floor"] - floor_i * p["floor_h"]
    fz = zq - p["z0"] - col_i * p["win_spacing"]
    win = (~is_veg & (y_m > p["ground_floor"]) & (y_m < top - 1.0) & (fy > 0.9) & (fy < 2.3)
           & (fz > 0.4) & (fz < 0.4 + p["win_frac"] * p["win_spacing"]))
    shop = ~is_veg & (y_m > 0.4) & (y_m < p["ground_floor"] - 0.8) & (fz > 0.2) & (fz < p["win_spacing"] - 0.2)
    # Per-window brightness from an integer hash of (segment, floor, column): some windows lit.
    h = (kq.astype(np.int64) * 83492791) ^ (floor_i.astype(np.int64) * 73856093) ^ (col_i.astype(np.int64) * 19349663)
    rnd = ((h >> 7) & 1023).astype(np.float32) / 1023.0
    glass = np.where((rnd < lit)[:, None], np.array([235, 210, 140], np.float32),
                     np.array([45, 55, 70], np.float32) * (0.7 + 0.8 * rnd)[:, None])
    fine = c.fine[row0:row1, x0:x1][rows, qs]
    coarse = c.coarse[row0:row1, x0:x1][rows, qs]
    tex = np.where(is_veg, 1 + 0.25 * fine + 0.2 * coarse, 1 + 0.05 * fine + 0.06 * coarse)
    cornice = ~is_veg & (y_m > top - 0.5)
    shade = tex * np.where(cornice, 0.7, 1.0) * (0.8 + 0.2 * np.clip(y_m / 3.0, 0, 1))
    shade *= 1.0 if side == app["sun_side"] else 0.72
    colour = np.where((win | shop)[:, None], glass, base * shade[:, None])
    # Aerial perspective: far facades fade towards the haze colour.
    haze = (1 - np.exp(-zq / 250.0))[:, None]
    colour = colour * (1 - haze) + 180.0 * haze
    label = np.where(is_veg, VEGETATION, BUILDING)
    rows, qs = rows + row0, qs + x0
    c.label[rows, qs] = label
    c.inst[rows, qs] = label
    c.image[rows, qs] = colour


def _face_coords(cam: Camera, win: tuple[int, int, int, int], x_c: float, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Metric (lateral offset from x_c, height) of pixels on a plane facing the camera at depth z."""
    y0, y1, x0, x1 = win
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
    return (xs - cam.vp_x) * z / cam.focal - x_c, cam.cam_h - (ys - cam.horizon) * z / cam.focal


def _draw_car(c: _Canvas, cam: Camera, obj: dict[str, Any], app: dict[str, Any]) -> None:
    """A car: ground shadow, visible side (plane parallel to the street), then rear/front face."""
    x, z, w, h, length = obj["x"], obj["z"], obj["w"], obj["h"], obj["length"]
    body = np.asarray(app["instances"][obj["id"]]["body_color"], np.float32)
    glass_col = np.array([40, 50, 62], np.float32)
    # Shadow on the ground under the car (image only, labels untouched).
    win = _window(cam, cam.y_of(0, z + length), cam.y_of(0, z) + 0.02 * cam.focal / z,
                  min(cam.x_of(x - w / 2, z), cam.x_of(x - w / 2, z + length)),
                  max(cam.x_of(x + w / 2, z), cam.x_of(x + w / 2, z + length)))
    if win is not None:
        y0, y1, x0, x1 = win
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
        zg = cam.focal * cam.cam_h / np.maximum(ys - cam.horizon, 1e-3)
        xg = (np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - cam.vp_x) * zg / cam.focal
        shadow = (np.abs(xg - x) < w / 2 + 0.15) & (zg > z - 0.3) & (zg < z + length + 0.2) & (ys > cam.horizon)
        c.image[y0:y1, x0:x1][shadow] *= 0.45
    # Side face: the plane x = x_side between depths z and z + length, if it faces the camera.
    x_side = x - w / 2 if x - w / 2 > 0 else (x + w / 2 if x + w / 2 < 0 else None)
    if x_side is not None:
        win = _window(cam, cam.y_of(h, z), cam.y_of(0, z), min(cam.x_of(x_side, z), cam.x_of(x_side, z + length)),
                      max(cam.x_of(x_side, z), cam.x_of(x_side, z + length)))
        if win is not None:
            y0, y1, x0, x1 = win
            xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5
            with np.errstate(divide="ignore"):
                zp = cam.focal * x_side / (xs - cam.vp_x)
            ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5
            y_m = cam.cam_h - (ys - cam.horizon) * zp / cam.focal
            t = (zp - z) / length  # 0 at the near end, 1 at the far end
            roof = 0.58 * h + 0.42 * h * np.clip(np.minimum((t - 0.1) / 0.15, (0.88 - t) / 0.18), 0, 1)
            inside = (t >= 0) & (t <= 1) & (y_m >= 0.12) & (y_m <= roof)
            wheels = np.zeros_like(inside)
            for tc in (0.17, 0.82):
                wheels |= ((zp - (z + tc * length)) ** 2 + (y_m - 0.32) ** 2) < 0.32 ** 2
            mask = (inside | wheels) & (t >= 0) & (t <= 1) & (y_m >= 0)
            windows = (y_m > 0.63 * h) & (y_m < roof - 0.06 * h) & (t > 0.22) & (t < 0.8)
            # Shading averages ~1 over the body so the recorded body colour is what the pixels show.
            shade = 0.85 + 0.3 * np.clip(y_m / h, 0, 1)
            colour = body * shade[..., None]
            colour = np.where(windows[..., None], glass_col, colour)
            colour = np.where(wheels[..., None], np.array([22, 22, 24], np.float32), colour)
            _paint(c, win, mask, CAR, obj["id"], colour)
    # Rear (or front) face at depth z.
    win = _window(cam, cam.y_of(h, z), cam.y_of(0, z), cam.x_of(x - w / 2, z), cam.x_of(x + w / 2, z))
    if win is None:
        return
    dx, y_m = _face_coords(cam, win, x, z)
    u, v = dx / (w / 2), y_m / h
    body_m = (v >= 0.1) & (v <= 0.58) & (np.abs(u) <= 1 - 0.12 * np.clip((v - 0.48) / 0.1, 0, 1))
    cab_edge = 0.86 - 0.2 * (v - 0.58) / 0.42 - 0.1 * np.clip((v - 0.9) / 0.1, 0, 1)
    cabin = (v > 0.58) & (v <= 1.0) & (np.abs(u) <= cab_edge)
    wheels = (v >= 0) & (v < 0.12) & (np.abs(u) > 0.6) & (np.abs(u) < 0.92)
    mask = body_m | cabin | wheels
    glass = cabin & (v > 0.63) & (v < 0.95) & (np.abs(u) < cab_edge - 0.08)
    lamps = (v > 0.42) & (v < 0.52) & (np.abs(u) > 0.7) & (np.abs(u) < 0.95)
    plate = (v > 0.22) & (v < 0.32) & (np.abs(u) < 0.22)
    bumper = (v >= 0.1) & (v < 0.18)
    colour = body * ((0.9 + 0.2 * v) * np.where(bumper, 0.6, 1.0))[..., None]
    colour = np.where(glass[..., None], glass_col * (1 + 0.4 * v[..., None]), colour)
    lamp_col = np.array([180, 25, 25] if obj["facing"] == "rear" else [235, 235, 215], np.float32)
    colour = np.where(lamps[..., None], lamp_col, colour)
    colour = np.where(plate[..., None], np.array([215, 215, 210], np.float32), colour)
    colour = np.where(wheels[..., None], np.array([22, 22, 24], np.float32), colour)
    _paint(c, win, mask, CAR, obj["id"], colour)


def _draw_person(c: _Canvas, cam: Camera, obj: dict[str, Any], app: dict[str, Any]) -> None:
    """A standing/walking person: legs (trousers), torso and arms (shirt), head (skin, hair)."""
    x, z, h = obj["x"], obj["z"], obj["h"]
    look = app["instances"][obj["id"]]
    half = 0.26 * h / 1.75
    win = _window(cam, cam.y_of(h, z), cam.y_of(0, z), cam.x_of(x - half, z), cam.x_of(x + half, z))
    if win is None:
        return
    dx, y_m = _face_coords(cam, win, x, z)
    u, v = dx / half, y_m / h
    head = (dx ** 2 + (y_m - 0.925 * h) ** 2) < (0.065 * h) ** 2
    torso = (v >= 0.47) & (v <= 0.84) & (np.abs(u) <= 0.68 - 0.15 * np.clip((v - 0.8) / 0.04, 0, 1))
    arms = (v >= 0.5) & (v <= 0.82) & (np.abs(u) > 0.7) & (np.abs(u) <= 0.95)
    hands = (v >= 0.44) & (v < 0.5) & (np.abs(u) > 0.72) & (np.abs(u) <= 0.93)
    swing = obj["stride"] * (0.5 - v) / 0.5
    legs = (v >= 0) & (v < 0.5) & ((np.abs(u - (0.33 + swing)) < 0.27) | (np.abs(u + 0.33 + swing) < 0.27))
    mask = head | torso | arms | hands | legs
    shade = (1 - 0.3 * np.clip(u, -1, 1) ** 2)[..., None]
    colour = np.where((torso | arms)[..., None], np.asarray(look["shirt_color"], np.float32),
                      np.asarray(look["trousers_color"], np.float32))
    colour = np.where((head | hands)[..., None], np.asarray(look["skin_color"], np.float32), colour)
    colour = np.where((head & (y_m > 0.94 * h))[..., None], np.asarray(look["hair_color"], np.float32), colour)
    colour = np.where((legs & (v < 0.035))[..., None], np.array([30, 28, 28], np.float32), colour) * shade
    _paint(c, win, mask, PERSON, obj["id"], colour)


def _draw_pole(c: _Canvas, cam: Camera, obj: dict[str, Any], app: dict[str, Any]) -> None:
    """A metal pole with an optional sign plate or traffic light box near its top."""
    x, z, h = obj["x"], obj["z"], obj["h"]
    look = app["instances"][("pole", obj["x"], obj["z"])]
    r = 0.08
    win = _window(cam, cam.y_of(h, z), cam.y_of(0, z), cam.x_of(x - r, z) - 0.5, cam.x_of(x + r, z) + 0.5)
    if win is not None:
        dx, y_m = _face_coords(cam, win, x, z)
        # At least one pixel wide so far poles do not vanish between pixel centres.
        half_px = max(r, 0.5 * z / cam.focal)
        mask = (np.abs(dx) <= half_px) & (y_m >= 0) & (y_m <= h)
        shade = (1 - 0.4 * np.clip(dx / half_px, -1, 1)) * 120.0
        _paint(c, win, mask, POLE, POLE, shade[..., None] * np.ones(3, np.float32))
    if obj["attachment"] == "sign":
        s = 0.35
        win = _window(cam, cam.y_of(h + s, z), cam.y_of(h - s, z), cam.x_of(x - s, z), cam.x_of(x + s, z))
        if win is not None:
            dx, y_m = _face_coords(cam, win, x, z)
            disc = dx ** 2 + (y_m - h) ** 2 < s ** 2
            ring = dx ** 2 + (y_m - h) ** 2 > (0.8 * s) ** 2
            colour = np.where(ring[..., None], np.array([235, 235, 235], np.float32),
                              np.asarray(SIGN_COLOURS[look["sign"]], np.float32))
            _paint(c, win, disc, TRAFFIC_SIGN, TRAFFIC_SIGN, np.broadcast_to(colour, disc.shape + (3,)))
    elif obj["attachment"] == "light":
        bw, bh = 0.17, 0.45
        win = _window(cam, cam.y_of(h + bh, z), cam.y_of(h - bh, z), cam.x_of(x - bw, z), cam.x_of(x + bw, z))
        if win is not None:
            dx, y_m = _face_coords(cam, win, x, z)
            box = (np.abs(dx) <= bw) & (np.abs(y_m - h) <= bh)
            colour = np.broadcast_to(np.array([30, 32, 30], np.float32), box.shape + (3,)).copy()
            lamp_y = h + 0.28 * (1 - look["lamp"])
            lamp = (dx ** 2 + (y_m - lamp_y) ** 2) < 0.1 ** 2
            colour[lamp] = [(60, 230, 90), (250, 190, 40), (240, 50, 40)][look["lamp"]]
            _paint(c, win, box, TRAFFIC_LIGHT, TRAFFIC_LIGHT, colour)


def _draw_tree(c: _Canvas, cam: Camera, obj: dict[str, Any], app: dict[str, Any]) -> None:
    """A street tree: trunk and a crown with a wobbly outline and dappled leaves (all vegetation)."""
    x, z, trunk, r = obj["x"], obj["z"], obj["trunk"], obj["r"]
    leaf = np.asarray(app["instances"][("tree", obj["x"], obj["z"])]["leaf"], np.float32)
    cy = trunk + 0.8 * r
    win = _window(cam, cam.y_of(cy + 1.3 * r, z), cam.y_of(0, z), cam.x_of(x - 1.3 * r, z), cam.x_of(x + 1.3 * r, z))
    if win is None:
        return
    dx, y_m = _face_coords(cam, win, x, z)
    a, b, p = obj["shape"]
    ang = np.arctan2(y_m - cy, dx)
    radius = r * (1 + 0.12 * np.sin(5 * ang + a) + 0.08 * np.sin(9 * ang + b) + 0.05 * np.sin(13 * ang + p))
    dist = np.sqrt(dx ** 2 + (y_m - cy) ** 2)
    crown = dist < radius
    stem = (np.abs(dx) < max(0.15, 0.5 * z / cam.focal)) & (y_m >= 0) & (y_m < cy)
    y0, y1, x0, x1 = win
    light = 0.75 + 0.35 * np.clip((y_m - cy) / r, -1, 1) + 0.25 * c.fine[y0:y1, x0:x1] + 0.15 * c.coarse[y0:y1, x0:x1]
    colour = np.where(crown[..., None], leaf * light[..., None], np.array([85, 65, 45], np.float32))
    _paint(c, win, crown | stem, VEGETATION, VEGETATION, colour)


_DRAW = {"car": _draw_car, "person": _draw_person, "pole": _draw_pole, "tree": _draw_tree}


# ----------------------------------------------------------------------------- public API


def render_scene(layout: dict[str, Any], appearance: dict[str, Any], width: int, height: int,
                 texture_rng: np.random.Generator) -> dict[str, Any]:
    """Render a layout with an appearance to {'label', 'inst', 'image', 'meta'} at width x height."""
    cam = Camera(height=height, width=width, focal=layout["focal_rel"] * width,
                 horizon=layout["horizon_rel"] * height, vp_x=layout["vp_rel"] * width)
    canvas = _Canvas(label=np.empty((height, width), np.uint8), inst=np.empty((height, width), np.int32),
                     image=np.empty((height, width, 3), np.float32),
                     fine=texture_rng.standard_normal((height, width), dtype=np.float32),
                     coarse=_smooth_noise(texture_rng, height, width, max(2.0, width / 24)))
    _draw_sky(canvas, cam, appearance)
    _draw_ground(canvas, cam, layout, appearance)
    _draw_skyline(canvas, cam, layout, appearance)
    for side in (-1, 1):
        _draw_facades(canvas, cam, layout, appearance, side)
    for obj in sorted(layout["objects"], key=lambda o: -o["z"]):  # painter's order, far to near
        _DRAW[obj["type"]](canvas, cam, obj, appearance)
    image = canvas.image
    image *= appearance["light"] * np.asarray(appearance["tint"], np.float32)
    image += 2.5 * canvas.fine[..., None] + 0.5  # sensor noise; +0.5 rounds on the uint8 cast
    np.clip(image, 0, 255, out=image)
    counts = np.bincount(canvas.inst.ravel())
    instances = []
    # Only instances left visible after occlusion are reported, with their pixel counts.
    for i in (np.nonzero(counts[cs.INSTANCE_ID_OFFSET:])[0] + cs.INSTANCE_ID_OFFSET).tolist():
        instances.append({"id": i, "label": i // cs.INSTANCE_ID_OFFSET, "class": cs.ID_TO_NAME[i // cs.INSTANCE_ID_OFFSET],
                          "pixels": int(counts[i]), **appearance["instances"][i]})
    buildings = [{"side": side, "z0": seg["z0"], "z1": seg["z1"], "height": seg["height"],
                  "facade_name": col["name"], "facade_color": col["color"]}
                 for side, segs, cols in zip(("left", "right"), layout["segments"], appearance["facades"])
                 for seg, col in zip(segs, cols) if seg["kind"] == "building"]
    meta = {"light": appearance["light"], "tint": appearance["tint"], "sky": appearance["sky"],
            "instances": instances, "buildings": buildings}
    return {"label": canvas.label, "inst": canvas.inst,
            "image": image.astype(np.uint8), "meta": meta}


def generate_example(seed: int, index: int, width: int = 512, height: int = 256,
                     appearance_seed: int | None = None) -> dict[str, Any]:
    """Return example `index` of the synthetic set `seed`: label, inst, image (uint8) and meta.

    The label and instance maps depend only on (seed, index); colours on (appearance_seed or
    seed, index), so varying `appearance_seed` renders the same label map as different photos.
    """
    if width < 8 or height < 8:
        raise ValueError(f"synthetic scenes need width and height >= 8, got {width}x{height}")
    app_seed = seed if appearance_seed is None else appearance_seed
    layout = sample_layout(np.random.default_rng([seed, index, 0]))
    appearance = sample_appearance(np.random.default_rng([app_seed, index, 1]), layout)
    out = render_scene(layout, appearance, width, height, np.random.default_rng([app_seed, index, 2]))
    out["meta"].update({"seed": seed, "index": index, "appearance_seed": app_seed, "width": width, "height": height})
    return out


class SyntheticSource:
    """Random-access source of synthetic street scenes (index -> example), usable by grain.

    Deterministic from (seed, index), so any worker can produce any element.
    `with_meta` adds the appearance metadata as a JSON string (kept out of batched arrays).
    """

    def __init__(self, num_examples: int, *, width: int = 512, height: int = 256, seed: int = 0,
                 with_meta: bool = False, use_instance: bool = True):
        if num_examples <= 0:
            raise ValueError(f"num_examples must be positive, got {num_examples}")
        self.num_examples, self.width, self.height, self.seed = num_examples, width, height, seed
        self.with_meta, self.use_instance = with_meta, use_instance

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.num_examples:
            raise IndexError(f"index {index} out of range for a synthetic set of {self.num_examples}")
        ex = generate_example(self.seed, int(index), self.width, self.height)
        out = {"label": ex["label"], "image": ex["image"]}
        if self.use_instance:
            out["inst"] = ex["inst"]
        if self.with_meta:
            out["meta"] = json.dumps(ex["meta"])
        return out

    def __repr__(self) -> str:
        return f"SyntheticSource(num_examples={self.num_examples}, {self.width}x{self.height}, seed={self.seed})"
