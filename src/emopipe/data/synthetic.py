"""Procedural face generator: emopipe's embedded default dataset.

The real Kaggle "6 Human Emotions" photos need internet, so the default
pipeline runs on faces drawn here. The generator is built so that learning it
is a miniature of the real problem rather than a toy:

* Each emotion is a *prototype* of facial-action parameters (brows, eyes,
  mouth, nose, cheeks). Prototypes overlap the way real ones do (sad and fear
  both raise the inner brows, pain and disgust both wrinkle the nose and
  squint, anger and disgust both lower the brows), and every image jitters its
  expression around the prototype at a random intensity.
* Everything else is nuisance: identity (face shape, skin, hair, eye spacing,
  nose), pose, lighting, background clutter, blur/noise, occlusions, and a
  small rate of label noise.
* A second domain, "shift", uses the same prototypes with a different camera,
  population and background, so a model trained on "source" transfers only
  partially: the setting for the pipeline's domain-shift and few-shot stages.

Every image is a pure function of (seed, domain, class, index), so files are
reproducible one by one, whatever the counts of other classes.
"""

from __future__ import annotations

import colorsys
import math
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, fields
from functools import partial
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from tqdm import tqdm

CLASSES = ("happy", "sad", "anger", "pain", "disgust", "fear")
DOMAINS = ("source", "shift")


# ---------------------------------------------------------------------------
# Expressions: the signal


@dataclass(frozen=True)
class Expression:
    """Facial-action parameters. 0 is a neutral face, about +-1 a strong action."""

    brow_height: float = 0.0  # + raised, - lowered
    brow_tilt: float = 0.0  # + inner ends pulled down into a frown "V"
    inner_brow: float = 0.0  # + inner ends raised (the oblique brows of worry)
    eye_open: float = 0.0  # + wide open, - squint, below about -1.35 shut
    mouth_curve: float = 0.0  # + corners up (smile), - corners down
    mouth_open: float = 0.0  # 0 closed .. 1 wide open
    mouth_width: float = 0.0  # + stretched sideways, - narrowed
    nose_wrinkle: float = 0.0  # 0 .. 1
    cheek_raise: float = 0.0  # 0 .. 1, pushes the lower lids up
    lip_press: float = 0.0  # 0 .. 1, thin pressed lips
    upper_lip: float = 0.0  # 0 .. 1, upper lip raised (snarl)


E = Expression
PROTOTYPES: dict[str, Expression] = {
    "happy": E(brow_height=0.1, eye_open=-0.3, mouth_curve=1.0, mouth_open=0.3, mouth_width=0.5, cheek_raise=1.0, upper_lip=0.1),
    "sad": E(brow_height=-0.1, inner_brow=0.9, eye_open=-0.4, mouth_curve=-0.8, mouth_width=-0.1, lip_press=0.3),
    "fear": E(brow_height=0.8, inner_brow=0.7, eye_open=1.0, mouth_curve=-0.2, mouth_open=0.55, mouth_width=0.7),
    "anger": E(brow_height=-0.8, brow_tilt=1.0, eye_open=-0.2, mouth_curve=-0.3, mouth_width=-0.2, nose_wrinkle=0.2, lip_press=1.0),
    "disgust": E(brow_height=-0.5, brow_tilt=0.5, eye_open=-0.3, mouth_curve=-0.4, mouth_open=0.1, nose_wrinkle=0.9, cheek_raise=0.3, upper_lip=0.9),
    "pain": E(brow_height=-0.6, brow_tilt=0.4, inner_brow=0.3, eye_open=-1.4, mouth_curve=-0.2, mouth_open=0.45, mouth_width=0.6, nose_wrinkle=0.8, cheek_raise=0.6, upper_lip=0.4),
}
# Per-image Gaussian jitter around the (intensity-scaled) prototype, in the same units.
JITTER = E(brow_height=0.3, brow_tilt=0.25, inner_brow=0.25, eye_open=0.3, mouth_curve=0.3, mouth_open=0.15,
           mouth_width=0.25, nose_wrinkle=0.2, cheek_raise=0.2, lip_press=0.2, upper_lip=0.2)
INTENSITY = (0.6, 1.2)  # expressions range from subtle to exaggerated


def sample_expression(label: str, rng: np.random.Generator) -> Expression:
    """A prototype scaled towards neutral by a random intensity, plus jitter."""
    proto, k = PROTOTYPES[label], rng.uniform(*INTENSITY)
    return Expression(**{f.name: k * getattr(proto, f.name) + rng.normal(0.0, getattr(JITTER, f.name)) for f in fields(Expression)})


# ---------------------------------------------------------------------------
# Domains: who is photographed, where, and with which camera


@dataclass(frozen=True)
class Domain:
    """Distributions of the nuisances that differ between domains."""

    skin: tuple[float, float]  # Beta(a, b) over the light..dark skin-tone axis
    age: tuple[float, float]  # uniform range; age draws wrinkles and grey hair
    bg_hue: tuple[float, float]  # background hue range (0..1, may wrap past 1)
    bg_stripes: float  # probability of a striped (blinds, shelves) background
    light: tuple[float, float]  # strength of the directional lighting gradient
    side_light: bool  # light from the side (harsh) instead of any direction
    cast: tuple[float, float, float]  # mean per-channel colour gain
    contrast: tuple[float, float]
    blur: tuple[float, float]  # Gaussian sigma in output pixels
    lowres: tuple[float, float]  # downsample-then-upsample factor, 1 = none
    noise: tuple[float, float]  # pixel noise std (0..255)


DOMAIN_STYLES: dict[str, Domain] = {
    "source": Domain(skin=(2.0, 3.0), age=(0.0, 0.45), bg_hue=(0.45, 0.75), bg_stripes=0.1, light=(0.0, 0.25), side_light=False,
                     cast=(1.0, 1.0, 1.0), contrast=(0.9, 1.1), blur=(0.0, 0.6), lowres=(1.0, 1.0), noise=(1.0, 4.0)),
    "shift": Domain(skin=(3.0, 2.0), age=(0.3, 1.0), bg_hue=(0.95, 1.2), bg_stripes=0.6, light=(0.35, 0.6), side_light=True,
                    cast=(1.12, 1.0, 0.8), contrast=(0.55, 0.8), blur=(0.6, 1.3), lowres=(0.3, 0.5), noise=(4.0, 9.0)),
}


# ---------------------------------------------------------------------------
# Faces: expression + identity + pose

SKIN_TONES = np.array([(247, 220, 200), (228, 185, 150), (192, 140, 100), (140, 95, 65), (88, 58, 42)], float)
HAIR_COLOURS = [(30, 25, 22), (70, 45, 30), (110, 75, 45), (200, 170, 110), (150, 70, 35)]
IRIS_COLOURS = [(70, 45, 30), (40, 30, 25), (80, 110, 150), (90, 110, 70)]
HAIR_STYLES = ("bald", "short", "fringe", "long", "side")
OCCLUDERS = ("hand", "glasses", "box")
OCCLUSION_RATE = 0.08

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Face:
    """Everything that determines one drawn face."""

    expr: Expression
    width: float  # face half-width / half-height
    chin: float  # 0 round .. 1 pointed
    skin: RGB
    lips: RGB
    hair: RGB
    hair_style: str
    iris: RGB
    eye_spacing: float  # eye centre offset from the midline, in face half-heights
    nose: float  # nose size factor
    age: float  # 0 young .. 1 old
    angle: float  # in-plane rotation, degrees
    scale: float
    shift: tuple[float, float]  # fraction of the image size
    occluder: str | None


def _lerp(a, b, t: float) -> RGB:
    return tuple(int(round(x + (y - x) * t)) for x, y in zip(a, b))


def sample_face(expr: Expression, style: Domain, rng: np.random.Generator) -> Face:
    """Draw a random identity, pose and occluder for an expression."""
    tone = rng.beta(*style.skin) * (len(SKIN_TONES) - 1)
    lo = min(int(tone), len(SKIN_TONES) - 2)
    skin = _lerp(SKIN_TONES[lo], SKIN_TONES[lo + 1], tone - lo)
    age = rng.uniform(*style.age)
    hair = _lerp(HAIR_COLOURS[rng.integers(len(HAIR_COLOURS))], (185, 185, 182), min(1.0, max(0.0, age - 0.3) * 1.6))
    return Face(
        expr=expr,
        width=rng.uniform(0.66, 0.84),
        chin=rng.uniform(0.0, 1.0),
        skin=skin,
        lips=_lerp(skin, (170, 70, 75), rng.uniform(0.3, 0.6)),
        hair=hair,
        hair_style=HAIR_STYLES[rng.integers(len(HAIR_STYLES))],
        iris=IRIS_COLOURS[rng.integers(len(IRIS_COLOURS))],
        eye_spacing=rng.uniform(0.30, 0.38),
        nose=rng.uniform(0.85, 1.2),
        age=age,
        angle=rng.uniform(-15, 15),
        scale=rng.uniform(0.88, 1.08),
        shift=(rng.uniform(-0.06, 0.06), rng.uniform(-0.05, 0.05)),
        occluder=OCCLUDERS[rng.integers(len(OCCLUDERS))] if rng.random() < OCCLUSION_RATE else None,
    )


# ---------------------------------------------------------------------------
# Drawing. Everything is drawn at twice the output size and downsampled, which
# anti-aliases PIL's hard-edged shapes. Coordinates are in pixels of that 2x
# canvas; H, the face half-height, is the unit all features scale with.


def _pts(xs: np.ndarray, ys: np.ndarray) -> list[tuple[float, float]]:
    return list(zip(xs.tolist(), ys.tolist()))


def _ink(colour: RGB, alpha: float) -> tuple[int, int, int, int]:
    """A colour with opacity in 0..1, for blended drawing of lines and shading."""
    return (*colour, int(255 * min(1.0, max(0.0, alpha))))


class _Canvas:
    """A face image plus its silhouette mask; solid shapes go to both."""

    def __init__(self, s: int):
        self.img = Image.new("RGB", (s, s))
        self.mask = Image.new("L", (s, s), 0)
        self.d = ImageDraw.Draw(self.img, "RGBA")
        self._m = ImageDraw.Draw(self.mask)

    def solid(self, shape: str, xy, fill: RGB) -> None:
        getattr(self.d, shape)(xy, fill=fill)
        getattr(self._m, shape)(xy, fill=255)


def draw_face(face: Face, rng: np.random.Generator, size: int) -> Image.Image:
    """Draw a posed face with hair and shoulders at 2x `size`.

    Returns an RGBA image whose alpha is the silhouette, ready to be pasted on a
    background. `rng` only adds small details (hair strands, occluder layout).
    """
    s = 2 * size
    c = _Canvas(2 * s)  # room around the face, so that posing never pulls in a canvas edge
    H = 0.40 * s
    W = face.width * H
    cx, cy = s, s + 0.04 * s
    x = face.expr
    shade = _lerp(face.skin, (0, 0, 0), 0.35)  # wrinkles and folds

    _draw_body(c, face, cx, cy, W, H, rng)
    ye = cy - 0.12 * H
    _draw_brows(c, face, cx, ye, H, shade)
    _draw_eyes(c, face, cx, ye, H, shade, rng)
    mw = 0.28 * H * (1 + 0.3 * x.mouth_width + 0.1 * max(0.0, x.mouth_curve))
    ym = cy + 0.5 * H
    _draw_nose(c, face, cx, ye, cy + 0.22 * H, ym, mw, H, shade)
    _draw_mouth(c, face, cx, ym, mw, H, shade, rng)
    _draw_front_hair(c, face, cx, cy, W, H, rng)
    if face.occluder:
        _draw_occluder(c, face, cx, ye, ym, W, H, rng)
    c.img.putalpha(c.mask)
    return _pose(c.img, face, s)


def _draw_body(c: _Canvas, face: Face, cx, cy, W, H, rng) -> None:
    """Back hair, shoulders, neck, ears and the face oval."""
    if face.hair_style == "long":
        c.solid("ellipse", (cx - 1.25 * W, cy - 1.2 * H, cx + 1.25 * W, cy + 0.6 * H), face.hair)
        c.solid("rectangle", (cx - 1.2 * W, cy - 0.2 * H, cx + 1.2 * W, cy + 1.35 * H), face.hair)
    elif face.hair_style != "bald":
        c.solid("ellipse", (cx - 1.08 * W, cy - 1.14 * H, cx + 1.08 * W, cy + 0.3 * H), face.hair)
    cloth = tuple(int(v) for v in rng.integers(30, 220, 3))
    c.solid("ellipse", (cx - 2.3 * W, cy + 1.2 * H, cx + 2.3 * W, cy + 2.8 * H), cloth)
    neck = _lerp(face.skin, (0, 0, 0), 0.12)
    c.solid("rectangle", (cx - 0.45 * W, cy + 0.5 * H, cx + 0.45 * W, cy + 1.35 * H), neck)
    for side in (-1, 1):
        ex = cx + side * 0.98 * W
        c.solid("ellipse", (ex - 0.13 * W, cy - 0.28 * H, ex + 0.13 * W, cy + 0.12 * H), neck)
    t = np.linspace(0, 2 * np.pi, 64)
    lower = np.clip(np.sin(t), 0, None)
    xs = cx + W * np.cos(t) * (1 - 0.22 * face.chin * lower**2)
    c.solid("polygon", _pts(xs, cy + H * np.sin(t)), face.skin)


def _draw_brows(c: _Canvas, face: Face, cx, ye, H, shade) -> None:
    """Brows plus the forehead and frown lines that their movements create."""
    x = face.expr
    d = c.d
    brow = _lerp(face.hair, (20, 15, 12), 0.6)
    yb = ye - 0.27 * H - 0.15 * H * x.brow_height
    v = np.linspace(0, 1, 12)  # 0 inner end .. 1 outer end
    inner_dy = 0.13 * H * x.brow_tilt - 0.14 * H * x.inner_brow
    outer_dy = -0.03 * H * x.brow_tilt + 0.03 * H * x.inner_brow
    ys = yb - 0.05 * H * 4 * v * (1 - v) + inner_dy * (1 - v) ** 1.5 + outer_dy * v
    half = 0.045 * H * (1 - 0.4 * v)
    for side in (-1, 1):
        xs = cx + side * (face.eye_spacing * H + (v - 0.45) * 0.38 * H)
        d.polygon(_pts(xs, ys - half) + _pts(xs[::-1], (ys + half)[::-1]), fill=brow)
    frown = 0.8 * x.brow_tilt + 0.4 * max(0.0, -x.brow_height)
    for side in (-1, 1):
        gx = cx + side * 0.05 * H
        d.line([(gx, yb - 0.02 * H), (gx + side * 0.01 * H, yb + 0.09 * H)], fill=_ink(shade, frown * 0.7), width=max(1, int(0.02 * H)))
    raise_ = 0.7 * max(0.0, x.brow_height) + 0.5 * max(0.0, x.inner_brow) + 0.5 * face.age
    u = np.linspace(-1, 1, 9)
    for k in range(3):
        y0 = yb - (0.14 + 0.08 * k) * H
        d.line(_pts(cx + 0.32 * H * u, y0 - 0.02 * H * (1 - u**2)), fill=_ink(shade, raise_ * 0.5), width=max(1, int(0.015 * H)))


def _draw_eyes(c: _Canvas, face: Face, cx, ye, H, shade, rng) -> None:
    """Almond eyes whose lids open, squint or shut; raised cheeks push the lower lids up."""
    x = face.expr
    d = c.d
    ew, eh = 0.18 * H, 0.095 * H
    o = min(1.9, max(0.0, 1 + 0.65 * x.eye_open))
    up, lo = eh * o, eh * o * 0.85 * (1 - 0.45 * min(1.0, max(0.0, x.cheek_raise)))
    u = np.linspace(-1, 1, 15)
    env = (1 - u**2) ** 0.9
    gaze = rng.uniform(-0.03, 0.03) * H
    squint = 0.8 * max(0.0, -x.eye_open) + 0.6 * max(0.0, x.cheek_raise) + 0.5 * face.age
    for side in (-1, 1):
        ex = cx + side * face.eye_spacing * H
        xs = ex + ew * u
        if up > 0.012 * H:
            # sclera and iris, then skin above and below the lids hides what the lids cover
            ri, ix = 0.085 * H, ex + gaze
            d.polygon(_pts(xs, ye - up * env) + _pts(xs[::-1], (ye + lo * env)[::-1]), fill=(238, 234, 228))
            d.ellipse((ix - ri, ye - ri, ix + ri, ye + ri), fill=face.iris)
            d.ellipse((ix - 0.45 * ri, ye - 0.45 * ri, ix + 0.45 * ri, ye + 0.45 * ri), fill=(10, 8, 8))
            d.ellipse((ix + 0.2 * ri, ye - 0.5 * ri, ix + 0.45 * ri, ye - 0.25 * ri), fill=(250, 250, 250))
            d.polygon(_pts(xs, ye - up * env) + [(xs[-1], ye - max(up, ri) - 2), (xs[0], ye - max(up, ri) - 2)], fill=face.skin)
            d.polygon(_pts(xs, ye + lo * env) + [(xs[-1], ye + max(lo, ri) + 2), (xs[0], ye + max(lo, ri) + 2)], fill=face.skin)
        # upper lid line and lid crease; a shut eye is just a curved lid line
        d.line(_pts(xs, ye - up * env + (0.02 * H * env if up <= 0.012 * H else 0)), fill=(35, 25, 25), width=max(1, int(0.025 * H)))
        d.line(_pts(xs, ye - up * env - 0.05 * H * env), fill=_ink(shade, 0.35), width=max(1, int(0.012 * H)))
        d.line(_pts(xs, ye + lo * env), fill=_ink(shade, 0.4), width=max(1, int(0.01 * H)))
        for k in (-1, 0, 1):  # crow's feet at the outer corner
            x0 = ex + side * 1.1 * ew
            d.line([(x0, ye + 0.02 * k * H), (x0 + side * 0.09 * H, ye + 0.05 * k * H)], fill=_ink(shade, squint * 0.5), width=max(1, int(0.012 * H)))
        # raised cheeks: a bulge line under the eye and some colour
        cheek = max(0.0, x.cheek_raise)
        cu = np.linspace(-1, 1, 9)
        d.line(_pts(ex + 0.8 * ew * cu + side * 0.03 * H, ye + 0.15 * H - 0.05 * H * (1 - cu**2) - 0.03 * H * cheek),
               fill=_ink(shade, 0.15 + 0.45 * cheek), width=max(1, int(0.014 * H)))
        d.ellipse((ex - 0.13 * H, ye + 0.22 * H, ex + 0.13 * H, ye + 0.40 * H), fill=_ink((200, 60, 60), 0.06 + 0.14 * cheek))


def _draw_nose(c: _Canvas, face: Face, cx, ye, yn, ym, mw, H, shade) -> None:
    """Nose, with the wrinkles across its bridge and the nasolabial folds beside it."""
    x = face.expr
    d = c.d
    wrinkle = min(1.2, max(0.0, x.nose_wrinkle))
    yn -= 0.03 * H * wrinkle
    nw = 0.10 * H * face.nose
    lw = max(1, int(0.022 * H))
    d.line([(cx + 0.04 * H, ye), (cx + 0.07 * H * face.nose, yn - 0.06 * H)], fill=_ink(shade, 0.3), width=lw)
    u = np.linspace(-1, 1, 11)
    d.line(_pts(cx + nw * u, yn + 0.03 * H * (1 - u**2)), fill=_ink(shade, 0.45), width=lw)
    for side in (-1, 1):
        a = np.linspace(-0.6, 0.9, 8) * np.pi / 2
        d.line(_pts(cx + side * (nw * 0.8 + 0.05 * H * np.cos(a)), yn - 0.02 * H + 0.05 * H * np.sin(a)), fill=_ink(shade, 0.55), width=lw)
        nx = cx + side * 0.045 * H * face.nose
        d.ellipse((nx - 0.025 * H, yn - 0.005 * H, nx + 0.025 * H, yn + 0.02 * H), fill=_ink((40, 20, 20), 0.7))
    for k in range(3):  # wrinkles across the bridge
        y0 = ye + (0.03 + 0.035 * k) * H
        d.line(_pts(cx + 0.07 * H * u, y0 - 0.012 * H * (1 - u**2)), fill=_ink(shade, wrinkle * 0.75), width=lw)
    fold = 0.3 * max(0.0, x.mouth_curve) + 0.5 * max(0.0, x.cheek_raise) + 0.7 * wrinkle + 0.4 * max(0.0, x.upper_lip) + 0.4 * face.age
    for side in (-1, 1):
        t = np.linspace(0, 1, 8)
        xs = cx + side * ((nw + 0.03 * H) * (1 - t) + (mw + 0.06 * H) * t + 0.04 * H * np.sin(np.pi * t))
        d.line(_pts(xs, (yn - 0.03 * H) * (1 - t) + (ym + 0.06 * H) * t), fill=_ink(shade, 0.1 + 0.5 * fold), width=lw)


def _draw_mouth(c: _Canvas, face: Face, cx, ym, mw, H, shade, rng) -> None:
    """Lips around a mouth line that curves up or down, opens, and snarls."""
    x = face.expr
    d = c.d
    curve = min(1.3, max(-1.2, x.mouth_curve))
    gap = 0.32 * H * min(1.2, max(0.0, x.mouth_open))
    snarl = 0.09 * H * min(1.2, max(0.0, x.upper_lip))
    press = min(1.0, max(0.0, x.lip_press))
    u = np.linspace(-1, 1, 21)
    env = (1 - u**2) ** 0.6
    line = ym + 0.04 * H * curve - 0.16 * H * curve * u**2
    lean = rng.choice((-1, 1)) * 0.4  # a snarl lifts one side more
    up_in = line - 0.3 * gap * env - snarl * env * (1 + lean * u)
    lo_in = line + 0.7 * gap * env
    up_out = up_in - 0.04 * H * (1 - 0.75 * press) * (1 - u**2) ** 0.4 + 0.01 * H * np.exp(-(u / 0.15) ** 2)
    lo_out = lo_in + 0.055 * H * (1 - 0.75 * press) * (1 - u**2) ** 0.5
    xs = cx + mw * u
    d.polygon(_pts(xs, up_out) + _pts(xs[::-1], lo_out[::-1]), fill=face.lips)
    if (lo_in - up_in).max() > 0.02 * H:
        d.polygon(_pts(xs, up_in) + _pts(xs[::-1], lo_in[::-1]), fill=(40, 10, 15))
        teeth = (240, 236, 225)
        up_teeth = np.minimum(up_in + 0.05 * H * env, lo_in)
        d.polygon(_pts(xs, up_in) + _pts(xs[::-1], up_teeth[::-1]), fill=teeth)
        if gap > 0.08 * H:
            d.polygon(_pts(xs, np.maximum(lo_in - 0.035 * H * env, up_teeth)) + _pts(xs[::-1], lo_in[::-1]), fill=teeth)
    d.line(_pts(xs, (up_in + lo_in) / 2), fill=_ink((60, 25, 25), 0.7 if gap < 0.02 * H else 0.0), width=max(1, int(0.018 * H)))
    for side in (-1, 1):  # corner dimples of a smile or of pressed lips
        x0, y0 = cx + side * mw, line[0]
        d.line([(x0 + side * 0.01 * H, y0 - 0.03 * H), (x0 + side * 0.03 * H, y0 + 0.03 * H)],
               fill=_ink(shade, 0.5 * max(0.0, curve) + 0.5 * press), width=max(1, int(0.014 * H)))
    chin = 0.7 * press + 0.3 * max(0.0, -curve)  # the chin bulges under pressed lips
    cu = np.linspace(-1, 1, 9)
    d.line(_pts(cx + 0.12 * H * cu, lo_out.max() + 0.07 * H + 0.02 * H * (1 - cu**2)), fill=_ink(shade, chin * 0.6), width=max(1, int(0.014 * H)))


def _draw_front_hair(c: _Canvas, face: Face, cx, cy, W, H, rng) -> None:
    """Hair over the forehead: its lower edge per style, jagged into strands."""
    if face.hair_style == "bald":
        return
    xs = np.linspace(-1.06, 1.06, 25) * W
    top = cy - 1.06 * H * np.sqrt(np.clip(1 - (xs / (1.06 * W)) ** 2, 0, 1)) - 0.06 * H
    r = np.abs(xs) / W
    centre, sides = {"short": (0.78, 0.3), "fringe": (0.6, 0.25), "long": (0.72, 0.2), "side": (0.7, 0.3)}[face.hair_style]
    edge = cy - centre * H + (centre - sides) * H * r**2
    if face.hair_style == "side":
        edge += 0.2 * H * (xs / W) * rng.choice((-1, 1))
    edge += rng.normal(0, 0.015 * H, xs.size) * (face.hair_style == "fringe")
    edge = np.maximum(edge, top)
    c.solid("polygon", _pts(cx + xs, top) + _pts(cx + xs[::-1], edge[::-1]), face.hair)
    strand = _lerp(face.hair, (0, 0, 0), 0.3)
    for _ in range(6):
        x0 = rng.uniform(-0.8, 0.8) * W
        c.d.line([(cx + x0, cy - 0.95 * H), (cx + x0 * 1.1, cy - 0.8 * H)], fill=_ink(strand, 0.5), width=max(1, int(0.012 * H)))


def _draw_occluder(c: _Canvas, face: Face, cx, ye, ym, W, H, rng) -> None:
    """A hand over the lower face, sunglasses, or an opaque box somewhere on the face."""
    if face.occluder == "hand":
        hx, hy = cx + rng.uniform(-0.5, 0.5) * W, ym + rng.uniform(-0.2, 0.15) * H
        c.solid("ellipse", (hx - 0.4 * H, hy - 0.1 * H, hx + 0.4 * H, hy + 0.55 * H), face.skin)
        for k in range(4):
            fx = hx + (k - 1.5) * 0.17 * H
            c.solid("rounded_rectangle", (fx - 0.075 * H, hy - 0.45 * H, fx + 0.075 * H, hy + 0.1 * H), face.skin)
            c.d.line([(fx + 0.08 * H, hy - 0.3 * H), (fx + 0.08 * H, hy + 0.1 * H)], fill=_ink((0, 0, 0), 0.25), width=max(1, int(0.01 * H)))
    elif face.occluder == "glasses":
        for side in (-1, 1):
            ex = cx + side * face.eye_spacing * H
            c.solid("rounded_rectangle", (ex - 0.2 * H, ye - 0.12 * H, ex + 0.2 * H, ye + 0.12 * H), (15, 15, 20))
        c.solid("rectangle", (cx - 0.15 * H, ye - 0.08 * H, cx + 0.15 * H, ye - 0.04 * H), (15, 15, 20))
    else:
        bx, by = cx + rng.uniform(-0.6, 0.6) * W, ye + rng.uniform(-0.3, 0.7) * H
        w, h = rng.uniform(0.2, 0.45) * H, rng.uniform(0.15, 0.35) * H
        c.solid("rectangle", (bx - w, by - h, bx + w, by + h), tuple(int(v) for v in rng.integers(0, 255, 3)))


def _pose(im: Image.Image, face: Face, s: int) -> Image.Image:
    """Rotate, scale and shift the face canvas into an s x s image centred on the face."""
    a = math.radians(face.angle)
    cos, sin = math.cos(a) / face.scale, math.sin(a) / face.scale
    tx, ty = s / 2 + face.shift[0] * s, s / 2 + face.shift[1] * s
    c = im.size[0] / 2
    # PIL maps each output pixel back to an input pixel: the inverse transform.
    coeffs = (cos, sin, c - cos * tx - sin * ty, -sin, cos, c + sin * tx - cos * ty)
    return im.transform((s, s), Image.Transform.AFFINE, coeffs)  # nearest: edges are aliased anyway until the 2x downsample


# ---------------------------------------------------------------------------
# Scene and camera


def draw_background(style: Domain, rng: np.random.Generator, s: int) -> Image.Image:
    """A two-colour gradient with random clutter (shapes, sometimes stripes)."""

    def colour(sat: float, val: float) -> RGB:
        h = rng.uniform(*style.bg_hue) % 1.0
        return tuple(int(255 * v) for v in colorsys.hsv_to_rgb(h, rng.uniform(0, sat), rng.uniform(val, 1.0)))

    a, b = np.array(colour(0.5, 0.3), float), np.array(colour(0.5, 0.3), float)
    grad = a + (b - a) * np.linspace(0, 1, s)[:, None, None]
    img = Image.fromarray(grad.astype(np.uint8)).resize((s, s), Image.Resampling.NEAREST)
    if rng.random() < 0.5:
        img = img.transpose(Image.Transpose.ROTATE_90)
    d = ImageDraw.Draw(img, "RGBA")
    if rng.random() < style.bg_stripes:
        step = int(rng.uniform(0.06, 0.15) * s)
        ink = _ink(colour(0.6, 0.2), rng.uniform(0.3, 0.7))
        for x0 in range(int(rng.integers(step)), s, step):
            d.rectangle((x0, 0, x0 + step // 3, s), fill=ink)
    for _ in range(int(rng.integers(3, 9))):
        x0, y0 = rng.uniform(0, s, 2)
        w, h = rng.uniform(0.05, 0.4, 2) * s
        shape = ("ellipse", "rectangle")[rng.integers(2)]
        getattr(d, shape)((x0, y0, x0 + w, y0 + h), fill=_ink(colour(0.4, 0.3), rng.uniform(0.15, 0.5)))
    return img


def photograph(img: Image.Image, style: Domain, rng: np.random.Generator) -> Image.Image:
    """Camera and light: resolution loss, blur, lighting gradient, colour cast, contrast, noise."""
    size = img.size[0]
    f = rng.uniform(*style.lowres)
    if f < 1:
        small = max(8, int(size * f))
        img = img.resize((small, small), Image.Resampling.BILINEAR).resize((size, size), Image.Resampling.BILINEAR)
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(*style.blur)))
    a = np.asarray(img, np.float32)
    theta = rng.normal(0, 0.3) + np.pi * rng.integers(2) if style.side_light else rng.uniform(0, 2 * np.pi)
    g = np.linspace(-1, 1, size, dtype=np.float32)
    light = 1 + rng.uniform(*style.light) * (np.cos(theta) * g[None, :] + np.sin(theta) * g[:, None])
    gain = np.array(style.cast, np.float32) * rng.normal(1, 0.03, 3).astype(np.float32)
    mean = a.mean()
    a = (a - mean) * rng.uniform(*style.contrast) + mean + rng.uniform(-15, 15)
    a = a * light[..., None] * gain
    a += rng.normal(0, rng.uniform(*style.noise), a.shape).astype(np.float32)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def domain_style(domain: str, severity: float = 1.0) -> Domain:
    """The nuisance style of `domain`; `severity` in [0, 1] moves the shift domain's style from
    the source style (0) to the full shift (1), for a shift of chosen strength. Numbers are
    interpolated; the side lighting switches on at 0.5. The source domain ignores `severity`."""
    if domain == "source":
        return DOMAIN_STYLES["source"]
    a, b, t = DOMAIN_STYLES["source"], DOMAIN_STYLES[domain], severity

    def mix(x, y):
        if isinstance(x, bool):
            return y if t >= 0.5 else x
        if isinstance(x, tuple):
            return tuple(mix(u, v) for u, v in zip(x, y))
        return x * (1 - t) + y * t  # exactly y at t = 1

    return Domain(**{f.name: mix(getattr(a, f.name), getattr(b, f.name)) for f in fields(Domain)})


def render(label: str, style: Domain, rng: np.random.Generator, size: int, label_noise: float) -> Image.Image:
    """One labelled image: with probability `label_noise` the face shows another class's expression."""
    if rng.random() < label_noise:
        others = [k for k in CLASSES if k != label]
        label = others[rng.integers(len(others))]
    face = sample_face(sample_expression(label, rng), style, rng)
    img = draw_face(face, rng, size)
    scene = draw_background(style, rng, 2 * size)
    scene.paste(img, (0, 0), img)
    return photograph(scene.resize((size, size), Image.Resampling.LANCZOS), style, rng)


def generate(out_dir: Path, counts: dict[str, int], *, domain: str = "source", size: int = 160,
             seed: int = 0, label_noise: float = 0.03, severity: float = 1.0, progress: bool = True,
             workers: int = 1) -> int:
    """Writes out_dir/<class>/<class>_<i:04d>.jpg (RGB, size x size, JPEG quality 92), returns number written.

    Image i of a class depends only on (seed, domain, class, i), so `workers` processes draw the
    images in any order and write the same bytes as one.
    """
    unknown = sorted(set(counts) - set(CLASSES))
    if unknown:
        raise ValueError(f"unknown class(es) {unknown}; known classes: {list(CLASSES)}")
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; known domains: {list(DOMAINS)}")
    if not 0.0 <= severity <= 1.0:
        raise ValueError(f"severity must lie in [0, 1], got {severity}")
    out_dir = Path(out_dir)
    for label in counts:
        (out_dir / label).mkdir(parents=True, exist_ok=True)
    jobs = [(label, i) for label, n in counts.items() for i in range(n)]
    write = partial(_write_image, out_dir, domain_style(domain, severity), seed, domain, size, label_noise)
    workers = min(workers, -(-len(jobs) // 64))  # a process per 64 images at most: start-up is not free
    # fork: the workers need only this module, and a spawned one would re-import the stage script (and torch)
    pool = ProcessPoolExecutor(workers, mp_context=get_context("fork")) if workers > 1 else None
    with pool or nullcontext():
        done = pool.map(write, jobs, chunksize=16) if pool else map(write, jobs)
        for _ in tqdm(done, total=len(jobs), desc=f"synthetic faces ({domain})", unit="img", disable=not progress):
            pass
    return len(jobs)


def _write_image(out_dir: Path, style: Domain, seed: int, domain: str, size: int, label_noise: float,
                 job: tuple[str, int]) -> None:
    label, i = job
    rng = np.random.default_rng(np.random.SeedSequence([seed, DOMAINS.index(domain), CLASSES.index(label), i]))
    render(label, style, rng, size, label_noise).save(out_dir / label / f"{label}_{i:04d}.jpg", quality=92)
