"""A search service that answers clip-retrieval's back-end HTTP API over a lake's knn indices::

    l5s serve --lake LAKE [--host 127.0.0.1] [--port 1234]

so clip-retrieval's front end (``?back=http://HOST:PORT``) and its ``ClipClient`` query our indices.
Endpoints, requests and responses as ``clip_retrieval/clip_back.py`` defines them:

* ``GET /indices-list`` -> ``["NAME"]``: one lake is one clip-retrieval "indice" (its image and text indices).
* ``POST /knn-service`` {text | image (base64) | image_url | embedding_input, modality, num_images,
  num_result_ids, indice_name, deduplicate, use_safety_model, use_violence_detector, use_mclip,
  aesthetic_score, aesthetic_weight} -> up to ``num_result_ids`` results in rank order, each
  ``{"id", "similarity"}`` and, for the first ``num_images``, the metadata columns too.
* ``POST /metadata`` {ids, indice_name} -> ``[{"id": id, "metadata": {...}}]``.

An ``id`` is a position in the index (clip-back's contiguous faiss ids); the metadata names the row's ``uid``.
Metadata columns follow LAION's clip-retrieval indices: ``caption`` (our ``text``), ``url``, and the dataset's
``similarity`` (the CLIP score), ``punsafe``, ``pwatermark``, ``language``, ``width``, ``height``, ``uid``. In a
knn result ``similarity`` is the query's cosine, as clip-back overwrites it.

Options as clip-back applies them: ``deduplicate`` drops a result whose embedding (the exported fp16 vector,
exact - clip-back reconstructs it from the index) reaches cosine 0.94 with a better-ranked result's, transitively;
``use_safety_model`` drops rows with ``punsafe`` above 0.5 (LAION's NSFW head scored it at clip time, clip-back
runs the same head at query time; a null punsafe is kept); ``use_violence_detector`` filters nothing (no violence
score exists in a lake, as in a clip-back started without its detector); ``use_watermark_filter`` (ours) drops
``pwatermark`` above 0.8; ``aesthetic_*`` are ignored (no aesthetic embeddings: clip-back's behaviour without
them). ``image_url`` is fetched through the download stage's safe fetcher with the service's own allow list
(``--allow``, empty: no private address; the profile's ``download.allow`` and ``download.connect_to`` are for the
crawl, not for anyone who can reach this port; ``--no-image-url`` turns it off). Bad requests answer 400 with
``{"error": ...}``; every answer carries ``Access-Control-Allow-Origin: *`` (the front end runs on another origin).

Limits (ServeSettings; docs/SEARCH.md): ``num_result_ids`` and ``/metadata``'s ``ids`` up to ``--max-results``;
``deduplicate`` over at most ``--dedup-max`` results; ``text`` cut to ``max_text_chars``; bodies up to
``--max-body-mb``; ``--max-connections`` connections at once (more are answered 503); a connection idle, or a body
not arrived, for ``--timeout`` seconds is closed.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import posixpath
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from ..config import ConfigError
from ..lake import Lake, LakeError
from .layout import MODALITIES, read_pointer
from .search import KnnIndex, _embed, open_index

# LAION's clip-retrieval metadata names -> our column (the release's names elsewhere)
COLUMNS = {"caption": "text", "url": "url", "uid": "uid", "similarity": "similarity", "punsafe": "punsafe",
           "pwatermark": "pwatermark", "language": "language", "width": "width", "height": "height"}
_DATASET_COLUMNS = ["uid", "url", "text", "similarity", "punsafe", "pwatermark", "language", "width", "height"]


class BadRequest(ValueError):
    """A request the service refuses: answered 400 with the message."""


@dataclass(frozen=True)
class ServeSettings:
    name: str = ""  # the indice name /indices-list gives ("" = the lake folder's name)
    columns: tuple[str, ...] = tuple(COLUMNS)  # metadata columns returned (keys of COLUMNS)
    dedup_threshold: float = 0.94  # clip-back's get_non_uniques threshold
    unsafe_threshold: float = 0.5  # clip-back's get_unsafe_items threshold, on punsafe
    watermark_threshold: float = 0.8  # LAION's recommended pwatermark cut
    max_results: int = 10_000  # num_result_ids above this is cut to it (the front end's download asks 10,000);
    # /metadata refuses more ids
    dedup_max: int = 3_000  # deduplicate looks at this many results at most (the front end asks 3,000)
    max_body_bytes: int = 8 * 2**20  # a request body: a base64 query image of 6 MiB (4/3 of the file)
    max_text_chars: int = 2_000  # a text query is cut here (CLIP's tokenizers keep 77 tokens of it anyway)
    max_image_pixels: int = 50_000_000  # a query image larger than this is refused before decoding
    timeout_s: float = 30.0  # a connection idle this long is closed; a request body must arrive within it
    max_connections: int = 64  # connections served at once (one thread each); more are answered 503
    fetch_policy: object | None = None  # safe_fetch.FetchPolicy for image_url; None = image_url refused


@dataclass
class _Modality:
    knn: KnnIndex
    metadata: pa.Table  # row i = index id i (nulls where a row has no metadata any more)


@dataclass
class SearchService:
    """One lake's indices, metadata and query encoders; thread-safe (faiss and torch searches only read)."""

    lake: Lake
    settings: ServeSettings = field(default_factory=ServeSettings)

    def __post_init__(self):
        s = self.settings
        unknown = [c for c in s.columns if c not in COLUMNS]
        if unknown:
            raise ConfigError(f"--columns: unknown {', '.join(unknown)}; choose from {', '.join(COLUMNS)}")
        names = [m for m in MODALITIES if read_pointer(self.lake, m) is not None]
        if not names:
            raise LakeError(f"{self.lake.url} has no committed index (index/image, index/text): "
                            "run jobs/index.py first")
        self.name = s.name or posixpath.basename(self.lake.url.rstrip("/")) or "lake"
        self.modalities: dict[str, _Modality] = {}
        for m in names:
            knn = open_index(self.lake, m)
            same = next((x for x in self.modalities.values() if np.array_equal(x.knn.uids, knn.uids)), None)
            meta = same.metadata if same is not None else metadata_table(self.lake, knn.uids)
            self.modalities[m] = _Modality(knn, meta)
        first = self.modalities[names[0]]
        self.clip = first.knn.pointer["clip"]
        self.dim = int(first.knn.pointer["dim"])
        self.encoder_error = None
        try:
            _embed(self.clip, text="warm up")  # loads the model now: the first query is not the slow one
        except Exception as exc:  # noqa: BLE001 - embedding queries still work without the model
            self.encoder_error = (f"the CLIP model the index was built with ({self.clip['model']} "
                                  f"{self.clip.get('pretrained') or ''}) does not load here: {type(exc).__name__}: "
                                  f"{str(exc).split('. ')[0][:200]}")
        self._fetcher = None
        if s.fetch_policy is not None:
            from ..download.safe_fetch import Fetcher

            self._fetcher = Fetcher(s.fetch_policy)
        self._mclip = _mclip_ident(self.lake)
        self.null_punsafe = all(x.metadata.column("punsafe").null_count == x.metadata.num_rows
                                for x in self.modalities.values())

    # -- the three endpoints ---------------------------------------------------------------------------
    def indices(self) -> list[str]:
        return [self.name]

    def knn(self, req: dict) -> list[dict]:
        self._check_indice(req)
        modality = req.get("modality") or "image"
        if modality not in ("image", "text"):
            raise BadRequest(f"modality {modality!r}: image or text")
        if modality not in self.modalities:
            raise BadRequest(f"this lake has no {modality} index (jobs/index.py with index.{modality}=true)")
        mod = self.modalities[modality]
        num_images = _count(req, "num_images", 40)
        num_result_ids = _count(req, "num_result_ids", num_images)
        k = min(num_result_ids, self.settings.max_results, mod.knn.index.ntotal)  # as clip-back: num_images
        # only says how many of the results carry metadata
        deduplicate = _flag(req, "deduplicate")
        if deduplicate:  # comparing every result with every other: quadratic, so bounded
            k = min(k, self.settings.dedup_max)
        query = self._query(req)
        if k == 0:
            return []
        scores, ids = mod.knn.index.search(query, k)
        keep = ids[0] >= 0
        ids, scores = ids[0][keep], scores[0][keep]
        drop = np.zeros(len(ids), dtype=bool)
        if deduplicate and len(ids) > 1:
            drop |= near_duplicates(vectors_of(mod.knn, ids), self.settings.dedup_threshold)
        if _flag(req, "use_safety_model"):
            drop |= _above(mod.metadata, "punsafe", ids, self.settings.unsafe_threshold)
        if _flag(req, "use_watermark_filter"):
            drop |= _above(mod.metadata, "pwatermark", ids, self.settings.watermark_threshold)
        # use_violence_detector, aesthetic_score, aesthetic_weight: nothing in a lake to apply them with
        ids, scores = ids[~drop], scores[~drop]
        metas = self._rows(mod, ids[:num_images])
        out = []
        for rank, (i, score) in enumerate(zip(ids.tolist(), scores.tolist())):
            row = dict(metas[rank]) if rank < len(metas) else {}
            row["id"] = i
            row["similarity"] = score
            out.append(row)
        return out

    def metadata(self, req: dict) -> list[dict]:
        self._check_indice(req)
        ids = req.get("ids")
        if not isinstance(ids, list):
            raise BadRequest("ids: a list of integer ids, as /knn-service returns them")
        if len(ids) > self.settings.max_results:  # checked first: a million ids is a 2 MB body
            raise BadRequest(f"ids: {len(ids):,} of them, more than {self.settings.max_results:,} (--max-results)")
        if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):  # a JSON integer beyond 64 bits
            raise BadRequest("ids: a list of integer ids, as /knn-service returns them")  # is a float here
        if not ids:
            return []
        mod = self.modalities.get("image") or next(iter(self.modalities.values()))
        n = mod.metadata.num_rows
        bad = [i for i in ids if not 0 <= i < n]
        if bad:
            raise BadRequest(f"ids {bad[:5]} are not in the index (ids are 0..{n - 1})")
        return [{"id": i, "metadata": m} for i, m in zip(ids, self._rows(mod, np.asarray(ids, dtype=np.int64)))]

    # -- helpers ---------------------------------------------------------------------------------------
    def _check_indice(self, req: dict) -> None:
        name = req.get("indice_name")
        if name not in (None, "", self.name):
            raise BadRequest(f"indice_name {name!r}: this service has {self.name!r} (GET /indices-list)")

    def _query(self, req: dict) -> np.ndarray:
        """The query embedding, clip-back's precedence: text, then image, then image_url, then embedding_input."""
        text, image, url, emb = (req.get(k) for k in ("text", "image", "image_url", "embedding_input"))
        if text not in (None, ""):
            if not isinstance(text, str):
                raise BadRequest("text: a string")
            text = text[:self.settings.max_text_chars]  # the tokenizer would read all of it, to keep 77 tokens
            self._need_encoder()
            if _flag(req, "use_mclip") and self._mclip:
                from ..clip.mclip import load_mclip

                q = load_mclip(self._mclip, "cpu").encode_texts([text]).numpy()
            else:
                q = _embed(self.clip, text=text)
        elif image not in (None, "") or url not in (None, ""):
            self._need_encoder()
            data = self._image_bytes(image) if image not in (None, "") else self._fetch(url)
            q = _embed(self.clip, image=decode_image(data, self.settings.max_image_pixels))
        elif emb is not None:
            try:
                q = np.asarray(emb, dtype=np.float32).reshape(1, -1)
            except (TypeError, ValueError):
                raise BadRequest("embedding_input: a list of numbers") from None
            if q.shape[1] != self.dim or not np.all(np.isfinite(q)) or not np.any(q):
                raise BadRequest(f"embedding_input: {self.dim} finite numbers, not all zero (got {q.shape[1]})")
            q = q / np.linalg.norm(q)  # cosine scores, as the indexed vectors are unit length
        else:
            raise BadRequest("give one of text, image (base64), image_url, embedding_input")
        return np.ascontiguousarray(q, dtype=np.float32)

    def _need_encoder(self) -> None:
        if self.encoder_error:
            raise BadRequest(self.encoder_error + "; embedding_input queries work")

    @staticmethod
    def _image_bytes(image) -> bytes:
        if not isinstance(image, str):
            raise BadRequest("image: a base64 string")
        if image.startswith("data:"):  # a data: URL as browsers make it
            image = image.partition(",")[2]
        try:
            data = base64.b64decode("".join(image.split()), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest(f"image: not base64 ({exc})") from None
        if not data:
            raise BadRequest("image: empty")
        return data

    def _fetch(self, url) -> bytes:
        if not isinstance(url, str):
            raise BadRequest("image_url: a string")
        if self._fetcher is None:
            raise BadRequest("image_url queries are off on this service (started with --no-image-url)")
        from ..download.safe_fetch import FetchError

        try:
            got = self._fetcher.fetch(url)
        except FetchError as exc:
            raise BadRequest(f"image_url: {exc.reason}: {exc}") from None
        if not 200 <= got.status < 300:
            raise BadRequest(f"image_url: HTTP {got.status}")
        return got.body

    def _rows(self, mod: _Modality, ids: np.ndarray) -> list[dict]:
        rows = mod.metadata.take(pa.array(np.asarray(ids, dtype=np.int64))).to_pylist()
        cols = [(name, COLUMNS[name]) for name in self.settings.columns]
        return [{name: r[col] for name, col in cols} if r["uid"] is not None else {} for r in rows]


def metadata_table(lake: Lake, uids: np.ndarray) -> pa.Table:
    """The metadata of every index id, aligned (row i = id i): ``dataset``'s columns; ids not in ``dataset``
    (an index of every scored row, ``index.source = "scored"``) take ``scored``'s scores and ``images``' url,
    text, language and size. Read once at start, as clip-back loads its metadata parquet."""
    want = pa.array(uids, pa.int64())
    schema = pa.schema([lake_field(c) for c in _DATASET_COLUMNS])
    found = [_read(lake, "dataset", _DATASET_COLUMNS, want)]
    missing = pc.filter(want, pc.invert(pc.is_in(want, value_set=found[0].column("uid"))))
    if len(missing):
        scores = _read(lake, "scored", ["uid", "similarity", "punsafe", "pwatermark"], missing)
        images = _read(lake, "images", ["uid", "url", "text", "language", "width", "height"], missing)
        found.append(images.join(scores, "uid", join_type="left outer").select(_DATASET_COLUMNS).cast(schema))
    rows = pa.concat_tables([t.cast(schema) for t in found])
    at = pc.index_in(want, value_set=rows.column("uid").combine_chunks())  # first row of a uid; null: none
    return rows.take(at)


def lake_field(name: str) -> pa.Field:
    from ..schemas import DATASET

    return DATASET.field(name).with_nullable(True)


def _read(lake: Lake, table: str, columns: list[str], uids: pa.Array) -> pa.Table:
    t = lake.table(table)
    if not t.files():
        return pa.table({c: pa.nulls(0, lake_field(c).type if c in _DATASET_COLUMNS else pa.int64()) for c in columns})
    return t.to_arrow(columns, filter=pc.field("uid").isin(uids))


def vectors_of(knn: KnnIndex, ids: np.ndarray) -> np.ndarray:
    """The exported embeddings of index ids, one gather per part (``KnnIndex.vector`` reads and caches a part;
    one call per id costs 40% of a deduplicated query over 200 ids)."""
    offsets = np.concatenate([[0], np.cumsum(knn.pointer["part_rows"])])
    part = np.searchsorted(offsets, ids, side="right") - 1
    out = np.empty((len(ids), int(knn.pointer["dim"])), dtype=np.float32)
    for p in np.unique(part):
        at = np.flatnonzero(part == p)
        knn.vector(int(ids[at[0]]))  # reads part p once (memory-mapped on a local lake)
        out[at] = knn._parts[int(p)][ids[at] - offsets[p]]
    return out


def near_duplicates(vectors: np.ndarray, threshold: float, block: int = 512) -> np.ndarray:
    """clip-back's deduplication: results whose cosine reaches ``threshold`` are linked, and each connected
    group keeps its best-ranked member (rows are in rank order). Returns the mask of rows to drop.

    clip-back range-searches all n x n pairs at once: a cluster of n copies is n^2 links (10,000 results: 1.2 GB
    of them). Here ``block`` rows at a time are compared with the rows ranked above them, and the groups found so
    far are carried as one link per row to its group's best member: memory ~ block x n, the same groups."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    v = np.ascontiguousarray(vectors, dtype=np.float32)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    n = len(v)
    best = np.arange(n)  # each row's group's best-ranked member, as far as the rows compared so far link them
    for start in range(0, n, block):
        end = min(start + block, n)
        row, col = np.nonzero(v[start:end] @ v[:end].T >= threshold)
        row += start
        above = col < row  # each pair once, and not a row with itself
        if not above.any():
            continue
        row, col = row[above], col[above]
        links = (np.concatenate([row, np.arange(end)]), np.concatenate([col, best[:end]]))
        graph = coo_matrix((np.ones(len(links[0]), dtype=np.int8), links), shape=(end, end))
        _, label = connected_components(graph, directed=False)
        first = np.full(label.max() + 1, end)
        np.minimum.at(first, label, np.arange(end))
        best[:end] = first[label]
    return best != np.arange(n)


def _above(meta: pa.Table, column: str, ids: np.ndarray, threshold: float) -> np.ndarray:
    values = meta.column(column).take(pa.array(ids, pa.int64()))
    return np.asarray(pc.fill_null(pc.greater(values, threshold), False).to_numpy(zero_copy_only=False), dtype=bool)


def decode_image(data: bytes, max_pixels: int):
    """A query image as PIL, refused (400) when it does not decode or its header declares more pixels than
    ``max_pixels`` (checked before the pixels are decoded)."""
    from PIL import Image

    try:
        im = Image.open(io.BytesIO(data))
        w, h = im.size
        if w * h > max_pixels:
            raise BadRequest(f"image of {w}x{h} pixels: more than {max_pixels:,}")
        im.load()
        return im
    except BadRequest:
        raise
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for bad bytes; all mean the same here
        raise BadRequest(f"image does not decode: {type(exc).__name__}: {exc}") from None


def _mclip_ident(lake: Lake) -> str | None:
    """The mclip text tower the clip run scored multilingual captions with (what use_mclip asks for), if any."""
    meta = lake.table("scored").meta()
    if meta.get("clip.multilingual_kind") == "mclip":
        return meta.get("clip.multilingual_model") or None
    return None


def _count(req: dict, key: str, default: int) -> int:
    v = req.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise BadRequest(f"{key}: a non-negative integer")
    return v


def _flag(req: dict, key: str) -> bool:
    v = req.get(key, False)
    if v is None:
        return False
    if not isinstance(v, bool):
        raise BadRequest(f"{key}: true or false")
    return v


# -- HTTP ----------------------------------------------------------------------------------------------
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client's session reuses its connection
    server_version = "laion5b-spark-serve"
    service: SearchService  # set on the subclass make_server builds
    quiet = False
    timeout = 30.0  # the socket's (StreamRequestHandler sets it): an idle keep-alive connection is closed after it

    def setup(self):
        super().setup()
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_OPTIONS(self):  # CORS preflight (a browser asks before a POST with a JSON content type)
        self._send(204, None, {"Access-Control-Allow-Methods": "GET, POST, OPTIONS",
                               "Access-Control-Allow-Headers": self.headers.get("Access-Control-Request-Headers")
                               or "Content-Type", "Access-Control-Max-Age": "86400"})

    def do_GET(self):
        path = self._path()
        if path == "/indices-list":
            return self._send(200, self.service.indices())
        if path in ("/knn-service", "/metadata"):
            return self._send(405, {"error": f"{path} takes POST"}, {"Allow": "POST, OPTIONS"})
        if path == "/":
            return self._send(200, {"service": "laion5b-spark search (clip-retrieval back-end API)",
                                    "indices": self.service.indices(),
                                    "endpoints": ["GET /indices-list", "POST /knn-service", "POST /metadata"]})
        return self._send(404, {"error": f"no such endpoint: {path}"})

    def do_POST(self):
        path = self._path()
        handler = {"/knn-service": self.service.knn, "/metadata": self.service.metadata}.get(path)
        size = self.headers.get("Content-Length")
        if size is None or not size.isdigit():
            return self._send(411, {"error": "a POST needs a Content-Length"}, close=True)
        if int(size) > self.service.settings.max_body_bytes:
            return self._send(413, {"error": f"request body of {int(size):,} bytes: more than "
                                             f"{self.service.settings.max_body_bytes:,}"}, close=True)
        try:
            body = self._read_body(int(size))
        except TimeoutError:
            return self._send(408, {"error": f"the request body did not arrive within {self.timeout:g}s"},
                              close=True)
        except ConnectionError:
            self.close_connection = True
            return
        if handler is None:
            return self._send(404 if path != "/indices-list" else 405, {"error": f"no POST endpoint {path}"})
        try:
            req = orjson.loads(body)  # as clip-back's get_json(force=True): whatever the content type says
            if not isinstance(req, dict):
                raise BadRequest("the body must be a JSON object")
            return self._send(200, handler(req))
        except orjson.JSONDecodeError as exc:
            return self._send(400, {"error": f"the body is not JSON: {exc}"})
        except BadRequest as exc:
            return self._send(400, {"error": str(exc)})
        except Exception as exc:  # noqa: BLE001 - one request's failure is its answer, never the server's end
            self.log_error("%s failed: %s: %s", path, type(exc).__name__, exc)
            return self._send(500, {"error": f"{type(exc).__name__}: {exc}"})

    def _read_body(self, size: int) -> bytes:
        """The body, within ``timeout`` seconds in all (a socket timeout alone lets a client trickle a byte at a
        time and hold the thread); TimeoutError past it, ConnectionError when the client goes first."""
        deadline = time.monotonic() + self.timeout
        parts, left = [], size
        try:
            while left:
                wait = deadline - time.monotonic()
                if wait <= 0:
                    raise TimeoutError
                self.connection.settimeout(wait)
                part = self.rfile.read1(min(left, 1 << 16))
                if not part:
                    raise ConnectionError("the client closed the connection mid-body")
                parts.append(part)
                left -= len(part)
        finally:
            self.connection.settimeout(self.timeout)
        return b"".join(parts)

    def _path(self) -> str:
        return urlsplit(self.path).path.rstrip("/") or "/"

    def _send(self, status: int, obj, headers: dict | None = None, close: bool = False) -> None:
        body = b"" if obj is None else orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
        self.send_response(status)
        self.send_header("Access-Control-Allow-Origin", "*")
        if obj is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers_and(body)

    def end_headers_and(self, body: bytes) -> None:
        """end_headers, with the body in the same write: two small writes would wait on the client's delayed
        ACK (Nagle), ~40 ms per answer on a kept-alive connection."""
        head = getattr(self, "_headers_buffer", None)
        if head is None:  # HTTP/0.9: no head
            self.wfile.write(body)
            return
        head.append(b"\r\n" + body)
        self.flush_headers()

    def log_message(self, fmt, *args):
        if not self.quiet:
            super().log_message(fmt, *args)


class _Server(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most ``max_connections`` connection threads: one more is answered 503 from
    the accepting thread and closed (the stock server starts a thread per connection, without bound)."""

    daemon_threads = True

    def __init__(self, address, handler, max_connections: int):
        super().__init__(address, handler)
        self.max_connections = max_connections
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address):
        if not self._slots.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse(self, request) -> None:
        body = orjson.dumps({"error": f"busy: {self.max_connections} connections open; retry later"})
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                "\r\nRetry-After: 1\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n").encode()
        try:
            request.settimeout(0.05)  # never long: this is the accepting thread
            try:  # what the client sent already: closed unread, it would reset the connection over the answer
                request.recv(1 << 16)
            except OSError:
                pass
            request.sendall(head + body)
        except OSError:
            pass
        self.shutdown_request(request)


def make_server(service: SearchService, host: str = "127.0.0.1", port: int = 1234,
                quiet: bool = False) -> ThreadingHTTPServer:
    """A threaded HTTP server answering ``service`` (not started: call ``serve_forever``), with its settings'
    timeout and connection bound."""
    s = service.settings
    handler = type("Handler", (_Handler,), {"service": service, "quiet": quiet, "timeout": s.timeout_s})
    return _Server((host, port), handler, s.max_connections)


def serve_in_thread(service: SearchService, host: str = "127.0.0.1", port: int = 0,
                    quiet: bool = True) -> tuple[ThreadingHTTPServer, str]:
    """Started in a daemon thread (tests, notebooks): the server and its base URL; ``server.shutdown()`` stops it."""
    server = make_server(service, host, port, quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"


def image_url_policy(cfg: dict, allow: Sequence[str]) -> object:
    """The fetch rules of image_url queries: the profile's ``download.*`` size, time and redirect limits, but
    ``allow`` (``--allow``) as the only private networks admitted and no ``connect_to``: the download stage's
    network exceptions are for the crawl, not for whoever can reach the service."""
    from ..download.job import _settings
    from ..download.safe_fetch import Fetcher

    policy = replace(_settings(cfg)[0], allow=tuple(allow), connect_to=())
    try:
        Fetcher(policy)
    except ValueError as exc:
        raise ConfigError(f"--allow: {exc}") from None
    return policy


def _parser() -> argparse.ArgumentParser:
    d = ServeSettings()
    ap = argparse.ArgumentParser(prog="l5s serve", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lake", required=True, help="the lake root (a folder or s3://bucket/prefix) with an index")
    ap.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    ap.add_argument("--port", type=int, default=1234, help="port (default 1234, clip-back's)")
    ap.add_argument("--name", default="", help="the indice name clients give (default: the lake folder's name)")
    ap.add_argument("--columns", default=",".join(COLUMNS),
                    help=f"metadata columns returned, comma-separated (default: {','.join(COLUMNS)})")
    ap.add_argument("--dedup-threshold", type=float, default=d.dedup_threshold, help="deduplicate: cosine (0.94)")
    ap.add_argument("--unsafe-threshold", type=float, default=d.unsafe_threshold,
                    help="use_safety_model: punsafe above it goes")
    ap.add_argument("--watermark-threshold", type=float, default=d.watermark_threshold,
                    help="use_watermark_filter: pwatermark above it goes")
    ap.add_argument("--max-results", type=int, default=d.max_results,
                    help=f"num_result_ids is cut to this; /metadata refuses more ids (default {d.max_results:,})")
    ap.add_argument("--dedup-max", type=int, default=d.dedup_max,
                    help=f"with deduplicate, num_result_ids is cut to this (default {d.dedup_max:,})")
    ap.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 2**20,
                    help=f"a larger request body is refused, 413 (default {d.max_body_bytes / 2**20:g})")
    ap.add_argument("--timeout", type=float, default=d.timeout_s,
                    help=f"seconds a connection may idle, or a body take to arrive (default {d.timeout_s:g})")
    ap.add_argument("--max-connections", type=int, default=d.max_connections,
                    help=f"connections served at once; more are answered 503 (default {d.max_connections})")
    ap.add_argument("--no-image-url", action="store_true",
                    help="refuse image_url queries (default: fetched with the download stage's safety rules and "
                         "download.max_bytes / deadline_s, but --allow's networks, not download.allow/connect_to)")
    ap.add_argument("--allow", action="append", default=[], metavar="NETWORK",
                    help="a private network or address:port image_url may reach, e.g. 10.0.0.0/8 (repeatable, "
                         "or comma-separated; default none)")
    ap.add_argument("--storage-options", metavar="JSON", default=None, help="fsspec options for the lake")
    ap.add_argument("--config", default=None, help="a pipeline profile: lake.storage_options and download.*")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a setting, as for the jobs (lake.storage_options, download.max_bytes, ...)")
    return ap


def settings_from_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Lake, ServeSettings]:
    """The command line, checked: usage errors exit 2 through argparse; a bad lake or profile raises LakeError or
    ConfigError."""
    from ..config import load_config
    from ..fsck import lake_from_args

    ap = _parser()
    args = ap.parse_args(argv)
    if not 0 <= args.port < 65536:
        ap.error("--port: 0..65535")
    for name in ("max_results", "dedup_max", "max_connections"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: at least 1")
    if not (args.timeout > 0 and args.max_body_mb > 0):
        ap.error("--timeout and --max-body-mb: more than 0")
    lake = lake_from_args(ap, args)
    policy = None
    if not args.no_image_url:
        allow = [a.strip() for entry in args.allow for a in entry.split(",") if a.strip()]
        policy = image_url_policy(load_config(args.config, args.overrides), allow)
    settings = ServeSettings(name=args.name, columns=tuple(c.strip() for c in args.columns.split(",") if c.strip()),
                             dedup_threshold=args.dedup_threshold, unsafe_threshold=args.unsafe_threshold,
                             watermark_threshold=args.watermark_threshold, max_results=args.max_results,
                             dedup_max=args.dedup_max, max_body_bytes=int(args.max_body_mb * 2**20),
                             timeout_s=args.timeout, max_connections=args.max_connections, fetch_policy=policy)
    return args, lake, settings


def main(argv: list[str] | None = None) -> int:
    try:
        args, lake, settings = settings_from_args(argv)
        t0 = time.monotonic()
        service = SearchService(lake, settings)
        server = make_server(service, args.host, args.port)
    except (LakeError, ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    host, port = server.server_address[:2]
    sizes = ", ".join(f"{m} {x.knn.index.ntotal:,} vectors" for m, x in service.modalities.items())
    print(f"serving {service.name!r} ({sizes}; loaded in {time.monotonic() - t0:.1f}s) on http://{host}:{port}",
          file=sys.stderr)
    if service.encoder_error:
        print(f"warning: {service.encoder_error}: text and image queries answer 400", file=sys.stderr)
    if len({id(x.metadata) for x in service.modalities.values()}) > 1:
        print("note: the image and text indices are of different builds (other ids): /metadata answers for the "
              "image index's ids; rerun jobs/index.py to build both from the same rows", file=sys.stderr)
    if service.null_punsafe:
        print("note: punsafe is null in every row (no clip.nsfw_head): use_safety_model filters nothing",
              file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
