"""Downloaded bytes -> the stored image: sniff the format, read its header and refuse what would cost far more than
its bytes, decode, resize with img2dataset's modes, re-encode.

The resize modes, interpolations and encoding are img2dataset's (``img2dataset.resizer.Resizer``, whose transforms
this applies - tests check the output equals it). What differs is the decode: a JPEG that will be downscaled
is decoded at 1/2, 1/4 or 1/8 scale by libjpeg (DCT scaling) when that still leaves at least the target size, so
a 1024 px photo bound for 256 px never becomes 1024x1024 pixels in memory. img2dataset decodes every image at full
size, which is where its CPU goes.

Decoding budget (docs/DOWNLOAD.md, "Decoding budget"; tests/test_image_budget.py measures it). One decode slot peaks
at no more than ``DECODE_BYTES_PER_PIXEL`` bytes per pixel of the decoded canvas plus a fixed part, so at most
``16 * download.max_pixels`` + ~32 MB. What holds it:

* the headers are read here, not by Pillow (whose parsers loop in Python over every JPEG segment, PNG chunk and
  GIF block: 18 MB of empty PNG chunks took it 3.1 s), walking at most ``MAX_HEADER_SEGMENTS`` segments; the pixel
  cap applies to the canvas and to the first frame (the only one decoded) of animated WebP and GIF; an APNG is
  decoded as its default image (the ``acTL`` chunk is dropped, so no frame is composed);
* a JPEG's scans are counted before decoding (``download.max_jpeg_scans``): libjpeg makes one pass over the image
  per scan, and a few bytes can repeat a scan a thousand times;
* alpha matting and the 16 -> 8 bit step run in integers, in row blocks of ``BLOCK_PIXELS``: the decoded image and
  the 3-byte result are all that is held (img2dataset's float64 matting took 52 bytes per pixel);
* EXIF is parsed from at most ``download.max_exif_bytes`` bytes, with a bounded IFD chain and number of reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import warnings
import zlib
from dataclasses import dataclass

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks PyPI at import otherwise
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # a truncated PNG is counted, not printed to stderr

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import exifread  # noqa: E402
import numpy as np  # noqa: E402
from exifread.core.find_exif import determine_type  # noqa: E402
from img2dataset.resizer import ResizeMode, inter_str_to_cv2  # noqa: E402
from PIL import Image  # noqa: E402

from ..config import DEFAULTS  # noqa: E402

FORMATS = ("jpeg", "png", "webp", "gif")
# IMREAD_COLOR would turn the image by its EXIF orientation; IMREAD_UNCHANGED (the full decode, img2dataset's) does not
_REDUCED = {r: flag | cv2.IMREAD_IGNORE_ORIENTATION for r, flag in
            ((2, cv2.IMREAD_REDUCED_COLOR_2), (4, cv2.IMREAD_REDUCED_COLOR_4), (8, cv2.IMREAD_REDUCED_COLOR_8))}

# The stated budget per decode slot: peak bytes <= DECODE_BYTES_PER_PIXEL * canvas pixels + DECODE_FIXED_BYTES.
# The largest term is OpenCV's own decoder, measured: a 16-bit RGBA PNG peaks at 16 bytes per pixel inside
# cv2.imdecode (8 for the result, 8 for its row buffer), animated WebP at 12 (libwebp's canvas and previous
# canvas, then the result), a progressive CMYK JPEG at 11 (16-bit coefficients of 4 components, then the result).
DECODE_BYTES_PER_PIXEL = 16
DECODE_FIXED_BYTES = 32 * 2**20
BLOCK_PIXELS = 1 << 16  # rows per block of the matting / 16-bit step: temporaries of ~1 MB whatever the image
# Segments (JPEG markers, GIF blocks and sub-blocks, PNG chunks before the image data, WebP chunks before the first
# frame) a header walk reads before it gives up: encoders write tens (an ICC profile split in 255 APP2 segments
# is the most seen), a hostile file millions, each of which costs a parser in Python ~1 us.
MAX_HEADER_SEGMENTS = 4096
# EXIF: IFD0 and IFD1 (the thumbnail) are all EXIF defines; a longer chain is not a camera's
MAX_EXIF_IFDS = 16
# exifread reads one value per call: a camera's EXIF is a few hundred reads, a hostile one (5,000 entries each
# pointing at the same 5,000-entry sub-IFD, in 64 KB) is 25 million. Past this many the EXIF is dropped.
MAX_EXIF_READS = 16_384


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


class Refused(Exception):
    """Decoding would cost far more than the bytes: counted as ``decompression_bomb``, before any decoding."""


@dataclass(frozen=True)
class Header:
    """What a decoder will allocate, read from the container alone."""

    width: int  # of the decoded image (the canvas of an animation)
    height: int
    frame: tuple[int, int] | None = None  # the first frame of an animation (the one decoded), when it has its own size
    bit_depth: int = 8  # of a sample: 16-bit PNG, 12-bit JPEG
    actl: tuple[int, int] | None = None  # an APNG's animation control chunk: [start, end) in the bytes


def read_header(data: bytes, fmt: str, max_jpeg_scans: int) -> Header:
    """The header of ``data`` (sniffed as ``fmt``); ValueError when it is broken, Refused when it is a bomb."""
    try:
        if fmt == "jpeg":
            return jpeg_header(data, max_jpeg_scans)
        if fmt == "png":
            return png_header(data)
        if fmt == "gif":
            return gif_header(data)
        return webp_header(data)
    except IndexError as exc:  # a header cut short
        raise ValueError(f"truncated {fmt} header") from exc


_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_PROGRESSIVE_SOF = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_NO_LENGTH = frozenset({0x01, 0xD8, *range(0xD0, 0xD8)})  # TEM, SOI, RSTn: a marker alone
# libjpeg's next_marker: any bytes, then 0xFF (fill bytes: more 0xFF), then a code that is not 0 (FF00 is data)
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xff]")
# in entropy-coded data, FF00 is a stuffed FF and RSTn markers belong to the scan: any other marker ends it
_JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xff\xd0-\xd7]")


def jpeg_header(data: bytes, max_scans: int) -> Header:
    """Walk the marker segments as libjpeg reads them - each by its length, entropy-coded data to the marker that
    ends it - so that bytes inside an APP/EXIF/COM payload are never taken for markers; count the scans (SOS).

    A sequential JPEG whose first scan holds every component (nearly every JPEG) is one pass: libjpeg stops there
    (a second scan is JERR_EOI_EXPECTED), so the walk stops there too and never reads the entropy-coded data.
    Progressive and multi-scan sequential ones are walked to EOI (~150 us for 250 KB)."""
    pos, n, scans, sof = 2, len(data), 0, None
    for _ in range(MAX_HEADER_SEGMENTS):
        m = _JPEG_MARKER.search(data, pos)
        if m is None:
            break
        code, pos = data[m.start() + 1], m.end()
        if code == 0xD9:  # EOI: what follows (an MPF second image, a phone's video) is not decoded
            break
        if code in _NO_LENGTH:
            continue
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2 or pos + 2 > n:
            raise ValueError(f"JPEG segment {code:#04x} with length {length}")
        end = pos + length
        if code in _SOF and sof is None:
            sof = (code, data[pos + 2], int.from_bytes(data[pos + 3:pos + 5], "big"),
                   int.from_bytes(data[pos + 5:pos + 7], "big"), data[pos + 7])
        elif code == 0xDA:
            if sof is None:
                raise ValueError("JPEG scan before its frame header")
            scans += 1
            if scans > max_scans:
                raise Refused(f"JPEG with more than {max_scans} scans (download.max_jpeg_scans)")
            if scans == 1 and sof[0] not in _PROGRESSIVE_SOF and data[pos + 2] == sof[4]:
                break  # one pass (see above)
            m = _JPEG_SCAN_END.search(data, end)
            if m is None:
                break
            end = m.start()
        pos = end
    else:
        raise Refused(f"JPEG with more than {MAX_HEADER_SEGMENTS} marker segments")
    if sof is None or scans == 0:
        raise ValueError("JPEG without a frame header or a scan")
    _, precision, height, width, _ = sof
    if not width or not height:
        raise ValueError(f"JPEG of {width}x{height}")
    return Header(width, height, bit_depth=precision)


def _chunk_crc_ok(data: bytes, start: int, length: int) -> bool:
    crc = data[start + 8 + length:start + 12 + length]
    return len(crc) == 4 and zlib.crc32(data[start + 4:start + 8 + length]) == int.from_bytes(crc, "big")


def png_header(data: bytes) -> Header:
    """IHDR, and the chunks before the first IDAT (where an APNG's acTL must be)."""
    if data[12:16] != b"IHDR":
        raise ValueError("PNG without IHDR first")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    depth = data[24]
    if not width or not height:
        raise ValueError(f"PNG of {width}x{height}")
    pos, actl = 8, None
    for _ in range(MAX_HEADER_SEGMENTS):
        if pos + 8 > len(data):
            raise ValueError("PNG without image data")
        length, kind = int.from_bytes(data[pos:pos + 4], "big"), data[pos + 4:pos + 8]
        if kind == b"IDAT":
            return Header(width, height, bit_depth=depth, actl=actl)
        if kind == b"acTL" and length == 8 and _chunk_crc_ok(data, pos, length):
            actl = (pos, pos + 20)
        pos += 12 + length
    raise Refused(f"PNG with more than {MAX_HEADER_SEGMENTS} chunks before its image data")


def gif_header(data: bytes) -> Header:
    """The logical screen and the first image descriptor, walked as Pillow walks them (which decodes GIF here):
    the canvas Pillow allocates for frame 0 is the screen grown to hold that frame."""
    sw, sh = int.from_bytes(data[6:8], "little"), int.from_bytes(data[8:10], "little")
    flags = data[10]
    pos, n, seen = 13 + ((3 << ((flags & 7) + 1)) if flags & 0x80 else 0), len(data), 0
    while pos < n:
        seen += 1
        if seen > MAX_HEADER_SEGMENTS:
            raise Refused(f"GIF with more than {MAX_HEADER_SEGMENTS} blocks before its first image")
        block = data[pos]
        if block == 0x2C:  # image descriptor
            x, y, fw, fh = (int.from_bytes(data[pos + k:pos + k + 2], "little") for k in (1, 3, 5, 7))
            if not fw or not fh:
                raise ValueError(f"GIF frame of {fw}x{fh}")
            return Header(max(sw, x + fw), max(sh, y + fh), frame=(fw, fh))
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: label, then sub-blocks up to an empty one
            pos += 2
            while data[pos]:
                pos += 1 + data[pos]
                seen += 1
                if seen > MAX_HEADER_SEGMENTS:
                    raise Refused(f"GIF with more than {MAX_HEADER_SEGMENTS} blocks before its first image")
        pos += 1  # Pillow steps over any other byte, one at a time
    raise ValueError("GIF without an image")


def _le24(data: bytes, pos: int) -> int:
    return int.from_bytes(data[pos:pos + 3], "little")


def webp_header(data: bytes) -> Header:
    """The canvas (VP8X) or the bitstream's size (VP8, VP8L), and an animation's first frame (ANMF)."""
    kind = data[12:16]
    if kind == b"VP8 ":
        if data[23:26] != b"\x9d\x01\x2a":
            raise ValueError("VP8 without its start code")
        return Header(int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF)
    if kind == b"VP8L":
        if data[20] != 0x2F:
            raise ValueError("VP8L without its signature")
        bits = int.from_bytes(data[21:25], "little")
        return Header((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if kind != b"VP8X":
        raise ValueError(f"WebP starting with chunk {kind!r}")
    width, height = _le24(data, 24) + 1, _le24(data, 27) + 1
    if not data[20] & 0x02:  # not animated: the bitstream has the canvas's size (libwebp checks)
        return Header(width, height)
    pos = 12 + 8 + 10
    for _ in range(MAX_HEADER_SEGMENTS):
        if pos + 8 > len(data):
            raise ValueError("animated WebP without a frame")
        size = int.from_bytes(data[pos + 4:pos + 8], "little")
        if data[pos:pos + 4] == b"ANMF":
            return Header(width, height, frame=(_le24(data, pos + 14) + 1, _le24(data, pos + 17) + 1))
        pos += 8 + size + (size & 1)
    raise Refused(f"WebP with more than {MAX_HEADER_SEGMENTS} chunks before its first frame")


def flatten(img: np.ndarray, max_value: int = 255) -> np.ndarray:
    """8-bit samples, alpha matted on white as img2dataset does, in row blocks (temporaries of ~1 MB).

    img2dataset's ``rint(alpha/255*c + 255 - alpha)`` in float64 (52 bytes per pixel held) equals
    ``(c*a + 127)//255 + 255 - a`` exactly: c*a/255 is never exactly x.5 (2*c*a is even, 255*(2k+1) odd), so the
    rounding is round-half-up of c*a/255 (tests check all 65,536 pairs). Samples wider than 8 bits (16-bit PNG;
    ``max_value`` 65535) are scaled to round(v*255/max_value) first - img2dataset clipped them to 255 (white).
    """
    alpha = img.ndim == 3 and img.shape[2] == 4
    wide = img.dtype != np.uint8
    if not alpha and not wide:
        return img
    h, w = img.shape[:2]
    out = np.empty((h, w, 3) if alpha else img.shape, np.uint8)
    step = max(1, BLOCK_PIXELS // max(1, w))
    for r in range(0, h, step):
        block = img[r:r + step]
        if wide:
            v = np.minimum(block, max_value).astype(np.uint32)
            v *= 255
            v += max_value // 2  # max_value odd: v*255/max_value is never x.5 either
            v //= max_value
            block = v.astype(np.uint8)
        if alpha:
            a = block[..., 3:4].astype(np.uint16)
            t = block[..., :3] * a  # uint16: at most 255*255 + 127
            t += 127
            t //= 255
            t += 255
            t -= a
            out[r:r + step] = t
        else:
            out[r:r + step] = block
    return out


def decode_gif(data: bytes) -> np.ndarray:
    """The first frame, as Pillow composes it (OpenCV here is built without GIF), BGR (or gray) with the
    transparent index matted on white - what matting an RGBA frame gives, at 1 byte per pixel plus the result."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller checked the canvas
        with Image.open(io.BytesIO(data), formats=["GIF"]) as im:
            im.load()
            index = np.asarray(im)
            transparent = im.info.get("transparency")
            if im.mode == "P":
                rgb = np.zeros((256, 3), np.uint8)
                pal = np.frombuffer(bytes(im.getpalette("RGB") or b""), np.uint8)[:768]
                rgb[:len(pal) // 3] = pal[:len(pal) // 3 * 3].reshape(-1, 3)
                lut = np.ascontiguousarray(rgb[:, ::-1])  # BGR, as OpenCV's images
            elif im.mode == "L":
                lut = np.arange(256, dtype=np.uint8)
            else:
                raise ValueError(f"GIF frame in mode {im.mode}")
    if isinstance(transparent, int) and 0 <= transparent < 256:
        lut[transparent] = 255
    return lut[index]


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
    max_pixels: int = _DOWNLOAD["max_pixels"]  # canvas and first frame, from the header (LAION's 89.5 MP)
    max_aspect_ratio: float = float("inf")
    formats: tuple[str, ...] = tuple(_DOWNLOAD["formats"])
    reduced_decode: bool = _DOWNLOAD["reduced_decode"]
    extract_exif: bool = _DOWNLOAD["exif"]
    max_jpeg_scans: int = _DOWNLOAD["max_jpeg_scans"]  # a JPEG with more is refused before decoding
    max_exif_bytes: int = _DOWNLOAD["max_exif_bytes"]  # EXIF parsed from at most this many bytes


class ImageProcessor:
    def __init__(self, s: ImageSettings = ImageSettings()):
        if s.resize_mode not in ResizeMode.__members__:
            raise ValueError(f"resize_mode {s.resize_mode!r}: one of {', '.join(ResizeMode.__members__)}")
        if s.max_jpeg_scans < 1 or s.max_exif_bytes < 0:
            raise ValueError(f"max_jpeg_scans {s.max_jpeg_scans} (at least 1), "
                             f"max_exif_bytes {s.max_exif_bytes} (0 or more)")
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
            head = read_header(data, fmt, s.max_jpeg_scans)
        except Refused as exc:
            return Processed(None, mime=f"image/{fmt}", sha256=sha, reason="decompression_bomb", message=str(exc)[:200])
        except Exception as exc:  # noqa: BLE001 - any header failure is a decode failure
            return Processed(None, mime=f"image/{fmt}", sha256=sha, reason="decode_error", message=str(exc)[:200])
        ow, oh = head.width, head.height
        out = Processed(None, original_width=ow, original_height=oh, mime=f"image/{fmt}", sha256=sha)
        if ow * oh > s.max_pixels:
            out.reason, out.message = "decompression_bomb", f"{ow}x{oh} > {s.max_pixels} pixels"
            return out
        if head.frame and head.frame[0] * head.frame[1] > s.max_pixels:
            fw, fh = head.frame
            out.reason, out.message = "decompression_bomb", f"first frame {fw}x{fh} > {s.max_pixels} pixels"
            return out
        if min(ow, oh) < s.min_image_size:
            out.reason, out.message = "image_too_small", f"{ow}x{oh}"
            return out
        if max(ow, oh) / max(1, min(ow, oh)) > s.max_aspect_ratio:
            out.reason, out.message = "bad_aspect_ratio", f"{ow}x{oh}"
            return out
        try:
            img = self._decode(data, fmt, head)
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
            out.exif = exif_json(data, s.max_exif_bytes)
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

    def _decode(self, data: bytes, fmt: str, head: Header) -> np.ndarray:
        if fmt == "gif":
            return decode_gif(data)
        if head.actl:  # decode an APNG's default image: OpenCV composes frames on two extra canvases otherwise
            data = data[:head.actl[0]] + data[head.actl[1]:]
        r = self.reduction(fmt, head.width, head.height)
        img = cv2.imdecode(np.frombuffer(data, np.uint8), _REDUCED[r] if r > 1 else cv2.IMREAD_UNCHANGED)
        if img is None:
            raise ValueError("image decoding error")
        bits = head.bit_depth if img.dtype == np.uint16 and fmt == "jpeg" else 8 * img.dtype.itemsize
        return flatten(img, (1 << bits) - 1)

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


class _ExifTooCostly(Exception):
    pass


class _BoundedExif(io.BytesIO):
    """exifread's file: the bytes up to the end of the EXIF window (reads past it come back short, as at the end of
    a file), and at most MAX_EXIF_READS reads - exifread reads one value per call."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.reads_left = MAX_EXIF_READS

    def read(self, size: int | None = -1) -> bytes:
        self.reads_left -= 1
        if self.reads_left < 0:
            raise _ExifTooCostly
        return super().read(size)


def _ifd_chain_length(block: memoryview | bytes, offset: int, limit: int) -> int:
    """How many IFDs the chain from IFD0 holds (stopping past ``limit``), within the TIFF block at ``offset``."""
    order = "little" if block[offset:offset + 1] == b"I" else "big"
    ifd, seen = int.from_bytes(block[offset + 4:offset + 8], order), set()
    while ifd and ifd not in seen and len(seen) <= limit:
        seen.add(ifd)
        at = offset + ifd
        entries = int.from_bytes(block[at:at + 2], order)
        nxt = block[at + 2 + 12 * entries:at + 6 + 12 * entries]
        ifd = int.from_bytes(nxt, order) if len(nxt) == 4 else 0
    return len(seen)


def exif_json(data: bytes, max_bytes: int = _DOWNLOAD["max_exif_bytes"]) -> str | None:
    """EXIF tags as a JSON object of strings, the way img2dataset writes them (exifread names, no thumbnails).

    Only images with an EXIF block in their first 64 KB are parsed (JPEG APP1, WebP/PNG chunks sit there in
    practice): exifread is pure Python, and most web images carry none. The parse is bounded: exifread sees the
    bytes from the TIFF header to ``max_bytes`` past it (a JPEG's APP1 holds at most 65,533, so every JPEG EXIF
    fits in the default; offsets past the window read as the end of the file, as past the end of a real one), a chain
    of more than MAX_EXIF_IFDS IFDs or a parse of more than MAX_EXIF_READS reads drops the EXIF (null), and so does a
    JSON longer than 8 * ``max_bytes`` (a thumbnail's bytes are written as Python's repr, up to 5 characters per byte).
    """
    if b"exif" not in data[:65536].lower():
        return None
    try:
        # exifread's own search for the block (JPEG APP1, PNG eXIf, WebP EXIF), with a bounded number of reads
        offset = determine_type(_BoundedExif(data))[0]
        window = data[:offset + max_bytes]
        tiff_block = data[offset:offset + 2] in (b"II", b"MM")
        if tiff_block and _ifd_chain_length(window, offset, MAX_EXIF_IFDS) > MAX_EXIF_IFDS:
            return None
        tags = exifread.process_file(_BoundedExif(window), details=False)
    except Exception:  # noqa: BLE001 - broken or too costly EXIF is no reason to lose the image
        return None
    if not tags:
        return None
    out = json.dumps({k: str(v).strip() for k, v in tags.items() if v is not None})
    return out if len(out) <= 8 * max_bytes else None
