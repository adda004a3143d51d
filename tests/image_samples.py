"""Image bytes built byte by byte for the decoding tests, where PIL cannot write what is needed: PNG of any bit depth
and colour type, APNG, an animated WebP with a chosen canvas, JPEG scan surgery, EXIF (TIFF) blocks.

Independent of laion5b_spark (the code under test): the tests compare its results with these constructions."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png(arr: np.ndarray, depth: int, color_type: int, before_idat: bytes = b"", level: int = 6) -> bytes:
    """A PNG of ``arr`` (H x W or H x W x C, values already in the bit depth's range), filter 0 on every row."""
    h, w = arr.shape[:2]
    rows = arr.reshape(h, -1).astype(">u2" if depth == 16 else np.uint8).view(np.uint8).reshape(h, -1)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), rows], 1).tobytes()
    ihdr = struct.pack(">IIBBBBB", w, h, depth, color_type, 0, 0, 0)
    idat = png_chunk(b"IDAT", zlib.compress(raw, level))
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + before_idat + idat + png_chunk(b"IEND", b"")


def apng(data: bytes, frames: int = 2) -> bytes:
    """``data`` (a PNG) made an APNG whose first frame is its IDAT image (acTL and fcTL before IDAT)."""
    w, h = struct.unpack(">II", data[16:24])
    extra = png_chunk(b"acTL", struct.pack(">II", frames, 0)) + png_chunk(
        b"fcTL", struct.pack(">IIIIIHHBB", 0, w, h, 0, 0, 1, 10, 0, 0))
    return data[:33] + extra + data[33:]


def animated_webp(canvas: tuple[int, int], frame: int = 16) -> bytes:
    """An animated WebP of two ``frame`` px frames on a ``canvas`` (the VP8X canvas field rewritten): a hundred-odd
    bytes that libwebp decodes to a full canvas."""
    frames = [Image.new("RGBA", (frame, frame), (255, 0, 0, 128)), Image.new("RGBA", (frame, frame), (0, 255, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, "WEBP", save_all=True, append_images=frames[1:], duration=100, loop=0, lossless=True)
    data = bytearray(buf.getvalue())
    i = data.find(b"VP8X")
    assert i == 12 and data[20] & 0x02, "PIL wrote no animation"
    data[24:27] = (canvas[0] - 1).to_bytes(3, "little")
    data[27:30] = (canvas[1] - 1).to_bytes(3, "little")
    return bytes(data)


def progressive_jpeg(size=(256, 256), seed=0, mode="RGB", quality=90) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").convert(mode).save(buf, "JPEG", progressive=True, quality=quality)
    return buf.getvalue()


def repeat_last_scan(data: bytes, times: int) -> bytes:
    """``data`` (libjpeg's output: no FFDA/FFD9 pair outside real markers) with its last scan repeated ``times`` more
    times before EOI - the scan bomb: each copy is one more pass of the decoder over the whole image."""
    sos, eoi = data.rfind(b"\xff\xda"), data.rfind(b"\xff\xd9")
    return data[:eoi] + data[sos:eoi] * times + data[eoi:]


def jpeg_segment(code: int, payload: bytes) -> bytes:
    return bytes([0xFF, code]) + struct.pack(">H", len(payload) + 2) + payload


# --- EXIF: a TIFF block (IFD0 -> IFD1 chain, Exif and GPS sub-IFDs, a JPEG thumbnail) -------------------------------

ASCII, BYTE, SHORT, LONG, RATIONAL, UNDEFINED, SLONG, SRATIONAL = 2, 1, 3, 4, 5, 7, 9, 10


def _value_bytes(kind: int, value, order: str) -> tuple[int, bytes]:
    """(count, bytes) of a TIFF value."""
    if kind == ASCII:
        raw = (value.encode() if isinstance(value, str) else value) + b"\0"
        return len(raw), raw
    if kind in (BYTE, UNDEFINED):
        return len(value), bytes(value)
    if kind in (SHORT, LONG, SLONG):
        fmt = {SHORT: "H", LONG: "I", SLONG: "i"}[kind]
        return len(value), struct.pack(order + fmt * len(value), *value)
    fmt = "II" if kind == RATIONAL else "ii"
    return len(value), b"".join(struct.pack(order + fmt, *pair) for pair in value)


def _ifd_size(entries, order) -> int:
    out_of_line = (len(_value_bytes(k, v, order)[1]) for _, k, v in entries)
    return 2 + 12 * len(entries) + 4 + sum(n + (n & 1) for n in out_of_line if n > 4)


def _ifd(entries, at: int, next_ifd: int, order: str) -> bytes:
    entries = sorted(entries, key=lambda e: e[0])
    head, data = struct.pack(order + "H", len(entries)), b""
    data_at = at + 2 + 12 * len(entries) + 4
    for tag, kind, value in entries:
        count, raw = _value_bytes(kind, value, order)
        if len(raw) <= 4:
            field = raw.ljust(4, b"\0")
        else:
            field = struct.pack(order + "I", data_at + len(data))
            data += raw + b"\0" * (len(raw) & 1)
        head += struct.pack(order + "HHI", tag, kind, count) + field
    return head + struct.pack(order + "I", next_ifd) + data


def tiff(ifd0, exif=(), gps=(), ifd1=(), thumbnail: bytes = b"", order: str = "<") -> bytes:
    """A TIFF (EXIF) block: IFD0 with ExifOffset/GPSInfo pointing at the sub-IFDs, IFD0 -> IFD1 holding the
    thumbnail's JPEGInterchangeFormat; entries are (tag, type, value)."""
    ifd0, ifd1 = list(ifd0), list(ifd1)
    if exif:
        ifd0.append((0x8769, LONG, [0]))
    if gps:
        ifd0.append((0x8825, LONG, [0]))
    if thumbnail:
        ifd1 += [(0x0201, LONG, [0]), (0x0202, LONG, [len(thumbnail)])]
    names = [n for n, e in (("ifd0", ifd0), ("exif", exif), ("gps", gps), ("ifd1", ifd1)) if e]
    blocks = {"ifd0": ifd0, "exif": list(exif), "gps": list(gps), "ifd1": ifd1}
    at, off = 8, {}
    for n in names:
        off[n] = at
        at += _ifd_size(blocks[n], order)
    thumb_at = at

    def fix(entries):
        fixed = {0x8769: off.get("exif"), 0x8825: off.get("gps"), 0x0201: thumb_at}
        return [(t, k, [fixed[t]] if t in fixed and k == LONG and v == [0] else v) for t, k, v in entries]

    out = (b"II*\0" if order == "<" else b"MM\0*") + struct.pack(order + "I", 8)
    for n in names:
        nxt = off.get("ifd1", 0) if n == "ifd0" else 0
        out += _ifd(fix(blocks[n]), off[n], nxt, order)
    assert len(out) == thumb_at
    return out + thumbnail


def ifd_chain(count: int, start: int, order: str = "<") -> bytes:
    """``count`` IFDs back to back from relative offset ``start``, each with one inline tag (Make) and pointing at
    the next: a chain no camera writes."""
    return b"".join(struct.pack(order + "HHHI4sI", 1, 0x010F, ASCII, 4, b"abc\0",
                                start + 18 * (i + 1) if i + 1 < count else 0) for i in range(count))


def plain_jpeg(size=(400, 300), color=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG")
    return buf.getvalue()


def jpeg_with_exif(block: bytes, base: bytes | None = None) -> bytes:
    """``base`` (a JPEG) with an APP1 Exif segment holding ``block`` right after SOI (the TIFF header at byte 12)."""
    base = base or plain_jpeg()
    return base[:2] + jpeg_segment(0xE1, b"Exif\0\0" + block) + base[2:]


def png_with_exif(block: bytes, size=(400, 300)) -> bytes:
    arr = np.full((size[1], size[0], 3), 90, np.uint8)
    return png(arr, 8, 2, before_idat=png_chunk(b"eXIf", block))


def png_uniform(width: int, height: int, depth: int, color_type: int, sample: tuple[int, ...], level: int = 1) -> bytes:
    """A big PNG of one colour, streamed row by row (no image-sized array): a few KB that decode to W x H pixels."""
    row = b"\0" + b"".join(v.to_bytes(depth // 8, "big") for v in sample) * width
    z = zlib.compressobj(level)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
