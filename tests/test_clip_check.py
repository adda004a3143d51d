"""The driver-side model check (models.check_loadable): each way a clip run's model cannot load stops it in one
line that names the setting and says what to do, within seconds offline; what does load passes."""

import os
import socket
import time
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch
from safetensors.torch import save_file

from laion5b_spark.clip import models
from laion5b_spark.clip.score import ClipSettings
from laion5b_spark.config import ConfigError, load_config, typed
from laion5b_spark.sample import shapes

from conftest import isolate_hf_hub

ROOT = Path(__file__).resolve().parent.parent
TINY = os.path.join(os.path.dirname(shapes.__file__), "assets", "l5s-tiny-shapes.safetensors")
B32_LAION = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"  # where open_clip fetches ViT-B-32/laion2b_s34b_b79k from


@pytest.fixture(autouse=True)
def hf_cache(tmp_path, monkeypatch):
    """An empty HF cache, and a hub endpoint on a closed local port: no test reads the real cache or the network."""
    return isolate_hf_hub(monkeypatch, tmp_path / "hub", offline=False)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(models, "_probe", lambda url, timeout: pytest.fail(f"probed {url} with HF_HUB_OFFLINE=1"))


def cache(root: Path, repo: str, *files: str) -> None:
    """``files`` of ``repo`` in the HF cache layout try_to_load_from_cache reads (refs/main -> snapshots/<sha>)."""
    d = root / f"models--{repo.replace('/', '--')}"
    sha = "0" * 40
    (d / "refs").mkdir(parents=True, exist_ok=True)
    (d / "refs" / "main").write_text(sha)
    (d / "snapshots" / sha).mkdir(parents=True, exist_ok=True)
    for f in files:
        (d / "snapshots" / sha / f).write_bytes(b"")


def refused(settings: ClipSettings) -> str:
    t = time.monotonic()
    with pytest.raises(ConfigError) as err:
        models.check_loadable(settings)
    msg = str(err.value)
    assert time.monotonic() - t < 5, msg
    assert "\n" not in msg and len(msg) < 300, msg
    return msg


def test_an_unknown_model_is_named_with_valid_names_to_use():
    msg = refused(ClipSettings(model="ViT-Nonexistent-99"))
    assert msg.startswith("clip.model = 'ViT-Nonexistent-99' is not an open_clip model") and "ViT-B-32" in msg
    close = refused(ClipSettings(model="ViT-B-33", pretrained=""))
    assert "ViT-B-32" in close and "ViT-S-32" in close  # difflib's neighbours, not the fixed list
    assert "multilingual_model = 'xlm-roberta-ViT-B-32'" in refused(
        ClipSettings(model="l5s-tiny", pretrained="", multilingual_model="xlm-roberta-ViT-B-32"))


def test_a_tag_of_another_model_lists_the_models_own_tags():
    msg = refused(ClipSettings(model="ViT-B-32", pretrained="laion5b_s13b_b90k"))  # xlm-roberta-base-ViT-B-32's
    assert msg.startswith("clip.pretrained = 'laion5b_s13b_b90k' is not a tag of ViT-B-32")
    assert "openai" in msg and "laion2b_s34b_b79k" in msg
    assert "has no open_clip tags" in refused(ClipSettings(model="l5s-tiny", pretrained="openai"))


def test_a_checkpoint_path_that_does_not_exist(tmp_path):
    missing = str(tmp_path / "vit-b-32.safetensors")
    assert refused(ClipSettings(pretrained=missing)) == f"clip.pretrained = {missing!r}: no such checkpoint file"
    msg = refused(ClipSettings(model="l5s-tiny", pretrained=TINY, multilingual_model="l5s-tiny",
                               multilingual_pretrained=missing))
    assert msg.startswith("clip.multilingual_pretrained = ")


def test_a_file_that_is_no_safetensors_and_a_checkpoint_of_another_model(tmp_path):
    pointer = tmp_path / "model.safetensors"
    pointer.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 605000000\n")
    assert "is not a readable safetensors file" in refused(ClipSettings(model="ViT-B-32", pretrained=str(pointer)))
    msg = refused(ClipSettings(model="ViT-B-32", pretrained=TINY))
    assert msg.startswith(f"clip.pretrained = {TINY!r} does not load into ViT-B-32")


def test_a_tag_whose_weights_are_not_cached_fails_fast_offline(offline):
    msg = refused(ClipSettings(model="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    assert msg.startswith("clip.pretrained = 'laion2b_s34b_b79k' for ViT-B-32: its weights are not in the local cache")
    assert "HF_HUB_OFFLINE is set" in msg and "--set clip.pretrained=/path/model.safetensors" in msg


def test_the_hub_probe_gives_up_on_a_refusing_and_on_a_silent_server(monkeypatch):
    msg = refused(ClipSettings(model="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    assert "hub cannot be reached (127.0.0.1:" in msg  # the closed port of the fixture: refused at once
    silent = socket.socket()  # accepts connections (the kernel does), never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setattr(hf_constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setattr(models, "_HUB_TIMEOUT_S", 0.5)
    t = time.monotonic()
    try:
        msg = refused(ClipSettings(model="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    finally:
        silent.close()
    assert time.monotonic() - t < 2 and "hub cannot be reached" in msg


def test_cached_weights_or_an_answering_hub_pass(hf_cache, monkeypatch, offline):
    cache(hf_cache, B32_LAION, "open_clip_model.safetensors")  # the safetensors file open_clip prefers
    models.check_loadable(ClipSettings(model="ViT-B-32", pretrained="laion2b_s34b_b79k"))
    monkeypatch.delenv("HF_HUB_OFFLINE")
    probes = []
    monkeypatch.setattr(models, "_probe", lambda url, timeout: probes.append(url) or "")  # the hub answers
    models.check_loadable(ClipSettings(model="ViT-B-16", pretrained="laion2b_s34b_b88k", multilingual_model="ViT-B-32",
                                       multilingual_pretrained="openai"))
    assert probes == [hf_constants.ENDPOINT]  # one probe for both models


def test_an_hf_text_tower_needs_transformers_and_its_files(hf_cache, monkeypatch, offline):
    xlm = ClipSettings(model="l5s-tiny", pretrained="", multilingual_model="xlm-roberta-base-ViT-B-32",
                       multilingual_pretrained="laion5b_s13b_b90k")
    cache(hf_cache, "laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k", "open_clip_model.safetensors")
    monkeypatch.setattr(models, "_has_transformers", lambda: False)
    assert "needs the transformers package" in refused(xlm)
    monkeypatch.setattr(models, "_has_transformers", lambda: True)
    msg = refused(xlm)
    assert msg.startswith("clip.multilingual_model = 'xlm-roberta-base-ViT-B-32': its text tower's files from "
                          "xlm-roberta-base are not in the local cache")
    cache(hf_cache, "xlm-roberta-base", "config.json", "tokenizer.json")
    models.check_loadable(xlm)
    # random weights: the tower's own weights come from the hub too
    assert "xlm-roberta-base" in refused(ClipSettings(model="xlm-roberta-base-ViT-B-32", pretrained=""))


def test_heads_must_exist_and_fit_the_model(tmp_path):
    missing = str(tmp_path / "nsfw.safetensors")
    assert refused(ClipSettings(model="l5s-tiny", pretrained="", nsfw_head=missing)) == \
        f"clip.nsfw_head = {missing!r}: no such file"
    assert refused(ClipSettings(model="l5s-tiny", pretrained="", watermark_model=missing)).startswith(
        "clip.watermark_model = ")
    head = str(tmp_path / "vit-l-head.safetensors")
    save_file({"layers.0.weight": torch.zeros(8, 768), "layers.0.bias": torch.zeros(8),
               "layers.1.weight": torch.zeros(1, 8), "layers.1.bias": torch.zeros(1)}, head)
    msg = refused(ClipSettings(model="l5s-tiny", pretrained="", nsfw_head=head))
    assert msg.startswith(f"clip.nsfw_head = {head!r} does not load") and "64-d" in msg
    small = str(tmp_path / "head.safetensors")
    save_file({"layers.0.weight": torch.zeros(8, 64), "layers.0.bias": torch.zeros(8),
               "layers.1.weight": torch.zeros(1, 8), "layers.1.bias": torch.zeros(1)}, small)
    models.check_loadable(ClipSettings(model="l5s-tiny", pretrained="", nsfw_head=small))


def test_the_tiny_model_passes_with_its_checkpoint_and_with_random_weights(offline):
    t = time.monotonic()
    models.check_loadable(ClipSettings(model="l5s-tiny", pretrained=TINY))
    models.check_loadable(ClipSettings(model="l5s-tiny", pretrained="", multilingual_model="l5s-tiny",
                                       multilingual_pretrained=TINY))
    models.check_loadable(ClipSettings(model="ViT-B-32", pretrained=""))  # built on the meta device: no memory
    assert time.monotonic() - t < 5


def test_a_broken_project_config_does_not_build(monkeypatch):
    import open_clip

    broken = {"embed_dim": 64, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8,
                                              "no_such_option": 1}, "text_cfg": {}}
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, "l5s-broken", broken)
    assert refused(ClipSettings(model="l5s-broken", pretrained="")).startswith(
        "clip.model = 'l5s-broken' does not build")


@pytest.mark.parametrize("profile", ["laion5b", "laion400m"])
def test_the_pipeline_profiles_offline_fail_fast_in_one_line(profile, hf_cache, offline):
    cfg = load_config(ROOT / "conf" / "pipeline" / f"{profile}.toml")
    settings = typed(ClipSettings, cfg["clip"])
    assert (settings.model, settings.pretrained) == ("ViT-B-32", "openai")
    msg = refused(settings)
    assert msg.startswith("clip.pretrained = 'openai' for ViT-B-32: its weights are not in the local cache")
    if profile == "laion5b":  # with ViT-B-32/openai cached, the multilingual model's weights are next
        cache(hf_cache, "timm/vit_base_patch32_clip_224.openai", "open_clip_model.safetensors")
        assert (settings.multilingual_kind, settings.multilingual_model) == \
            ("mclip", "sentence-transformers/clip-ViT-B-32-multilingual-v1")
        assert refused(settings).startswith("clip.multilingual_model = 'sentence-transformers/clip-ViT-B-32-"
                                            "multilingual-v1': the model is not in the local HF cache")
