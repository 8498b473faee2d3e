"""Render the bundled sample clip: drawn cars with synthetic plates driving through real street photos.

Each vehicle is a simple OpenCV car (front or rear view: shaded body, windows, lights, bumper, shadow)
carrying a plate from `train.gen.render_plate`. It is drawn once per vehicle at a good resolution and
warped into every frame with one homography, so 1000 frames take well under two minutes on a core.
Cars approach from the vanishing point and pass the camera at the side, or overtake it and shrink
into the distance, their plates growing or shrinking through ~60-220 px. Some overlap in time in
different lanes, one in a few stops for a couple of seconds, and one is briefly hidden by a
pedestrian crossing close to the camera. The background is a street photo (changed every few
vehicles, by a cut or a cross-fade) with every boxed real plate inpainted away, so the only plates
in the clip are the ones in the truth file.

The truth CSV has one row per vehicle, ``plate,first_frame,last_frame``: the first and last frame in
which its whole plate is in view, unhidden, fully faded in and at least `--min-plate-width` px wide.
Output is deterministic for a seed.

    python -m train.clip --seed 1 --out samples/clip.mp4 --truth samples/clip.truth.csv
    python -m train.clip --seed 2 --out data/clip2.mp4 --seconds 20 --size 1280x720 --vehicles 12
    python -m train.clip --bench            # the bench clips (`BENCH_CLIPS`) into data/bench/

The bench clips (`make bench-clips`, or rendered by `make bench` when missing) are what the speed
figures of `make bench` replay: a static camera (one street photo, no cuts), 30 fps, 1280x720 and
1920x1080, cars passing at road speed and, about one in three, at gate speed (slowly, stopping a
few seconds), plates 60-300 px wide, a vehicle in view most of the time.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from anprd.tracker import normalized_edit_distance
from train.fonts import available_fonts
from train.gen import (
    Backgrounds,
    PlateSpec,
    builtin_background_dirs,
    random_plate_spec,
    render_plate,
    spec_for_font,
)

__all__ = [
    "BENCH_CLIPS",
    "BENCH_DIR",
    "DEFAULT_STREETS",
    "ClipSummary",
    "TruthRow",
    "bench_clip_paths",
    "main",
    "render_bench_clips",
    "remove_plates",
    "render_clip",
]

DEFAULT_STREETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "streets"
# Natural photos among scikit-image's bundled data (no text, no plates): the offline fallback.
BUILTIN_PHOTOS = ("astronaut.png", "brick.png", "chelsea.png", "coffee.png", "grass.png", "gravel.png",
                  "rocket.jpg")
MIN_PLATE_WIDTH = 60.0  # truth threshold: the reader is trained for plates from ~60 px wide
MIN_BACKGROUND_MEAN = 85.0  # skip night photos: daylight-drawn cars look pasted on them
FADE_FRAMES = 10  # far-away cars fade in (approach) or out (depart) rather than pop
PLATE_METRES = {"uk": 0.52, "eu": 0.52, "us": 0.305}  # physical widths: depth order of vehicles
# BT.601 luma weights OpenCV uses for BGR -> gray: tints are normalised so the plate's luminance,
# which is what the reader sees, is what render_plate drew
GRAY_WEIGHTS = np.array([0.114, 0.587, 0.299], np.float32)
BODY_COLOURS = ((235, 235, 232), (200, 198, 195), (150, 150, 148), (95, 95, 95), (35, 35, 38),
                (40, 40, 165), (110, 60, 30), (165, 110, 55), (60, 85, 45), (150, 180, 200),
                (30, 30, 110), (225, 225, 225), (180, 178, 175))
MAX_OCCLUDED_RUN = 7  # frames: the tracker survives up to 10 misses; stay well inside that
NOISE_SIGMA = 2.0  # sensor noise in grey levels; cheap in mp4 bytes (~0.4 MB of a 40 s clip)
BUNDLE_LIMIT_BYTES = 10_000_000  # the clip shipped in the repo must stay under this
BENCH_DIR = Path(__file__).resolve().parent.parent / "data" / "bench"  # git-ignored


@dataclass(frozen=True)
class BenchClip:
    """How one bench clip is rendered (`render_bench_clips`)."""

    size: tuple[int, int]
    seed: int
    seconds: float
    fps: float = 30.0
    gate_share: float = 0.3  # vehicles that drive at gate speed: slowly, stopping a while
    gate_slowdown: float = 2.0  # their plates stay readable this many times longer


# Seeds chosen so that vehicles are in view in most frames and plates reach 250-300 px.
BENCH_CLIPS: dict[str, BenchClip] = {
    "720p": BenchClip((1280, 720), seed=28, seconds=24.0),
    "1080p": BenchClip((1920, 1080), seed=29, seconds=16.0),
}


@dataclass(frozen=True)
class TruthRow:
    """One vehicle in the truth file."""

    plate: str
    first_frame: int
    last_frame: int


@dataclass(frozen=True)
class ClipSummary:
    """What `render_clip` wrote."""

    video: Path
    truth: Path
    frames: int
    fps: float
    size: tuple[int, int]
    rows: tuple[TruthRow, ...]
    stopped: tuple[str, ...]  # plates of the vehicles that stop for a while
    occluded: tuple[str, ...]  # plates of the vehicles the pedestrian walks in front of
    overlapping: int  # vehicles whose truth range overlaps another's
    bytes: int
    seconds_taken: float
    busy_share: float = 0.0  # share of frames with a vehicle (faded in or not) in the picture
    plate_widths: tuple[float, float] = (0.0, 0.0)  # narrowest, widest plate in the truth frames


# --------------------------------------------------------------------------------------------------
# Backgrounds
# --------------------------------------------------------------------------------------------------
def remove_plates(image: np.ndarray, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    """Inpaint and blur every boxed plate (x, y, w, h) with a margin, so no real plate survives.

    The margin covers loose boxes and the plate holder; the blur on top of the inpainting removes any
    character-like texture the inpainting drags in from the edges.
    """
    if not boxes:
        return image.copy()
    ih, iw = image.shape[:2]
    mask = np.zeros((ih, iw), np.uint8)
    for x, y, w, h in boxes:
        mx, my = int(0.25 * w) + 4, int(0.5 * h) + 4
        cv2.rectangle(mask, (max(0, x - mx), max(0, y - my)), (min(iw - 1, x + w + mx),
                                                                 min(ih - 1, y + h + my)), 255, -1)
    filled = cv2.inpaint(image, mask, 9, cv2.INPAINT_TELEA)
    heights = [h for _, _, _, h in boxes]
    blurred = cv2.GaussianBlur(filled, (0, 0), max(3.0, 0.5 * max(heights)))
    feather = cv2.GaussianBlur(mask.astype(np.float32) / 255.0, (0, 0), 3.0)
    feather = np.maximum(feather, mask.astype(np.float32) / 255.0)[..., None]
    out = filled.astype(np.float32) * (1 - feather) + blurred.astype(np.float32) * feather
    return np.clip(out, 0, 255).astype(np.uint8)


@dataclass
class Scenery:
    """One background segment: a frame-sized photo without plates and its road geometry."""

    image: np.ndarray
    vanishing: tuple[float, float]
    cast: np.ndarray  # colour cast of the photo, applied to the vehicles so they sit in it
    oncoming_side: int  # +1: approaching vehicles pass the camera on its right, -1: on its left
    start: int
    fade: int  # frames of cross-fade from the previous segment; 0 is a cut


def _background_files(folder: Path | None) -> tuple[list[Path], dict[Path, list[tuple[int, int, int, int]]]]:
    """Candidate photos and their plate boxes (train.gen.Backgrounds reads boxes.tsv for us)."""
    if folder is None:
        listing = Backgrounds(builtin_background_dirs(), np.random.default_rng(0))
        files = [p for p in listing.files if p.name in BUILTIN_PHOTOS]
    else:
        listing = Backgrounds([folder], np.random.default_rng(0))
        files = list(listing.files)
    if not files:
        raise FileNotFoundError(f"no usable background photos in {folder or 'scikit-image data'}")
    return files, listing.boxes


def _pick_photo(files: list[Path], boxes: dict[Path, list[tuple[int, int, int, int]]],
                rng: np.random.Generator, avoid: Path | None) -> tuple[Path, np.ndarray]:
    """A random daylight photo (colour, plates removed), not `avoid` when there is a choice."""
    best: tuple[float, Path, np.ndarray] | None = None
    for _ in range(40):
        path = files[int(rng.integers(len(files)))]
        if path == avoid and len(files) > 1:
            continue
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None or min(image.shape[:2]) < 64:
            continue
        mean = float(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).mean())
        if best is None or mean > best[0]:
            best = (mean, path, image)
        if mean >= MIN_BACKGROUND_MEAN:
            break
    if best is None:
        raise RuntimeError("could not decode any background photo")
    _, path, image = best
    return path, remove_plates(image, boxes.get(path, []))


def _make_scenery(image: np.ndarray, size: tuple[int, int], rng: np.random.Generator, start: int,
                  fade: int) -> Scenery:
    """Crop the photo so its road's vanishing point (assumed near the centre) lands where the
    vehicles' paths converge, and give it a soft camera look."""
    w, h = size
    if rng.random() < 0.5:
        image = cv2.flip(image, 1)
    vx = w * rng.uniform(0.43, 0.57)
    vy = h * rng.uniform(0.38, 0.46)
    ih, iw = image.shape[:2]
    zoom = rng.uniform(1.0, 1.18)
    crop_w = min(iw, ih * w / h) / zoom
    crop_h = crop_w * h / w
    x0 = float(np.clip(0.5 * iw - vx / w * crop_w, 0, iw - crop_w))
    y0 = float(np.clip(0.42 * ih - vy / h * crop_h, 0, ih - crop_h))
    crop = image[int(y0): int(y0 + crop_h), int(x0): int(x0 + crop_w)]
    frame = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA)
    frame = cv2.GaussianBlur(frame, (0, 0), 0.7)  # focus is on the lanes; also keeps the mp4 small
    mean = frame.reshape(-1, 3).mean(axis=0).astype(np.float32) + 1.0
    cast = np.clip(np.sqrt(mean / float(GRAY_WEIGHTS @ mean)), 0.85, 1.2).astype(np.float32)
    return Scenery(frame, (vx, vy), cast, 1 if rng.random() < 0.5 else -1, start, fade)


# --------------------------------------------------------------------------------------------------
# Vehicles: plan (geometry only), then sprite (pixels)
# --------------------------------------------------------------------------------------------------
@dataclass
class Vehicle:
    """A vehicle's look and its per-frame pose. Frame k of its life is clip frame `start + k`."""

    spec: PlateSpec
    plate_canvas: np.ndarray  # float32 luminance, holder included, at sprite scale
    plate_origin: tuple[int, int]  # the canvas's top-left in sprite px
    plate_rect: np.ndarray  # 4 plate corners in sprite px
    tint: np.ndarray
    view: str  # "front" (approaching) or "rear"
    body_seed: int
    car_w: float
    car_h: float
    pad_x: float
    pad_top: float
    sprite_size: tuple[int, int]
    plate_width_sprite: float
    start: int = 0
    widths: np.ndarray = field(default_factory=lambda: np.zeros(0))  # plate width on screen, px
    homographies: np.ndarray = field(default_factory=lambda: np.zeros((0, 3, 3)))
    plate_quads: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 2), np.float32))
    body_quads: np.ndarray = field(default_factory=lambda: np.zeros((0, 4, 2), np.float32))
    fades: np.ndarray = field(default_factory=lambda: np.zeros(0))
    stops: bool = False
    occluded: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))

    @property
    def text(self) -> str:
        return self.spec.text

    @property
    def end(self) -> int:
        """Last clip frame of its life (inclusive)."""
        return self.start + len(self.widths) - 1

    def depth_key(self, k: int) -> float:
        """Pixels per metre at life frame k: larger is nearer the camera."""
        return float(self.widths[k]) / PLATE_METRES[self.spec.family]

    def eligible(self, size: tuple[int, int], min_width: float) -> np.ndarray:
        """Per life frame: whole plate in view, unhidden, fully faded in and wide enough."""
        w, h = size
        quads = self.plate_quads
        inside = ((quads[:, :, 0] >= 0).all(1) & (quads[:, :, 0] <= w - 1).all(1) &
                  (quads[:, :, 1] >= 0).all(1) & (quads[:, :, 1] <= h - 1).all(1))
        wide = np.ptp(quads[:, :, 0], axis=1) >= min_width
        return inside & wide & (self.fades >= 0.999) & ~self.occluded


def _tint(family: str, view: str, rng: np.random.Generator) -> np.ndarray:
    """BGR gains for the plate's luminance: UK rear plates are yellow, the rest white-ish."""
    if family == "uk" and view == "rear":
        gains = np.array([0.45, 1.03, 1.12], np.float32)
    else:
        gains = (1 + rng.uniform(-0.04, 0.04, 3)).astype(np.float32)
    return gains / float(GRAY_WEIGHTS @ gains)


def _design_vehicle(spec: PlateSpec, font: str, rng: np.random.Generator, plate_width_sprite: float,
                    view: str) -> Vehicle:
    """Proportions, plate and sprite layout of one vehicle (its pose is planned separately)."""
    us = spec.family == "us"
    car_ratio = rng.uniform(4.6, 5.2) if us else rng.uniform(3.3, 3.7)  # car width / plate width
    van = rng.random() < 0.2
    height_ratio = rng.uniform(0.86, 0.98) if van else rng.uniform(0.68, 0.8)
    wp = float(min(plate_width_sprite, 900 / car_ratio))
    car_w = car_ratio * wp
    car_h = height_ratio * car_w
    pad_x, pad_top = 0.07 * car_w, 4.0
    sprite = (int(math.ceil(car_w + 2 * pad_x)), int(math.ceil(pad_top + car_h * 1.07)))

    aspect = 2.0 if us else 4.7
    canvas, corners = render_plate(spec, font, max(10, int(round(wp / aspect))), rng,
                                   difficulty=rng.uniform(0.2, 0.4))
    scale = wp / float(corners[1, 0] - corners[0, 0])
    canvas = cv2.resize(canvas, (max(1, int(round(canvas.shape[1] * scale))),
                                 max(1, int(round(canvas.shape[0] * scale)))),
                        interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    corners = corners * scale
    plate_h = float(corners[2, 1] - corners[0, 1])
    # plate centre: in the front bumper, or on the boot lid / rear bumper
    centre_y = pad_top + car_h * (rng.uniform(0.76, 0.8) if view == "front" else rng.uniform(0.66, 0.74))
    centre_y = min(centre_y, pad_top + car_h * 0.9 - plate_h / 2)
    centre = np.array([pad_x + car_w / 2 + rng.uniform(-0.01, 0.01) * car_w, centre_y], np.float32)
    # the canvas (holder included) goes where its plate corners land on the wanted centre
    origin = np.round(centre - np.array([wp / 2, plate_h / 2], np.float32) - corners[0])
    rect = (corners + origin).astype(np.float32)
    return Vehicle(spec=spec, plate_canvas=canvas, plate_origin=(int(origin[0]), int(origin[1])),
                   plate_rect=rect, tint=_tint(spec.family, view, rng), view=view,
                   body_seed=int(rng.integers(2**31)), car_w=car_w, car_h=car_h, pad_x=pad_x,
                   pad_top=pad_top, sprite_size=sprite, plate_width_sprite=wp)


def _pose(v: Vehicle, width: float, anchor: tuple[float, float], roll: float, keystone: float) -> np.ndarray:
    """Homography sprite -> frame for a plate `width` px wide centred at `anchor`."""
    sw, sh = v.sprite_size
    src = np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32)
    centre = v.plate_rect.mean(axis=0)
    q = src - centre
    q[:, 1] *= 1 + keystone * q[:, 0] / (v.car_w / 2)  # the nearer side looks a little taller
    c, s = math.cos(roll), math.sin(roll)
    rotated = q @ np.array([[c, s], [-s, c]], np.float32)
    dst = rotated * (width / v.plate_width_sprite) + np.array(anchor, np.float32)
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32))


def _transform(points: np.ndarray, homography: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float32), homography).reshape(-1, 2)


@dataclass(frozen=True)
class Lane:
    """Where a vehicle drives, in plate widths from the camera axis (scales with its distance)."""

    across: float  # signed: the plate centre is at vx + across * plate_width
    below: float  # the plate centre is at vy + below * plate_width


def _plan_motion(v: Vehicle, lane: Lane, scenery: Scenery, size: tuple[int, int], fps: float,
                 readable_s: float, approach: bool, stop_s: float, rng: np.random.Generator,
                 min_width: float) -> bool:
    """Fill v's per-frame pose. Constant speed along the lane: 1/width falls linearly in time, which
    is what perspective does. Returns False when this lane cannot show the plate wide enough."""
    w, h = size
    vx, vy = scenery.vanishing
    aspect = v.plate_width_sprite / float(v.plate_rect[2, 1] - v.plate_rect[0, 1])
    side_room = (w - vx) if lane.across > 0 else vx
    widest = min(side_room / (abs(lane.across) + 0.5), (h - vy) / (lane.below + 0.5 / aspect))
    if widest < min_width * 1.35:
        return False
    step = (1 / min_width - 1 / widest) / (readable_s * fps)  # of 1/width per frame
    width = rng.uniform(40, 46)  # where it fades in (approach) or out (depart)
    stop_at = math.inf
    if stop_s > 0:  # stop where the plate is well readable, before it nears the frame edge
        low, high = max(min_width * 1.4, 0.45 * widest), 0.72 * widest
        if low < high:  # else this lane never shows the plate wide enough to stop at: drive through
            stop_at = rng.uniform(low, high)
    stop_left = int(round(stop_s * fps))
    roll0, wobble = math.radians(rng.uniform(-1.8, 1.8)), math.radians(rng.uniform(0.2, 0.6))
    period, phase = rng.uniform(0.8, 1.6) * fps, rng.uniform(0, 2 * math.pi)
    keystone = rng.uniform(-0.05, 0.05)
    gone_below = 1 / (widest * 8)
    widths, homographies = [], []
    body = np.array([[v.pad_x, v.pad_top], [v.pad_x + v.car_w, v.pad_top],
                     [v.pad_x + v.car_w, v.pad_top + v.car_h], [v.pad_x, v.pad_top + v.car_h]], np.float32)
    k = moved = 0
    inverse = 1 / width
    while inverse > gone_below:
        width = 1 / inverse
        anchor = (vx + lane.across * width, vy + lane.below * width)
        roll = roll0 + wobble * math.sin(2 * math.pi * moved / period + phase)  # suspension, when moving
        hom = _pose(v, width, anchor, roll, keystone)
        quad = _transform(body, hom)
        if k > FADE_FRAMES and (quad[:, 0].max() < 0 or quad[:, 0].min() > w - 1 or quad[:, 1].min() > h - 1):
            break  # the whole car has passed the camera
        widths.append(width)
        homographies.append(hom)
        k += 1
        if width >= stop_at and stop_left > 0:
            stop_left -= 1  # standing: same distance
        else:
            moved += 1
            # far away or already passing (plate out of view): get on with it
            inverse -= step * (1.8 if width < 0.92 * min_width else 2.2 if width > widest else 1.0)
    if approach:
        order = list(range(len(widths)))
        fades = np.minimum(1.0, np.arange(len(widths)) / FADE_FRAMES)
    else:  # overtaking and pulling away: the same path backwards, fading out in the distance
        order = list(range(len(widths)))[::-1]
        fades = np.minimum(1.0, np.arange(len(widths))[::-1] / FADE_FRAMES)
    v.widths = np.array([widths[i] for i in order], np.float64)
    v.homographies = np.array([homographies[i] for i in order])
    v.fades = fades.astype(np.float64)
    v.plate_quads = np.array([_transform(v.plate_rect, m) for m in v.homographies], np.float32)
    v.body_quads = np.array([_transform(body, m) for m in v.homographies], np.float32)
    v.occluded = np.zeros(len(v.widths), bool)
    v.stops = stop_s > 0 and stop_left == 0
    return True


# --------------------------------------------------------------------------------------------------
# Scheduling: no vehicle hides another's plate, no two plates close enough to confuse the tracker
# --------------------------------------------------------------------------------------------------
def _overlap_area(a: np.ndarray, b: np.ndarray) -> float:
    area, _ = cv2.intersectConvexConvex(a.astype(np.float32), b.astype(np.float32))
    return float(area)


def _conflicts(a: Vehicle, b: Vehicle) -> str | None:
    """Why a and b cannot share the road as planned ("hidden" or "close"), or None."""
    for f in range(max(a.start, b.start), min(a.end, b.end) + 1):
        ka, kb = f - a.start, f - b.start
        wa, wb = a.widths[ka], b.widths[kb]
        near, far, kn, kf = (a, b, ka, kb) if a.depth_key(ka) >= b.depth_key(kb) else (b, a, kb, ka)
        # a far plate may pass behind a nearer car only while it is too small to read anyway
        if far.widths[kf] >= 0.8 * MIN_PLATE_WIDTH and \
                _overlap_area(far.plate_quads[kf], near.body_quads[kn]) > 0:
            return "hidden"
        if min(wa, wb) >= 0.7 * MIN_PLATE_WIDTH:  # plates this close could swap tracks (gate: 2 sizes)
            ca, cb = a.plate_quads[ka].mean(axis=0), b.plate_quads[kb].mean(axis=0)
            if float(np.hypot(*(ca - cb))) < 1.5 * (wa + wb) + 10:
                return "close"
    return None


def _unique_specs(rng: np.random.Generator, count: int) -> list[PlateSpec]:
    """Plates 4-8 characters long, mixed families, each far (in edit distance) from the others."""
    specs: list[PlateSpec] = []
    while len(specs) < count:
        family = str(rng.choice(["uk", "eu", "us"], p=[0.3, 0.4, 0.3]))
        spec = random_plate_spec(rng, family)
        if 4 <= len(spec.text) <= 8 and all(normalized_edit_distance(spec.text, s.text) > 0.4
                                            for s in specs):
            specs.append(spec)
    return specs


def _schedule_sceneries(files: list[Path], boxes: dict[Path, list[tuple[int, int, int, int]]],
                        size: tuple[int, int], frames: int, fps: float,
                        rng: np.random.Generator, static: bool = False) -> list[Scenery]:
    """Background segments; `static`: one for the whole clip (a fixed camera)."""
    sceneries: list[Scenery] = []
    start, previous = 0, None
    while start < frames:
        path, image = _pick_photo(files, boxes, rng, previous)
        fade = 0 if not sceneries or rng.random() < 0.4 else int(round(0.5 * fps))
        sceneries.append(_make_scenery(image, size, rng, start, fade))
        previous = path
        start = frames if static else start + int(round(rng.uniform(7, 11) * fps))
    return sceneries


def _scenery_at(sceneries: list[Scenery], frame: int) -> int:
    index = 0
    for i, s in enumerate(sceneries):
        if s.start <= frame:
            index = i
    return index


def _schedule_vehicles(specs: list[PlateSpec], fonts: list[Path], sceneries: list[Scenery],
                       size: tuple[int, int], frames: int, fps: float, rng: np.random.Generator,
                       min_width: float, gate_share: float = 0.1,
                       gate_slowdown: float = 1.0) -> list[Vehicle]:
    seconds = frames / fps
    count = len(specs)
    readable_max = min(2.7, 0.45 * seconds)
    mean_gap = max(0.5, (seconds - 4.5) / max(1, count))  # ~4.5 s: one vehicle's time in view
    # about one vehicle in ten (gate_share) stops a while, driving gate_slowdown times slower
    stops = max(1, round(count / (1 / gate_share))) if count >= 3 and gate_share > 0 else 0
    stoppers = set(rng.choice(count, size=min(stops, count), replace=False).tolist()) if stops else set()
    placed: list[Vehicle] = []
    start = int(rng.uniform(0.1, 0.6) * fps)
    while len(placed) < count and start < frames:
        i = len(placed)
        font = str(fonts[int(rng.integers(len(fonts)))])
        spec = spec_for_font(specs[i], font)  # a letter the font draws as a digit is that digit
        chosen: Vehicle | None = None
        for attempt in range(40):
            begin = start + int((attempt // 4) * 0.2 * fps)  # crowded: try a little later
            if begin >= frames:
                break
            scenery = sceneries[_scenery_at(sceneries, begin)]
            approach = bool(rng.random() < 0.55)
            v = _design_vehicle(spec, font, rng, 240 * size[0] / 960, "front" if approach else "rear")
            half = v.car_w / v.plate_width_sprite / 2  # in plate widths
            side = scenery.oncoming_side if approach else -scenery.oncoming_side  # two-way road
            # passing the camera on either side, with a little room between it and the car's flank
            lane = Lane(side * (half + rng.uniform(0.45, 0.9)), rng.uniform(0.9, 1.4))
            stop_s = rng.uniform(1.6, 2.6) if i in stoppers else 0.0
            readable = rng.uniform(min(2.0, readable_max), readable_max)
            if i in stoppers and gate_slowdown != 1.0:
                readable = min(readable * gate_slowdown, 0.8 * seconds)
            if not _plan_motion(v, lane, scenery, size, fps, readable, approach, stop_s, rng, min_width):
                continue
            v.start = begin
            ok = v.eligible(size, min_width)
            if not ok.any() or begin + int(np.flatnonzero(ok)[-1]) >= frames:
                continue  # its plate would still be in view when the clip ends
            if ok.sum() < 1.2 * fps or any(_conflicts(v, other) for other in placed):
                continue
            chosen = v
            break
        if chosen is None:  # no room around `start`: look a second later
            start += int(fps)
            continue
        placed.append(chosen)
        start = chosen.start + int(mean_gap * rng.uniform(0.35, 1.65) * fps)
    return placed


# --------------------------------------------------------------------------------------------------
# The pedestrian who crosses in front of one vehicle
# --------------------------------------------------------------------------------------------------
@dataclass
class Pedestrian:
    """Someone walking briskly past close to the camera: a dark, out-of-focus silhouette."""

    first: int
    x0: float
    speed: float  # px per frame, signed
    torso_w: float
    torso_top: float
    torso_h: float
    clothes: tuple[float, float, float]
    trousers: tuple[float, float, float]

    def frames(self, width: int) -> range:
        span = width + 2 * self.torso_w + 1
        return range(self.first, self.first + int(math.ceil(span / abs(self.speed))) + 1)

    def centre_x(self, frame: int) -> float:
        return self.x0 + self.speed * (frame - self.first)

    def box(self, frame: int, height: int) -> np.ndarray:
        """Conservative quad around the whole silhouette."""
        x = self.centre_x(frame)
        x0, x1 = x - 0.6 * self.torso_w, x + 0.6 * self.torso_w
        y0 = self.torso_top - 0.55 * self.torso_w
        return np.array([[x0, y0], [x1, y0], [x1, height], [x0, height]], np.float32)


def _add_pedestrian(vehicles: list[Vehicle], size: tuple[int, int], frames: int, fps: float,
                    rng: np.random.Generator, min_width: float) -> tuple[Pedestrian | None, Vehicle | None]:
    """Time a crossing in front of one vehicle's plate, hiding it for a few frames only."""
    w, h = size
    candidates = [v for v in vehicles if not v.stops]
    rng.shuffle(candidates)
    for target in candidates:
        ok = np.flatnonzero(target.eligible(size, min_width))
        if len(ok) < 2 * fps:
            continue
        k = int(ok[len(ok) // 2 + int(rng.integers(-len(ok) // 6, len(ok) // 6 + 1))])
        plate = target.plate_quads[k]
        plate_w, centre = float(np.ptp(plate[:, 0])), plate.mean(axis=0)
        torso_w = max(0.18 * h, 1.1 * plate_w)
        speed = (torso_w * 1.2 + plate_w) / 6.0 * (1 if rng.random() < 0.5 else -1)
        torso_h = 2.2 * torso_w
        crossing_frame = target.start + k
        lead = int(math.ceil((centre[0] + torso_w) / abs(speed))) if speed > 0 else \
            int(math.ceil((w + torso_w - centre[0]) / abs(speed)))
        first = crossing_frame - lead
        x0 = centre[0] - speed * lead
        ped = Pedestrian(first, x0, speed, torso_w, float(centre[1] - 0.45 * torso_h), torso_h,
                         tuple(float(c) for c in rng.uniform(25, 80, 3)),
                         tuple(float(c) for c in rng.uniform(20, 60, 3)))
        if ped.first < 0 or ped.frames(w)[-1] >= frames:
            continue
        runs_ok = True
        for v in vehicles:
            hidden = np.zeros(len(v.widths), bool)
            for f in ped.frames(w):
                kv = f - v.start
                if 0 <= kv < len(v.widths) and _overlap_area(v.plate_quads[kv], ped.box(f, h)) > 0:
                    hidden[kv] = True
            if v is not target and hidden[v.eligible(size, min_width)].any():
                runs_ok = False  # only the target may be hidden while it is readable
            if hidden.sum() > MAX_OCCLUDED_RUN:
                runs_ok = False
        if not runs_ok:
            continue
        for v in vehicles:
            for f in ped.frames(w):
                kv = f - v.start
                if 0 <= kv < len(v.widths) and _overlap_area(v.plate_quads[kv], ped.box(f, h)) > 0:
                    v.occluded[kv] = True
        return ped, target
    return None, None


def _draw_pedestrian(frame: np.ndarray, ped: Pedestrian, index: int, fps: float) -> None:
    """Blend the silhouette for this frame into `frame` (in place)."""
    h, w = frame.shape[:2]
    cx = ped.centre_x(index)
    tw, top, th = ped.torso_w, ped.torso_top, ped.torso_h
    x0, x1 = int(max(0, cx - tw)), int(min(w, cx + tw + 1))
    y0 = int(max(0, top - 0.7 * tw))
    if x1 <= x0 or y0 >= h:
        return
    roi_w, roi_h = x1 - x0, h - y0
    colour = np.zeros((roi_h, roi_w, 3), np.float32)
    alpha = np.zeros((roi_h, roi_w), np.float32)
    ox, oy = cx - x0, -y0

    def put(mask: np.ndarray, bgr: tuple[float, float, float]) -> None:
        nonlocal colour, alpha
        m = mask.astype(np.float32)[..., None] / 255.0
        colour[:] = colour * (1 - m) + np.array(bgr, np.float32) * m
        alpha[:] = np.maximum(alpha, m[..., 0])

    swing = math.sin(2 * math.pi * index / (0.9 * fps)) * 0.35
    hip_y = top + th * 0.95 + oy
    legs = np.zeros((roi_h, roi_w), np.uint8)
    for sign in (-1, 1):
        foot = (ox + sign * swing * th * 0.6, hip_y + th * 1.2)
        cv2.line(legs, (int(ox + sign * 0.22 * tw), int(hip_y)), (int(foot[0]), int(foot[1])), 255,
                 max(2, int(0.4 * tw)), cv2.LINE_AA)
    put(legs, ped.trousers)
    body = np.zeros((roi_h, roi_w), np.uint8)
    cv2.ellipse(body, (int(ox), int(top + th * 0.5 + oy)), (int(tw / 2), int(th * 0.52)), 0, 0, 360, 255, -1,
                cv2.LINE_AA)
    for sign in (-1, 1):  # arms
        hand = (int(ox + sign * 0.55 * tw - swing * sign * 0.3 * tw), int(top + th * 0.9 + oy))
        cv2.line(body, (int(ox + sign * 0.4 * tw), int(top + 0.15 * th + oy)), hand, 255,
                 max(2, int(0.2 * tw)), cv2.LINE_AA)
    put(body, ped.clothes)
    head = np.zeros((roi_h, roi_w), np.uint8)
    cv2.circle(head, (int(ox), int(top - 0.3 * tw + oy)), int(0.36 * tw), 255, -1, cv2.LINE_AA)
    put(head, (50, 60, 80))
    sigma = max(1.0, 0.03 * tw)  # close to the camera: out of focus
    colour = cv2.GaussianBlur(colour * alpha[..., None], (0, 0), sigma)
    alpha = cv2.GaussianBlur(alpha, (0, 0), sigma)
    roi = frame[y0:h, x0:x1].astype(np.float32)
    frame[y0:h, x0:x1] = np.clip(roi * (1 - alpha[..., None]) + colour, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Vehicle sprite
# --------------------------------------------------------------------------------------------------
def _fill(shape: tuple[int, int], polygons: list[np.ndarray]) -> np.ndarray:
    """Anti-aliased float mask of polygons given in float px (sub-pixel accurate)."""
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(p * 16).astype(np.int32) for p in polygons], 255, cv2.LINE_AA, shift=4)
    return mask.astype(np.float32) / 255.0


def _rounded(x0: float, y0: float, x1: float, y1: float, r: float) -> np.ndarray:
    """Polygon of a rounded rectangle."""
    r = max(0.5, min(r, (x1 - x0) / 2, (y1 - y0) / 2))
    pts = []
    arcs = ((x1 - r, y0 + r, -90), (x1 - r, y1 - r, 0), (x0 + r, y1 - r, 90), (x0 + r, y0 + r, 180))
    for cx, cy, a0 in arcs:
        for a in np.linspace(a0, a0 + 90, 7):
            pts.append((cx + r * math.cos(math.radians(a)), cy + r * math.sin(math.radians(a))))
    return np.array(pts, np.float32)


def _draw_sprite(v: Vehicle) -> list[np.ndarray]:
    """The vehicle as premultiplied BGRA uint8, with a pyramid for small on-screen sizes."""
    rng = np.random.default_rng(v.body_seed)
    sw, sh = v.sprite_size
    premul = np.zeros((sh, sw, 3), np.float32)
    alpha = np.zeros((sh, sw), np.float32)
    X, Y, W, H = v.pad_x, v.pad_top, v.car_w, v.car_h

    def over(mask: np.ndarray, colour: np.ndarray | tuple[float, ...]) -> None:
        nonlocal premul, alpha
        m = mask[..., None]
        premul = premul * (1 - m) + np.asarray(colour, np.float32) * m
        alpha = alpha * (1 - mask) + mask

    def box(fx0: float, fy0: float, fx1: float, fy1: float, fr: float) -> np.ndarray:
        return _rounded(X + fx0 * W, Y + fy0 * H, X + fx1 * W, Y + fy1 * H, fr * W)

    def poly(points: list[tuple[float, float]]) -> np.ndarray:
        return np.array([(X + fx * W, Y + fy * H) for fx, fy in points], np.float32)

    front = v.view == "front"
    van = v.car_h / v.car_w > 0.84
    body_colour = np.array(BODY_COLOURS[int(rng.integers(len(BODY_COLOURS)))], np.float32)
    body_colour *= rng.uniform(0.9, 1.05)
    shoulder = rng.uniform(0.42, 0.47)
    roof_half = rng.uniform(0.4, 0.45) if van else rng.uniform(0.29, 0.35)

    # shadow on the road: only darkens (black, partly transparent)
    shadow = np.zeros((sh, sw), np.uint8)
    cv2.ellipse(shadow, (int(X + W / 2), int(Y + H * 0.985)), (int(W * 0.56), max(2, int(H * 0.045))), 0, 0,
                360, 255, -1, cv2.LINE_AA)
    shadow_mask = cv2.GaussianBlur(shadow.astype(np.float32) / 255.0, (0, 0), max(1.0, W * 0.015)) * 0.6
    over(shadow_mask, (0.0, 0.0, 0.0))
    # tyres
    tyres = [box(0.07, 0.8, 0.21, 1.0, 0.02), box(0.79, 0.8, 0.93, 1.0, 0.02)]
    over(_fill((sh, sw), tyres), (22, 22, 24))
    # mirrors
    mirrors = [box(-0.055, shoulder - 0.07, 0.04, shoulder - 0.01, 0.012),
               box(0.96, shoulder - 0.07, 1.055, shoulder - 0.01, 0.012)]
    over(_fill((sh, sw), mirrors), body_colour * 0.8)
    # body: lower box and cabin, shaded top-lit with darker flanks
    body_polys = [box(0.0, shoulder, 1.0, 0.92, 0.07),
                  poly([(0.5 - roof_half, 0.02), (0.5 + roof_half, 0.02), (0.97, shoulder + 0.03),
                        (0.03, shoulder + 0.03)])]
    yy, xx = np.mgrid[0:sh, 0:sw].astype(np.float32)
    shade = (1.12 - 0.38 * (yy - Y) / H) * (1 - 0.2 * ((xx - X - W / 2) / (W / 2)) ** 2)
    over(_fill((sh, sw), body_polys), body_colour[None, None, :] * shade[..., None])
    # glass: windscreen (front) reflects the sky; the rear window is darker
    inset = 0.045
    glass = poly([(0.5 - roof_half + inset, 0.02 + inset * 0.8),
                  (0.5 + roof_half - inset, 0.02 + inset * 0.8),
                  (0.97 - inset * 1.1, shoulder - 0.012), (0.03 + inset * 1.1, shoulder - 0.012)])
    top_c, bottom_c = ((105, 100, 95), (45, 45, 42)) if front else ((70, 66, 62), (28, 28, 30))
    ramp = np.clip((yy - Y) / (H * shoulder), 0, 1)[..., None]
    glass_colour = np.array(top_c, np.float32) * (1 - ramp) + np.array(bottom_c, np.float32) * ramp
    over(_fill((sh, sw), [glass]), glass_colour)
    glint = poly([(0.32, 0.06), (0.42, 0.06), (0.27, shoulder - 0.02), (0.17, shoulder - 0.02)])
    over(_fill((sh, sw), [glint]) * _fill((sh, sw), [glass]) * 0.18, (230, 230, 230))
    # shoulder crease highlight
    crease = np.zeros((sh, sw), np.uint8)
    cv2.line(crease, (int(X + 0.03 * W), int(Y + (shoulder + 0.035) * H)),
             (int(X + 0.97 * W), int(Y + (shoulder + 0.035) * H)), 255, max(1, int(0.006 * H)), cv2.LINE_AA)
    over(crease.astype(np.float32) / 255 * 0.5, np.minimum(255, body_colour * 1.3 + 20))
    # lights
    ly0, ly1 = shoulder + 0.06, shoulder + rng.uniform(0.14, 0.17)
    for left in (True, False):
        fx0, fx1 = (0.035, rng.uniform(0.22, 0.27)) if left else (1 - rng.uniform(0.22, 0.27), 0.965)
        if front:
            over(_fill((sh, sw), [box(fx0, ly0, fx1, ly1, 0.025)]), (55, 55, 58))
            inner = box(fx0 + 0.02, ly0 + 0.015, fx1 - 0.02, ly1 - 0.015, 0.02)
            over(_fill((sh, sw), [inner]), (225, 228, 232))
        else:
            over(_fill((sh, sw), [box(fx0, ly0 - 0.02, fx1, ly1 - 0.02, 0.02)]), (35, 35, 175))
            inner = box(fx0 + 0.025, ly0, fx1 - 0.03, ly1 - 0.045, 0.015)
            over(_fill((sh, sw), [inner]), (80, 80, 230))
    # grille (front) or boot seam (rear), and a badge
    if front:
        over(_fill((sh, sw), [box(0.33, ly0 + 0.005, 0.67, ly1 + 0.01, 0.02)]), (30, 30, 32))
        slats = np.zeros((sh, sw), np.uint8)
        for t in np.linspace(0.25, 0.75, 3):
            y = int(Y + H * (ly0 + t * (ly1 - ly0)))
            cv2.line(slats, (int(X + 0.35 * W), y), (int(X + 0.65 * W), y), 255, max(1, int(0.006 * H)),
                     cv2.LINE_AA)
        over(slats.astype(np.float32) / 255 * 0.7, (85, 85, 88))
    else:
        seam = np.zeros((sh, sw), np.uint8)
        seam_y = int(Y + (shoulder + 0.045) * H)
        cv2.line(seam, (int(X + 0.24 * W), seam_y), (int(X + 0.76 * W), seam_y), 255,
                 max(1, int(0.004 * H)), cv2.LINE_AA)
        over(seam.astype(np.float32) / 255 * 0.6, body_colour * 0.55)
    badge = np.zeros((sh, sw), np.uint8)
    cv2.circle(badge, (int(X + W / 2), int(Y + H * (ly0 + ly1) / 2)), max(2, int(0.022 * W)), 255, -1,
               cv2.LINE_AA)
    over(badge.astype(np.float32) / 255, (175, 175, 178))
    # bumper: black plastic or body colour, with an air intake at the front
    bumper_colour = np.array((38, 38, 40), np.float32) if rng.random() < 0.4 else body_colour * 0.88
    over(_fill((sh, sw), [box(0.005, 0.71, 0.995, 0.91, 0.05)]), bumper_colour)
    if front:
        over(_fill((sh, sw), [box(0.3, 0.85, 0.7, 0.895, 0.015)]), (25, 25, 27))
    # plate (holder included), tinted; its luminance is render_plate's
    ox, oy = v.plate_origin
    plate = np.clip(v.plate_canvas[..., None] * v.tint[None, None, :], 0, 255)
    ch, cw = v.plate_canvas.shape
    x0, y0, x1, y1 = max(ox, 0), max(oy, 0), min(ox + cw, sw), min(oy + ch, sh)
    premul[y0:y1, x0:x1] = plate[y0 - oy: y1 - oy, x0 - ox: x1 - ox]
    alpha[y0:y1, x0:x1] = 1.0

    bgra = np.dstack([np.clip(premul, 0, 255), np.clip(alpha * 255, 0, 255)]).astype(np.uint8)
    levels = [bgra]
    while min(levels[-1].shape[:2]) > 48:
        levels.append(cv2.pyrDown(levels[-1]))
    return levels


def _blend_sprite(frame: np.ndarray, levels: list[np.ndarray], homography: np.ndarray, magnification: float,
                  fade: float, cast: np.ndarray) -> None:
    """Warp the sprite into `frame` (in place), touching only the region it covers."""
    h, w = frame.shape[:2]
    level = 0
    while level + 1 < len(levels) and magnification * 2 ** (level + 1) <= 1.5:
        level += 1  # downsample at most ~1.5x in the warp: the pyramid does the rest, alias-free
    sprite = levels[level]
    sh, sw = sprite.shape[:2]
    to_level = np.diag([2.0 ** level, 2.0 ** level, 1.0])
    hom = homography @ to_level
    corners = _transform(np.array([[0, 0], [sw, 0], [sw, sh], [0, sh]], np.float32), hom)
    x0, y0 = int(max(0, math.floor(corners[:, 0].min()))), int(max(0, math.floor(corners[:, 1].min())))
    x1, y1 = int(min(w, math.ceil(corners[:, 0].max()) + 1)), int(min(h, math.ceil(corners[:, 1].max()) + 1))
    if x1 <= x0 or y1 <= y0:
        return
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    warped = cv2.warpPerspective(sprite, shift @ hom, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=0).astype(np.float32)
    a = warped[..., 3:4] * (fade / 255.0)
    colour = warped[..., :3] * (fade * cast)
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    frame[y0:y1, x0:x1] = np.clip(roi * (1 - a) + colour, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# The clip
# --------------------------------------------------------------------------------------------------
def _truth(vehicles: list[Vehicle], size: tuple[int, int], frames: int, min_width: float) -> list[TruthRow]:
    rows = []
    for v in vehicles:
        ok = np.flatnonzero(v.eligible(size, min_width)) + v.start
        ok = ok[(ok >= 0) & (ok < frames)]
        if len(ok):
            rows.append(TruthRow(v.text, int(ok[0]), int(ok[-1])))
    return sorted(rows, key=lambda r: (r.first_frame, r.plate))


def render_clip(out: Path, truth: Path, seed: int, backgrounds: Path | None, seconds: float = 40.0,
                fps: float = 25.0, size: tuple[int, int] = (960, 540), vehicles: int | None = None,
                min_plate_width: float = MIN_PLATE_WIDTH, static: bool = False, gate_share: float = 0.1,
                gate_slowdown: float = 1.0) -> ClipSummary:
    """Render the clip to `out` (mp4v) and its truth CSV to `truth`; deterministic for `seed`.

    backgrounds: a folder of street photos (a boxes.tsv there lists plates to remove), or None for
    scikit-image's bundled photos. vehicles: how many to try to fit (default: as many as fit, about
    one every two seconds: vehicles must not hide each other's plates while readable). static: one
    background for the whole clip (a fixed camera, no cuts or fades). gate_share: the share of
    vehicles that stop a while; gate_slowdown: how many times slower than the others they drive.
    """
    began = time.perf_counter()
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * fps))
    width, height = size
    count = vehicles if vehicles is not None else max(1, int(round(seconds * 0.75)))  # as many as fit
    files, boxes = _background_files(backgrounds)
    sceneries = _schedule_sceneries(files, boxes, size, frames, fps, rng, static)
    specs = _unique_specs(rng, count)
    fonts = available_fonts()
    placed = _schedule_vehicles(specs, fonts, sceneries, size, frames, fps, rng, min_plate_width, gate_share,
                                gate_slowdown)
    pedestrian, hidden = _add_pedestrian(placed, size, frames, fps, rng, min_plate_width)
    rows = _truth(placed, size, frames, min_plate_width)

    # camera: gentle exposure drift and sensor noise (a few noise fields, reused at random)
    drift = [(rng.uniform(0.015, 0.035), rng.uniform(6, 14) * fps, rng.uniform(0, 2 * math.pi))
             for _ in range(2)]
    noise_rng = np.random.default_rng(int(rng.integers(2**31)))
    noise = [np.abs(noise_rng.normal(0, NOISE_SIGMA, (height, width, 3))).astype(np.uint8) for _ in range(6)]

    out.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {out} with fourcc mp4v")
    sprites: dict[int, list[np.ndarray]] = {}
    try:
        for f in range(frames):
            index = _scenery_at(sceneries, f)
            scenery = sceneries[index]
            frame = scenery.image.copy()
            if index > 0 and scenery.fade and f - scenery.start < scenery.fade:
                a = (f - scenery.start + 1) / (scenery.fade + 1)
                frame = cv2.addWeighted(sceneries[index - 1].image, 1 - a, scenery.image, a, 0)
            live = [(i, v) for i, v in enumerate(placed) if v.start <= f <= v.end]
            for i in list(sprites):  # free the sprites of vehicles that have gone
                if not any(i == j for j, _ in live):
                    del sprites[i]
            live.sort(key=lambda iv: iv[1].depth_key(f - iv[1].start))  # far to near
            for i, v in live:
                if i not in sprites:
                    sprites[i] = _draw_sprite(v)
                k = f - v.start
                _blend_sprite(frame, sprites[i], v.homographies[k], v.widths[k] / v.plate_width_sprite,
                              float(v.fades[k]), scenery.cast)
            if pedestrian is not None and f in pedestrian.frames(width):
                _draw_pedestrian(frame, pedestrian, f, fps)
            gain = 1.0 + sum(a * math.sin(2 * math.pi * f / p + ph) for a, p, ph in drift)
            frame = cv2.convertScaleAbs(frame, alpha=gain)
            frame = cv2.add(frame, noise[int(noise_rng.integers(len(noise)))])
            frame = cv2.subtract(frame, noise[int(noise_rng.integers(len(noise)))])
            writer.write(frame)
    finally:
        writer.release()

    truth.parent.mkdir(parents=True, exist_ok=True)
    with open(truth, "w", newline="") as fh:
        csv_writer = csv.writer(fh, lineterminator="\n")
        csv_writer.writerow(["plate", "first_frame", "last_frame"])
        for row in rows:
            csv_writer.writerow([row.plate, row.first_frame, row.last_frame])
    spans = [(r.first_frame, r.last_frame) for r in rows]
    overlapping = sum(any(a <= d and c <= b for j, (c, d) in enumerate(spans) if j != i)
                      for i, (a, b) in enumerate(spans))
    busy = np.zeros(frames, bool)
    widths = []
    for v in placed:
        busy[max(0, v.start): min(frames, v.end + 1)] = True
        ok = v.eligible(size, min_plate_width)
        widths += np.ptp(v.plate_quads[ok][:, :, 0], axis=1).tolist() if ok.any() else []
    return ClipSummary(out, truth, frames, fps, size, tuple(rows), tuple(v.text for v in placed if v.stops),
                       (hidden.text,) if hidden is not None else (), overlapping, out.stat().st_size,
                       time.perf_counter() - began, float(busy.mean()) if frames else 0.0,
                       (min(widths), max(widths)) if widths else (0.0, 0.0))


def bench_clip_paths(name: str, folder: Path = BENCH_DIR) -> tuple[Path, Path]:
    """(video, truth CSV) of the bench clip `name` (a key of `BENCH_CLIPS`) in `folder`."""
    return folder / f"bench-{name}.mp4", folder / f"bench-{name}.truth.csv"


def render_bench_clips(folder: Path = BENCH_DIR, backgrounds: Path | None = None, force: bool = False,
                       names: tuple[str, ...] | None = None) -> dict[str, ClipSummary | None]:
    """Render the bench clips (`BENCH_CLIPS`) into `folder`, each unless it is there already
    (`force`: again). Returns each clip's summary, None for those already there."""
    if backgrounds is None and DEFAULT_STREETS.is_dir():
        backgrounds = DEFAULT_STREETS
    done: dict[str, ClipSummary | None] = {}
    for name in names or tuple(BENCH_CLIPS):
        spec = BENCH_CLIPS[name]
        video, truth = bench_clip_paths(name, folder)
        if video.is_file() and truth.is_file() and not force:
            done[name] = None
            continue
        partial = video.with_name(video.stem + ".partial.mp4")  # never leave half a clip under its name
        summary = render_clip(partial, truth, spec.seed, backgrounds, spec.seconds, spec.fps, spec.size,
                              static=True, gate_share=spec.gate_share, gate_slowdown=spec.gate_slowdown)
        partial.replace(video)
        done[name] = replace(summary, video=video)
    return done


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 960x540, not {text!r}") from None
    if w < 64 or h < 64 or w % 2 or h % 2:
        raise argparse.ArgumentTypeError("size: both sides even and >= 64")
    return w, h


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.clip", description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, help="random seed (required unless --bench)")
    parser.add_argument("--out", type=Path,
                        help="the video to write (.mp4, fourcc mp4v; required unless --bench)")
    parser.add_argument("--bench", action="store_true",
                        help=f"render the bench clips ({', '.join(BENCH_CLIPS)}) into --bench-dir, those "
                             "not there yet (with --force: all)")
    parser.add_argument("--bench-dir", type=Path, default=BENCH_DIR, help=f"default {BENCH_DIR}")
    parser.add_argument("--force", action="store_true", help="with --bench: render clips already there again")
    parser.add_argument("--truth", type=Path, help="truth CSV (default: OUT with .truth.csv)")
    parser.add_argument("--backgrounds", type=Path,
                        help=f"folder of street photos, boxes.tsv marking plates to remove (default: "
                             f"{DEFAULT_STREETS} if present, else scikit-image's photos)")
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--size", type=_parse_size, default=(960, 540), help="WxH (default 960x540)")
    parser.add_argument("--vehicles", type=int,
                        help="vehicles to fit in (default: as many as fit, about one every 2 s)")
    parser.add_argument("--min-plate-width", type=float, default=MIN_PLATE_WIDTH,
                        help="narrowest plate (px) that counts as visible in the truth (default 60)")
    args = parser.parse_args(argv)
    if args.bench:
        return _bench_main(args)
    if args.seed is None or args.out is None:
        parser.error("--seed and --out are required (or --bench)")
    if args.seconds <= 0 or args.fps <= 0:
        parser.error("--seconds and --fps must be positive")
    if args.vehicles is not None and args.vehicles < 0:
        parser.error("--vehicles must be >= 0")
    truth = args.truth or args.out.with_suffix(".truth.csv")
    backgrounds = args.backgrounds
    if backgrounds is None and DEFAULT_STREETS.is_dir():
        backgrounds = DEFAULT_STREETS
    try:
        summary = render_clip(args.out, truth, args.seed, backgrounds, args.seconds, args.fps, args.size,
                              args.vehicles, args.min_plate_width)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"train.clip: {exc}", file=sys.stderr)
        return 2
    if summary.bytes > BUNDLE_LIMIT_BYTES:
        print(f"train.clip: {summary.video} is over {BUNDLE_LIMIT_BYTES / 1e6:.0f} MB: too big to bundle",
              file=sys.stderr)
    if not summary.rows and args.vehicles != 0:
        print(f"train.clip: no vehicle's plate fits in {args.seconds:g} s at {args.size[0]}x{args.size[1]} "
              f"(seed {args.seed}): try a longer clip, a larger size or another seed", file=sys.stderr)
        return 1
    if args.vehicles is not None and len(summary.rows) < args.vehicles:
        print(f"train.clip: only {len(summary.rows)} of {args.vehicles} vehicles fit", file=sys.stderr)
    print(f"wrote {summary.video} ({summary.bytes / 1e6:.2f} MB, {summary.frames} frames, "
          f"{summary.size[0]}x{summary.size[1]} @ {summary.fps:g} fps) and {summary.truth} "
          f"({len(summary.rows)} plates; {summary.overlapping} overlap in time; stopping: "
          f"{', '.join(summary.stopped) or '-'}; hidden by a pedestrian: "
          f"{', '.join(summary.occluded) or '-'}) "
          f"in {summary.seconds_taken:.0f} s")
    return 0


def _bench_main(args: argparse.Namespace) -> int:
    try:
        done = render_bench_clips(args.bench_dir, args.backgrounds, args.force)
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        print(f"train.clip: {exc}", file=sys.stderr)
        return 2
    for name, summary in done.items():
        video, truth = bench_clip_paths(name, args.bench_dir)
        if summary is None:
            print(f"{video} and {truth} are there already (--force renders them again)")
            continue
        print(f"wrote {video} ({summary.bytes / 1e6:.1f} MB, {summary.frames} frames, {summary.size[0]}x"
              f"{summary.size[1]} @ {summary.fps:g} fps) and {truth}: {len(summary.rows)} plates "
              f"{summary.plate_widths[0]:.0f}-{summary.plate_widths[1]:.0f} px wide, a vehicle in view in "
              f"{100 * summary.busy_share:.0f}% of frames, stopping: {', '.join(summary.stopped) or '-'}; "
              f"in {summary.seconds_taken:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
