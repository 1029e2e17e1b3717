"""How alike two renderings of one image are: PSNR and SSIM, with Pillow alone.

Used to state the quality of variants rendered from an intermediate against variants
rendered from the original (the tests and bench/run.py's quality table); nothing in the
daemon calls it.
"""

from __future__ import annotations

import math

from PIL import Image, ImageChops, ImageMath, ImageStat

__all__ = ["psnr", "ssim"]

_PEAK = 255.0
_C1 = (0.01 * _PEAK) ** 2
_C2 = (0.03 * _PEAK) ** 2
WINDOW = 8


def psnr(a: Image.Image, b: Image.Image) -> float:
    """Peak signal-to-noise ratio in dB over every channel (RGB; with alpha, premultiplied
    RGB and alpha: colour under transparent pixels is not seen); ``math.inf`` for
    identical pixels. The images must have the same size."""
    a, b = _same_mode(a, b)
    squares = ImageStat.Stat(ImageChops.difference(a, b)).sum2
    mse = sum(squares) / (len(squares) * a.width * a.height)
    return math.inf if mse == 0 else 10 * math.log10(_PEAK ** 2 / mse)


def ssim(a: Image.Image, b: Image.Image) -> float:
    """Mean structural similarity (Wang et al. 2004) of the luminance, over 8x8 windows
    at a stride of 4 (-1 to 1; 1 for identical pixels). The images must have the same
    size, at least 8 pixels on each side."""
    a, b = (im.convert("L").convert("F") for im in _same_mode(a, b))
    half = WINDOW // 2
    scores = [_block_ssim(a, b, dx, dy) for dx in (0, half) for dy in (0, half)]
    return sum(scores) / len(scores)


def _same_mode(a: Image.Image, b: Image.Image) -> tuple[Image.Image, Image.Image]:
    if a.size != b.size:
        raise ValueError(f"different sizes: {a.size} and {b.size}")
    alpha = a.has_transparency_data or b.has_transparency_data
    if not alpha:
        return a.convert("RGB"), b.convert("RGB")
    return a.convert("RGBA").convert("RGBa"), b.convert("RGBA").convert("RGBa")


def _block_ssim(a: Image.Image, b: Image.Image, dx: int, dy: int) -> float:
    """SSIM over the non-overlapping windows of the images shifted by (dx, dy)."""
    columns, rows = (a.width - dx) // WINDOW, (a.height - dy) // WINDOW
    box = (dx, dy, dx + columns * WINDOW, dy + rows * WINDOW)
    a, b = a.crop(box), b.crop(box)

    def mean(im: Image.Image) -> Image.Image:
        return im.resize((columns, rows), Image.Resampling.BOX)

    def product(x: Image.Image, y: Image.Image) -> Image.Image:
        return ImageMath.lambda_eval(lambda args: args["x"] * args["y"], x=x, y=y)

    mu_a, mu_b = mean(a), mean(b)
    score = ImageMath.lambda_eval(
        lambda m: ((2 * m["ma"] * m["mb"] + _C1) * (2 * (m["ab"] - m["ma"] * m["mb"]) + _C2))
        / ((m["ma"] * m["ma"] + m["mb"] * m["mb"] + _C1)
           * (m["aa"] - m["ma"] * m["ma"] + m["bb"] - m["mb"] * m["mb"] + _C2)),
        ma=mu_a, mb=mu_b, aa=mean(product(a, a)), bb=mean(product(b, b)),
        ab=mean(product(a, b)))
    # ImageStat bins mode F into a histogram; a 1x1 box resize is the exact mean.
    return score.resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
