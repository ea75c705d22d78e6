"""Camera images for `rlc:lane-following`: a pinhole camera over a flat road, drawn with OpenCV.

The world is the ground plane z = 0 (x, y in metres) with the road painted on it (envs/road.py).
The camera rides on the car, `height` m above the road and `forward` m ahead of the rear axle,
looking along the car's heading, pitched down by `pitch` degrees; square pixels, horizontal
field of view `fov`. Camera frame as in OpenCV: X right, Y down, Z along the optical axis. A
ground point q maps to the camera frame by one 3x3 matrix (`Camera.ground_to_camera`) and to
pixels by u = cx + f X / Z, v = cy + f Y / Z, with pixel centres at integer coordinates
(cx = (W - 1) / 2, cy = (H - 1) / 2) and f = (W / 2) / tan(fov / 2).

Every road part (shoulders, asphalt, each marking or dash, shadows) is a polygon on the ground:
its vertices are mapped to the camera frame, clipped against the near plane Z >= NEAR (so road
beside or behind the camera projects correctly), projected and filled with cv2.fillPoly at
1/16-pixel precision with anti-aliasing. A ground plane is never self-occluding, so painting in
layer order (shoulder, asphalt, markings) is exact. The sky fills the rows above the horizon.

An `Appearance` (drawn per episode by envs/lane_appearance.py) sets surface colours, a tileable
texture fixed to the world (so it moves with the scene; drawn with cv2.warpPerspective through the
ground-to-image homography) that modulates the brightness of the ground, shadows (world polygons
that darken whatever lies under them) and global lighting (brightness, contrast, colour tint: one
lookup table per channel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from envs.road import Road

NEAR = 0.3  # m: the near clipping plane
DRAW_BEHIND = 30.0  # m of road drawn behind the car's projection (seen when the car points across it)
DRAW_AHEAD = 120.0  # m of road drawn ahead; beyond, a 3.5 m lane is under 2 pixels wide at 84 px
SHIFT = 4  # fractional bits of the fixed-point vertices given to cv2.fillPoly
LINE_TYPE = cv2.LINE_8
SUPERSAMPLE = 4  # polygons are filled at this multiple (a power of 2) of the resolution, then area-averaged

Rgb = tuple[int, int, int]


@dataclass(frozen=True)
class Camera:
    """A pinhole camera fixed to the car (angles in degrees, lengths in metres)."""

    height: float = 1.4  # above the road
    pitch: float = 12.0  # below the horizontal
    fov: float = 80.0  # horizontal
    forward: float = 1.5  # ahead of the rear axle (negative: behind it, as the chase camera)

    def intrinsics(self, height_px: int, width_px: int) -> tuple[float, float, float]:
        """Focal length f (pixels) and principal point (cx, cy)."""
        f = 0.5 * width_px / math.tan(math.radians(self.fov) / 2)
        return f, (width_px - 1) / 2, (height_px - 1) / 2

    def ground_to_camera(self, x: float, y: float, heading: float) -> np.ndarray:
        """M (3, 3) with camera-frame (X, Y, Z) = M @ (qx, qy, 1) for a ground point q.

        (x, y, heading): the car's rear-axle position (m) and heading (rad).
        """
        c, s = math.cos(heading), math.sin(heading)
        px, py = x + self.forward * c, y + self.forward * s
        ahead = np.array([c, s, -(c * px + s * py)])  # metres ahead of the camera
        left = np.array([-s, c, s * px - c * py])  # metres to its left
        sp, cp = math.sin(math.radians(self.pitch)), math.cos(math.radians(self.pitch))
        up = np.array([0.0, 0.0, -self.height])  # height of the point above the camera
        return np.stack([-left, -sp * ahead - cp * up, cp * ahead - sp * up])

    def project(self, points_xy, pose, height_px: int, width_px: int) -> np.ndarray:
        """(n, 3) pixel column u, row v and depth Z (m) of ground points, for tests and tools."""
        f, cx, cy = self.intrinsics(height_px, width_px)
        m = self.ground_to_camera(*pose)
        cam = np.atleast_2d(points_xy) @ m[:, :2].T + m[:, 2]
        return np.stack([cx + f * cam[:, 0] / cam[:, 2], cy + f * cam[:, 1] / cam[:, 2], cam[:, 2]], axis=1)

    def horizon_row(self, height_px: int, width_px: int) -> float:
        """Image row of the horizon: v = cy - f tan(pitch)."""
        f, _, cy = self.intrinsics(height_px, width_px)
        return cy - f * math.tan(math.radians(self.pitch))

    def ground_row(self, distance, height_px: int, width_px: int):
        """Row of a ground point `distance` m straight ahead of the camera: cy + f tan(atan(h/d) - pitch)."""
        f, _, cy = self.intrinsics(height_px, width_px)
        return cy + f * np.tan(np.arctan2(self.height, distance) - math.radians(self.pitch))


FRONT_CAMERA = Camera()
CHASE_CAMERA = Camera(height=5.0, pitch=25.0, fov=70.0, forward=-7.0)  # behind and above, for videos


# ---------------------------------------------------------------------------- appearance


@dataclass(frozen=True, eq=False)
class Appearance:
    """Colours (RGB 0-255), ground texture, shadows and lighting of one episode."""

    asphalt: Rgb = (95, 95, 98)
    shoulder: Rgb = (140, 128, 105)
    verge: Rgb = (75, 120, 55)
    sky_top: Rgb = (95, 145, 215)
    sky_horizon: Rgb = (190, 210, 230)
    texture: np.ndarray | None = None  # float32 (T, T), zero mean, unit std, tileable
    texel: float = 0.05  # m of ground per texel
    grain: float = 1.0  # texels: the smallest feature of the texture (sets the distance fade)
    texture_amplitude: float = 0.0  # relative brightness change per unit of texture
    shadows: tuple[np.ndarray, ...] = ()  # world polygons (k, 2), m
    shadow_strength: float = 0.0  # fraction of light a shadow removes
    brightness: float = 1.0
    contrast: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # per-channel gain

    def lookup_table(self) -> np.ndarray:
        """(1, 256, 3) uint8: out = brightness * tint * ((in - 0.5) * contrast + 0.5), clipped."""
        x = np.arange(256) / 255.0
        y = (x - 0.5) * self.contrast + 0.5
        table = np.stack([y * self.brightness * t for t in self.tint], axis=1)
        return np.clip(np.round(table * 255.0), 0, 255).astype(np.uint8)[None]


# ---------------------------------------------------------------------------- drawing


def clip_near(polygon: np.ndarray, near: float = NEAR) -> np.ndarray | None:
    """Sutherland-Hodgman clip of a camera-frame polygon (k, 3) to Z >= near; None if nothing is left.

    Vertex i is kept if in front, followed by the crossing point of edge (i, i + 1) if that
    edge crosses the plane. For a non-convex polygon the clip may leave zero-width bridges along
    the plane Z = near: they lie on the ground under the camera, below the bottom of the image.
    """
    z = polygon[:, 2]
    inside = z >= near
    if inside.all():
        return polygon
    if not inside.any():
        return None
    following = np.concatenate((polygon[1:], polygon[:1]))
    crossing = np.flatnonzero(inside != np.concatenate((inside[1:], inside[:1])))
    t = (near - z[crossing]) / (following[crossing, 2] - z[crossing])
    points = polygon[crossing] + t[:, None] * (following[crossing] - polygon[crossing])
    order = np.argsort(np.concatenate((2 * np.flatnonzero(inside), 2 * crossing + 1)), kind="stable")
    return np.concatenate((polygon[inside], points))[order]


class RoadPainter:
    """Draws one road under one appearance; caches the per-size background (sky, fade)."""

    def __init__(self, road: Road, appearance: Appearance):
        self.road = road
        self.appearance = appearance
        n = road.s.size
        self._dashes = [(m, m.dash_ranges(n)) for m in road.cross_section.markings]
        self._lut = appearance.lookup_table()
        self._identity_light = np.array_equal(self._lut[0], np.repeat(np.arange(256)[:, None], 3, axis=1))
        shadows = appearance.shadows
        self._shadow_centres = np.array([p.mean(axis=0) for p in shadows]).reshape(-1, 2)
        self._backgrounds: dict[tuple[Camera, int, int], tuple[np.ndarray, np.ndarray]] = {}

    def render(self, camera: Camera, pose, s_car: float, height: int, width: int,
               extra: tuple[tuple[np.ndarray, Rgb], ...] = ()) -> np.ndarray:
        """uint8 (height, width, 3) RGB view from `camera` on a car at pose (x, y, heading).

        `s_car` is the car's arc length along the road (which part of the road to draw);
        `extra` adds ground polygons (world (k, 2), colour), e.g. the car's footprint.
        """
        m = camera.ground_to_camera(*pose)
        # Polygons are filled at SUPERSAMPLE x the resolution and area-averaged down: cv2.fillPoly
        # covers pixels whose centres lie up to ~1/2 pixel outside a polygon, which at 64 px would
        # widen every line by a pixel; at 4x the error is an eighth of a final pixel.
        k = SUPERSAMPLE
        image = self._background(camera, k * height, k * width)[0].copy()
        f, cx, cy = camera.intrinsics(k * height, k * width)
        self._paint_road(image, m, f, cx, cy, s_car)
        for polygon, rgb in extra:
            self._fill(image, [polygon @ m[:, :2].T + m[:, 2]], rgb, f, cx, cy)
        while image.shape[0] > height:  # halving with INTER_AREA is OpenCV's fast 2x2 mean
            image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
        f, cx, cy = camera.intrinsics(height, width)
        fade = self._background(camera, height, width)[1]
        image = self._shade(image, m, f, cx, cy, fade, pose, height, width)
        if not self._identity_light:
            image = cv2.LUT(image, self._lut)
        return image

    def _paint_road(self, image: np.ndarray, m: np.ndarray, f: float, cx: float, cy: float, s_car: float) -> None:
        """Shoulders, asphalt and markings of the road from DRAW_BEHIND to DRAW_AHEAD m around s_car."""
        road, xs = self.road, self.road.cross_section
        i0, i1 = road.window(s_car - DRAW_BEHIND, s_car + DRAW_AHEAD)
        centre = road.xy[i0:i1] @ m[:, :2].T + m[:, 2]  # (n, 3) camera frame
        normal = road.normal[i0:i1] @ m[:, :2].T  # camera-frame change per metre to the left
        # Drop the samples whose whole cross-section lies behind the near plane (the road behind
        # the car, usually), keeping one on either side of the rest so the clip still cuts there.
        outer = (xs.road_right - xs.shoulder_width, xs.road_left + xs.shoulder_width)
        depth = centre[:, 2] + np.maximum(outer[0] * normal[:, 2], outer[1] * normal[:, 2])
        ahead = np.flatnonzero(depth >= NEAR)
        if not ahead.size:
            return
        a, b = max(int(ahead[0]) - 1, 0), min(int(ahead[-1]) + 2, len(centre))
        centre, normal, i0, i1 = centre[a:b], normal[a:b], i0 + a, i0 + b

        def ribbon(right: float, left: float, a: int = 0, b: int | None = None) -> np.ndarray:
            c, d = centre[a:b], normal[a:b]
            return np.concatenate([c + right * d, (c + left * d)[::-1]])

        if xs.shoulder_width > 0:
            self._fill(image, [ribbon(*outer)], self.appearance.shoulder, f, cx, cy)
        self._fill(image, [ribbon(xs.road_right, xs.road_left)], self.appearance.asphalt, f, cx, cy)
        for marking, ranges in self._dashes:
            visible = ranges[(ranges[:, 1] > i0) & (ranges[:, 0] < i1 - 1)]
            half = marking.width / 2
            polygons = [ribbon(marking.offset - half, marking.offset + half, max(a, i0) - i0, min(b, i1 - 1) - i0 + 1)
                        for a, b in visible]
            self._fill(image, polygons, marking.rgb, f, cx, cy)

    @staticmethod
    def _fill(image: np.ndarray, polygons: list[np.ndarray], rgb: Rgb, f: float, cx: float, cy: float,
              line_type: int = LINE_TYPE) -> None:
        """Clips, projects and fills camera-frame polygons that do not overlap one another."""
        depths = [(p[:, 2].min(), p[:, 2].max()) for p in polygons if len(p) >= 3]
        if len(depths) < len(polygons):
            polygons = [p for p in polygons if len(p) >= 3]
        if not polygons:
            return
        if min(lo for lo, _ in depths) < NEAR:
            polygons = [clip_near(p) if lo < NEAR else p for p, (lo, hi) in zip(polygons, depths) if hi >= NEAR]
            if not polygons:
                return
        vertices = np.concatenate(polygons)
        scale = f * (1 << SHIFT)
        pixels = np.empty((len(vertices), 2), dtype=np.int32)
        pixels[:, 0] = np.rint(cx * (1 << SHIFT) + scale * vertices[:, 0] / vertices[:, 2])
        pixels[:, 1] = np.rint(cy * (1 << SHIFT) + scale * vertices[:, 1] / vertices[:, 2])
        pieces = np.split(pixels, np.cumsum([len(p) for p in polygons[:-1]], dtype=np.int64))
        # One call fills all pieces with the even-odd rule, so pieces must not overlap.
        cv2.fillPoly(image, pieces, rgb, line_type, SHIFT)

    def _shade(self, image, m, f, cx, cy, fade, pose, height, width) -> np.ndarray:
        """Multiplies the ground by the world-fixed texture and the shadows."""
        look = self.appearance
        shadow = self._shadow_mask(m, f, cx, cy, pose, height, width) if look.shadow_strength > 0 else None
        if look.texture is None or look.texture_amplitude == 0:
            if shadow is None:
                return image
            gain = 1.0 - look.shadow_strength * shadow
        else:
            k = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
            texel_to_world = np.diag([look.texel, look.texel, 1.0])
            # Texel (a, b, 1) -> image (u w, v w, w), for the rows from `top` down: rows where the
            # texture has faded out (the far ground, the sky) are not warped at all.
            top = int(np.argmax(fade > 0)) if fade.any() else height
            from_top = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, -top], [0.0, 0.0, 1.0]])
            homography = from_top @ k @ m @ texel_to_world
            gain = np.ones((height, width), dtype=np.float32)
            if top < height:
                texture = cv2.warpPerspective(look.texture, homography, (width, height - top),
                                              flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
                gain[top:] += (look.texture_amplitude * fade[top:])[:, None] * texture
            if shadow is not None:
                gain -= look.shadow_strength * shadow
        shaded = image.astype(np.float32) * gain[:, :, None]
        return np.clip(shaded, 0.0, 255.0).astype(np.uint8)

    def _shadow_mask(self, m, f, cx, cy, pose, height, width) -> np.ndarray | None:
        """float32 (H, W) coverage of the shadows near the car, or None when none is near."""
        if not len(self._shadow_centres):
            return None
        near = np.einsum("ij,ij->i", self._shadow_centres - pose[:2], self._shadow_centres - pose[:2])
        chosen = np.flatnonzero(near < (DRAW_AHEAD / 2) ** 2)
        if not chosen.size:
            return None
        mask = np.zeros((height, width), dtype=np.uint8)
        for i in chosen:  # one call each: shadows may overlap, and one call would XOR them
            # At the final resolution, anti-aliased: a soft edge (half a pixel wider) suits a shadow.
            self._fill(mask, [self.appearance.shadows[i] @ m[:, :2].T + m[:, 2]], (255,), f, cx, cy, cv2.LINE_AA)
        return mask.astype(np.float32) * (1.0 / 255.0)

    def _background(self, camera: Camera, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
        """Sky gradient above the horizon and verge below it; per-row texture fade (H,)."""
        key = (camera, height, width)
        if key not in self._backgrounds:
            look = self.appearance
            f, _, cy = camera.intrinsics(height, width)
            horizon = camera.horizon_row(height, width)
            rows = np.arange(height, dtype=np.float64)
            image = np.empty((height, width, 3), dtype=np.uint8)
            image[:] = look.verge
            sky = rows < horizon
            t = np.clip((horizon - rows) / max(horizon + 1.0, 1.0), 0.0, 1.0)[:, None]  # 0 at the horizon
            gradient = (1 - t) * np.array(look.sky_horizon) + t * np.array(look.sky_top)
            image[sky] = np.rint(gradient[sky])[:, None, :].astype(np.uint8)
            # A texture finer than a pixel would alias (shimmer): fade it out where one pixel row
            # spans more ground than the texture's grain. Ground distance of row v (centre column)
            # d = h / tan(pitch + atan((v - cy) / f)); one row covers about d^2 / (h f) metres.
            angle = math.radians(camera.pitch) + np.arctan((rows - cy) / f)
            with np.errstate(divide="ignore"):
                distance = np.where(angle > 0, camera.height / np.tan(np.maximum(angle, 1e-9)), np.inf)
            footprint = distance ** 2 / (camera.height * f)
            fade = np.clip(look.texel * look.grain / footprint, 0.0, 1.0).astype(np.float32)
            fade[fade < 0.02] = 0.0  # not worth warping
            self._backgrounds[key] = (image, fade)
        return self._backgrounds[key]
