"""Downloaded bytes -> the stored image: sniff the format, check size and pixel count before decoding, decode,
resize with img2dataset's modes, re-encode.

The resize modes, interpolations and encoding are img2dataset's (``img2dataset.resizer.Resizer``, whose transforms
this applies - tests check the output equals it). What differs is the decode: a JPEG that will be downscaled
is decoded at 1/2, 1/4 or 1/8 scale by libjpeg (DCT scaling) when that still leaves at least the target size, so
a 1024 px photo bound for 256 px never becomes 1024x1024 pixels in memory. img2dataset decodes every image at full
size, which is where its CPU goes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from dataclasses import dataclass

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI at import otherwise
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # a truncated PNG is counted, not printed to stderr

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import exifread  # noqa: E402
import numpy as np  # noqa: E402
from img2dataset.resizer import ResizeMode, inter_str_to_cv2  # noqa: E402
from PIL import Image  # noqa: E402

from ..config import DEFAULTS  # noqa: E402

FORMATS = ("jpeg", "png", "webp", "gif")
# IMREAD_COLOR would turn the image by its EXIF orientation; IMREAD_UNCHANGED (the full decode, img2dataset's) does not
_REDUCED = {r: flag | cv2.IMREAD_IGNORE_ORIENTATION for r, flag in
            ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))}


def sniff(data: bytes) -> str | None:
    """The image format from the first bytes (never from the Content-Type header, which lies)."""
    if data[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return None


@dataclass
class Processed:
    image: bytes | None
    width: int | None = None
    height: int | None = None
    original_width: int | None = None
    original_height: int | None = None
    mime: str | None = None
    sha256: str | None = None  # of the downloaded bytes (what hash lists name)
    reason: str | None = None  # accounting reason when image is None
    message: str = ""
    exif: str | None = None  # JSON object of EXIF tags, as img2dataset's exif column


_DOWNLOAD = DEFAULTS["download"]  # the defaults live in config.DEFAULTS alone


@dataclass(frozen=True)
class ImageSettings:
    image_size: int = _DOWNLOAD["image_size"]
    resize_mode: str = _DOWNLOAD["resize_mode"]  # no, keep_ratio, keep_ratio_largest, center_crop, border
    resize_only_if_bigger: bool = _DOWNLOAD["resize_only_if_bigger"]
    upscale_interpolation: str = "lanczos"
    downscale_interpolation: str = "area"
    encode_format: str = _DOWNLOAD["encode_format"]  # jpg, png, webp
    encode_quality: int = _DOWNLOAD["encode_quality"]
    skip_reencode: bool = _DOWNLOAD["skip_reencode"]  # keep the original bytes when no resize was needed and the format matches
    min_bytes: int = _DOWNLOAD["min_bytes"]  # LAION dropped images under 5 KB
    min_image_size: int = _DOWNLOAD["min_image_size"]  # smallest side, pixels
    max_pixels: int = _DOWNLOAD["max_pixels"]  # checked from the header, before decoding (PIL's bomb limit; LAION's 89.5 MP)
    max_aspect_ratio: float = float("inf")
    formats: tuple[str, ...] = tuple(_DOWNLOAD["formats"])
    reduced_decode: bool = _DOWNLOAD["reduced_decode"]
    extract_exif: bool = _DOWNLOAD["exif"]


class ImageProcessor:
    def __init__(self, s: ImageSettings = ImageSettings()):
        if s.resize_mode not in ResizeMode.__members__:
            raise ValueError(f"resize_mode {s.resize_mode!r}: one of {', '.join(ResizeMode.__members__)}")
        self.s = s
        self.mode = ResizeMode[s.resize_mode]
        self.up, self.down = inter_str_to_cv2(s.upscale_interpolation), inter_str_to_cv2(s.downscale_interpolation)
        flag = {"jpg": cv2.IMWRITE_JPEG_QUALITY, "png": cv2.IMWRITE_PNG_COMPRESSION,
                "webp": cv2.IMWRITE_WEBP_QUALITY}[s.encode_format]
        self.encode_params = [int(flag), s.encode_quality]
        self.out_format = {"jpg": "jpeg"}.get(s.encode_format, s.encode_format)
        # built once: albumentations validates its arguments on every construction
        size = s.image_size
        # keyed by "down", "up" and "near" (a downscale of less than 2x after a reduced decode: see _resize)
        kinds = (("down", self.down), ("up", self.up), ("near", cv2.INTER_LINEAR))
        self.smallest = {k: A.SmallestMaxSize(max_size=size, interpolation=i, p=1.0) for k, i in kinds}
        self.longest = {k: A.LongestMaxSize(max_size=size, interpolation=i, p=1.0) for k, i in kinds}
        self.crop = A.CenterCrop(height=size, width=size)
        self.pad = A.PadIfNeeded(min_height=size, min_width=size, border_mode=cv2.BORDER_CONSTANT,
                                 value=[255, 255, 255], p=1.0)

    def __call__(self, data: bytes) -> Processed:
        s = self.s
        sha = hashlib.sha256(data).hexdigest()
        if len(data) < s.min_bytes:
            return Processed(None, sha256=sha, reason="image_too_small", message=f"{len(data)} bytes")
        fmt = sniff(data)
        if fmt is None or fmt not in s.formats:
            return Processed(None, sha256=sha, reason="not_an_image",
                             message=f"content starts {data[:12]!r}" if fmt is None else f"{fmt} not accepted")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # checked below, with our limit
                with Image.open(io.BytesIO(data)) as im:  # reads the header only
                    ow, oh = im.size
        except Image.DecompressionBombError as exc:
            return Processed(None, mime=f"image/{fmt}", sha256=sha, reason="decompression_bomb", message=str(exc))
        except Exception as exc:  # noqa: BLE001 - any header failure is a decode failure
            return Processed(None, mime=f"image/{fmt}", sha256=sha, reason="decode_error", message=str(exc)[:200])
        out = Processed(None, original_width=ow, original_height=oh, mime=f"image/{fmt}", sha256=sha)
        if ow * oh > s.max_pixels:
            out.reason, out.message = "decompression_bomb", f"{ow}x{oh} > {s.max_pixels} pixels"
            return out
        if min(ow, oh) < s.min_image_size:
            out.reason, out.message = "image_too_small", f"{ow}x{oh}"
            return out
        if max(ow, oh) / max(1, min(ow, oh)) > s.max_aspect_ratio:
            out.reason, out.message = "bad_aspect_ratio", f"{ow}x{oh}"
            return out
        try:
            img = self._decode(data, fmt, ow, oh)
            img, resized = self._resize(img, ow, oh)
            if not resized and s.skip_reencode and fmt == self.out_format:
                out.image = data
            else:
                ok, buf = cv2.imencode(f".{s.encode_format}", img, params=self.encode_params)
                if not ok:
                    raise ValueError("encoding failed")
                out.image = buf.tobytes()
        except Exception as exc:  # noqa: BLE001 - a broken image is counted, never fatal
            out.reason, out.message = "decode_error", f"{type(exc).__name__}: {exc}"[:200]
            return out
        out.height, out.width = img.shape[:2]
        if s.extract_exif:
            out.exif = exif_json(data)
        return out

    def reduction(self, fmt: str, ow: int, oh: int) -> int:
        """The libjpeg scale (1, 2, 4, 8) that still leaves at least the target size."""
        s = self.s
        if not s.reduced_decode or fmt != "jpeg" or self.mode == ResizeMode.no:
            return 1
        side = min(ow, oh) if self.mode in (ResizeMode.keep_ratio, ResizeMode.center_crop) else max(ow, oh)
        r = 1
        while r < 8 and side // (r * 2) >= s.image_size:
            r *= 2
        return r

    def _decode(self, data: bytes, fmt: str, ow: int, oh: int) -> np.ndarray:
        buf = np.frombuffer(data, np.uint8)
        r = self.reduction(fmt, ow, oh)
        img = cv2.imdecode(buf, _REDUCED[r] if r > 1 else cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError("image decoding error")
        if img.ndim == 3 and img.shape[-1] == 4:  # alpha matting on white, as img2dataset
            alpha = img[:, :, 3, np.newaxis]
            img = np.rint((alpha / 255 * img[..., :3] + 255 - alpha).clip(0, 255)).astype(np.uint8)
        return img

    def _kind(self, downscale: bool, side: int) -> str:
        """Which interpolation: img2dataset's, except that with reduced_decode a downscale of less than 2x
        (what is left after the DCT-domain reduction) is bilinear - cv2's area filter takes a slow path for
        ratios that are not whole numbers (0.8 vs 0.1 ms for 400 -> 256 px), and below 2x there is nothing
        for it to average (bench/download: 39.3 vs 40.2 dB PSNR against full decode + area)."""
        if not downscale:
            return "up"
        if self.s.reduced_decode and self.s.downscale_interpolation == "area" and side < 2 * self.s.image_size:
            return "near"
        return "down"

    def _resize(self, img: np.ndarray, ow: int, oh: int) -> tuple[np.ndarray, bool]:
        """img2dataset's Resizer transforms; the up/down decision uses the original size, as it does."""
        s, size = self.s, self.s.image_size
        if self.mode in (ResizeMode.keep_ratio, ResizeMode.center_crop):
            downscale = min(ow, oh) > size
            if s.resize_only_if_bigger and not downscale:
                return img, False
            img = self.smallest[self._kind(downscale, min(img.shape[:2]))](image=img)["image"]
            if self.mode == ResizeMode.center_crop:
                img = self.crop(image=img)["image"]
            return img, True
        if self.mode in (ResizeMode.border, ResizeMode.keep_ratio_largest):
            downscale = max(ow, oh) > size
            if s.resize_only_if_bigger and not downscale:
                return img, False
            img = self.longest[self._kind(downscale, max(img.shape[:2]))](image=img)["image"]
            if self.mode == ResizeMode.border:
                img = self.pad(image=img)["image"]
            return img, True
        return img, False


def exif_json(data: bytes) -> str | None:
    """EXIF tags as a JSON object of strings, the way img2dataset writes them (exifread names, no thumbnails).

    Only images with an EXIF block in their first 64 KB are parsed (JPEG APP1, WebP/PNG chunks sit there in
    practice): exifread is pure Python, and most web images carry none.
    """
    if b"exif" not in data[:65536].lower():
        return None
    try:
        tags = exifread.process_file(io.BytesIO(data), details=False)
    except Exception:  # noqa: BLE001 - broken EXIF is no reason to lose the image
        return None
    if not tags:
        return None
    return json.dumps({k: str(v).strip() for k, v in tags.items() if v is not None})
