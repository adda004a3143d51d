"""Peak memory of one ImageProcessor call per hostile image, each measured alone: run as a script in a fresh
process (``python tests/decode_peak.py ROOT [SIDE]``, ROOT the folder holding the laion5b_spark to measure), it
prints a JSON object {case: {"pixels", "growth", "reason", "message"}}.

Linux only: the peak is VmHWM after resetting it through /proc/self/clear_refs ("5"), less VmRSS before the call;
between cases the Python and C heaps are given back (gc, malloc_trim), so one case's freed memory cannot hide the
next one's. A control case (img2dataset's own Resizer, float64 matting) shows the harness sees what it should.
"""

from __future__ import annotations

import ctypes
import gc
import io
import json
import re
import sys
from pathlib import Path


def _status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def _cases(side: int) -> dict[str, tuple[bytes, int]]:
    """name -> (bytes, pixels of the canvas a decoder allocates)."""
    from PIL import Image

    from image_samples import animated_webp, apng, png_uniform

    n = side
    out = {
        "rgba8_png": (png_uniform(n, n, 8, 6, (10, 20, 30, 128)), n * n),
        "rgba16_png": (png_uniform(n, n, 16, 6, (3000, 20000, 40000, 30000)), n * n),
        "gray_alpha16_png": (png_uniform(n, n, 16, 4, (20000, 30000)), n * n),
        "apng_rgba8": (apng(png_uniform(n, n, 8, 6, (200, 20, 30, 100))), n * n),
        "animated_webp_16px_frame": (animated_webp((n, n)), n * n),
    }
    buf = io.BytesIO()
    Image.new("P", (n, n), 3).save(buf, "GIF", transparency=3)
    out["gif"] = (buf.getvalue(), n * n)
    buf = io.BytesIO()
    Image.new("CMYK", (n, n), (10, 20, 30, 40)).save(buf, "JPEG", progressive=True, quality=90)
    out["progressive_cmyk_jpeg"] = (buf.getvalue(), n * n)
    buf = io.BytesIO()
    Image.new("RGB", (n, n), (100, 150, 200)).save(buf, "JPEG", progressive=True, quality=90, subsampling=0)
    out["progressive_444_jpeg"] = (buf.getvalue(), n * n)
    return out


def main(root: str, side: int = 4000) -> dict:
    sys.path.insert(0, root)  # before the editable install's finder: measure the tree the caller names
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from laion5b_spark.download.image import ImageProcessor

    libc = ctypes.CDLL("libc.so.6")
    process = ImageProcessor()
    for data, _ in _cases(64).values():  # warm up every code path (lazy imports, codec tables, thread pools)
        process(data)
    cases = _cases(side)
    control_side = side // 2
    from image_samples import png_uniform
    from img2dataset.resizer import Resizer

    control = png_uniform(control_side, control_side, 8, 6, (10, 20, 30, 128))
    resizer = Resizer(image_size=256, resize_mode="border", resize_only_if_bigger=False)
    resizer(io.BytesIO(png_uniform(64, 64, 8, 6, (1, 2, 3, 4))))
    results = {}
    for name, (data, pixels) in [*cases.items(), ("control_img2dataset_rgba8_png", (control, control_side ** 2))]:
        gc.collect()
        libc.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        before = _status("VmRSS")
        if name.startswith("control"):
            err = resizer(io.BytesIO(data))[-1]
            reason, message = ("decode_error" if err else None), str(err or "")
        else:
            r = process(data)
            reason, message = r.reason, r.message
            del r
        results[name] = {"pixels": pixels, "bytes": len(data), "growth": _status("VmHWM") - before,
                         "reason": reason, "message": message}
    return results


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], *(int(a) for a in sys.argv[2:3]))))
