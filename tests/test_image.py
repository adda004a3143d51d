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
