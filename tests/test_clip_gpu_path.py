"""The clip stage's streaming path (ring of decode buffers, batches across tables, results fetched once per table,
columns built from arrays, device decode) gives what a plain row-by-row computation gives - on CPU, so these run
everywhere; the device only changes where the same steps run."""

import io
import os
import weakref

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import save_file

from laion5b_spark.clip import models
from laion5b_spark.clip.gpu_decode import DeviceDecoder
from laion5b_spark.clip.heads import NsfwHead, WatermarkModel
from laion5b_spark.clip.score import ClipSettings, Scorer, embeddings_array
from laion5b_spark.lake import Lake
from laion5b_spark.sample import shapes

ASSET = os.path.join(os.path.dirname(shapes.__file__), "assets", "l5s-tiny-shapes.safetensors")
PAIRS = [(b, c) for b, c, _ in shapes.pairs(24, seed=11)]
BROKEN = b"\xff\xd8\xff\xe0 not a jpeg"


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    import timm

    d = tmp_path_factory.mktemp("heads")
    torch.manual_seed(3)
    nsfw = NsfwHead([64, 16, 1])
    save_file({k: v.contiguous() for k, v in nsfw.state_dict().items()}, str(d / "nsfw.safetensors"))
    net = timm.create_model("efficientnet_b0", pretrained=False, num_classes=2)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(d / "wm.safetensors"))
    return str(d / "nsfw.safetensors"), str(d / "wm.safetensors")


def reference(rows: pa.Table, s: ClipSettings) -> dict[str, list]:
    """Row by row, no batching, no pool, open_clip's own tokenizer at full context: what every row should get."""
    main = models.load(s.model, s.pretrained, "cpu")
    multi = models.load(s.multilingual_model, s.multilingual_pretrained, "cpu") if s.multilingual_model else None
    nsfw = NsfwHead.load(s.nsfw_head, 64, "cpu") if s.nsfw_head else None
    wm = WatermarkModel(s.watermark_model, "cpu", s.watermark_arch, s.watermark_size) if s.watermark_model else None
    out = {k: [] for k in ("status", "model", "similarity", "passed", "punsafe", "pwatermark", "img", "txt")}

    def put(**kw):
        for k in out:
            out[k].append(kw.get(k))

    with torch.inference_mode():
        for jpg, text, lang in zip(*(rows.column(c).to_pylist() for c in ("jpg", "text", "language"))):
            if jpg is None:
                put(status="no_image")
                continue
            try:
                im = Image.open(io.BytesIO(jpg)).convert("RGB")
            except Exception:  # noqa: BLE001
                put(status="decode_error")
                continue
            english = multi is None or lang in s.english
            m = main if english else multi
            threshold = s.threshold if english else s.nolang_threshold if lang == "nolang" else s.multilingual_threshold
            img = torch.nn.functional.normalize(m.model.encode_image(m.preprocess(im)[None]), dim=-1)
            txt = torch.nn.functional.normalize(m.model.encode_text(m.tokenizer([text])), dim=-1)
            sim = float((img * txt).sum())
            base = torch.nn.functional.normalize(main.model.encode_image(main.preprocess(im)[None]), dim=-1)
            put(status="scored", model=m.name, similarity=sim, passed=sim >= threshold,
                punsafe=float(nsfw(base)[0]) if nsfw else None, pwatermark=float(wm(wm.pixels(im)[None])[0])
                if wm else None, img=img[0].numpy(), txt=txt[0].numpy())
    return out


def assert_matches(got: pa.Table, want: dict) -> None:
    for col in ("status", "model", "passed"):
        assert got.column(col).to_pylist() == want[col], col
    for col in ("similarity", "punsafe", "pwatermark"):
        g, w = got.column(col).to_pylist(), want[col]
        assert [v is None for v in g] == [v is None for v in w], col
        np.testing.assert_allclose([v for v in g if v is not None], [v for v in w if v is not None], atol=1e-5)
    for col, key in (("image_embedding", "img"), ("text_embedding", "txt")):
        rows = [v for v in want[key] if v is not None]
        assert got.column(col).null_count == len(want[key]) - len(rows)
        if rows:
            np.testing.assert_allclose(embeddings_array(got.column(col)).astype(np.float32), np.stack(rows),
                                       atol=2e-3)  # fp16 in the table


def table_of(picks: list[int], langs: list[str], uid0: int = 0) -> pa.Table:
    jpgs = [None if p == -1 else BROKEN if p == -2 else PAIRS[p][0] for p in picks]
    texts = ["a row with no image" if p < 0 else PAIRS[p][1] for p in picks]
    return pa.table({"uid": pa.array(range(uid0, uid0 + len(picks)), pa.int64()), "jpg": pa.array(jpgs, pa.binary()),
                     "text": pa.array(texts, pa.string()), "language": pa.array(langs, pa.string())})


rows_st = st.lists(st.tuples(st.integers(-2, len(PAIRS) - 1), st.sampled_from(["en", "de", "nolang", "ja"])),
                   min_size=0, max_size=30)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_st, cuts=st.lists(st.integers(0, 30), max_size=3), batch=st.integers(1, 9),
       multi=st.booleans(), with_heads=st.booleans())
def test_the_stream_gives_each_table_what_a_row_by_row_computation_gives(heads, rows, cuts, batch, multi,
                                                                         with_heads):
    s = ClipSettings(model="l5s-tiny", pretrained="", threshold=0.05, batch_size=batch, decode_threads=3,
                     multilingual_model="l5s-tiny" if multi else "", multilingual_pretrained=ASSET if multi else "",
                     multilingual_threshold=-0.05, nolang_threshold=0.0,
                     nsfw_head=heads[0] if with_heads else "", watermark_model=heads[1] if with_heads else "",
                     watermark_arch="efficientnet_b0", watermark_size=32)
    whole = table_of([p for p, _ in rows], [lang for _, lang in rows])
    bounds = sorted({0, whole.num_rows, *[min(c, whole.num_rows) for c in cuts]})
    tables = [whole.slice(a, b - a) for a, b in zip(bounds, bounds[1:])] or [whole]
    out = list(Scorer(s, "cpu").score_tables(iter(tables)))
    assert [r.num_rows for r, _ in out] == [t.num_rows for t in tables]
    assert all(r is t for (r, _), t in zip(out, tables))  # each input handed back with its scores
    got = pa.concat_tables([scored for _, scored in out])
    assert got.column("uid").to_pylist() == whole.column("uid").to_pylist()
    assert_matches(got, reference(whole, s))


def test_each_image_goes_through_one_tower_once(monkeypatch):
    calls = []
    scorer = Scorer(ClipSettings(model="l5s-tiny", pretrained="", batch_size=4), "cpu")
    real = scorer.main.encode_pixels
    monkeypatch.setattr(scorer.main, "encode_pixels", lambda x: calls.append(len(x)) or real(x))
    scorer.score(table_of([0, 1, -1, 2, -2, 3, 4], ["en"] * 7))
    assert sum(calls) == 6 and max(calls) <= 4  # the broken image's slot rides along, masked; no image: no slot


def test_device_decode_matches_the_cpu_path_and_falls_back_per_batch(monkeypatch):
    """torchvision's decoder on CPU stands in for nvJPEG: same resize rule, within a level or two of PIL's."""
    base = ClipSettings(model="l5s-tiny", pretrained=ASSET, batch_size=4)
    rows = table_of([0, 1, 2, 3, 4, 5, 6, 7, -2, 8], ["en"] * 10)
    cpu = Scorer(base, "cpu").score(rows)
    dev = Scorer(ClipSettings(**{**base.__dict__, "gpu_decode": True}), "cpu")
    assert dev.gpu_decoder is not None
    out = dev.score(rows)
    assert out.column("status").to_pylist() == cpu.column("status").to_pylist()  # the broken batch fell back
    a = np.array([v for v in cpu.column("similarity").to_pylist() if v is not None])
    b = np.array([v for v in out.column("similarity").to_pylist() if v is not None])
    assert np.abs(a - b).max() < 0.02, np.abs(a - b).max()
    im = Image.open(io.BytesIO(PAIRS[0][0])).convert("RGB").resize((300, 170))  # not square, scaled down
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    inputs, ok = dev.gpu_decoder.decode([buf.getvalue()], (0,))
    pil = torch.from_numpy(dev.main.prepare(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")).copy())
    assert ok.all() and inputs[0][0].shape == pil.shape
    assert (inputs[0][0].float() - pil.float()).abs().mean() < 1.5


def test_device_decode_is_refused_for_a_preprocess_it_cannot_reproduce():
    m = models.load("l5s-tiny", "", "cpu")
    assert DeviceDecoder.for_models([m], None, torch.device("cpu")) is not None

    class Odd:
        pil_steps = None

    assert DeviceDecoder.for_models([Odd()], None, torch.device("cpu")) is None


def test_chunks_are_whole_row_groups_read_once(tmp_path, monkeypatch):
    t = pa.table({"uid": list(range(2500)), "x": [str(i) for i in range(2500)]})
    lake = Lake(str(tmp_path))
    table = lake.table("images")
    os.makedirs(table.path("data"), exist_ok=True)
    pq.write_table(t, table.path("data/f.parquet"), row_group_size=1000)
    reads = []
    real = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups",
                        lambda self, groups, **kw: reads.append(list(groups)) or real(self, groups, **kw))
    chunks = list(table.iter_row_chunks("data/f.parquet", 2048, ["uid"]))
    assert [c.num_rows for c in chunks] == [2000, 500] and reads == [[0, 1], [2]]
    assert pa.concat_tables(chunks).column("uid").to_pylist() == list(range(2500))
    reads.clear()
    assert [c.num_rows for c in table.iter_row_chunks("data/f.parquet", 900, ["uid"], start=1500)] == [500, 500]
    assert reads == [[1], [2]]  # a group bigger than the chunk size is still read whole, once
    reads.clear()
    ahead = list(table.iter_row_chunks("data/f.parquet", 1024, ["uid"], read_ahead=True))
    assert [c.num_rows for c in ahead] == [1000, 1000, 500] and reads == [[0], [1], [2]]


def test_a_worker_given_other_settings_frees_the_models_it_had():
    m = models.load("l5s-tiny", ASSET, "cpu")
    ref = weakref.ref(m.model)
    del m
    models.evict("cpu")
    assert ref() is None
    assert not [k for k in models._cache if k[2] == "cpu"]
