"""Score a batch of images rows: CLIP similarity, embeddings, punsafe, pwatermark. Plain Python, no Spark.

Images are decoded and resized to the model's input in a thread pool (PIL releases the GIL in both) while the
model encodes the previous chunk; chunks are ``batch_size`` rows (the GPU batch), normalized on the model's device.
Each row is scored by the model for its language - ``clip.model`` for ``clip.english`` languages,
``clip.multilingual_model`` for the rest when one is set - and passes when its similarity reaches that model's
threshold. Rows with no image bytes (failed downloads) are ``no_image``; bytes that do not decode are
``decode_error``: counted, never fatal.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch
from PIL import Image

from ..config import DEFAULTS
from ..schemas import SCORED
from . import models
from .heads import NsfwHead, WatermarkModel


_CLIP = DEFAULTS["clip"]  # the defaults live in config.DEFAULTS alone


@dataclass(frozen=True)
class ClipSettings:
    model: str = _CLIP["model"]
    pretrained: str = _CLIP["pretrained"]  # an open_clip tag, a checkpoint path, or "" for random weights
    threshold: float = _CLIP["threshold"]  # LAION-5B English with ViT-B/32 (LAION-400M: 0.30)
    multilingual_model: str = _CLIP["multilingual_model"]  # e.g. xlm-roberta-base-ViT-B-32; "" = clip.model for every language
    multilingual_pretrained: str = _CLIP["multilingual_pretrained"]
    multilingual_threshold: float = _CLIP["multilingual_threshold"]
    english: tuple[str, ...] = tuple(_CLIP["english"])
    batch_size: int = _CLIP["batch_size"]
    decode_threads: int = _CLIP["decode_threads"]
    nsfw_head: str = _CLIP["nsfw_head"]  # .safetensors path (heads.NsfwHead); "" = punsafe stays null
    watermark_model: str = _CLIP["watermark_model"]  # .safetensors path (heads.WatermarkModel); "" = pwatermark stays null
    watermark_arch: str = _CLIP["watermark_arch"]
    watermark_size: int = _CLIP["watermark_size"]
    watermark_class: int = _CLIP["watermark_class"]


class Scorer:
    """The models of one Python worker on one device; ``score`` is the UDF's batch function."""

    def __init__(self, s: ClipSettings, device: str):
        self.s = s
        self.main = models.load(s.model, s.pretrained, device)
        self.multi = models.load(s.multilingual_model, s.multilingual_pretrained, device) \
            if s.multilingual_model else None
        dim = self.main.encode_texts(["x"]).shape[-1]
        self.nsfw = NsfwHead.load(s.nsfw_head, dim, device) if s.nsfw_head else None
        self.watermark = WatermarkModel(s.watermark_model, device, s.watermark_arch, s.watermark_size,
                                        s.watermark_class) if s.watermark_model else None
        self.pool = ThreadPoolExecutor(max(1, s.decode_threads), thread_name_prefix="decode")

    def score(self, rows: pa.Table) -> pa.Table:
        """``rows``: uid, jpg, text, language (any order). Returns SCORED rows in the same order."""
        n = rows.num_rows
        jpgs, texts = rows.column("jpg").to_pylist(), rows.column("text").to_pylist()
        langs = rows.column("language").to_pylist()
        out = {"status": ["no_image"] * n, "model": [None] * n, "similarity": [None] * n, "punsafe": [None] * n,
               "pwatermark": [None] * n, "passed": [None] * n, "image_embedding": [None] * n,
               "text_embedding": [None] * n}
        english = set(self.s.english)
        groups = [(self.main, self.s.threshold, [i for i in range(n) if jpgs[i] is not None
                                                 and (self.multi is None or langs[i] in english)])]
        if self.multi is not None:
            groups.append((self.multi, self.s.multilingual_threshold,
                           [i for i in range(n) if jpgs[i] is not None and langs[i] not in english]))
        for clip, threshold, idx in groups:
            keep = self.watermark is not None or (self.nsfw is not None and clip is not self.main)
            # decode and resize run ahead in the pool while chunks encode (PIL releases the GIL in both)
            decoded = self.pool.map(lambda i: _decode(jpgs[i], clip, keep), idx)
            chunk: list[tuple[int, Image.Image | None, object]] = []
            for i, got in zip(idx, decoded):
                if got is None:
                    out["status"][i] = "decode_error"
                    continue
                chunk.append((i, *got))
                if len(chunk) == self.s.batch_size:
                    self._encode(clip, threshold, chunk, texts, out)
                    chunk = []
            if chunk:
                self._encode(clip, threshold, chunk, texts, out)
        table = pa.table({"uid": rows.column("uid"), **{k: pa.array(v, SCORED.field(k).type) for k, v in out.items()}},
                         schema=SCORED)
        return table

    def _encode(self, clip: models.ClipModel, threshold: float, chunk, texts, out) -> None:
        idx = [i for i, _, _ in chunk]
        img = clip.encode_images(clip.pixels([p for _, _, p in chunk]))
        txt = clip.encode_texts([texts[i] for i in idx])
        sim = (img * txt).sum(-1).cpu().numpy()
        punsafe = wm = None
        if self.nsfw is not None:
            base = img if clip is self.main else self.main.encode_images(
                self.main.pixels([self.main.prepare(im) for _, im, _ in chunk]))
            with torch.inference_mode():
                punsafe = self.nsfw(base).float().cpu().numpy()
        if self.watermark is not None:
            wm = self.watermark(torch.stack([self.watermark.pixels(im) for _, im, _ in chunk])).cpu().numpy()
        img16, txt16 = img.half().cpu().numpy(), txt.half().cpu().numpy()
        for k, i in enumerate(idx):
            out["status"][i], out["model"][i] = "scored", clip.name
            out["similarity"][i] = float(sim[k])
            out["passed"][i] = bool(sim[k] >= threshold)
            out["image_embedding"][i], out["text_embedding"][i] = img16[k], txt16[k]
            if punsafe is not None:
                out["punsafe"][i] = float(punsafe[k])
            if wm is not None:
                out["pwatermark"][i] = float(wm[k])


def _decode(data: bytes, clip: models.ClipModel, keep_image: bool) -> tuple | None:
    """In a pool thread: (the RGB image if the heads need it, the model's prepared pixels), or None."""
    try:
        im = Image.open(io.BytesIO(data)).convert("RGB")  # decodes fully here
        return (im if keep_image else None), clip.prepare(im)
    except Exception:  # noqa: BLE001 - a broken image is a counted row
        return None


def embeddings_array(column: pa.ChunkedArray) -> np.ndarray:
    """A scored embedding column (lists of float16, nulls for unscored rows skipped) as an N x D float16 array."""
    values = [v for v in column.to_pylist() if v is not None]
    return np.asarray(values, dtype=np.float16).reshape(len(values), -1)
