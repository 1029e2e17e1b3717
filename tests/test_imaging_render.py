"""Pixel-level tests of imagehost.imaging.render on images generated with Pillow."""

from __future__ import annotations

import io
import struct

import pytest
from PIL import ExifTags, Image, ImageCms, ImageOps, JpegImagePlugin

from imagehost.imaging.render import (
    OUTPUT_FORMATS,
    THUMBNAIL_SIZE,
    Geometry,
    RenderError,
    RenderSpec,
    plan_thumbnail,
    plan_variant,
    render_variant,
)

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)

# Transpose that turns the *displayed* image into the stored pixels, by EXIF orientation
# (the inverse of what a viewer applies).
STORE_TRANSPOSE = {
    1: None,
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_90,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_270,
}


def encode(im: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, fmt, **options)
    return buffer.getvalue()


def decode(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def render(data: bytes, ext: str, **params) -> Image.Image:
    """Plan against the source's display size, the way the service does, and decode the result."""
    with Image.open(io.BytesIO(data)) as src:
        src_format = src.format
        size = ImageOps.exif_transpose(src).size
    params = {"width": None, "height": None, "crop": False, "quality": None, **params}
    spec = plan_variant(*size, src_format, out_ext=ext, **params)
    return decode(render_variant(data, spec))


def pixel(im: Image.Image, xy: tuple[int, int]) -> tuple[int, ...]:
    return im.convert("RGB").getpixel(xy)


def assert_close(actual, expected, tolerance: int = 12) -> None:
    assert len(actual) == len(expected), (actual, expected)
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (
        actual,
        expected,
    )


def quadrants(width: int, height: int) -> Image.Image:
    """Top-left red, top-right green, bottom half blue."""
    im = Image.new("RGB", (width, height), BLUE)
    im.paste(RED, (0, 0, width // 2, height // 2))
    im.paste(GREEN, (width // 2, 0, width, height // 2))
    return im


def thirds(width: int, height: int) -> Image.Image:
    """Vertical stripes: red, green, blue."""
    im = Image.new("RGB", (width, height), GREEN)
    im.paste(RED, (0, 0, width // 3, height))
    im.paste(BLUE, (2 * width // 3, 0, width, height))
    return im


def plan(src=(1000, 800), src_format="JPEG", ext="jpg", **params) -> RenderSpec:
    params = {"width": None, "height": None, "crop": False, "quality": None, **params}
    return plan_variant(*src, src_format, out_ext=ext, **params)


# -- planning ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "params", "expected"),
    [
        ((1000, 800), {}, (1000, 800, False)),
        ((1000, 800), {"width": 500}, (500, 400, False)),
        ((1000, 800), {"height": 200}, (250, 200, False)),
        ((1000, 800), {"width": 500, "height": 500}, (500, 400, False)),
        ((1000, 800), {"width": 500, "height": 100}, (125, 100, False)),
        ((1000, 800), {"width": 300, "height": 200, "crop": True}, (300, 200, True)),
        ((1000, 800), {"width": 300, "crop": True}, (300, 300, True)),
        ((1000, 800), {"height": 120, "crop": True}, (120, 120, True)),
        ((1000, 800), {"width": 500, "height": 400, "crop": True}, (500, 400, False)),
        ((1000, 800), {"crop": True}, (1000, 800, False)),
        ((1000, 800), {"width": 2000}, (1000, 800, False)),
        ((1000, 800), {"height": 2000}, (1000, 800, False)),
        ((1000, 800), {"width": 2000, "height": 3000}, (1000, 800, False)),
        ((1000, 800), {"width": 2000, "height": 2000, "crop": True}, (800, 800, True)),
        ((1000, 800), {"width": 2000, "height": 1000, "crop": True}, (1000, 500, True)),
        ((1000, 800), {"width": 500, "height": 2000, "crop": True}, (200, 800, True)),
        ((1000, 800), {"width": 2000, "height": 1600, "crop": True}, (1000, 800, False)),
        ((1000, 800), {"width": 900, "crop": True}, (800, 800, True)),
        ((600, 900), {"height": 300, "crop": True}, (300, 300, True)),
        ((600, 900), {"width": 300}, (300, 450, False)),
        ((1001, 667), {"width": 500}, (500, 333, False)),
        ((1000, 10), {"width": 50}, (50, 1, False)),
        ((1000, 10), {"width": 10}, (10, 1, False)),
    ],
)
def test_plan_geometry(src, params, expected):
    spec = plan(src, **params)
    assert (spec.width, spec.height, spec.crop) == expected


@pytest.mark.parametrize(
    "requests",
    [
        [
            {},
            {"width": 1000},
            {"height": 800},
            {"width": 2000},
            {"width": 1000, "height": 800},
            {"width": 5000, "height": 5000},
            {"crop": True},
            {"width": 1000, "height": 800, "crop": True},
            {"width": 2000, "height": 1600, "crop": True},
        ],
        [
            {"width": 500},
            {"height": 400},
            {"width": 500, "height": 400},
            {"width": 500, "height": 9999},
            {"width": 500, "height": 400, "crop": True},
        ],
        [
            {"width": 800, "crop": True},
            {"height": 800, "crop": True},
            {"width": 800, "height": 800, "crop": True},
            {"width": 900, "crop": True},
            {"width": 2000, "height": 2000, "crop": True},
        ],
        [{"width": 400, "quality": 85}, {"width": 400}, {"width": 400, "height": 320}],
    ],
)
def test_equivalent_requests_give_equal_specs(requests):
    specs = {plan(**params) for params in requests}
    assert len(specs) == 1, specs


def test_different_requests_give_different_specs_and_keys():
    specs = [
        plan(width=500),
        plan(width=500, quality=60),
        plan(width=500, ext="webp"),
        plan(width=300, height=200, crop=True),
        plan(width=300, height=200),
    ]
    assert len(set(specs)) == len(specs)
    assert len({spec.cache_key() for spec in specs}) == len(specs)


def test_cache_key_format():
    assert RenderSpec(640, 480, True, "JPEG", 80).cache_key() == "r1-640x480-c-q80.jpg"
    assert RenderSpec(640, 480, False, "PNG", None).cache_key() == "r1-640x480.png"
    assert plan(width=500, ext="jpeg").cache_key() == "r1-500x400-q85.jpg"


def test_jpg_and_jpeg_are_the_same_output():
    assert plan(width=500, ext="jpg") == plan(width=500, ext="jpeg")
    assert OUTPUT_FORMATS["jpg"] == OUTPUT_FORMATS["jpeg"] == ("JPEG", "image/jpeg")


@pytest.mark.parametrize(
    ("ext", "quality", "expected"),
    [
        ("jpg", None, 85),
        ("jpg", 60, 60),
        ("webp", None, 85),
        ("webp", 30, 30),
        ("avif", None, 85),
        ("avif", 50, 50),
        ("png", 60, None),
        ("gif", 60, None),
    ],
)
def test_quality_only_for_lossy_formats(ext, quality, expected):
    spec = plan(src_format="PNG", ext=ext, width=100, quality=quality)
    assert spec.quality == expected
    assert spec.format == OUTPUT_FORMATS[ext][0]


def test_identity_request_ignores_quality():
    spec = plan(src_format="JPEG", ext="jpg", quality=40)
    assert spec == plan(src_format="JPEG", ext="jpg")
    assert spec.quality is None
    assert spec.is_identity(1000, 800, "JPEG")
    assert spec.is_identity(1000, 800, "MPO")


def test_is_identity_needs_same_format_size_and_no_crop():
    assert not plan(src_format="PNG", ext="jpg").is_identity(1000, 800, "PNG")
    assert not plan(width=500).is_identity(1000, 800, "JPEG")
    assert not plan(width=300, crop=True).is_identity(1000, 800, "JPEG")
    assert plan(src_format="PNG", ext="png", width=4000).is_identity(1000, 800, "PNG")


@pytest.mark.parametrize(
    "params",
    [
        {"ext": "bmp"},
        {"ext": "JPG"},
        {"ext": ""},
        {"width": 0},
        {"height": -5},
        {"quality": 0},
        {"quality": 101},
    ],
)
def test_plan_rejects_bad_requests(params):
    with pytest.raises(ValueError):
        plan(**params)


def test_thumbnail_is_a_300_square_crop_never_enlarged():
    assert THUMBNAIL_SIZE == 300
    assert plan_thumbnail(1000, 800, "JPEG", out_ext="jpg") == plan(width=300, crop=True)
    small = plan_thumbnail(200, 120, "PNG", out_ext="png")
    assert (small.width, small.height, small.crop) == (120, 120, True)


def test_geometry_centred_crop_box():
    geometry = Geometry.centred(400, 200, 100, 100, crop=True)
    assert geometry.box == (100.0, 0.0, 300.0, 200.0)
    assert geometry.draft_size(400, 200) == (200, 100)
    assert geometry.transposed().box == (0.0, 100.0, 200.0, 300.0)


# -- geometry of the pixels -------------------------------------------------------------


@pytest.mark.parametrize("ext", ["png", "jpg", "webp", "gif", "avif"])
@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({"width": 150}, (150, 50)),
        ({"height": 20}, (60, 20)),
        ({"width": 100, "height": 100}, (100, 33)),
        ({"width": 100, "crop": True}, (100, 100)),
        ({"width": 200, "height": 50, "crop": True}, (200, 50)),
        ({"width": 1000}, (300, 100)),
    ],
)
def test_output_size(ext, params, size):
    out = render(encode(thirds(300, 100), "PNG"), ext, **params)
    assert out.size == size
    assert out.format == OUTPUT_FORMATS[ext][0]


def test_fit_keeps_everything():
    out = render(encode(thirds(300, 100), "PNG"), "png", width=150)
    assert pixel(out, (5, 25)) == RED
    assert pixel(out, (75, 25)) == GREEN
    assert pixel(out, (145, 25)) == BLUE


def test_square_crop_keeps_the_centre():
    out = render(encode(thirds(300, 100), "PNG"), "png", width=50, crop=True)
    assert out.size == (50, 50)
    for xy in [(1, 1), (48, 1), (25, 25), (1, 48), (48, 48)]:
        assert pixel(out, xy) == GREEN


def test_wide_crop_cuts_the_sides_evenly():
    # Cover 200x100 of 300x100: the region is x 50..250, so red and blue keep 50 px each.
    out = render(encode(thirds(300, 100), "PNG"), "png", width=200, height=100, crop=True)
    assert out.size == (200, 100)
    assert pixel(out, (45, 50)) == RED
    assert pixel(out, (55, 50)) == GREEN
    assert pixel(out, (145, 50)) == GREEN
    assert pixel(out, (155, 50)) == BLUE


def test_oversized_crop_shrinks_the_box_not_the_image():
    out = render(encode(thirds(300, 100), "PNG"), "png", width=1000, height=1000, crop=True)
    assert out.size == (100, 100)
    assert pixel(out, (1, 50)) == GREEN  # centre third at full resolution
    assert pixel(out, (98, 50)) == GREEN


def test_render_accepts_a_path(tmp_path):
    path = tmp_path / "source.png"
    path.write_bytes(encode(thirds(300, 100), "PNG"))
    spec = plan((300, 100), "PNG", ext="png", width=150)
    assert decode(render_variant(path, spec)).size == (150, 50)
    assert decode(render_variant(str(path), spec)).size == (150, 50)


def test_missing_path_is_not_a_decode_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        render_variant(tmp_path / "missing.png", plan(ext="png"))


@pytest.mark.parametrize(
    "data",
    [b"", b"not an image at all", encode(thirds(300, 100), "JPEG")[:400]],
    ids=["empty", "garbage", "truncated-jpeg"],
)
def test_undecodable_source_raises_render_error(data):
    with pytest.raises(RenderError):
        render_variant(data, plan((300, 100), ext="png", width=100))


# -- JPEG draft fast path ---------------------------------------------------------------


@pytest.fixture
def drafts(monkeypatch):
    """Records (requested size, size after draft) for every JPEG draft() call."""
    calls = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = original(self, mode, size)
        calls.append((size, self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


def jpeg_with_orientation(display: Image.Image, orientation: int, **options) -> bytes:
    transpose = STORE_TRANSPOSE[orientation]
    stored = display if transpose is None else display.transpose(transpose)
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return encode(stored, "JPEG", exif=exif, quality=95, **options)


@pytest.mark.parametrize(
    ("orientation", "params", "drafted", "size"),
    [
        (1, {"width": 500}, (500, 125), (500, 125)),
        (6, {"width": 500}, (125, 500), (500, 125)),
        (1, {"width": 400, "height": 400, "crop": True}, (2000, 500), (400, 400)),
        (8, {"width": 400, "height": 400, "crop": True}, (500, 2000), (400, 400)),
        (1, {"width": 100, "crop": True}, (500, 125), (100, 100)),
        (1, {"width": 2000}, (2000, 500), (2000, 500)),
        (1, {}, (4000, 1000), (4000, 1000)),
    ],
)
def test_jpeg_draft_uses_the_real_target_size(drafts, orientation, params, drafted, size):
    display = thirds(4000, 1000)
    out = render(jpeg_with_orientation(display, orientation), "png", **params)
    assert [after for _, after in drafts] == [drafted]
    assert out.size == size
    # The region must still be right after the decoder-side reduction.
    assert_close(pixel(out, (size[0] // 2, size[1] // 2)), GREEN)
    if not params.get("crop"):
        assert_close(pixel(out, (2, size[1] // 2)), RED)
        assert_close(pixel(out, (size[0] - 3, size[1] // 2)), BLUE)


def test_jpeg_draft_on_odd_sizes_keeps_the_edges(drafts):
    # 1003 is not a multiple of 8: the drafted image has a partial last column.
    display = thirds(1003, 501)
    out = render(jpeg_with_orientation(display, 3), "png", width=125)
    assert drafts[0][1] == (126, 63)
    assert out.size == (125, 62)
    assert_close(pixel(out, (0, 31)), RED)
    assert_close(pixel(out, (124, 31)), BLUE)


# -- EXIF orientation -------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize(
    ("params", "size", "samples"),
    [
        ({}, (640, 320), {(10, 10): RED, (630, 10): GREEN, (320, 310): BLUE}),
        ({"width": 80}, (80, 40), {(5, 5): RED, (75, 5): GREEN, (40, 35): BLUE}),
        ({"width": 40, "crop": True}, (40, 40), {(5, 5): RED, (35, 5): GREEN, (20, 35): BLUE}),
    ],
    ids=["original", "fit", "crop"],
)
def test_orientation_is_applied(orientation, params, size, samples):
    display = quadrants(640, 320)
    data = jpeg_with_orientation(display, orientation)
    with Image.open(io.BytesIO(data)) as stored:
        # The fixture itself: stored axes swap for 5-8 and Pillow's viewer logic agrees.
        assert stored.size == ((320, 640) if orientation >= 5 else (640, 320))
        assert_close(pixel(ImageOps.exif_transpose(stored), (10, 10)), RED)
    out = render(data, "png", **params)
    assert out.size == size
    for xy, colour in samples.items():
        assert_close(pixel(out, xy), colour)
    assert not out.getexif()


def test_orientation_on_png_source():
    stored = quadrants(200, 100).transpose(STORE_TRANSPOSE[6])
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    out = render(encode(stored, "PNG", exif=exif), "png", width=100)
    assert out.size == (100, 50)
    assert pixel(out, (5, 5)) == RED
    assert pixel(out, (95, 5)) == GREEN
    assert not out.getexif()


# -- colour -----------------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb():
    cmyk = Image.new("CMYK", (64, 64), (0, 255, 255, 0))  # red ink
    cmyk.paste((255, 0, 255, 0), (32, 0, 64, 64))  # green ink
    for ext in ("png", "jpg", "webp"):
        out = render(encode(cmyk, "JPEG", quality=95), ext, width=32)
        assert out.mode == "RGB"
        assert out.size == (32, 32)
        assert_close(pixel(out, (4, 16)), RED, tolerance=20)
        assert_close(pixel(out, (28, 16)), GREEN, tolerance=20)


def test_png_alpha_flattens_on_white_for_jpeg():
    im = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, 50, 50))
    im.paste((0, 0, 0, 128), (0, 50, 100, 100))
    out = render(encode(im, "PNG"), "jpg", width=50)
    assert out.mode == "RGB"
    assert out.size == (50, 50)
    assert_close(pixel(out, (10, 10)), RED)
    assert_close(pixel(out, (40, 10)), WHITE, tolerance=4)
    assert_close(pixel(out, (25, 40)), (127, 127, 127), tolerance=6)


def test_png_alpha_is_kept_for_png():
    im = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    im.paste((255, 0, 0, 255), (0, 0, 50, 100))
    out = render(encode(im, "PNG"), "png", width=50)
    assert out.mode == "RGBA"
    assert out.getpixel((5, 25)) == (255, 0, 0, 255)
    assert out.getpixel((45, 25))[3] == 0
    # Premultiplied resampling: no dark fringe where red meets transparency.
    edge = out.getpixel((24, 25))
    assert edge[3] > 0 and edge[0] > 240


def palette_image(transparent: bool) -> Image.Image:
    im = Image.new("P", (120, 60), 2)
    im.putpalette([*RED, *GREEN, *BLUE] + [0] * (253 * 3))
    im.paste(0, (0, 0, 40, 60))
    im.paste(1, (40, 0, 80, 60))
    if transparent:
        im.info["transparency"] = 2
    return im


@pytest.mark.parametrize("source_format", ["PNG", "GIF"])
def test_palette_image_with_transparency(source_format):
    data = encode(palette_image(transparent=True), source_format)
    as_png = render(data, "png", width=60)
    assert as_png.mode == "RGBA"
    assert as_png.getpixel((5, 15)) == (*RED, 255)
    assert as_png.getpixel((30, 15)) == (*GREEN, 255)
    assert as_png.getpixel((55, 15))[3] == 0
    as_jpeg = render(data, "jpg", width=60)
    assert_close(pixel(as_jpeg, (5, 15)), RED)
    assert_close(pixel(as_jpeg, (55, 15)), WHITE, tolerance=4)


def test_palette_image_without_transparency():
    out = render(encode(palette_image(transparent=False), "PNG"), "jpg", width=60)
    assert out.mode == "RGB"
    assert_close(pixel(out, (5, 15)), RED)
    assert_close(pixel(out, (55, 15)), BLUE)


def grey_steps() -> Image.Image:
    im = Image.new("L", (100, 40), 30)
    im.paste(200, (50, 0, 100, 40))
    return im


@pytest.mark.parametrize(("ext", "mode"), [("jpg", "L"), ("png", "L"), ("gif", "P")])
def test_grayscale_stays_grayscale(ext, mode):
    out = render(encode(grey_steps(), "PNG"), ext, width=50)
    assert out.mode == mode  # Pillow reads a grey GIF back as P with a grey palette
    assert out.size == (50, 20)
    grey = out.convert("RGB")
    assert_close(grey.getpixel((5, 10)), (30, 30, 30), tolerance=3)
    assert_close(grey.getpixel((45, 10)), (200, 200, 200), tolerance=3)


def test_grayscale_to_webp_is_grey():
    out = render(encode(grey_steps(), "JPEG", quality=95), "webp", width=50)
    assert_close(pixel(out, (5, 10)), (30, 30, 30), tolerance=6)
    assert_close(pixel(out, (45, 10)), (200, 200, 200), tolerance=6)


def test_sixteen_bit_grey_is_scaled_not_clipped():
    im = Image.new("I;16", (40, 40), 40000)
    im.paste(Image.new("I;16", (20, 40), 10000), (20, 0))  # paste(int) mangles I;16
    out = render(encode(im, "PNG"), "png", width=20)
    assert out.mode == "L"
    assert abs(out.getpixel((2, 10)) - 40000 // 257) <= 1
    assert abs(out.getpixel((18, 10)) - 10000 // 257) <= 1


def s15fixed16(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + s15fixed16(x) + s15fixed16(y) + s15fixed16(z)


def swapped_primaries_profile() -> bytes:
    """An RGB display profile whose red colorant is sRGB's green and vice versa.

    Converting its pure red to sRGB must give pure green, which no untouched pixel does.
    """
    text = b"Swapped RGB\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + bytes(4 + 4 + 2 + 1 + 67)
    linear = b"curv\0\0\0\0" + struct.pack(">I", 0)  # count 0: identity curve
    tags = [
        (b"desc", desc),
        (b"wtpt", xyz_tag(0.9642, 1.0, 0.8249)),
        (b"rXYZ", xyz_tag(0.3851, 0.7169, 0.0971)),  # sRGB green (D50)
        (b"gXYZ", xyz_tag(0.4361, 0.2225, 0.0139)),  # sRGB red (D50)
        (b"bXYZ", xyz_tag(0.1431, 0.0606, 0.7141)),
        (b"rTRC", linear),
        (b"gTRC", linear),
        (b"bTRC", linear),
    ]
    offset = 128 + 4 + 12 * len(tags)
    table, data = b"", b""
    for signature, body in tags:
        body += bytes(-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (
        struct.pack(">I", size)
        + b"lcms"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + bytes(12)
        + b"acsp"
        + bytes(24)
        + struct.pack(">I", 0)
        + xyz_tag(0.9642, 1.0, 0.8249)[8:]
        + bytes(48)
    )
    assert len(header) == 128
    return header + struct.pack(">I", len(tags)) + table + data


def two_colour(mode: str = "RGB") -> Image.Image:
    im = Image.new(mode, (100, 50), RED + ((255,) if mode == "RGBA" else ()))
    im.paste((0, 0, 255, 255)[: len(mode)], (50, 0, 100, 50))
    return im


@pytest.mark.parametrize(("source_format", "ext"), [("PNG", "png"), ("JPEG", "jpg")])
def test_embedded_profile_is_converted_to_srgb(source_format, ext):
    profile = swapped_primaries_profile()
    assert "Swapped" in ImageCms.getProfileDescription(
        ImageCms.ImageCmsProfile(io.BytesIO(profile))
    )
    data = encode(two_colour(), source_format, icc_profile=profile)
    out = render(data, ext, width=50)
    assert_close(pixel(out, (5, 12)), GREEN, tolerance=20)
    assert_close(pixel(out, (45, 12)), BLUE, tolerance=20)
    assert "icc_profile" not in out.info


def test_embedded_profile_keeps_alpha():
    data = encode(two_colour("RGBA"), "PNG", icc_profile=swapped_primaries_profile())
    out = render(data, "png", width=50)
    assert out.mode == "RGBA"
    assert_close(out.getpixel((5, 12)), (*GREEN, 255), tolerance=20)
    assert "icc_profile" not in out.info


def test_srgb_and_unreadable_profiles_leave_colours_alone():
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for profile in (srgb, b"definitely not an ICC profile"):
        out = render(encode(two_colour(), "PNG", icc_profile=profile), "png", width=50)
        assert pixel(out, (5, 12)) == RED
        assert pixel(out, (45, 12)) == BLUE
        assert "icc_profile" not in out.info


# -- metadata ---------------------------------------------------------------------------


def jpeg_with_metadata() -> bytes:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 1
    exif[ExifTags.Base.Make] = "Camera"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (51.0, 30.0, 0.0)
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><secret>here</secret></x:xmpmeta>'
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return encode(thirds(300, 100), "JPEG", exif=exif, xmp=xmp, icc_profile=srgb)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp", "gif", "avif"])
@pytest.mark.parametrize("params", [{}, {"width": 150}], ids=["same-size", "resized"])
def test_output_has_no_exif_gps_or_xmp(ext, params):
    data = jpeg_with_metadata()
    with Image.open(io.BytesIO(data)) as src:
        assert src.getexif().get_ifd(ExifTags.IFD.GPSInfo)  # the fixture really has GPS
        assert "xmp" in src.info
    out = render(data, ext, **params)
    assert not out.getexif()
    assert not {"exif", "xmp", "icc_profile"} & set(out.info)


# -- formats ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ext", "rgb_mode", "rgba_mode"),
    [
        ("jpg", "RGB", "RGB"),
        ("jpeg", "RGB", "RGB"),
        ("png", "RGB", "RGBA"),
        ("webp", "RGB", "RGBA"),
        ("gif", "P", "P"),
        ("avif", "RGB", "RGBA"),
    ],
)
def test_each_output_format(ext, rgb_mode, rgba_mode):
    rgb = render(encode(thirds(300, 150), "PNG"), ext, width=120)
    assert (rgb.format, rgb.size, rgb.mode) == (OUTPUT_FORMATS[ext][0], (120, 60), rgb_mode)
    assert_close(pixel(rgb, (10, 30)), RED, tolerance=25)
    assert_close(pixel(rgb, (110, 30)), BLUE, tolerance=25)

    rgba_src = thirds(300, 150).convert("RGBA")
    rgba_src.paste((0, 0, 0, 0), (200, 0, 300, 150))
    rgba = render(encode(rgba_src, "PNG"), ext, width=120)
    assert (rgba.size, rgba.mode) == ((120, 60), rgba_mode)
    if rgba_mode == "RGBA":
        assert rgba.getpixel((110, 30))[3] == 0
    elif rgba_mode == "P":
        assert rgba.getpixel((110, 30)) == rgba.info["transparency"]
        assert_close(pixel(rgba, (10, 30)), RED, tolerance=25)
    else:
        assert_close(pixel(rgba, (110, 30)), WHITE, tolerance=6)


def test_quality_changes_the_output():
    noisy = Image.effect_noise((200, 200), 60).convert("RGB")
    data = encode(noisy, "PNG")
    low = render_variant(data, plan((200, 200), "PNG", ext="jpg", quality=10))
    high = render_variant(data, plan((200, 200), "PNG", ext="jpg", quality=95))
    assert len(low) < len(high) / 2


# -- animation --------------------------------------------------------------------------

FRAME_COLOURS = [RED, GREEN, BLUE]
DURATIONS = [100, 200, 300]


def animation(source_format: str, **options) -> bytes:
    frames = [Image.new("RGB", (120, 60), colour) for colour in FRAME_COLOURS]
    for index, frame in enumerate(frames):
        frame.paste(WHITE, (0, 0, 12 * (index + 1), 6))  # frames differ in more than colour
    return encode(
        frames[0],
        source_format,
        save_all=True,
        append_images=frames[1:],
        duration=DURATIONS,
        loop=0,
        **options,
    )


def frame_info(im: Image.Image) -> list[tuple[tuple[int, int], int, tuple[int, ...]]]:
    result = []
    for index in range(im.n_frames):
        im.seek(index)
        im.load()
        result.append((im.size, im.info["duration"], pixel(im, (30, 20))))
    return result


@pytest.mark.parametrize("source_format", ["GIF", "WEBP"])
@pytest.mark.parametrize("ext", ["gif", "webp"])
def test_animation_stays_animated(source_format, ext):
    out = render(animation(source_format, lossless=True), ext, width=60)
    assert out.is_animated
    assert out.n_frames == 3
    assert out.info["loop"] == 0
    frames = frame_info(out)
    assert [size for size, _, _ in frames] == [(60, 30)] * 3
    assert [duration for _, duration, _ in frames] == DURATIONS
    for (_, _, colour), expected in zip(frames, FRAME_COLOURS, strict=True):
        assert_close(colour, expected, tolerance=20)


def test_animated_crop_and_transparency_to_gif():
    frames = [Image.new("RGBA", (120, 60), (*colour, 255)) for colour in FRAME_COLOURS]
    for frame in frames:
        frame.paste((0, 0, 0, 0), (40, 0, 60, 60))
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=DURATIONS)
    out = render(data, "gif", width=60, height=60, crop=True)
    assert out.n_frames == 3
    for index, expected in enumerate(FRAME_COLOURS):
        out.seek(index)
        rgba = out.convert("RGBA")
        assert rgba.size == (60, 60)
        # The crop keeps source x 30..90: the transparent strip x 40..60 lands at 10..30.
        assert rgba.getpixel((5, 30)) == (*expected, 255)
        assert rgba.getpixel((20, 30))[3] == 0
        assert rgba.getpixel((50, 30)) == (*expected, 255)
        # Frames are whole canvases: a viewer must clear before drawing the next one,
        # or transparent pixels would show the previous frame.
        assert out.disposal_method == 2


@pytest.mark.parametrize(("source_format", "ext"), [("GIF", "jpg"), ("WEBP", "png")])
def test_animation_to_still_format_takes_the_first_frame(source_format, ext):
    out = render(animation(source_format, lossless=True), ext, width=60)
    assert not getattr(out, "is_animated", False)
    assert out.size == (60, 30)
    assert_close(pixel(out, (30, 20)), RED, tolerance=10)


@pytest.mark.parametrize("ext", ["jpg", "png", "webp"])
def test_variants_are_the_bytes_pillow_writes_to_memory(ext):
    # Non-WebP variants are encoded into a memfd so the encoder runs without the GIL;
    # the bytes must be exactly those of a plain BytesIO save of the same frame.
    from imagehost.imaging import render as render_module

    source = encode(Image.radial_gradient("L").convert("RGB").resize((640, 480)), "JPEG")
    spec = plan_variant(640, 480, "JPEG", width=320, height=None, crop=False,
                        out_ext=ext, quality=None)
    rendered = render_variant(source, spec)
    with render_module.encode_buffer(spec.format) as buffer:
        assert isinstance(buffer, io.BytesIO) == (spec.format == "WEBP")
    options = render_module.encoder_options(spec)
    assert rendered == encode(frame_source(source, spec), spec.format, **options)


def frame_source(source: bytes, spec: RenderSpec) -> Image.Image:
    """The frame the renderer encodes, obtained the same way it does."""
    from imagehost.imaging import render as render_module

    with Image.open(io.BytesIO(source)) as im:
        frames, _durations, _loop = render_module.render_frames(im, spec)
        frames[0].load()
        return frames[0].copy()
