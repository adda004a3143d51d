"""Multilingual text models, offline: the mclip kind (mclip.MClipText against sentence-transformers' own reading of
the same folder; its driver check) and open_clip models whose HF text tower is read from their local-dir: folder."""

import json
import shutil
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import open_clip
import pytest
import torch
import transformers
from safetensors.torch import load_file

from laion5b_spark.clip import mclip, models
from laion5b_spark.clip.score import ClipSettings
from laion5b_spark.config import ConfigError

from conftest import isolate_hf_hub
from tiny_models import build_tiny_mclip, build_tiny_open_clip_hf, captions, sample_captions

MAIN_DIM = 64  # l5s-tiny's embed_dim: the main model every check here pairs the mclip model with
LONG = " ".join(["a red cat", "красный кот", "红色的猫"] * 8)  # far past the tiny model's max_seq_length (12)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    return build_tiny_mclip(tmp_path_factory.mktemp("mclip") / "tiny-mclip", MAIN_DIM)


@pytest.fixture(scope="module")
def variants(tmp_path_factory, tiny) -> dict:
    """The other pooling modes, a Tanh Dense with bias, do_lower_case."""
    root = tmp_path_factory.mktemp("variants")
    return {"mean": tiny,
            "cls-tanh-lower": build_tiny_mclip(root / "cls", MAIN_DIM, pooling="cls", activation="Tanh", bias=True,
                                               do_lower_case=True, seed=1),
            "max-tanh-lower": build_tiny_mclip(root / "max", MAIN_DIM, pooling="max", activation="Tanh",
                                               do_lower_case=True, seed=2)}


@pytest.fixture(scope="module")
def open_clip_dirs(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("open_clip_hf")
    return {layout: build_tiny_open_clip_hf(root / layout, "text" if layout == "text" else "")
            for layout in ("text", "root")}


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1, an empty HF cache and a hub endpoint on a closed local port: nothing reaches the network."""
    isolate_hf_hub(monkeypatch, tmp_path / "hub", offline=True)
    monkeypatch.setattr(models, "_probe", lambda url, timeout: pytest.fail(f"probed {url} with HF_HUB_OFFLINE=1"))
    return tmp_path / "hub"


def settings(**kw) -> SimpleNamespace:
    """ClipSettings' fields with l5s-tiny (random weights) as clip.model, an mclip multilingual model by default."""
    base = {f.name: getattr(ClipSettings(), f.name) for f in fields(ClipSettings)}
    return SimpleNamespace(**{**base, "model": "l5s-tiny", "pretrained": "", "multilingual_kind": "mclip", **kw})


def refused(s) -> str:
    t = time.monotonic()
    with pytest.raises(ConfigError) as err:
        models.check_loadable(s)
    msg = str(err.value)
    assert time.monotonic() - t < 5, msg
    assert "\n" not in msg and len(msg) < 400, msg
    return msg


@pytest.mark.parametrize("variant", ["mean", "cls-tanh-lower", "max-tanh-lower"])
def test_mclip_embeddings_equal_sentence_transformers(variants, variant):
    from sentence_transformers import SentenceTransformer

    folder = variants[variant]
    texts = sample_captions() + [LONG] + captions()[::29]
    ours = mclip.MClipText(folder, "cpu")
    theirs = SentenceTransformer(folder, device="cpu").encode(texts, normalize_embeddings=True, convert_to_tensor=True)
    got = ours.encode_texts(texts)
    assert got.dtype == torch.float32 and got.shape == (len(texts), MAIN_DIM) == (len(texts), ours.dim)
    torch.testing.assert_close(got, theirs.float(), atol=1e-5, rtol=0)
    assert ours.tokenize([LONG])["input_ids"].shape == (1, 12)  # cut to sentence_bert_config's max_seq_length
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(texts)))


def test_tokenize_from_threads_and_encode_tokens(tiny):
    m = mclip.MClipText("local-dir:" + tiny, "cpu")
    assert m.name == "mclip:tiny-mclip" and m.device == torch.device("cpu")
    texts = captions()
    chunks = [texts[i:i + 7] for i in range(0, len(texts), 7)]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(m.tokenize, chunks * 3))
    for tokens, chunk in zip(threaded, chunks * 3):
        want = m.tokenize(chunk)
        assert tokens.keys() == want.keys() == {"input_ids", "attention_mask"}  # DistilBERT: no token_type_ids
        assert all(torch.equal(tokens[k], want[k]) for k in want)
    torch.testing.assert_close(m.encode_tokens(m.tokenize(chunks[0])), m.encode_texts(chunks[0]), atol=0, rtol=0)
    assert m.encode_texts([]).shape == (0, MAIN_DIM)


def test_load_mclip_keeps_one_model_per_device(variants):
    a, b = variants["mean"], variants["cls-tanh-lower"]
    first = mclip.load_mclip(a, "cpu")
    assert mclip.load_mclip(a, "cpu") is first
    gone = weakref.ref(first)
    del first
    second = mclip.load_mclip(b, "cpu")  # another ident on the device replaces the model there
    assert gone() is None and second.name == "mclip:cls"
    assert mclip.load_mclip(b, "cpu") is second
    held = weakref.ref(second)
    del second
    mclip.evict("cpu")
    assert held() is None


def test_a_hub_id_loads_from_the_local_cache_offline(tiny, offline):
    snapshot = offline / "models--org--tiny-mclip" / "snapshots" / ("0" * 40)
    shutil.copytree(tiny, snapshot)
    (offline / "models--org--tiny-mclip" / "refs").mkdir()
    (offline / "models--org--tiny-mclip" / "refs" / "main").write_text("0" * 40)
    m = mclip.MClipText("org/tiny-mclip", "cpu")
    assert m.name == "mclip:tiny-mclip" == mclip.mclip_label(tiny)  # a local copy named as the repo: same label
    torch.testing.assert_close(m.encode_texts(sample_captions()),
                               mclip.MClipText(tiny, "cpu").encode_texts(sample_captions()), atol=0, rtol=0)
    models.check_loadable(settings(multilingual_model="org/tiny-mclip"))


def test_the_check_passes_the_tiny_model(tiny):
    models.check_loadable(settings(multilingual_model=tiny))
    models.check_loadable(settings(multilingual_model="local-dir:" + tiny))


def test_the_check_refuses_in_one_line_what_cannot_score(tiny, tmp_path):
    key = "clip.multilingual_model = "
    msg = refused(settings(multilingual_model=str(tmp_path / "nowhere")))
    assert msg.startswith(key) and "no such folder" in msg
    (tmp_path / "empty").mkdir()
    msg = refused(settings(multilingual_model=str(tmp_path / "empty")))
    assert msg.startswith(key) and "no modules.json" in msg and "sentence-transformers" in msg

    odd = Path(shutil.copytree(tiny, tmp_path / "odd"))
    modules = json.loads((odd / "modules.json").read_text())
    (odd / "modules.json").write_text(json.dumps(modules + [
        {"idx": 3, "name": "3", "path": "3_LayerNorm", "type": "sentence_transformers.models.LayerNorm"}]))
    msg = refused(settings(multilingual_model=str(odd)))
    assert msg.startswith(key) and "sentence_transformers.models.LayerNorm" in msg and "only Transformer" in msg

    no_tokenizer = Path(shutil.copytree(tiny, tmp_path / "no_tokenizer"))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (no_tokenizer / name).unlink()
    assert "tokenizer" in refused(settings(multilingual_model=str(no_tokenizer)))
    no_config = Path(shutil.copytree(tiny, tmp_path / "no_config"))
    (no_config / "config.json").unlink()
    assert "no config.json" in refused(settings(multilingual_model=str(no_config)))

    narrow = build_tiny_mclip(tmp_path / "narrow", 48)
    msg = refused(settings(multilingual_model=narrow))
    assert msg.startswith(key) and "48-d" in msg and "64-d" in msg and "clip.model" in msg

    msg = refused(settings(multilingual_model="sentence-transformers/clip-ViT-B-32-multilingual-v1"))
    assert msg.startswith(key) and "not in the local HF cache" in msg and "HF_HUB_OFFLINE is set" in msg

    msg = refused(settings(multilingual_model=tiny, multilingual_pretrained="laion5b_s13b_b90k"))
    assert msg.startswith("clip.multilingual_pretrained = 'laion5b_s13b_b90k'") and 'set it to ""' in msg
    msg = refused(settings(multilingual_model=tiny, multilingual_kind="m-clip"))
    assert msg.startswith("clip.multilingual_kind = 'm-clip'") and '"mclip"' in msg


@pytest.mark.parametrize("layout", ["text", "root"])
def test_an_open_clip_hf_text_tower_comes_from_the_local_dir(open_clip_dirs, layout, monkeypatch):
    folder = open_clip_dirs[layout]
    name = "local-dir:" + folder
    seen: list[str] = []
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer):
        real = cls.from_pretrained
        monkeypatch.setattr(cls, "from_pretrained", classmethod(
            lambda c, src, *a, _real=real, **k: (seen.append(str(src)), _real(src, *a, **k))[1]))

    # open_clip alone asks the hub for the names in open_clip_config.json, and fails offline
    with pytest.raises(OSError):
        open_clip.create_model(name, device="cpu")
    assert seen == ["xlm-roberta-base"]
    seen.clear()

    clip = models.load(name, "", "cpu")
    hf_dir = str(Path(folder) / "text") if layout == "text" else folder
    assert seen and all(s == hf_dir for s in seen), seen  # config and tokenizer, both from the folder
    emb = clip.encode_texts(sample_captions())
    assert emb.shape == (len(sample_captions()), 64) and torch.isfinite(emb).all()

    # the same weights as the checkpoint, through a model built from the local files by hand
    text_cfg = {**json.loads((Path(folder) / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"],
                "hf_model_name": hf_dir, "hf_tokenizer_name": hf_dir, "hf_model_pretrained": False}
    ref = open_clip.model.CustomTextCLIP(embed_dim=64, vision_cfg={"image_size": 32, "layers": 2, "width": 64,
                                                                   "head_width": 32, "patch_size": 8},
                                         text_cfg=text_cfg).eval()
    ref.load_state_dict(load_file(str(Path(folder) / "open_clip_model.safetensors")))
    with torch.inference_mode():
        want = torch.nn.functional.normalize(ref.encode_text(clip.tokenizer(sample_captions())), dim=-1)
    torch.testing.assert_close(emb, want, atol=1e-6, rtol=0)

    models.check_loadable(settings(multilingual_kind="open_clip", multilingual_model=name))
    models.check_loadable(settings(model=name, multilingual_model=""))


def test_an_open_clip_local_dir_without_the_hf_files_needs_the_cache(open_clip_dirs, tmp_path):
    folder = Path(shutil.copytree(open_clip_dirs["text"], tmp_path / "no_hf_config"))
    (folder / "text" / "config.json").unlink()
    msg = refused(settings(multilingual_kind="open_clip", multilingual_model=f"local-dir:{folder}"))
    assert msg.startswith("clip.multilingual_model = 'local-dir:") and "xlm-roberta-base" in msg
    assert "HF_HUB_OFFLINE is set" in msg
    assert models.local_text_tower("l5s-tiny") is None and models.local_text_tower("xlm-roberta-base-ViT-B-32") is None
