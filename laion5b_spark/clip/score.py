"""Score images rows: CLIP similarity, embeddings, punsafe, pwatermark. Plain Python, no Spark.

Each row falls in one of LAION-5B's buckets by its language: ``english`` (``clip.english``), ``multilingual`` and
``nolang``. English rows are scored by ``clip.model``; the other two by ``clip.multilingual_model`` when one is
set (else by ``clip.model``), each bucket against its own threshold. A multilingual model of kind ``mclip`` is a
text tower only, scored against ``clip.model``'s image embedding, so every row's image goes through one image tower
once; kind ``open_clip`` brings its own image tower, and those rows go through it instead.

Built to keep a GPU busy (``Scorer.score_tables``): the rows of a stream of tables are cut into batches of
``batch_size`` rows that share their image towers; the decode pool decodes and resizes the images of the next
batches (PIL releases the GIL) straight into a ring of pinned buffers, and tokenizes their captions (Rust
tokenizers release it too), while the device encodes the current batch from an asynchronous copy. Results stay on
the device until a table is done, and a table's results are fetched only after the next table's first batch was
queued, so the device never waits for the host between tables. The output columns are built from arrays, not rows.
Rows with no image bytes are ``no_image``, bytes that do not decode ``decode_error``: counted, never fatal.
"""

from __future__ import annotations

import io
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from ..config import DEFAULTS
from ..schemas import SCORED
from . import models
from .heads import NsfwHead, WatermarkModel

_CLIP = DEFAULTS["clip"]  # the defaults live in config.DEFAULTS alone
_RING = 3  # batches in flight: one on the device, two being decoded
_STATUS = pa.array(["no_image", "decode_error", "scored"])
_NO_IMAGE, _DECODE_ERROR, _SCORED = 0, 1, 2
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipSettings:
    model: str = _CLIP["model"]
    pretrained: str = _CLIP["pretrained"]  # an open_clip tag, a checkpoint path, or "" for random weights
    threshold: float = _CLIP["threshold"]  # LAION-5B English with ViT-B/32 (LAION-400M: 0.30)
    multilingual_model: str = _CLIP["multilingual_model"]  # "" = clip.model scores every language
    multilingual_pretrained: str = _CLIP["multilingual_pretrained"]
    multilingual_threshold: float = _CLIP["multilingual_threshold"]
    multilingual_kind: str = _CLIP["multilingual_kind"]  # "mclip": a text tower on clip.model's images
    nolang_threshold: float = _CLIP["nolang_threshold"]
    english: tuple[str, ...] = tuple(_CLIP["english"])
    batch_size: int = _CLIP["batch_size"]
    decode_threads: int = _CLIP["decode_threads"]
    gpu_decode: bool = _CLIP["gpu_decode"]  # JPEGs decoded and resized on the device (CPU fallback per batch)
    nsfw_head: str = _CLIP["nsfw_head"]  # .safetensors path (heads.NsfwHead); "" = punsafe stays null
    watermark_model: str = _CLIP["watermark_model"]  # .safetensors path (heads.WatermarkModel); "" = pwatermark stays null
    watermark_arch: str = _CLIP["watermark_arch"]
    watermark_size: int = _CLIP["watermark_size"]
    watermark_class: int = _CLIP["watermark_class"]


@dataclass(frozen=True)
class Bucket:
    name: str
    text: object  # ClipModel or mclip.MClipText: tokenize(texts) on any thread, encode_tokens(tokens) on the device
    tower: models.ClipModel  # whose image embedding the text is compared with
    threshold: float


@dataclass
class _Run:
    """One input table on its way through the device."""

    rows: pa.Table
    jpgs: list
    texts: list
    bucket: np.ndarray  # index into Scorer.buckets per row
    status: np.ndarray  # _NO_IMAGE / _DECODE_ERROR / _SCORED per row, decode failures filled in as batches land
    img: dict = field(default_factory=dict)  # tower index -> (n, D) image embeddings on the device
    txt: dict = field(default_factory=dict)  # bucket index -> (n, D) text embeddings on the device
    wm: torch.Tensor | None = None
    pending: int = 0  # batches not launched yet


@dataclass
class _Batch:
    run: _Run
    towers: tuple[int, ...]  # the image towers this batch's rows need (the scoring one, plus clip.model for NSFW)
    idx: np.ndarray  # row positions in run.rows
    slot: int = 0  # ring position
    decoded: list | None = None  # futures of the decode pool, one per row
    targets: list | None = None  # (tower index or "wm", the slot's buffer) the decode writes into
    tokens: dict | None = None  # bucket index -> (row positions, future of their tokens)


class Scorer:
    """The models of one Python worker on one device; ``score_tables`` (or ``score`` for one table) is the work."""

    def __init__(self, s: ClipSettings, device: str):
        self.s = s
        self.device = torch.device(device)
        self.main = models.load(s.model, s.pretrained, device)
        self.towers: list[models.ClipModel] = [self.main]
        self.buckets = [Bucket("english", self.main, self.main, s.threshold)]
        if s.multilingual_model:
            if s.multilingual_kind == "mclip":
                from .mclip import load_mclip

                text, tower = load_mclip(s.multilingual_model, device), self.main
            else:
                text = tower = models.load(s.multilingual_model, s.multilingual_pretrained, device)
                self.towers.append(tower)
            self.buckets += [Bucket("multilingual", text, tower, s.multilingual_threshold),
                             Bucket("nolang", text, tower, s.nolang_threshold)]
        self.nsfw = NsfwHead.load(s.nsfw_head, self.main.embed_dim, device) if s.nsfw_head else None
        self.watermark = WatermarkModel(s.watermark_model, device, s.watermark_arch, s.watermark_size,
                                        s.watermark_class) if s.watermark_model else None
        self.pool = ThreadPoolExecutor(max(1, s.decode_threads), thread_name_prefix="decode")
        self.pinned = self.device.type == "cuda"
        self._buffers: dict[tuple[int, object], torch.Tensor] = {}  # (slot, tower index or "wm") -> batch buffer
        self._copied: list = [None] * _RING  # per slot: the event after its buffers' copies to the device
        self.gpu_decoder = None
        if s.gpu_decode:
            from .gpu_decode import DeviceDecoder

            self.gpu_decoder = DeviceDecoder.for_models(self.towers, self.watermark, self.device)
            if self.gpu_decoder is None:
                log.warning("clip.gpu_decode: a model's preprocessing is not Resize + CenterCrop; decoding on CPU")

    # -- the stream ---------------------------------------------------------------------------------------------

    def score(self, rows: pa.Table) -> pa.Table:
        """``rows``: uid, jpg, text, language (any order). Returns SCORED rows in the same order."""
        return next(iter(self.score_tables([rows])))[1]

    def close(self) -> None:
        """Stop the decode pool and drop the batch buffers (the models stay in models' cache)."""
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._buffers.clear()

    def score_tables(self, tables: Iterable[pa.Table]) -> Iterator[tuple[pa.Table, pa.Table]]:
        """(input table, its SCORED rows in the same order) per input table, in order. The next batches (of this table or the next ones) are
        decoded while the device works on the current one, and a table's results are fetched once a later batch is
        queued on the device, or when nothing is left."""
        source = iter(tables)
        planned: deque[_Batch] = deque()  # decode not submitted yet
        inflight: deque[_Batch] = deque()  # decoding in the pool
        runs: deque[_Run] = deque()  # input order, until yielded
        exhausted, jobs, last = False, 0, None
        while True:
            while not exhausted and len(planned) + len(inflight) < _RING:
                rows = next(source, None)
                if rows is None:
                    exhausted = True
                else:
                    run, batches = self._plan(rows)
                    runs.append(run)
                    planned.extend(batches)
            while planned and len(inflight) < _RING - 1:
                b = planned.popleft()
                b.slot, jobs = jobs % _RING, jobs + 1
                self._submit(b)
                inflight.append(b)
            if inflight:
                b = inflight.popleft()
                self._launch(b)
                b.run.pending -= 1
                last = b.run
            left = bool(planned or inflight or not exhausted)
            while runs and runs[0].pending == 0 and (runs[0] is not last or not left):
                run = runs.popleft()
                yield run.rows, self._finish(run)
            if not left and not runs:
                return

    def _plan(self, rows: pa.Table) -> tuple[_Run, list[_Batch]]:
        n = rows.num_rows
        jpgs = rows.column("jpg").to_pylist()
        has = np.fromiter((j is not None for j in jpgs), dtype=bool, count=n)
        bucket = np.zeros(n, dtype=np.int8)
        if len(self.buckets) > 1:
            lang = rows.column("language")
            english = pc.is_in(lang, value_set=pa.array(list(self.s.english), pa.string()))
            nolang = pc.equal(lang, "nolang")
            bucket = np.where(pc.fill_null(english, False).to_numpy(zero_copy_only=False), 0,
                              np.where(pc.fill_null(nolang, False).to_numpy(zero_copy_only=False), 2, 1)
                              ).astype(np.int8)
        run = _Run(rows, jpgs, rows.column("text").to_pylist(), bucket,
                   np.where(has, _SCORED, _NO_IMAGE).astype(np.int8))
        # rows that need the same image towers go in the same batches: the scoring tower, and clip.model for NSFW
        tower_of = np.array([self.towers.index(b.tower) for b in self.buckets], dtype=np.int8)[bucket]
        need_main = self.nsfw is not None
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in np.flatnonzero(has):
            t = int(tower_of[i])
            key = (t,) if t == 0 or not need_main else (t, 0)
            groups.setdefault(key, []).append(int(i))
        bs = max(1, self.s.batch_size)
        batches = [_Batch(run, key, np.asarray(idx[k:k + bs], dtype=np.int64))
                   for key, idx in groups.items() for k in range(0, len(idx), bs)]
        run.pending = len(batches)
        return run, batches

    # -- host side: decode and tokenize in the pool -------------------------------------------------------------

    def _buffer(self, slot: int, key, shape: tuple, dtype: torch.dtype) -> torch.Tensor:
        buf = self._buffers.get((slot, key))
        if buf is None or buf.shape[1:] != shape or buf.dtype != dtype:
            buf = torch.empty((max(1, self.s.batch_size), *shape), dtype=dtype, pin_memory=self.pinned)
            self._buffers[(slot, key)] = buf
        return buf

    def _submit(self, b: _Batch) -> None:
        event = self._copied[b.slot]
        if event is not None:  # the slot's buffers are free once their last copies to the device are done
            event.synchronize()
            self._copied[b.slot] = None
        run = b.run
        b.tokens = {}
        for k in np.unique(run.bucket[b.idx]):
            rows = b.idx[run.bucket[b.idx] == k]
            bucket = self.buckets[int(k)]
            b.tokens[int(k)] = (rows, self.pool.submit(bucket.text.tokenize, [run.texts[i] for i in rows]))
        if self.gpu_decoder is None:  # else decoded at launch, on the device
            self._submit_decode(b)

    def _submit_decode(self, b: _Batch) -> None:
        b.targets = [(t, self._buffer(b.slot, t, *self.towers[t].input_spec)) for t in b.towers]
        if self.watermark is not None:
            b.targets.append(("wm", self._buffer(b.slot, "wm", *self.watermark.input_spec)))
        b.decoded = [self.pool.submit(self._decode_into, b.run.jpgs[i], b.targets, k) for k, i in enumerate(b.idx)]

    def _decode_into(self, data: bytes, targets: list, k: int) -> bool:
        """In a pool thread: one image decoded once and prepared for every target, written into row ``k`` of each
        target's buffer; False when the bytes do not decode (a counted row, never fatal)."""
        try:
            im = Image.open(io.BytesIO(data)).convert("RGB")  # decodes fully here
            for key, buf in targets:
                x = (self.watermark if key == "wm" else self.towers[key]).prepare(im)
                if isinstance(x, torch.Tensor):
                    buf[k].copy_(x)
                else:
                    np.copyto(buf[k].numpy(), x)
            return True
        except Exception:  # noqa: BLE001 - a broken image is a counted row
            return False

    # -- device side ----------------------------------------------------------------------------------------------

    def _launch(self, b: _Batch) -> None:
        """Queue one batch's work on the device; nothing here waits for the device."""
        run, n = b.run, len(b.idx)
        inputs = None
        if self.gpu_decoder is not None:
            inputs, ok = self.gpu_decoder.decode([run.jpgs[i] for i in b.idx], b.towers)
            if inputs is None:  # the device decoder refused the batch: decode it on CPU like any other
                self._submit_decode(b)
        if inputs is None:
            ok = np.fromiter((f.result() for f in b.decoded), dtype=bool, count=n)
            inputs = {key: buf[:n].to(self.device, non_blocking=True) for key, buf in b.targets}
            if self.pinned:
                self._copied[b.slot] = torch.cuda.Event()
                self._copied[b.slot].record()
        run.status[b.idx[~ok]] = _DECODE_ERROR
        rows = self._index(b.idx)
        for t in b.towers:
            tower = self.towers[t]
            emb = tower.encode_pixels(inputs[t])
            out = run.img.get(t)
            if out is None:
                out = run.img[t] = torch.zeros((run.rows.num_rows, emb.shape[-1]), dtype=torch.float32,
                                               device=self.device)
            out.index_copy_(0, rows, emb)
        if self.watermark is not None:
            if run.wm is None:
                run.wm = torch.zeros(run.rows.num_rows, dtype=torch.float32, device=self.device)
            run.wm.index_copy_(0, rows, self.watermark.score_prepared(inputs["wm"]))
        for k, (krows, tokens) in b.tokens.items():
            emb = self.buckets[k].text.encode_tokens(tokens.result())
            out = run.txt.get(k)
            if out is None:
                out = run.txt[k] = torch.zeros((run.rows.num_rows, emb.shape[-1]), dtype=torch.float32,
                                               device=self.device)
            out.index_copy_(0, self._index(krows), emb)

    def _index(self, positions: np.ndarray) -> torch.Tensor:
        """Row positions on the device without waiting for it: a blocking copy from pageable memory would first
        wait for every batch already queued (torch synchronizes the stream after it)."""
        return torch.from_numpy(np.ascontiguousarray(positions, dtype=np.int64)).to(self.device, non_blocking=True)

    def _finish(self, run: _Run) -> pa.Table:
        """The run's results fetched from the device (the one wait per table) and built into columns."""
        n = run.rows.num_rows
        scored = run.status == _SCORED
        sim_dev = torch.zeros(n, dtype=torch.float32, device=self.device)
        for k, bucket in enumerate(self.buckets):
            t = self.towers.index(bucket.tower)
            if k in run.txt and t in run.img:
                mine = self._index(np.flatnonzero(run.bucket == k))
                sim_dev[mine] = (run.img[t][mine] * run.txt[k][mine]).sum(-1)
        punsafe = None
        if self.nsfw is not None and 0 in run.img:
            with torch.inference_mode():
                punsafe = self.nsfw(run.img[0]).float().cpu().numpy()
        sim = sim_dev.cpu().numpy()
        wm = run.wm.cpu().numpy() if run.wm is not None else None
        img = {t: e.half().cpu().numpy() for t, e in run.img.items()}
        txt = {k: e.half().cpu().numpy() for k, e in run.txt.items()}

        thresholds = np.array([b.threshold for b in self.buckets], dtype=np.float32)[run.bucket]
        tower_of = np.array([self.towers.index(b.tower) for b in self.buckets], dtype=np.int8)[run.bucket]
        labels = pa.array([b.text.name for b in self.buckets])
        missing = pa.array(~scored)
        cols = {
            "uid": run.rows.column("uid"),
            "status": _STATUS.take(pa.array(run.status)),
            "model": labels.take(pa.array(run.bucket.astype(np.int32), mask=~scored)),
            "similarity": pa.array(sim, pa.float32(), mask=~scored),
            "punsafe": pa.array(punsafe, pa.float32(), mask=~scored) if punsafe is not None
            else pa.nulls(n, pa.float32()),
            "pwatermark": pa.array(wm, pa.float32(), mask=~scored) if wm is not None else pa.nulls(n, pa.float32()),
            "passed": pa.array(sim.astype(np.float32) >= thresholds, pa.bool_(), mask=~scored),
            "image_embedding": _embedding_column(img, tower_of, scored, missing),
            "text_embedding": _embedding_column(txt, run.bucket, scored, missing),
        }
        return pa.table(cols, schema=SCORED)


def _embedding_column(by_key: dict, key_of_row: np.ndarray, scored: np.ndarray, missing: pa.Array) -> pa.Array:
    """A list<float16> column: each scored row's embedding from the (n, D) array of its key, null elsewhere."""
    n = len(scored)
    dims = np.zeros(n, dtype=np.int64)
    for key, arr in by_key.items():
        dims[scored & (key_of_row == key)] = arr.shape[1]
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(dims, out=offsets[1:])
    values = np.empty(int(offsets[-1]), dtype=np.float16)
    for key, arr in by_key.items():
        rows = np.flatnonzero(scored & (key_of_row == key))
        if len(rows):
            at = offsets[rows][:, None] + np.arange(arr.shape[1])
            values[at] = arr[rows]
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values), type=SCORED.field(
        "image_embedding").type, mask=missing)


def embeddings_array(column: pa.ChunkedArray) -> np.ndarray:
    """A scored embedding column (lists of float16, nulls for unscored rows skipped) as an N x D float16 array."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    valid = column.drop_null()
    if len(valid) == 0:
        return np.zeros((0, 0), dtype=np.float16)
    flat = valid.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(valid), -1).astype(np.float16, copy=False)
