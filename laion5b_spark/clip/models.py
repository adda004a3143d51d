"""CLIP models through open_clip, loaded once per Python worker and device.

``pretrained`` is what open_clip takes: a tag (``laion2b_s34b_b79k``, ``openai``; fetched from the hub on a
connected cluster), a local checkpoint path (``.safetensors`` or a torch file, always read with
``weights_only=True`` - never unpickled), or empty for random weights (tests, throughput benchmarks).
The project's own small configs (``l5s-tiny``) live in ``model_configs/`` and are registered on import.
``check_loadable`` runs on the driver first: a model that cannot load stops the run in one line, not in every task.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
import warnings
from dataclasses import dataclass

import numpy as np
import open_clip
import torch

from ..config import ConfigError
from .label import model_label

open_clip.add_model_config(os.path.join(os.path.dirname(__file__), "model_configs"))

_cache: dict[tuple, "ClipModel"] = {}
_lock = threading.Lock()


@dataclass
class ClipModel:
    name: str  # "ViT-B-32/laion2b_s34b_b79k": what the scored table's `model` column says
    model: torch.nn.Module
    preprocess: object  # PIL image -> tensor (open_clip's eval transform)
    tokenizer: object
    device: torch.device
    # preprocess cut in two (split_transform): the PIL steps run in the decode pool, the float conversion and
    # normalization run batched on the model's device - done per image on the CPU, they cost 3x the decode
    pil_steps: object = None
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    def __post_init__(self):
        split = split_transform(self.preprocess)
        if split is not None:
            self.pil_steps, mean, std = split
            self.mean = torch.tensor(mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
            self.std = torch.tensor(std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)

    def prepare(self, image):
        """Per image, in a decode thread: H x W x 3 uint8 at the model's input size (or the whole preprocess, when
        the transform does not end in ToTensor + Normalize)."""
        if self.pil_steps is None:
            return self.preprocess(image)
        return np.asarray(self.pil_steps(image), dtype=np.uint8)

    def pixels(self, prepared: list) -> torch.Tensor:
        """A batch of ``prepare`` outputs as the model's normalized float input, on the model's device."""
        if self.pil_steps is None:
            return torch.stack(prepared).to(self.device, non_blocking=True)
        u8 = torch.from_numpy(np.stack(prepared)).to(self.device, non_blocking=True)  # a quarter of fp32's bytes
        x = u8.permute(0, 3, 1, 2).float().div_(255)  # ToTensor's arithmetic, then Normalize's
        return x.sub_(self.mean).div_(self.std)

    @property
    def dtype_context(self):
        """bf16 autocast on GPU, plain fp32 on CPU."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        with self.dtype_context:
            emb = self.model.encode_image(pixels.to(self.device, non_blocking=True))
        return torch.nn.functional.normalize(emb.float(), dim=-1)

    @torch.inference_mode()
    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device, non_blocking=True)
        with self.dtype_context:
            emb = self.model.encode_text(tokens)
        return torch.nn.functional.normalize(emb.float(), dim=-1)


def split_transform(preprocess):
    """open_clip's eval transform (Resize, CenterCrop, to-RGB, ToTensor, Normalize) as (its PIL steps, mean, std);
    None for any other shape, which then runs whole per image."""
    from torchvision import transforms as T

    steps = list(getattr(preprocess, "transforms", []))
    if len(steps) < 2 or not isinstance(steps[-2], T.ToTensor) or not isinstance(steps[-1], T.Normalize):
        return None
    if any(isinstance(t, (T.ToTensor, T.Normalize, T.PILToTensor)) for t in steps[:-2]):
        return None
    return T.Compose(steps[:-2]), tuple(steps[-1].mean), tuple(steps[-1].std)


def load(model_name: str, pretrained: str | None, device: str) -> ClipModel:
    """The model for (name, weights, device), loaded once per process."""
    key = (model_name, pretrained or "", device)
    with _lock:
        if key not in _cache:
            weights = pretrained or None
            if weights and (os.sep in weights or weights.endswith((".safetensors", ".pt", ".bin"))) \
                    and not os.path.exists(weights):
                raise FileNotFoundError(f"CLIP checkpoint {weights} does not exist")
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=weights,
                                                                         device=device, weights_only=True)
            model.eval()
            label = model_label(model_name, weights)
            _cache[key] = ClipModel(label, model, preprocess, open_clip.get_tokenizer(model_name),
                                    torch.device(device))
        return _cache[key]


_HUB_TIMEOUT_S = 3.0  # the whole hub probe, DNS included: an offline driver answers within it
_BIG_CHECKPOINT = 1 << 30  # local checkpoints up to this are read once by the check; bigger ones only opened
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_COMMON_MODELS = "ViT-B-32, ViT-B-16, ViT-L-14, ViT-H-14"


def check_loadable(settings) -> None:
    """On the driver, before any Spark work: a model, weights or head that cannot load on the executors stops the
    run with a one-line ConfigError saying what to do, instead of every task failing (or retrying the hub) alike.
    The cache looked at is the driver's: on a multi-node cluster a tag is only as cached as the executors' caches."""
    hub: dict[str, str] = {}  # one reachability probe per host
    cfg = _check_model("clip.model", settings.model, "clip.pretrained", settings.pretrained, hub)
    if settings.multilingual_model:
        _check_model("clip.multilingual_model", settings.multilingual_model, "clip.multilingual_pretrained",
                     settings.multilingual_pretrained, hub)
    from .heads import NsfwHead, WatermarkModel

    if settings.nsfw_head:
        _check_file("clip.nsfw_head", settings.nsfw_head, safetensors_only=True)
        if cfg:  # the head is tiny: load it, which also checks it fits clip.model's embedding size
            _or_config_error("clip.nsfw_head", settings.nsfw_head, NsfwHead.load, settings.nsfw_head,
                             cfg["embed_dim"], "cpu")
    if settings.watermark_model:
        _check_file("clip.watermark_model", settings.watermark_model, safetensors_only=True)
        _or_config_error("clip.watermark_model", settings.watermark_model, WatermarkModel, settings.watermark_model,
                         "cpu", settings.watermark_arch, settings.watermark_size, settings.watermark_class)


def _check_model(mkey: str, name: str, pkey: str, pretrained: str, hub: dict) -> dict | None:
    """The model's open_clip config once (name, weights, text tower) are known to load; None for schema names."""
    schema, ident = open_clip.factory.parse_model_name(name) if name else (None, "")
    if schema == "hf-hub":  # config and weights both come from the repo; open_clip ignores pretrained then
        why = _hf_missing(ident, [("open_clip_config.json",)], hub)
        if why:
            raise ConfigError(f"{mkey} = {name!r}: its config is not in the local cache and the hub cannot be "
                              f"reached ({why}); run where the hub is reachable or use a local-dir: model")
        return None
    if schema == "local-dir":
        if not os.path.isfile(os.path.join(ident, "open_clip_config.json")):
            raise ConfigError(f"{mkey} = {name!r}: no open_clip_config.json in that folder")
        return None
    base = name.replace("/", "-")  # open_clip's own spelling: ViT-B/32 is ViT-B-32
    cfg = open_clip.get_model_config(base)
    if cfg is None:
        close = ", ".join(difflib.get_close_matches(base, open_clip.list_models(), n=4, cutoff=0.5))
        raise ConfigError(f"{mkey} = {name!r} is not an open_clip model; try {close or _COMMON_MODELS} "
                          f"(open_clip.list_models() has all), or an hf-hub:org/repo name")
    checkpoint = None
    if pretrained:
        tag = open_clip.pretrained.get_pretrained_cfg(base, pretrained)
        if tag:
            _check_tag(pkey, pretrained, base, tag, hub)
        elif os.path.isfile(pretrained):
            checkpoint = _check_file(pkey, pretrained)
        elif os.sep in pretrained or pretrained.endswith((".safetensors", ".pt", ".pth", ".bin")):
            raise ConfigError(f"{pkey} = {pretrained!r}: no such checkpoint file")
        else:
            tags = open_clip.list_pretrained_tags_by_model(base)
            valid = f"its tags: {', '.join(tags[:8])}" if tags else "it has no open_clip tags"
            raise ConfigError(f"{pkey} = {pretrained!r} is not a tag of {base} ({valid}); give one, a checkpoint "
                              f"path, or \"\" for random weights")
    text = cfg.get("text_cfg", {})
    hf_model, hf_tokenizer = text.get("hf_model_name"), text.get("hf_tokenizer_name")
    if hf_model or hf_tokenizer:
        _check_hf_text(mkey, name, hf_model, hf_tokenizer, random_weights=not pretrained, hub=hub)
        return cfg  # building it would ask the hub for the HF config: the files' presence is the check
    _build(mkey, name, pkey, pretrained, checkpoint)
    return cfg


def _check_tag(pkey: str, tag: str, model: str, tag_cfg: dict, hub: dict) -> None:
    if tag_cfg.get("hf_hub"):  # open_clip's download_pretrained prefers the hub and its safetensors file
        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filename = filename or open_clip.pretrained.HF_WEIGHTS_NAME
        why = _hf_missing(repo, [(*open_clip.pretrained._get_safe_alternatives(filename), filename)], hub)
    else:
        url = tag_cfg["url"]
        cached = os.path.isfile(os.path.join(os.path.expanduser("~/.cache/clip"), os.path.basename(url)))
        why = "" if cached else _unreachable(url, hub)
    if why:
        raise ConfigError(f"{pkey} = {tag!r} for {model}: its weights are not in the local cache and the hub "
                          f"cannot be reached ({why}); give a local checkpoint path (--set {pkey}="
                          f"/path/model.safetensors) or run where the hub is reachable")


def _check_hf_text(mkey: str, name: str, hf_model, hf_tokenizer, random_weights: bool, hub: dict) -> None:
    """An HF text tower or tokenizer: transformers installed, its files cached or the hub reachable."""
    if not _has_transformers():
        raise ConfigError(f"{mkey} = {name!r} needs the transformers package for its text tower "
                          f"({hf_model or hf_tokenizer}): pip install transformers, or choose another model")
    needs: dict[str, list] = {}
    if hf_model:  # the tower's config always; its weights too when no CLIP checkpoint replaces them
        needs[hf_model] = [("config.json",)] + ([("model.safetensors", "pytorch_model.bin")] if random_weights else [])
    if hf_tokenizer:
        needs.setdefault(hf_tokenizer, []).append(_TOKENIZER_FILES)
    for repo, groups in needs.items():
        why = _hf_missing(repo, groups, hub)
        if why:
            raise ConfigError(f"{mkey} = {name!r}: its text tower's files from {repo} are not in the local cache and "
                              f"the hub cannot be reached ({why}); run once where the hub is reachable to fill the "
                              f"cache (HF_HOME), or choose a model without an HF text tower")


def _has_transformers() -> bool:
    return importlib.util.find_spec("transformers") is not None


def _build(mkey: str, name: str, pkey: str, pretrained: str, checkpoint: str | None) -> None:
    """Build the model on the meta device (no memory, no init: config errors show) and, for a local checkpoint up
    to _BIG_CHECKPOINT, load it the way create_model does (a checkpoint of another architecture shows)."""
    load = checkpoint is not None and os.path.getsize(checkpoint) <= _BIG_CHECKPOINT
    logging.disable(logging.WARNING)  # open_clip's "initialized randomly" would read as if the run used that
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: copying into meta parameters is a no-op (it is the point)
            with torch.device("meta"):
                model = open_clip.create_model(name, pretrained=None, device="meta")
            if load:
                open_clip.load_checkpoint(model, checkpoint, strict=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever breaks here breaks every task
        if load:
            raise ConfigError(f"{pkey} = {pretrained!r} does not load into {name} ({_one_line(exc, 120)}): "
                              f"is the checkpoint for that model?") from None
        raise ConfigError(f"{mkey} = {name!r} does not build: {_one_line(exc)}") from None
    finally:
        logging.disable(logging.NOTSET)


def _check_file(key: str, path: str, safetensors_only: bool = False) -> str:
    """A local weights file that exists, reads, and (safetensors) has a valid header - a Git LFS pointer has not."""
    if not os.path.isfile(path):
        raise ConfigError(f"{key} = {path!r}: no such file")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"{key} = {path!r} is not readable by this user")
    if safetensors_only and not path.endswith(".safetensors"):
        raise ConfigError(f"{key} = {path!r}: give a .safetensors file (no pickles are loaded)")
    if path.endswith(".safetensors"):
        from safetensors import safe_open

        try:
            with safe_open(path, "pt") as f:
                f.keys()
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{key} = {path!r} is not a readable safetensors file ({_one_line(exc)})") from None
    return path


def _or_config_error(key: str, path: str, fn, *args) -> None:
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{key} = {path!r} does not load: {_one_line(exc)}") from None


def _hf_missing(repo: str, groups: list[tuple], hub: dict) -> str:
    """'' when each group has a file in the local HF cache (the one models.load reads) or the hub answers; else
    why neither."""
    from huggingface_hub import try_to_load_from_cache

    if all(any(isinstance(try_to_load_from_cache(repo, f), str) for f in g) for g in groups):
        return ""
    return _hub_down(hub)


def _hub_down(hub: dict) -> str:
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        return "HF_HUB_OFFLINE is set"
    return _unreachable(constants.ENDPOINT, hub)


def _unreachable(url: str, memo: dict) -> str:
    host = urllib.parse.urlsplit(url).netloc
    if host not in memo:
        memo[host] = _probe(url, _HUB_TIMEOUT_S)
    return memo[host]


def _probe(url: str, timeout: float) -> str:
    """'' when ``url``'s server answers a HEAD (any HTTP status) within ``timeout``, else why not. In a daemon
    thread, so a hanging resolver counts against the timeout too; urllib honours *_proxy, as the hub client does."""
    out: list[str] = []

    def head():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            out.append("")
        except urllib.error.HTTPError:
            out.append("")
        except Exception as exc:  # noqa: BLE001
            out.append(f"{urllib.parse.urlsplit(url).netloc}: {_one_line(getattr(exc, 'reason', exc), 80)}")

    t = threading.Thread(target=head, daemon=True)
    t.start()
    t.join(timeout)
    return out[0] if out else f"no answer from {urllib.parse.urlsplit(url).netloc} in {timeout:g} s"


def _one_line(exc: BaseException, limit: int = 150) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
