"""Downloaded bytes -> stored image: formats, bombs, broken files, and img2dataset's resizer as the reference."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from laion5b_spark.download.image import ImageProcessor, ImageSettings, sniff


def picture(w, h, fmt="JPEG", mode="RGB", seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 255 // max(1, w - 1)), (y * 255 // max(1, h - 1)), ((x + y) % 256)], -1).astype(np.uint8)
    arr[h // 3: h // 2, w // 4: w // 2] = rng.integers(0, 255, 3)  # a block, so crops and pads show
    im = Image.fromarray(arr, "RGB").convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


def decoded(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.int16)


def img2dataset_resize(data: bytes, **kw):
    from img2dataset.resizer import Resizer

    r = Resizer(image_size=kw.get("image_size", 256), resize_mode=kw.get("resize_mode", "border"),
                resize_only_if_bigger=kw.get("resize_only_if_bigger", False))
    return r(io.BytesIO(data))


def test_sniff():
    assert sniff(picture(8, 8, "JPEG")) == "jpeg" and sniff(picture(8, 8, "PNG")) == "png"
    assert sniff(picture(8, 8, "WEBP")) == "webp" and sniff(picture(8, 8, "GIF", "P")) == "gif"
    assert sniff(b"<!DOCTYPE html><html>") is None and sniff(b"") is None


@pytest.mark.parametrize("mode", ["border", "keep_ratio", "keep_ratio_largest", "center_crop", "no"])
@pytest.mark.parametrize("fmt,size", [("JPEG", (640, 480)), ("PNG", (300, 500)), ("JPEG", (120, 90))])
def test_full_decode_equals_img2dataset(mode, fmt, size):
    data = picture(*size, fmt)
    ours = ImageProcessor(ImageSettings(resize_mode=mode, reduced_decode=False))(data)
    ref_bytes, w, h, ow, oh, err = img2dataset_resize(data, resize_mode=mode)
    assert err is None and ours.reason is None
    assert (ours.width, ours.height, ours.original_width, ours.original_height) == (w, h, ow, oh)
    assert ours.image == ref_bytes  # the same transforms and encoder: the same bytes


@pytest.mark.parametrize("mode,expect_r", [("border", 4), ("keep_ratio", 2), ("center_crop", 2)])
def test_reduced_jpeg_decode_is_close_to_full_decode(mode, expect_r):
    data = picture(1024, 768, "JPEG")
    fast = ImageProcessor(ImageSettings(resize_mode=mode))
    assert fast.reduction("jpeg", 1024, 768) == expect_r
    a = fast(data)
    ref_bytes, w, h, ow, oh, _ = img2dataset_resize(data, resize_mode=mode)
    assert (a.width, a.height, a.original_width, a.original_height) == (w, h, 1024, 768)
    diff = np.abs(decoded(a.image) - decoded(ref_bytes))
    assert diff.mean() < 4.0, diff.mean()  # DCT-domain downscale vs area interpolation: visually the same


def test_bomb_is_refused_from_the_header():
    im = Image.new("1", (12_000, 12_000))  # 144 MP, a few KB as PNG
    buf = io.BytesIO()
    im.save(buf, "PNG")
    data = buf.getvalue()
    assert len(data) < 100_000
    r = ImageProcessor(ImageSettings(max_pixels=89_478_485))(data)
    assert r.reason == "decompression_bomb" and r.image is None and r.original_width == 12_000


@pytest.mark.parametrize("data,reason", [
    (b"<html>not an image</html>" * 10, "not_an_image"),
    (b"\xff\xd8\xff\xe0" + b"\x00garbage" * 50, "decode_error"),
    (picture(64, 64, "PNG")[:60], "decode_error"),
])
def test_broken_inputs_are_counted(data, reason):
    r = ImageProcessor()(data)
    assert r.image is None and r.reason == reason and r.sha256


def test_size_filters_and_formats():
    small = picture(40, 30, "JPEG")
    assert ImageProcessor(ImageSettings(min_bytes=5_000))(small).reason == "image_too_small"
    assert ImageProcessor(ImageSettings(min_image_size=64))(small).reason == "image_too_small"
    assert ImageProcessor(ImageSettings(formats=("jpeg",)))(picture(40, 30, "PNG")).reason == "not_an_image"
    assert ImageProcessor(ImageSettings(max_aspect_ratio=2))(picture(300, 40, "PNG")).reason == "bad_aspect_ratio"


def test_skip_reencode_keeps_the_original_bytes():
    data = picture(200, 100, "JPEG")
    r = ImageProcessor(ImageSettings(resize_only_if_bigger=True, skip_reencode=True))(data)
    assert r.image == data and (r.width, r.height) == (200, 100)
    r = ImageProcessor(ImageSettings(resize_only_if_bigger=True))(data)
    assert r.image != data and (r.width, r.height) == (200, 100)


def test_every_image_reason_is_in_the_accounting_vocabulary():
    import re
    from pathlib import Path

    import laion5b_spark.download.image as mod
    from laion5b_spark.accounting import REASONS

    src = Path(mod.__file__).read_text()
    used = set(re.findall(r'reason="([a-z_]+)"', src)) | set(re.findall(r'out.reason, out.message = "([a-z_]+)"', src))
    assert {"not_an_image", "decompression_bomb", "decode_error", "image_too_small"} <= used <= set(REASONS)


def test_exif_is_kept_as_img2dataset_names_it():
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x0110] = "Model 7"  # Model
    buf = io.BytesIO()
    Image.new("RGB", (400, 300), (10, 200, 30)).save(buf, "JPEG", exif=exif.tobytes())
    tags = json.loads(ImageProcessor()(buf.getvalue()).exif)
    assert tags["Image Make"] == "TestCam" and tags["Image Model"] == "Model 7"
    assert ImageProcessor(ImageSettings(extract_exif=False))(buf.getvalue()).exif is None
    plain = io.BytesIO()
    Image.new("RGB", (400, 300)).save(plain, "JPEG")
    assert ImageProcessor()(plain.getvalue()).exif is None


# --- issue 15, class 5: GIF (OpenCV here is built without it) and 16-bit PNG (was clipped to white) ---------------

def img2dataset_matting(rgba: np.ndarray) -> np.ndarray:
    """img2dataset.resizer.Resizer's alpha matting, verbatim (float64)."""
    alpha = rgba[:, :, 3, np.newaxis]
    out = alpha / 255 * rgba[..., :3] + 255 - alpha
    return np.rint(out.clip(min=0, max=255)).astype(np.uint8)


def lossless(**kw) -> ImageProcessor:
    return ImageProcessor(ImageSettings(resize_mode="no", encode_format="png", reduced_decode=False, **kw))


def stored_rgb(r) -> np.ndarray:
    assert r.reason is None, r.message
    return np.asarray(Image.open(io.BytesIO(r.image)).convert("RGB"))


def gif_bytes(frames, **kw) -> bytes:
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=len(frames) > 1, append_images=frames[1:], **kw)
    return buf.getvalue()


def test_gif_palette_with_transparency_is_matted_on_white():
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 255, (150, 200, 3), np.uint8)
    arr[40:90, 50:120] = (0, 0, 0)
    im = Image.fromarray(arr).quantize(200)
    t = int(np.asarray(im)[60, 80])  # the black block's index becomes transparent
    data = gif_bytes([im], transparency=t)
    reference = img2dataset_matting(np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")))
    assert (reference[60, 80] == 255).all() and not (reference == 255).all()
    r = lossless()(data)
    assert (r.original_width, r.original_height, r.width, r.height, r.mime) == (200, 150, 200, 150, "image/gif")
    assert np.array_equal(stored_rgb(r), reference)


def test_gif_grayscale_and_animated_take_the_first_frame():
    gray = Image.fromarray(np.tile(np.arange(0, 250, 2, dtype=np.uint8), (60, 1)), "L")
    data = gif_bytes([gray], transparency=10)
    reference = img2dataset_matting(np.asarray(Image.open(io.BytesIO(data)).convert("RGBA")))
    assert np.array_equal(stored_rgb(lossless()(data)), reference)
    frames = [Image.new("P", (64, 48), i) for i in (5, 80, 160)]
    for f in frames:
        f.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
    data = gif_bytes(frames, duration=50, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 3
    first = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    assert np.array_equal(stored_rgb(lossless()(data)), first) and tuple(first[0, 0]) == (5, 250, 2)


def test_gif_is_stored_with_the_default_settings():
    data = gif_bytes([Image.new("P", (300, 200), 7)])
    r = ImageProcessor()(data)  # download.formats lists gif
    assert r.reason is None and (r.width, r.height, r.original_width, r.original_height) == (256, 256, 300, 200)
    assert r.image[:3] == b"\xff\xd8\xff"


@pytest.mark.parametrize("color_type,channels", [(0, 1), (4, 2), (2, 3), (6, 4)])
@pytest.mark.parametrize("mode", ["no", "border"])
def test_16bit_png_equals_its_8bit_twin(color_type, channels, mode):
    """v16 = v8 * 257 is the same image: the stored bytes must be identical (before: clipped to 255, white)."""
    from image_samples import png

    rng = np.random.default_rng(color_type)
    a8 = rng.integers(0, 256, (90, 120, channels) if channels > 1 else (90, 120), np.uint16)
    p8, p16 = png(a8, 8, color_type), png(a8 * 257, 16, color_type)
    process = ImageProcessor(ImageSettings(resize_mode=mode, encode_format="png", reduced_decode=False))
    r8, r16 = process(p8), process(p16)
    assert r8.reason is None and r16.reason is None, (r8.message, r16.message)
    assert r16.image == r8.image
    assert not (stored_rgb(r16) == 255).all()
    as_jpeg = ImageProcessor(ImageSettings(resize_mode=mode))  # the default encoding, where 16 bits came out white
    assert as_jpeg(p16).image == as_jpeg(p8).image


def test_16bit_png_rounds_every_value():
    from image_samples import png

    v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expect = np.rint(v / 257).astype(np.uint8)  # v*255/65535, never exactly x.5
    gray = np.asarray(Image.open(io.BytesIO(lossless()(png(v, 16, 0)).image)))
    assert np.array_equal(gray, expect)
    rgba = np.stack([v, v[::-1], v.T, v[:, ::-1]], -1)  # alpha varies too: scaled, then matted as 8-bit
    expect = img2dataset_matting(np.rint(rgba / 257).astype(np.uint8))
    assert np.array_equal(stored_rgb(lossless()(png(rgba, 16, 6))), expect)


def test_apng_is_decoded_as_its_first_frame():
    """The acTL chunk is dropped so OpenCV decodes the default image (PIL writes it as frame 1), not composing frames
    on extra canvases: the result is what OpenCV's own APNG decoding gives, then matted."""
    import cv2

    frames = [Image.new("RGBA", (120, 80), (200, 30, 60, 128)), Image.new("RGBA", (120, 80), (0, 255, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "PNG", save_all=True, append_images=frames[1:], duration=100)
    data = buf.getvalue()
    assert b"acTL" in data
    composed = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # BGRA, OpenCV's APNG path
    expect = img2dataset_matting(composed)[..., ::-1]
    assert np.array_equal(stored_rgb(lossless()(data)), expect)
    assert tuple(expect[0, 0]) == (227, 142, 157)  # the first frame on white, not the opaque green second
