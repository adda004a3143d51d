"""A local image server standing in for the sample crawl's image hosts (`make demo`, tests).

Every path answers the same way on every run, decided by a hash of the path: most give an image in the format
the extension names (JPEG, PNG, WebP; 200-1000 px), and a realistic few give what the web gives - 404, an
``X-Robots-Tag: noai``, a truncated JPEG, an HTML error page served as an image, a 503 that never recovers. The
download job reaches it through ``download.connect_to`` (every host name -> this address), so the crawl's URLs
stay as they are.

    python -m laion5b_spark.sample.image_server --port 0 --port-file /tmp/port
"""

from __future__ import annotations

import argparse
import io
import os
import random
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image, ImageDraw

from . import shapes

# share of paths per outcome, in order; the rest are images
OUTCOMES = (("http_404", 0.05), ("noai", 0.02), ("truncated", 0.02), ("html", 0.01), ("unavailable", 0.01))
_FORMATS = {".png": ("PNG", "image/png"), ".webp": ("WEBP", "image/webp")}


def outcome(path: str) -> str:
    roll = (zlib.crc32(path.encode()) % 10_000) / 10_000
    for name, share in OUTCOMES:
        if roll < share:
            return name
        roll -= share
    return "image"


def picture(path: str) -> tuple[bytes, str]:
    """(bytes, content type) of the image a path names: ``/shapes/<colour>-<shape>/...`` draws that shape (what
    the sample crawl's shape captions describe); any other path gets size, colours and blobs from its hash."""
    h = zlib.crc32(path.encode(), 7)
    parts = path.split("/")
    if len(parts) > 3 and parts[1] == "shapes" and parts[2].count("-") == 1:
        colour, shape = parts[2].split("-")
        if colour in shapes.COLOURS and shape in shapes.SHAPES:
            buf = io.BytesIO()
            shapes.draw(colour, shape, random.Random(h), size=384).save(buf, "JPEG", quality=90)
            return buf.getvalue(), "image/jpeg"
    w, hgt = 200 + h % 800, 200 + (h >> 10) % 800
    im = Image.new("RGB", (w, hgt), (h % 256, (h >> 8) % 256, (h >> 16) % 256))
    draw = ImageDraw.Draw(im)
    for k in range(3):
        x, y = (h >> (3 * k)) % w, (h >> (5 * k + 1)) % hgt
        draw.ellipse((x - w // 6, y - hgt // 6, x + w // 6, y + hgt // 6), fill=((h >> k) % 256, 255 - k * 60, 90))
    fmt, ctype = _FORMATS.get(os.path.splitext(path)[1].lower(), ("JPEG", "image/jpeg"))
    buf = io.BytesIO()
    im.save(buf, fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return buf.getvalue(), ctype


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real image hosts

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        kind = outcome(self.headers.get("Host", "") + path)
        headers = {}
        if kind == "http_404":
            status, body, ctype = 404, b"not found", "text/plain"
        elif kind == "unavailable":
            status, body, ctype = 503, b"try later", "text/plain"
        elif kind == "html":
            status, body, ctype = 200, b"<html><body>Image not available</body></html>", "image/jpeg"
        else:
            status = 200
            body, ctype = picture(path)
            if kind == "truncated":
                body = body[: len(body) // 3]
            elif kind == "noai":
                headers["X-Robots-Tag"] = "noai, noimageai"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def serve(port: int = 0) -> ThreadingHTTPServer:
    """Start serving on 127.0.0.1 in a background thread; ``server.server_address[1]`` is the port."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="image-server", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m laion5b_spark.sample.image_server", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=0, help="0: any free port")
    ap.add_argument("--port-file", help="write the port here once listening (for scripts)")
    args = ap.parse_args(argv)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    server.daemon_threads = True
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(server.server_address[1]))
        os.replace(tmp, args.port_file)
    print(f"sample image server on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
