"""The clip stage's batch function without Spark: equal to open_clip computed directly, a model that knows
something, per-row failures, the task's GPU, the NSFW and watermark heads."""

import io
import json
import os
import random
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from laion5b_spark.clip import models
from laion5b_spark.clip.device import device_for
from laion5b_spark.clip.heads import NsfwHead, WatermarkModel
from laion5b_spark.clip.score import ClipSettings, Scorer, embeddings_array
from laion5b_spark.sample import shapes

ASSET = os.path.join(os.path.dirname(shapes.__file__), "assets", "l5s-tiny-shapes")


def rows_of(pairs, languages=None):
    n = len(pairs)
    return pa.table({"uid": list(range(n)), "jpg": [p[0] for p in pairs], "text": [p[1] for p in pairs],
                     "language": languages or ["en"] * n})


@pytest.mark.parametrize("name", ["l5s-tiny", "ViT-B-32"])
def test_scores_equal_open_clip_computed_directly(name):
    torch.manual_seed(0)
    pairs = [(p[0], p[1]) for p in shapes.pairs(7, seed=3)]
    pairs.insert(2, (None, "no image here"))
    pairs.insert(5, (b"\xff\xd8 not really a jpeg", "broken"))
    out = Scorer(ClipSettings(model=name, pretrained="", batch_size=3, threshold=0.0), "cpu").score(rows_of(pairs))
    assert out.column("status").to_pylist()[2] == "no_image" and out.column("status").to_pylist()[5] == "decode_error"
    m = models.load(name, "", "cpu")  # the same weights the scorer uses (cached per process)
    ok = [i for i, (b, _) in enumerate(pairs) if i not in (2, 5)]
    with torch.inference_mode():
        pix = torch.stack([m.preprocess(Image.open(io.BytesIO(pairs[i][0])).convert("RGB")) for i in ok])
        img = torch.nn.functional.normalize(m.model.encode_image(pix), dim=-1)
        txt = torch.nn.functional.normalize(m.model.encode_text(m.tokenizer([pairs[i][1] for i in ok])), dim=-1)
    sims = np.array([out.column("similarity")[i].as_py() for i in ok])
    np.testing.assert_allclose(sims, (img * txt).sum(-1).numpy(), atol=1e-5)  # fp32 on CPU
    scored = out.filter(pa.compute.equal(out.column("status"), "scored"))
    np.testing.assert_allclose(embeddings_array(scored.column("image_embedding")), img.numpy(), atol=2e-3)  # fp16
    np.testing.assert_allclose(embeddings_array(scored.column("text_embedding")), txt.numpy(), atol=2e-3)
    assert out.column("uid").to_pylist() == list(range(len(pairs)))


def test_the_trained_tiny_model_keeps_fitting_pairs_and_drops_the_others():
    meta = json.load(open(ASSET + ".json"))
    s = ClipSettings(model="l5s-tiny", pretrained=ASSET + ".safetensors", threshold=meta["threshold"], batch_size=64)
    test = shapes.pairs(400, seed=12345)  # not the training or threshold data
    out = Scorer(s, "cpu").score(rows_of(test))
    passed = np.array(out.column("passed").to_pylist())
    fits = np.array([f for _, _, f in test])
    assert passed[fits].mean() >= 0.95, passed[fits].mean()
    assert (~passed[~fits]).mean() >= 0.95, (~passed[~fits]).mean()


def test_languages_pick_the_model_and_threshold():
    pairs = [(b, c) for b, c, _ in shapes.pairs(4, seed=5)]
    s = ClipSettings(model="l5s-tiny", pretrained="", threshold=2.0, multilingual_model="l5s-tiny",
                     multilingual_pretrained=ASSET + ".safetensors", multilingual_threshold=-2.0)
    out = Scorer(s, "cpu").score(rows_of(pairs, ["en", "de", "en", "fr"]))
    assert out.column("model").to_pylist() == ["l5s-tiny/random", "l5s-tiny/l5s-tiny-shapes.safetensors"] * 2
    assert out.column("passed").to_pylist() == [False, True, False, True]


def test_the_task_gets_the_gpu_spark_assigned():
    gpu = lambda *a: {"gpu": SimpleNamespace(name="gpu", addresses=list(a))}  # noqa: E731
    assert device_for(gpu("3"), cuda_devices=4) == "cuda:3"
    assert device_for(gpu("1", "2"), cuda_devices=4) == "cuda:1"
    assert device_for({}, cuda_devices=1) == "cuda:0"
    with pytest.raises(RuntimeError, match="sees 8 GPUs"):  # unscheduled: neither all on GPU 0 nor silently CPU
        device_for({}, cuda_devices=8)
    assert device_for({}, cuda_devices=0) == "cpu"
    with pytest.raises(RuntimeError, match="assigned GPU 5"):
        device_for(gpu("5"), cuda_devices=2)


def test_nsfw_head_loads_safetensors_only_and_matches_its_layers(tmp_path):
    torch.manual_seed(1)
    head = NsfwHead([64, 16, 8, 1])
    path = str(tmp_path / "nsfw.safetensors")
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, path)
    loaded = NsfwHead.load(path, 64, "cpu")
    x = torch.nn.functional.normalize(torch.randn(5, 64), dim=-1)
    l0, l1, l2 = head.layers
    expect = torch.sigmoid(l2(torch.relu(l1(torch.relu(l0(x))))))[:, 0]
    torch.testing.assert_close(loaded(x), expect)
    with pytest.raises(ValueError, match="64-d"):
        NsfwHead.load(path, 512, "cpu")
    torch.save(head.state_dict(), tmp_path / "nsfw.pt")
    with pytest.raises(ValueError, match="safetensors"):
        NsfwHead.load(str(tmp_path / "nsfw.pt"), 64, "cpu")
    s = ClipSettings(model="l5s-tiny", pretrained="", nsfw_head=path)
    out = Scorer(s, "cpu").score(rows_of([(b, c) for b, c, _ in shapes.pairs(3, seed=2)]))
    p = out.column("punsafe").to_pylist()
    assert all(0.0 <= v <= 1.0 for v in p) and out.column("pwatermark").null_count == 3


def test_watermark_model_gives_probabilities(tmp_path):
    import timm

    net = timm.create_model("efficientnet_b0", pretrained=False, num_classes=2)
    path = str(tmp_path / "wm.safetensors")
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
    s = ClipSettings(model="l5s-tiny", pretrained="", watermark_model=path, watermark_arch="efficientnet_b0",
                     watermark_size=64)
    out = Scorer(s, "cpu").score(rows_of([(b, c) for b, c, _ in shapes.pairs(3, seed=2)]))
    p = out.column("pwatermark").to_pylist()
    assert all(0.0 <= v <= 1.0 for v in p) and out.column("punsafe").null_count == 3
    wm = WatermarkModel(path, "cpu", "efficientnet_b0", 64)
    im = Image.open(io.BytesIO(shapes.jpeg(shapes.draw("red", "circle", random.Random(0)))))
    assert wm(wm.pixels(im)[None]).shape == (1,)
