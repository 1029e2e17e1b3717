"""Part ``quality`` of bench/run.py: variants rendered from the intermediate against the
same variants rendered from the original, over the benchmark's PNG and WebP sources.

    python bench/run.py --only quality

In-process (imagehost's own imaging functions, no server): for each source, its
intermediate is made as the daemon makes it, then each variant is rendered twice, from
the original and from the intermediate, and compared: PSNR (all channels) and SSIM
(luminance, 8x8 windows at stride 4), both computed with Pillow alone
(``imagehost.imaging.similarity``). PNG outputs show the intermediate's own difference;
JPEG q80 outputs are what the uncached rows serve (their encoder's own loss on top).
The render times are single-threaded medians of 3 (context for the uncached rows).
"""

from __future__ import annotations

import io
import statistics
import time

from PIL import Image
from rich.table import Table

from imagehost.imaging.intermediate import (
    DEFAULT_LONG_SIDE,
    make_intermediate,
    render_from_intermediate,
    serves,
)
from imagehost.imaging.render import plan_variant, render_variant
from imagehost.imaging.similarity import psnr, ssim

#: The uncached rows' sizes (fit 400-512), the thumbnail, a crop around a focal point,
#: the largest variant the intermediate serves (smart crops come from the original).
VARIANTS = {
    "fit 512": {"width": 512, "height": 512, "crop": False},
    "fit 400": {"width": 400, "height": 400, "crop": False},
    "thumbnail 300x300 crop": {"width": 300, "height": 300, "crop": True},
    "focal-point crop 300x400": {"width": 300, "height": 400, "crop": True,
                                 "focus": (700, 400)},
    "fit 768 (largest from it)": {"width": 768, "height": 768, "crop": False},
}
OUTPUTS = {"png": None, "jpg": 80}
PSNR_TARGET = 40.0  # dB, lossless outputs
SSIM_TARGET = 0.97


def run(photos, log) -> dict:
    """Compare every variant of every PNG and WebP source; the results for ``print_table``."""
    rows = []
    for src in photos.png + photos.webp:
        data = src.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            width, height, fmt = im.width, im.height, im.format
        started = time.perf_counter()
        intermediate = make_intermediate(data, DEFAULT_LONG_SIDE)
        made_ms = (time.perf_counter() - started) * 1000
        log(f"quality: {src.name} ({len(intermediate) // 1000} KB intermediate, "
            f"made in {made_ms:.0f} ms)")
        for label, request in VARIANTS.items():
            for ext, quality in OUTPUTS.items():
                spec = plan_variant(width, height, fmt, out_ext=ext, quality=quality, **request)
                if not serves(spec, width, height, DEFAULT_LONG_SIDE):
                    raise RuntimeError(f"{label} is not served by the intermediate")
                original = _timed(render_variant, data, spec)
                reduced = _timed(render_from_intermediate, intermediate, spec)
                a, b = _decoded(original[0]), _decoded(reduced[0])
                rows.append({"source": src.name, "variant": label, "format": ext,
                             "psnr": psnr(b, a), "ssim": ssim(b, a),
                             "original_ms": original[1], "intermediate_ms": reduced[1],
                             "intermediate_bytes": len(intermediate), "made_ms": made_ms})
    return {"long_side": DEFAULT_LONG_SIDE, "sources": len(photos.png + photos.webp),
            "rows": rows}


def _timed(render, source, spec) -> tuple[bytes, float]:
    times, out = [], b""
    for _ in range(3):
        started = time.perf_counter()
        out = render(source, spec)
        times.append((time.perf_counter() - started) * 1000)
    return out, statistics.median(times)


def _decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def targets(results: dict) -> dict:
    """The quality targets as ``name -> (value, target, higher_is_better)``."""
    rows = results["rows"]
    lossless = [r["psnr"] for r in rows if r["format"] == "png"]
    return {
        "quality: variants from the intermediate vs the original, min PSNR dB (png out)": (
            min(lossless), PSNR_TARGET, True),
        "quality: variants from the intermediate vs the original, min SSIM": (
            min(r["ssim"] for r in rows), SSIM_TARGET, True),
    }


def print_table(results: dict, console) -> None:
    table = Table(title=f"Intermediate quality: variants from the {results['long_side']} px "
                        f"intermediate vs from the original, {results['sources']} PNG/WebP "
                        "sources (min / mean over sources)")
    for col in ("variant", "out", "PSNR dB min/mean", "SSIM min/mean",
                "ms from original", "ms from intermediate"):
        table.add_column(col, justify="right")
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in results["rows"]:
        groups.setdefault((row["variant"], row["format"]), []).append(row)
    for (variant, fmt), rows in groups.items():
        psnrs, ssims = [r["psnr"] for r in rows], [r["ssim"] for r in rows]
        table.add_row(variant, fmt, f"{min(psnrs):.1f} / {statistics.mean(psnrs):.1f}",
                      f"{min(ssims):.4f} / {statistics.mean(ssims):.4f}",
                      f"{statistics.median(r['original_ms'] for r in rows):.0f}",
                      f"{statistics.median(r['intermediate_ms'] for r in rows):.0f}")
    console.print(table)
    made = {r["source"]: (r["intermediate_bytes"], r["made_ms"]) for r in results["rows"]}
    console.print(" intermediates: " + ", ".join(
        f"{name} {size / 1000:.0f} KB in {ms:.0f} ms" for name, (size, ms) in made.items()))
