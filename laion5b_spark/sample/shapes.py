"""Coloured shapes with captions that name them: data a tiny CLIP model can learn in a minute on a CPU.

Used to train the project's own test model (``python -m laion5b_spark.sample.train_tiny_clip``) and, with
matching and mismatched captions, to check that the clip job keeps pairs whose caption fits the image and
drops the others.
"""

from __future__ import annotations

import io
import random

from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (240, 220, 30),
           "purple": (140, 40, 170), "orange": (250, 140, 20), "black": (15, 15, 15), "white": (245, 245, 245)}
SHAPES = ("circle", "square", "triangle")
TEMPLATES = ("a {c} {s}", "a photo of a {c} {s}", "{c} {s} on a plain background", "the {c} {s}",
             "a picture of one {c} {s}", "{s}, {c}")


def draw(colour: str, shape: str, rng: random.Random, size: int = 128) -> Image.Image:
    bg = tuple(rng.randint(90, 170) for _ in range(3))  # a grey-ish background: every colour stays visible
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    r = rng.randint(size // 5, size // 3)
    cx, cy = rng.randint(r, size - r), rng.randint(r, size - r)
    fill = COLOURS[colour]
    if shape == "circle":
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return im


def caption(colour: str, shape: str, rng: random.Random) -> str:
    return rng.choice(TEMPLATES).format(c=colour, s=shape)


def sample(rng: random.Random) -> tuple[str, str]:
    return rng.choice(list(COLOURS)), rng.choice(SHAPES)


def mismatch(colour: str, shape: str, rng: random.Random) -> tuple[str, str]:
    """Another (colour, shape): the colour, the shape or both differ."""
    while True:
        c, s = sample(rng)
        if (c, s) != (colour, shape):
            return c, s


def jpeg(im: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def pairs(n: int, seed: int, matching_share: float = 0.5) -> list[tuple[bytes, str, bool]]:
    """(JPEG bytes, caption, caption fits the image) x n."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        c, s = sample(rng)
        fits = rng.random() < matching_share
        cc, ss = (c, s) if fits else mismatch(c, s, rng)
        out.append((jpeg(draw(c, s, rng)), caption(cc, ss, rng), fits))
    return out
