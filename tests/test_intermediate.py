"""The intermediate of expensive sources: its quality (PSNR/SSIM of variants from it
against variants from the original) and its rules, in Pillow alone."""

from __future__ import annotations

import io

import pytest
from PIL import ExifTags, Image, ImageDraw

from imagehost.imaging.intermediate import (
    DEFAULT_LONG_SIDE,
    NotFromIntermediate,
    make_intermediate,
    render_from_intermediate,
    serves,
    wanted,
)
from imagehost.imaging.render import plan_variant, render_variant
from imagehost.imaging.similarity import psnr, ssim
from tests.test_imaging_render import decode as decoded
from tests.test_imaging_render import encode as encoded
from tests.test_imaging_render import swapped_primaries_profile

SIZE = (2200, 1650)  # long side 1.43 x the default intermediate's


def photo_like(size: tuple[int, int] = SIZE, alpha: bool = False) -> Image.Image:
    """Gradients, noise and hard edges: what resampling paths differ on."""
    width, height = size
    red = Image.linear_gradient("L").resize(size)
    green = Image.radial_gradient("L").resize(size)
    blue = Image.effect_noise(size, 24)
    im = Image.merge("RGB", (red, green, blue))
    draw = ImageDraw.Draw(im)
    for n in range(12):  # edges of every direction and some fine lines
        x, y = width * n // 12, height * (11 - n) // 12
        draw.rectangle((x, y, x + width // 10, y + height // 14), fill=(250, 240 - 20 * n, 10))
        draw.line((0, y, width, height - y), fill=(0, 0, 0), width=3)
    draw.ellipse((width // 3, height // 3, width // 2, height // 2), outline=(255, 255, 255),
                 width=9)
    # A subject off centre (fine stripes) for smart crops to find.
    for x in range(width * 6 // 10, width * 85 // 100, 12):
        draw.line((x, height * 3 // 10, x + 40, height * 7 // 10), fill=(20, 20, 60), width=4)
    if alpha:
        mask = Image.radial_gradient("L").resize(size).point(lambda v: 255 - v)
        ImageDraw.Draw(mask).rectangle((0, 0, width // 5, height), fill=0)  # clear strip
        im.putalpha(mask)
    return im


def with_orientation(im: Image.Image, fmt: str, orientation: int, **options) -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encoded(im, fmt, exif=exif.tobytes(), **options)


SOURCES = {
    "png": lambda: encoded(photo_like(), "PNG", compress_level=1),
    "png-alpha": lambda: encoded(photo_like(alpha=True), "PNG", compress_level=1),
    "webp": lambda: encoded(photo_like(), "WEBP", quality=90, method=0),
    "webp-alpha": lambda: encoded(photo_like(alpha=True), "WEBP", lossless=True, quality=0,
                                  method=0),
    # Stored sideways: displayed 1650 x 2200.
    "png-rotated": lambda: with_orientation(photo_like(), "PNG", 6, compress_level=1),
    # Red and green swapped by its profile: converted to sRGB after the resize.
    "png-profile": lambda: encoded(photo_like(), "PNG", compress_level=1,
                                   icc_profile=swapped_primaries_profile()),
}
# (query-like request, output extension): fits, centre and focal-point crops.
REQUESTS = [
    ({"width": 300, "height": 300, "crop": True}, "jpg"),
    ({"width": 512, "height": 512, "crop": False}, "jpg"),
    ({"width": 720, "height": 720, "crop": False}, "webp"),
    ({"width": 400, "height": 250, "crop": True, "focus": (200, 700)}, "png"),
]
#: Lossless outputs show the intermediate's own difference; lossy ones add their encoder's.
MIN_PSNR = {"png": 40.0, "jpg": 36.0, "webp": 36.0}
MIN_SSIM = 0.97


@pytest.fixture(scope="module")
def sources() -> dict[str, tuple[bytes, bytes, tuple[int, int], str]]:
    """Each source's bytes, its intermediate, its display size and its format."""
    made = {}
    for name, make in SOURCES.items():
        data = make()
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
        size = (SIZE[1], SIZE[0]) if name.endswith("rotated") else SIZE
        made[name] = (data, make_intermediate(data, DEFAULT_LONG_SIDE), size, fmt)
    return made


@pytest.mark.parametrize("name", list(SOURCES))
def test_variants_from_the_intermediate_look_like_variants_from_the_original(sources, name):
    data, intermediate, (width, height), fmt = sources[name]
    for request, ext in REQUESTS:
        spec = plan_variant(width, height, fmt, out_ext=ext, quality=None, **request)
        assert serves(spec, width, height, DEFAULT_LONG_SIDE), (request, ext)
        expected = decoded(render_variant(data, spec))
        actual = decoded(render_from_intermediate(intermediate, spec))
        assert actual.size == expected.size == (spec.width, spec.height)
        assert actual.mode == expected.mode  # alpha kept where the original path keeps it
        assert not {"exif", "icc_profile", "xmp"} & set(actual.info)
        assert psnr(actual, expected) >= MIN_PSNR[ext], (name, request, ext)
        assert ssim(actual, expected) >= MIN_SSIM, (name, request, ext)


def test_the_measure_can_fail(sources):
    """The thresholds are not loose: a variant a little off (one pixel shifted, or the
    source's orientation ignored) is below them."""
    data, intermediate, (width, height), fmt = sources["png-rotated"]
    spec = plan_variant(width, height, fmt, width=400, height=400, crop=True, out_ext="png",
                        quality=None)
    expected = decoded(render_variant(data, spec))
    shifted = expected.transform(expected.size, Image.Transform.AFFINE, (1, 0, 1, 0, 1, 0))
    assert psnr(shifted, expected) < MIN_PSNR["png"]
    plain = encoded(photo_like(), "PNG", compress_level=1)
    upright = decoded(render_variant(plain, spec))
    assert ssim(upright, expected) < MIN_SSIM
    profiled = sources["png-profile"][0]
    spec = plan_variant(*SIZE, "PNG", width=400, height=400, crop=False, out_ext="png",
                        quality=None)
    assert psnr(decoded(render_variant(plain, spec)),
                decoded(render_variant(profiled, spec))) < MIN_PSNR["png"]


def test_the_intermediate_is_reduced_and_keeps_orientation_and_alpha(sources):
    formats = {name: decoded(made[1]) for name, made in sources.items()}
    assert {name: (im.format, im.mode) for name, im in formats.items()} == {
        "png": ("JPEG", "RGB"), "png-alpha": ("WEBP", "RGBA"), "webp": ("JPEG", "RGB"),
        "webp-alpha": ("WEBP", "RGBA"), "png-rotated": ("JPEG", "RGB"),
        "png-profile": ("JPEG", "RGB")}
    assert {im.size for im in formats.values()} == {(1536, 1152)}  # the stored layout
    assert formats["png-rotated"].getexif()[ExifTags.Base.Orientation] == 6
    assert ExifTags.Base.Orientation not in formats["png"].getexif()
    assert formats["png-profile"].info["icc_profile"] == swapped_primaries_profile()


def test_only_expensive_large_sources_get_one():
    assert wanted("PNG", 2200, 1650, 1536)
    assert wanted("WEBP", 1000, 2200, 1536)
    assert not wanted("JPEG", 4000, 3000, 1536)  # JPEG draft is cheaper still
    assert not wanted("PNG", 2000, 1500, 1536)  # not worth a second file
    assert not wanted("PNG", 4000, 3000, 0)  # turned off


def test_only_clearly_smaller_variants_come_from_it():
    def spec(width, height, crop=False):
        return plan_variant(4000, 3000, "PNG", width=width, height=height, crop=crop,
                            out_ext="jpg", quality=None)

    assert serves(spec(768, 768), 4000, 3000, 1536)
    assert not serves(spec(769, 769), 4000, 3000, 1536)
    assert serves(spec(576, 576, crop=True), 4000, 3000, 1536)  # covers 3000 px of height
    assert not serves(spec(577, 577, crop=True), 4000, 3000, 1536)
    assert not serves(spec(None, None), 4000, 3000, 1536)  # the original's size
    smart = plan_variant(4000, 3000, "PNG", width=300, height=400, crop=True, smart=True,
                         out_ext="jpg", quality=None)
    assert not serves(smart, 4000, 3000, 1536)  # its window must not depend on the source


def test_an_animated_output_of_an_animation_needs_the_original():
    frames = [photo_like((2200, 1650)).resize((2200, 1650)) for _ in range(2)]
    frames[1] = frames[1].transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    data = encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:], quality=50,
                   method=0)
    intermediate = make_intermediate(data, DEFAULT_LONG_SIDE)
    animated = plan_variant(2200, 1650, "WEBP", width=400, height=400, crop=False,
                            out_ext="webp", quality=None)
    with pytest.raises(NotFromIntermediate):
        render_from_intermediate(intermediate, animated)
    still = plan_variant(2200, 1650, "WEBP", width=400, height=400, crop=False,
                         out_ext="jpg", quality=None)
    assert psnr(decoded(render_from_intermediate(intermediate, still)),
                decoded(render_variant(data, still))) >= MIN_PSNR["jpg"]
