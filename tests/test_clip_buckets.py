"""LAION-5B's three buckets in the Scorer, offline: English rows scored by clip.model, other languages and nolang by
an mclip text tower against clip.model's image embedding (one image pass per row), each bucket with its threshold;
and the open_clip kind from a local folder with its own image tower."""

import io
import os

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from sentence_transformers import SentenceTransformer

from laion5b_spark.clip import models
from laion5b_spark.clip.score import ClipSettings, Scorer, embeddings_array
from laion5b_spark.sample import shapes

from tiny_models import build_tiny_mclip, build_tiny_open_clip_hf

ASSET = os.path.join(os.path.dirname(shapes.__file__), "assets", "l5s-tiny-shapes.safetensors")
PAIRS = [(b, c) for b, c, _ in shapes.pairs(12, seed=21)]
LANGS = ["en", "de", "nolang", "ja", "en", "ru", "nolang", "zh", "fr", "en", "ar", "nolang"]
CAPTIONS = ["a red circle", "ein roter Kreis", "□ ■ ◇", "赤い円", "a blue square", "синий квадрат", "12345",
            "蓝色三角形", "un triangle vert", "a green triangle", "دائرة حمراء", "…"]


@pytest.fixture(scope="module")
def tiny_mclip(tmp_path_factory) -> str:
    return str(build_tiny_mclip(tmp_path_factory.mktemp("mclip") / "tiny-mclip", 64))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def rows() -> pa.Table:
    jpgs = [b for b, _ in PAIRS]
    jpgs[4] = None
    return pa.table({"uid": pa.array(range(12), pa.int64()), "jpg": pa.array(jpgs, pa.binary()),
                     "text": CAPTIONS, "language": LANGS})


def test_mclip_buckets_route_threshold_and_score_as_computed_independently(tiny_mclip, monkeypatch):
    s = ClipSettings(model="l5s-tiny", pretrained=ASSET, threshold=0.5, multilingual_kind="mclip",
                     multilingual_model=tiny_mclip, multilingual_threshold=-0.05, nolang_threshold=0.05,
                     batch_size=5, decode_threads=2)
    scorer = Scorer(s, "cpu")
    seen = []
    real = scorer.main.encode_pixels
    monkeypatch.setattr(scorer.main, "encode_pixels", lambda x: seen.append(len(x)) or real(x))
    out = scorer.score(rows())
    assert sum(seen) == 11  # every row with an image, through clip.model's image tower once; no second tower
    labels = out.column("model").to_pylist()
    assert labels[0] == labels[9] == "l5s-tiny/l5s-tiny-shapes.safetensors"
    assert all(labels[i] == "mclip:tiny-mclip" for i, lang in enumerate(LANGS) if lang != "en")
    assert labels[4] is None and out.column("status").to_pylist()[4] == "no_image"

    # independently: sentence-transformers reads the folder, open_clip encodes the images and English captions
    main = models.load("l5s-tiny", ASSET, "cpu")
    st = SentenceTransformer(tiny_mclip, device="cpu")
    with torch.inference_mode():
        img = torch.nn.functional.normalize(main.model.encode_image(torch.stack(
            [main.preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b, _ in PAIRS])), dim=-1)
        en = torch.nn.functional.normalize(main.model.encode_text(main.tokenizer(CAPTIONS)), dim=-1)
    multi = torch.from_numpy(st.encode(CAPTIONS, normalize_embeddings=True, convert_to_numpy=True))
    sims = out.column("similarity").to_pylist()
    thresholds = {"en": 0.5, "nolang": 0.05}
    for i, lang in enumerate(LANGS):
        if i == 4:
            continue
        txt = en[i] if lang == "en" else multi[i]
        want = float((img[i] * txt).sum())
        assert sims[i] == pytest.approx(want, abs=1e-4), (i, lang)
        assert out.column("passed")[i].as_py() == (sims[i] >= thresholds.get(lang, -0.05))
    # the embeddings kept: the image's from clip.model, the text's from the bucket's text tower
    scored = [i for i in range(12) if i != 4]
    np.testing.assert_allclose(embeddings_array(out.column("image_embedding")), img[scored].numpy(), atol=2e-3)
    txt = torch.stack([en[i] if LANGS[i] == "en" else multi[i] for i in scored])
    np.testing.assert_allclose(embeddings_array(out.column("text_embedding")), txt.numpy(), atol=2e-3)


def test_thresholds_apply_per_bucket(tiny_mclip):
    base = dict(model="l5s-tiny", pretrained=ASSET, multilingual_kind="mclip", multilingual_model=tiny_mclip)
    out = Scorer(ClipSettings(**base, threshold=-2.0, multilingual_threshold=2.0, nolang_threshold=-2.0),
                 "cpu").score(rows())
    passed = out.column("passed").to_pylist()
    assert passed == [None if i == 4 else LANGS[i] in ("en", "nolang") for i in range(12)]


def test_without_a_multilingual_model_every_row_is_english(tiny_mclip):
    out = Scorer(ClipSettings(model="l5s-tiny", pretrained=ASSET, threshold=-2.0), "cpu").score(rows())
    assert set(out.column("model").drop_null().to_pylist()) == {"l5s-tiny/l5s-tiny-shapes.safetensors"}


def test_an_open_clip_multilingual_model_from_its_folder_scores_with_its_own_image_tower(tmp_path):
    folder = build_tiny_open_clip_hf(tmp_path / "xlmr-tiny", "text")
    s = ClipSettings(model="l5s-tiny", pretrained=ASSET, multilingual_model=f"local-dir:{folder}",
                     multilingual_kind="open_clip", batch_size=4)
    scorer = Scorer(s, "cpu")
    assert len(scorer.towers) == 2
    out = scorer.score(rows())
    m = scorer.towers[1]
    with torch.inference_mode():
        img = torch.nn.functional.normalize(m.model.encode_image(m.preprocess(
            Image.open(io.BytesIO(PAIRS[1][0])).convert("RGB"))[None]), dim=-1)
        txt = torch.nn.functional.normalize(m.model.encode_text(m.tokenizer([CAPTIONS[1]])), dim=-1)
    assert out.column("similarity")[1].as_py() == pytest.approx(float((img * txt).sum()), abs=1e-5)
    assert out.column("model")[1].as_py() == m.name != out.column("model")[0].as_py()
