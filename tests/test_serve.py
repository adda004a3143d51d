"""The clip-retrieval-compatible search service (laion5b_spark/index/serve.py), through real HTTP requests to a
server started here: text queries find the shapes they name (the project's tiny shapes CLIP, on the inspection
lake with an index built), image queries by base64 and by URL (through the safe fetcher), embedding queries,
metadata by ids, deduplication and safety filtering, the front end's request shapes and CORS, malformed requests,
the command line, and clip-retrieval's own ClipClient (its module read from clip-retrieval's wheel)."""

import base64
import copy
import http.client
import json
import os
import socket
import subprocess
import sys
import time
import tracemalloc
import types
import urllib.error
import urllib.request
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from conftest import free_port, isolate_hf_hub
from inspect_lake_fixture import copy_lake, inspect_lake  # noqa: F401 - the fixture
from test_index_job import run_index
from laion5b_spark import schemas
from laion5b_spark.index import serve
from laion5b_spark.index.serve import (SearchService, ServeSettings, main, near_duplicates, serve_in_thread,
                                       settings_from_args)
from laion5b_spark.lake import Lake
from laion5b_spark.sample.embeddings import make_scored_lake

pytestmark = pytest.mark.spark
COLORS = "red orange yellow green blue purple white black".split()
SHAPES = "circle square triangle".split()


def post(url: str, body, raw: bool = False):
    """(status, decoded JSON, headers) of a POST; ``body`` is sent as JSON unless ``raw`` (bytes as they are)."""
    data = body if raw else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, json.loads(r.read()), r.headers
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), e.headers


def color_shape(caption: str) -> tuple[set, set]:
    return {c for c in COLORS if c in caption}, {s for s in SHAPES if s in caption}


@pytest.fixture(scope="module")
def shapes(inspect_lake, tmp_path_factory):  # noqa: F811
    """The inspection lake (shape pictures scored by the tiny CLIP) with image and text indices, served."""
    root = copy_lake(inspect_lake, tmp_path_factory.mktemp("serve") / "lake")
    assert run_index(root, "--set", "index.near_dup=false") == 0
    service = SearchService(Lake(root), ServeSettings(name="shapes"))
    server, url = serve_in_thread(service)
    yield types.SimpleNamespace(root=root, url=url, service=service, lake=Lake(root))
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def synthetic(spark, tmp_path_factory):
    """Generated embeddings with planted near-copies (make_scored_lake), safety scores in the dataset, an image
    index, served. Its CLIP model (ViT-B-32 laion2b) cannot load offline: embedding queries only."""
    root = str(tmp_path_factory.mktemp("serve-synthetic") / "lake")
    truth = make_scored_lake(root, files=2, rows_per_file=100, seed=3, near_groups=4, exact_pairs=2)
    lake = Lake(root)
    rows = lake.table("dataset").read_arrow()
    uids = rows.column("uid").to_pylist()
    g = truth.near_groups[0]  # base, copy 1, copy 2: all three in the release
    punsafe = {g[1]: 0.9, g[0]: 0.1}  # the NSFW head's score; the other rows have none (null)
    pwatermark = {g[2]: 0.95, g[0]: 0.2}
    rows = rows.set_column(rows.schema.get_field_index("punsafe"), "punsafe",
                           pa.array([punsafe.get(u) for u in uids], pa.float32()))
    rows = rows.set_column(rows.schema.get_field_index("pwatermark"), "pwatermark",
                           pa.array([pwatermark.get(u) for u in uids], pa.float32()))
    schemas.check("dataset", rows)
    lake.table("dataset").add_units("with-safety-scores", [("all", "all", rows)], replace_all=True)
    assert run_index(root, "--set", "index.near_dup=false", "--set", "index.text=false") == 0
    with pytest.MonkeyPatch.context() as mp:  # the hub is unreachable: fail at once, not after retries
        isolate_hf_hub(mp, tmp_path_factory.mktemp("hub"), offline=True)
        service = SearchService(lake, ServeSettings(name="synthetic"))
    server, url = serve_in_thread(service)
    yield types.SimpleNamespace(root=root, url=url, service=service, truth=truth, lake=lake)
    server.shutdown()
    server.server_close()


def embedding_of(service: SearchService, uid: int) -> list[float]:
    knn = service.modalities["image"].knn
    return knn.vector(knn.id_of(uid)).tolist()


def test_text_queries_over_http_find_the_shapes_they_name(shapes):
    status, indices, _ = get(f"{shapes.url}/indices-list")
    assert status == 200 and indices == ["shapes"]
    captions = shapes.lake.table("dataset").read_arrow(["text"]).column("text").to_pylist()
    named = sorted({(next(iter(c)), next(iter(s))) for c, s in map(color_shape, captions) if len(c) == len(s) == 1})
    assert len(named) >= 15
    for modality in ("image", "text"):  # text -> images, and text -> captions
        for color, shape in named:
            status, hits, _ = post(f"{shapes.url}/knn-service", {"text": f"a {color} {shape}", "modality": modality,
                                                                 "num_images": 3, "indice_name": "shapes"})
            assert status == 200 and len(hits) == 3
            assert color_shape(hits[0]["caption"]) == ({color}, {shape}), (modality, color, shape, hits[0])
            assert [h["similarity"] for h in hits] == sorted((h["similarity"] for h in hits), reverse=True)
            assert set(hits[0]) == {"id", "similarity", "caption", "url", "uid", "punsafe", "pwatermark",
                                    "language", "width", "height"}


def test_image_queries_by_base64_and_by_url_find_the_image_itself(shapes, http_dir):
    images = shapes.lake.table("images").read_arrow(["uid", "jpg"]).to_pylist()
    released = set(shapes.lake.table("dataset").read_arrow(["uid"]).column("uid").to_pylist())
    picked = [r for r in images if r["uid"] in released][:3]
    for r in picked:
        status, hits, _ = post(f"{shapes.url}/knn-service", {"image": base64.b64encode(r["jpg"]).decode(),
                                                             "modality": "image", "num_images": 2})
        assert status == 200
        assert hits[0]["uid"] == r["uid"] and hits[0]["similarity"] == pytest.approx(1.0, abs=2e-3)

    www, base = http_dir
    (www / "q.jpg").write_bytes(picked[0]["jpg"])
    body = {"image_url": f"{base}/q.jpg", "num_images": 1}
    # a profile whose crawl may reach 127.0.0.0/8, and every host through 127.0.0.1 (download.connect_to): the
    # service takes neither - 127.0.0.1 is a private address, refused before any connection
    port = base.rsplit(":", 1)[1]
    crawl = ["--lake", shapes.root, "--set", 'download.allow=["127.0.0.0/8"]',
             "--set", f'download.connect_to=["*=127.0.0.1:{port}"]']
    server, url = serve_in_thread(SearchService(shapes.lake, settings_from_args(crawl)[2]))
    try:
        status, answer, _ = post(f"{url}/knn-service", body)
        assert status == 400 and "blocked_private_ip" in answer["error"], answer
    finally:
        server.shutdown()
    # admitted by the service's own --allow, the URL's image answers like the base64 one; connect_to still unused
    args, _, settings = settings_from_args(crawl + ["--allow", "192.168.0.0/16,127.0.0.1/32", "--max-results", "9"])
    assert settings.max_results == 9 and settings.fetch_policy.connect_to == ()
    assert settings.fetch_policy.allow == ("192.168.0.0/16", "127.0.0.1/32")
    server, url = serve_in_thread(SearchService(shapes.lake, settings))
    try:
        status, hits, _ = post(f"{url}/knn-service", body)
        assert status == 200 and hits[0]["uid"] == picked[0]["uid"]
        status, answer, _ = post(f"{url}/knn-service", {"image_url": f"{base}/missing.jpg", "num_images": 1})
        assert status == 400 and "HTTP 404" in answer["error"]
        status, answer, _ = post(f"{url}/knn-service", {"image_url": "http://img.test/q.jpg", "num_images": 1})
        assert status == 400, answer  # the crawl's connect_to would have sent it to 127.0.0.1 (q.jpg: 200)
    finally:
        server.shutdown()
    with pytest.raises(serve.ConfigError, match="--allow"):
        settings_from_args(["--lake", shapes.root, "--allow", "not-a-network"])
    # the fixture's service has no fetch policy: image_url is off
    status, answer, _ = post(f"{shapes.url}/knn-service", body)
    assert status == 400 and "--no-image-url" in answer["error"]


def test_the_front_end_request_shapes_and_cors(shapes):
    """What clip-retrieval's front end sends (front/src/clip-service.js): 3,000 result ids, metadata for the first
    num_images, then /metadata for the next ids as the page scrolls; a browser on another origin reads it."""
    front = {"text": "a white circle", "image": None, "image_url": None, "embedding_input": None, "modality": "image",
             "num_images": 4, "indice_name": "shapes", "num_result_ids": 3000, "use_mclip": False,
             "deduplicate": False, "use_safety_model": True, "use_violence_detector": True, "aesthetic_score": "",
             "aesthetic_weight": "0.5"}
    status, hits, headers = post(f"{shapes.url}/knn-service", front)
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    n = shapes.service.modalities["image"].knn.index.ntotal
    assert len(hits) == n  # every vector: the lake holds fewer than num_result_ids
    assert all("caption" in h for h in hits[:4]) and all(set(h) == {"id", "similarity"} for h in hits[4:])
    status, two, _ = post(f"{shapes.url}/knn-service", front | {"num_images": 10, "num_result_ids": 2})
    assert len(two) == 2 and all("caption" in h for h in two)  # num_result_ids results, as clip-back
    ids = [h["id"] for h in hits[4:10]]
    status, metas, headers = post(f"{shapes.url}/metadata", {"ids": ids, "indice_name": "shapes"})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == "*"
    assert [m["id"] for m in metas] == ids
    status, first, _ = post(f"{shapes.url}/metadata", {"ids": [hits[0]["id"]], "indice_name": "shapes"})
    meta = first[0]["metadata"]  # what knn gave for the first num_images, but "similarity": the dataset's CLIP
    assert {k: v for k, v in meta.items() if k != "similarity"} == \
        {k: v for k, v in hits[0].items() if k not in ("id", "similarity")}  # score there, the query's in knn
    # the CORS preflight a browser sends before a POST with a JSON content type
    conn = http.client.HTTPConnection(*shapes.url.split("//")[1].split(":"))
    conn.request("OPTIONS", "/knn-service", headers={"Origin": "http://front.test", "Access-Control-Request-Method":
                                                     "POST", "Access-Control-Request-Headers": "content-type"})
    r = conn.getresponse()
    r.read()
    assert r.status == 204 and r.getheader("Access-Control-Allow-Origin") == "*"
    assert "POST" in r.getheader("Access-Control-Allow-Methods")
    assert r.getheader("Access-Control-Allow-Headers") == "content-type"
    conn.close()


def test_embedding_queries_metadata_deduplication_and_safety(synthetic):
    truth, url = synthetic.truth, synthetic.url
    base, copy1, copy2 = truth.near_groups[0]
    q = {"embedding_input": embedding_of(synthetic.service, base), "num_images": 5, "indice_name": "synthetic"}

    def uids(**options):
        status, hits, _ = post(f"{url}/knn-service", q | options)
        assert status == 200, hits
        return [h["uid"] for h in hits]

    plain = uids()
    assert len(plain) == 5 and set(plain[:3]) == {base, copy1, copy2} and plain[0] == base
    assert all(f"http://img.test/{u}.jpg" == h for u, h in zip(plain, (h["url"] for h in post(
        f"{url}/knn-service", q)[1])))  # metadata of the dataset row with that uid
    # deduplicate: the near-copies of a better-ranked result go; the rest stays in order
    deduped = uids(deduplicate=True)
    assert deduped == [u for u in plain if u not in (copy1, copy2)]
    # use_safety_model: punsafe 0.9 > 0.5 goes, 0.1 and null stay; use_watermark_filter: pwatermark 0.95 > 0.8 goes
    assert uids(use_safety_model=True) == [u for u in plain if u != copy1]
    assert uids(use_watermark_filter=True) == [u for u in plain if u != copy2]
    assert uids(use_violence_detector=True) == plain  # no violence score in a lake: nothing to filter by
    assert uids(aesthetic_score=9, aesthetic_weight=0.5) == plain  # no aesthetic embeddings: ignored
    # the exported vectors are what deduplication compares: the planted copies reach 0.94, the others do not
    knn = synthetic.service.modalities["image"].knn
    v = np.stack([knn.vector(knn.id_of(u)) for u in plain])
    assert near_duplicates(v, 0.94).tolist() == [u in (copy1, copy2) for u in plain]
    # /metadata by the ids knn returned
    status, hits, _ = post(f"{url}/knn-service", q)
    ids = [h["id"] for h in hits]
    status, metas, _ = post(f"{url}/metadata", {"ids": ids, "indice_name": "synthetic"})
    assert status == 200 and [m["metadata"]["uid"] for m in metas] == plain
    assert metas[plain.index(copy1)]["metadata"]["punsafe"] == pytest.approx(0.9)
    assert metas[plain.index(base)]["metadata"]["pwatermark"] == pytest.approx(0.2)
    # text queries need the lake's CLIP model, which is not here: a 400 that says so, not a crash
    status, answer, _ = post(f"{url}/knn-service", {"text": "a cat", "num_images": 1})
    assert status == 400 and "ViT-B-32" in answer["error"] and "embedding_input" in answer["error"]


def test_malformed_requests_answer_400_and_the_server_goes_on(synthetic, shapes):
    url = synthetic.url
    dim = len(embedding_of(synthetic.service, synthetic.truth.uids[0]))
    bad = [
        (b"{not json", True, "not JSON"),
        (b"[1, 2]", True, "JSON object"),
        ({"num_images": 3}, False, "give one of"),
        ({"embedding_input": [0.1] * (dim + 1), "num_images": 3}, False, f"{dim} finite numbers"),
        ({"embedding_input": ["x"] * dim, "num_images": 3}, False, "list of numbers"),
        ({"embedding_input": [0.0] * dim}, False, "not all zero"),
        ({"embedding_input": [0.1] * dim, "num_images": "5"}, False, "num_images"),
        ({"embedding_input": [0.1] * dim, "num_images": -1}, False, "num_images"),
        ({"embedding_input": [0.1] * dim, "modality": "audio"}, False, "modality"),
        ({"embedding_input": [0.1] * dim, "modality": "text"}, False, "no text index"),
        ({"embedding_input": [0.1] * dim, "deduplicate": "yes"}, False, "deduplicate"),
        ({"embedding_input": [0.1] * dim, "indice_name": "laion5B-L-14"}, False, "indice_name"),
    ]
    for body, raw, message in bad:
        status, answer, headers = post(f"{url}/knn-service", body, raw=raw)
        assert status == 400 and message in answer["error"], (body, answer)
        assert headers["Access-Control-Allow-Origin"] == "*"
    for body, message in [({"image": "%%%"}, "not base64"), ({"image": 12}, "base64 string"),  # with a CLIP model
                          ({"image": base64.b64encode(b"not an image").decode()}, "does not decode"),
                          ({"text": ["a", "list"]}, "text: a string")]:
        status, answer, _ = post(f"{shapes.url}/knn-service", body)
        assert status == 400 and message in answer["error"], (body, answer)
    for body, message in [({"ids": "1"}, "list of integer ids"), ({"ids": [0, 10**6]}, "not in the index"),
                          ({"ids": [True]}, "list of integer ids")]:
        status, answer, _ = post(f"{url}/metadata", body)
        assert status == 400 and message in answer["error"], (body, answer)
    assert get(f"{url}/nothing-here")[0] == 404
    assert get(f"{url}/knn-service")[0] == 405
    # a body larger than the limit (8 MiB) is refused from its Content-Length, before it is read
    conn = http.client.HTTPConnection(*url.split("//")[1].split(":"))
    conn.putrequest("POST", "/knn-service")
    conn.putheader("Content-Length", str(9 * 2**20))
    conn.endheaders()
    r = conn.getresponse()
    assert r.status == 413 and "more than" in json.loads(r.read())["error"]
    conn.close()
    # still serving
    status, hits, _ = post(f"{url}/knn-service", {"embedding_input": [0.1] * dim, "num_images": 2})
    assert status == 200 and len(hits) == 2


def test_metadata_refuses_more_ids_than_max_results_before_reading_them(synthetic):
    """A million ids (a 7 MB body) once took 4.4 s, 1.6 GB and a 359 MB answer; now a 400 at once."""
    url = f"{synthetic.url}/metadata"
    n = synthetic.service.modalities["image"].knn.index.ntotal
    t0 = time.monotonic()
    status, answer, _ = post(url, {"ids": [i % n for i in range(10**6)]})
    assert status == 400 and "1,000,000 of them, more than 10,000" in answer["error"]
    assert time.monotonic() - t0 < 2
    status, metas, _ = post(url, {"ids": [n - 1, 0] * 5_000})  # exactly --max-results: answered
    assert status == 200 and len(metas) == 10_000 and metas[0]["id"] == n - 1
    for ids, message in [([-1], "not in the index"), ([n], "not in the index"), ([2**64], "integer ids"),
                         ([2**63 - 1], "not in the index"), ([1.0], "integer ids"), (["3"], "integer ids"),
                         ([None], "integer ids"), (None, "integer ids")]:
        status, answer, _ = post(url, {"ids": ids})
        assert status == 400 and message in answer["error"], (ids, answer)


def test_text_is_cut_and_deduplication_bounded(shapes, synthetic, monkeypatch):
    # a text query is embedded from its first max_text_chars characters, whatever its length
    seen = []

    def embed(clip, text=None, image=None):
        seen.append(text)
        return real(clip, text=text, image=image)

    real = serve._embed
    monkeypatch.setattr(serve, "_embed", embed)
    hits = shapes.service.knn({"text": "a red square " + "and more " * 100_000, "num_images": 1})
    assert len(seen[0]) == 2_000 and seen[0].startswith("a red square and more")
    assert color_shape(hits[0]["caption"]) == ({"red"}, {"square"})
    # deduplicate looks at dedup_max results at most: num_result_ids is cut to it, only with deduplicate
    service = copy.copy(synthetic.service)
    service.settings = replace(service.settings, dedup_max=50)
    q = {"embedding_input": embedding_of(service, synthetic.truth.near_groups[0][0]), "num_result_ids": 150}
    assert len(service.knn(q)) == 150
    deduped = service.knn(q | {"deduplicate": True})
    first50 = [h["id"] for h in service.knn(q | {"num_result_ids": 50})]
    assert [h["id"] for h in deduped] == [i for i, drop in zip(first50, near_duplicates(
        np.stack([service.modalities["image"].knn.vector(i) for i in first50]), 0.94)) if not drop]
    assert 1 < len(deduped) < 50


def reference_near_duplicates(v: np.ndarray, threshold: float) -> np.ndarray:
    """clip-back's get_non_uniques, vectorized: one range search over every pair, connected components."""
    import faiss
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    v = np.ascontiguousarray(v / np.linalg.norm(v, axis=1, keepdims=True), dtype=np.float32)
    flat = faiss.IndexFlatIP(v.shape[1])
    flat.add(v)
    lims, _, linked = flat.range_search(v, threshold)
    src = np.repeat(np.arange(len(v)), np.diff(lims).astype(np.int64))
    _, label = connected_components(coo_matrix((np.ones(len(src)), (src, linked)), shape=(len(v),) * 2))
    return np.array([label[i] in label[:i] for i in range(len(v))])


def test_near_duplicates_blockwise_finds_clip_backs_groups_in_bounded_memory():
    rng = np.random.default_rng(5)
    centers = rng.normal(size=(40, 32))
    v = centers[rng.integers(0, 40, 1_000)] + rng.normal(scale=0.08, size=(1_000, 32))  # chains across blocks
    want = reference_near_duplicates(v, 0.94)
    assert 500 < want.sum() < 990
    for block in (7, 128, 2_000):
        assert (near_duplicates(v, 0.94, block=block) == want).all(), block
    # 2,000 copies of one picture: 4 M linked pairs (clip-back: ~290 MiB here); blockwise, ~1/8 of the rows'
    # pairs at a time
    copies = np.tile(rng.normal(size=(1, 64)), (2_000, 1)) + rng.normal(scale=1e-3, size=(2_000, 64))
    tracemalloc.start()
    try:
        drop = near_duplicates(copies, 0.94)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert drop.tolist() == [False] + [True] * 1_999
    assert peak < 80 * 2**20, peak


def test_connections_are_bounded_and_timed_out(synthetic):
    """Two connection threads at most here: a third connection is answered 503 at once; an idle keep-alive
    connection and a body trickled a byte at a time are closed after the timeout, freeing their threads."""
    service = copy.copy(synthetic.service)
    service.settings = replace(service.settings, max_connections=2, timeout_s=0.6)
    server, url = serve_in_thread(service)
    host, port = url.split("//")[1].split(":")
    try:
        idle = socket.create_connection((host, int(port)))
        trickle = socket.create_connection((host, int(port)))
        trickle.sendall(b"POST /metadata HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n")
        t0 = time.monotonic()
        status, answer, headers = get(f"{url}/indices-list")
        assert status == 503 and "busy" in answer["error"] and headers["Access-Control-Allow-Origin"] == "*"
        trickle.settimeout(0.15)
        got = b""
        while time.monotonic() - t0 < 5:  # a byte every 0.15 s: never idle for the timeout, but the body's
            try:  # deadline passes
                trickle.sendall(b"[")
            except OSError:  # closed: what it answered is still there to read
                pass
            try:
                part = trickle.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            got += part
            if not part or b"\r\n\r\n" in got:
                break
        assert got.startswith(b"HTTP/1.1 408") and 0.5 < time.monotonic() - t0 < 4, got
        idle.settimeout(3)
        assert idle.recv(100) == b""  # closed by the server
        assert time.monotonic() - t0 < 4
        status, names, _ = get(f"{url}/indices-list")  # the threads are free again
        assert status == 200 and names == ["synthetic"]
        idle.close()
        trickle.close()
    finally:
        server.shutdown()
        server.server_close()


def test_main_refuses_a_lake_without_an_index_in_one_line(tmp_path, capsys):
    lake = tmp_path / "lake"
    lake.mkdir()
    assert main(["--lake", str(lake)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "run jobs/index.py first" in err
    assert main(["--lake", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "knn-service" in capsys.readouterr().out


@pytest.mark.slow  # a second process loading torch and the model: ~8-18 s here
def test_the_command_serves_until_stopped(shapes):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "laion5b_spark.index.serve", "--lake", shapes.root,
                             "--port", str(port), "--name", "cli"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                status, indices, _ = get(f"http://127.0.0.1:{port}/indices-list")
                break
            except urllib.error.URLError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                time.sleep(0.2)
        assert indices == ["cli"]
        status, hits, _ = post(f"http://127.0.0.1:{port}/knn-service", {"text": "a red square", "num_images": 1})
        assert status == 200 and color_shape(hits[0]["caption"]) == ({"red"}, {"square"})
    finally:
        proc.terminate()
        proc.wait(30)
    assert "serving 'cli'" in proc.stderr.read()


def clip_client_module():
    """clip-retrieval's ``clip_client.py``, read from its wheel (pip download --no-deps, cached): the client needs
    only ``requests``; the package's ``__init__`` imports its back end (Flask, h5py, ...), and installing
    clip-retrieval would replace this project's open_clip, pyarrow and transformers, so the module is loaded alone."""
    cache = Path(os.environ.get("L5S_PEER_CACHE", Path.home() / ".cache" / "l5s-peers"))
    wheels = sorted(cache.glob("clip_retrieval-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "-d", str(cache), "clip-retrieval==2.45.0"], capture_output=True, timeout=180)
        wheels = sorted(cache.glob("clip_retrieval-*.whl"))
    if not wheels:
        pytest.skip("clip-retrieval's wheel could not be downloaded (no PyPI?)")
    pytest.importorskip("requests")
    source = zipfile.ZipFile(wheels[-1]).read("clip_retrieval/clip_client.py")
    module = types.ModuleType("clip_client")
    exec(compile(source, f"{wheels[-1].name}/clip_retrieval/clip_client.py", "exec"), module.__dict__)
    return module


def test_clip_retrievals_own_client_queries_our_service(shapes, tmp_path):
    cc = clip_client_module()
    client = cc.ClipClient(url=f"{shapes.url}/knn-service", indice_name="shapes", num_images=3)  # its defaults:
    hits = client.query(text="a purple triangle")  # deduplicate, safety, violence, aesthetic_score 9
    assert isinstance(hits, list) and 1 <= len(hits) <= 3
    assert color_shape(hits[0]["caption"]) == ({"purple"}, {"triangle"})
    row = shapes.lake.table("dataset").read_arrow(["uid"]).column("uid")[0].as_py()
    jpg = next(r["jpg"] for r in shapes.lake.table("images").read_arrow(["uid", "jpg"]).to_pylist() if r["uid"] == row)
    (tmp_path / "q.jpg").write_bytes(jpg)
    hits = client.query(image=str(tmp_path / "q.jpg"))  # the client sends the file as base64
    assert hits[0]["uid"] == row
    hits = client.query(embedding_input=embedding_of(shapes.service, row))
    assert hits[0]["uid"] == row and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-3)
    text_client = cc.ClipClient(url=f"{shapes.url}/knn-service", indice_name="shapes", num_images=2,
                                modality=cc.Modality.TEXT, deduplicate=False)
    hits = text_client.query(text="a green square")
    assert color_shape(hits[0]["caption"]) == ({"green"}, {"square"})


def test_l5s_search_prints_the_nearest_rows_of_a_text_and_of_a_uid(shapes, capsys):
    """The command-line search over the same indices: JSON lines, ranked, from the release's rows."""
    import json as _json

    from laion5b_spark import cli

    assert cli.main(["search", "--lake", shapes.root, "a red circle", "-k", "3", "--json"]) == 0
    hits = [_json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [h["rank"] for h in hits] == [1, 2, 3] and "circle" in hits[0]["text"] and "red" in hits[0]["text"]
    uid = hits[0]["uid"]
    assert cli.main(["search", "--lake", shapes.root, "--uid", str(uid), "-k", "2"]) == 0
    table = capsys.readouterr().out
    assert str(uid) in table.splitlines()[1]  # a row's own embedding finds the row first
