"""The demo's image server: deterministic answers per path, a realistic mix of failures, formats by extension."""

import io
import urllib.error
import urllib.request
from collections import Counter

from PIL import Image

from laion5b_spark.sample.image_server import OUTCOMES, outcome, serve


def test_outcome_shares_follow_the_table():
    counts = Counter(outcome(f"images.sample.test/img/{i}/{i % 7}.jpg") for i in range(20_000))
    for name, share in OUTCOMES:
        assert abs(counts[name] / 20_000 - share) < 0.006, name
    assert counts["image"] / 20_000 > 0.85


def test_served_images_match_their_extension_and_repeat_exactly():
    server = serve()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        images = [p for p in (f"/img/{i}.{ext}" for i in range(40) for ext in ("jpg", "png", "webp"))
                  if outcome(f"127.0.0.1:{server.server_address[1]}" + p) == "image"][:12]
        for p in images:
            with urllib.request.urlopen(base + p) as r:
                body, ctype = r.read(), r.headers["Content-Type"]
            fmt = Image.open(io.BytesIO(body)).format
            assert fmt == {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[p.rsplit(".", 1)[1]]
            assert ctype == f"image/{fmt.lower()}"
            with urllib.request.urlopen(base + p) as r:
                assert r.read() == body
        missing = next(p for p in (f"/x/{i}.jpg" for i in range(500))
                       if outcome(f"127.0.0.1:{server.server_address[1]}" + p) == "http_404")
        try:
            urllib.request.urlopen(base + missing)
            raise AssertionError("expected 404")
        except urllib.error.HTTPError as e:
            assert e.code == 404
    finally:
        server.shutdown()
