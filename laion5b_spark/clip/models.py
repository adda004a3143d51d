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
import json
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
from PIL import Image

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
    _input_spec: tuple | None = None
    _fast: tuple | None = None  # text.text_encoder_for's (tokenize, encode); () when not exact for this model

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
    def input_spec(self) -> tuple[tuple[int, ...], torch.dtype]:
        """The shape and dtype of one ``prepare`` output: what a batch buffer holds per row."""
        if self._input_spec is None:
            x = self.prepare(Image.new("RGB", (97, 61)))  # any size: the transform ends at the model's input size
            self._input_spec = (tuple(x.shape), torch.uint8 if isinstance(x, np.ndarray) else x.dtype)
        return self._input_spec

    @property
    def embed_dim(self) -> int:
        return int(self.model.visual.output_dim) if hasattr(self.model.visual, "output_dim") \
            else int(self.encode_texts(["x"]).shape[-1])

    @torch.inference_mode()
    def encode_pixels(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch of ``prepare`` outputs already on the device (uint8 H x W x 3, or the whole preprocess's floats)
        -> L2-normalized image embeddings, float32."""
        if batch.dtype == torch.uint8:
            x = batch.permute(0, 3, 1, 2).float().div_(255)  # ToTensor's arithmetic, then Normalize's
            batch = x.sub_(self.mean).div_(self.std)
        return self.encode_images(batch)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids on the CPU, from any thread: the Rust tokenizer (GIL released) cut to the batch's longest
        caption where that is exact for this model (text.py), else open_clip's own tokenizer."""
        fast = self._fast_text()
        return fast.tokenize(texts) if fast else self.tokenizer(texts)

    @torch.inference_mode()
    def encode_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokenize``'s output -> L2-normalized text embeddings on the device, float32."""
        tokens = tokens.to(self.device, non_blocking=True)
        fast = self._fast_text()
        with self.dtype_context:
            emb = fast.encode(tokens) if fast else self.model.encode_text(tokens)
        return torch.nn.functional.normalize(emb.float(), dim=-1)

    def _fast_text(self):
        if self._fast is None:
            from .text import text_encoder_for

            self._fast = text_encoder_for(self.tokenizer, self.model) or ()
        return self._fast

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


LOCAL_TEXT_DIR = "text"  # a local-dir: model's HF text tower files, when not beside open_clip_config.json


@dataclass(frozen=True)
class LocalTextTower:
    """A ``local-dir:`` model's Hugging Face text tower read from its folder: open_clip would ask the hub for
    text_cfg.hf_model_name (e.g. xlm-roberta-base) by name."""

    text_cfg: dict  # the model's text_cfg, the HF names rewritten to the folders below
    model_dir: str | None  # config.json of the HF text model; None: it comes by name (HF cache or hub)
    tokenizer_dir: str | None  # the HF tokenizer's files; None: the config names no HF tokenizer


def local_text_tower(model_name: str) -> LocalTextTower | None:
    """For ``local-dir:/path`` whose text_cfg names an HF model or tokenizer and whose folder holds its files - in
    ``text/`` when there is one, else beside open_clip_config.json - those names rewritten to the local folder;
    None when there is nothing to rewrite (other models; open_clip then reads what it reads today)."""
    schema, folder = open_clip.factory.parse_model_name(model_name)
    if schema != "local-dir":
        return None
    try:
        with open(os.path.join(folder, "open_clip_config.json"), encoding="utf-8") as f:
            text = dict(json.load(f)["model_cfg"].get("text_cfg", {}))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # open_clip's own error says what is wrong
    if not (text.get("hf_model_name") or text.get("hf_tokenizer_name")):
        return None
    hf_dir = os.path.join(folder, LOCAL_TEXT_DIR)
    hf_dir = hf_dir if os.path.isdir(hf_dir) else folder
    model_dir = hf_dir if text.get("hf_model_name") and os.path.isfile(os.path.join(hf_dir, "config.json")) else None
    tokenizer_dir = None
    if text.get("hf_tokenizer_name"):  # open_clip reads a local-dir model's tokenizer from the folder itself
        has_files = any(os.path.isfile(os.path.join(hf_dir, f)) for f in _TOKENIZER_FILES)
        tokenizer_dir = hf_dir if has_files else folder
    if model_dir is None and tokenizer_dir in (None, folder):
        return None
    if text.get("hf_model_name"):
        text["hf_model_name"] = model_dir or text["hf_model_name"]
        # as create_model decides it: the text model's own weights only when no CLIP checkpoint replaces them
        text["hf_model_pretrained"] = _dir_checkpoint(folder) is None
    if tokenizer_dir:
        text["hf_tokenizer_name"] = tokenizer_dir
    return LocalTextTower(text, model_dir, tokenizer_dir)


def _dir_checkpoint(folder: str) -> str | None:
    """The CLIP checkpoint open_clip loads from a local-dir: folder (open_clip_model.safetensors, ...)."""
    from pathlib import Path

    return open_clip.factory._find_checkpoint_in_dir(Path(folder))


def _tokenizer(model_name: str, tower: LocalTextTower | None):
    """open_clip.get_tokenizer's, reading a local text tower's tokenizer from its folder."""
    if tower is None or tower.tokenizer_dir is None:
        return open_clip.get_tokenizer(model_name)
    text = tower.text_cfg
    return open_clip.tokenizer.HFTokenizer(
        tower.tokenizer_dir, context_length=text.get("context_length", open_clip.tokenizer.DEFAULT_CONTEXT_LENGTH),
        tokenizer_mode=text.get("tokenizer_mode"), **text.get("tokenizer_kwargs", {}))


def load(model_name: str, pretrained: str | None, device: str) -> ClipModel:
    """The model for (name, weights, device), loaded once per process."""
    key = (model_name, pretrained or "", device)
    with _lock:
        if key not in _cache:
            weights = pretrained or None
            if weights and (os.sep in weights or weights.endswith((".safetensors", ".pt", ".bin"))) \
                    and not os.path.exists(weights):
                raise FileNotFoundError(f"CLIP checkpoint {weights} does not exist")
            tower = local_text_tower(model_name)
            model, _, preprocess = open_clip.create_model_and_transforms(
                model_name, pretrained=weights, device=device, weights_only=True,
                **({"text_cfg": tower.text_cfg} if tower else {}))
            model.eval()
            label = model_label(model_name, weights)
            _cache[key] = ClipModel(label, model, preprocess, _tokenizer(model_name, tower),
                                    torch.device(device))
        return _cache[key]


def evict(device: str) -> None:
    """Forget the models loaded on ``device`` (another run's settings in the same worker replace them) and give
    their memory back to the device."""
    import gc

    with _lock:
        for key in [k for k in _cache if k[2] == device]:
            del _cache[key]
    from .mclip import evict as evict_mclip

    evict_mclip(device)
    gc.collect()
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


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
    kind = getattr(settings, "multilingual_kind", "open_clip")
    if kind not in ("open_clip", "mclip"):
        raise ConfigError(f"clip.multilingual_kind = {kind!r}: give \"open_clip\" (a CLIP model with its own image "
                          f"tower) or \"mclip\" (a sentence-transformers text model scored against clip.model's "
                          f"images)")
    if settings.multilingual_model and kind == "mclip":
        if settings.multilingual_pretrained:
            raise ConfigError(f"clip.multilingual_pretrained = {settings.multilingual_pretrained!r}: an mclip model "
                              f"(clip.multilingual_kind = \"mclip\") brings its own weights; set it to \"\"")
        from .mclip import check_mclip

        check_mclip("clip.multilingual_model", settings.multilingual_model, hub, cfg["embed_dim"] if cfg else None)
    elif settings.multilingual_model:
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
    """The model's open_clip config once (name, weights, text tower) are known to load; None for hf-hub: names."""
    schema, ident = open_clip.factory.parse_model_name(name) if name else (None, "")
    if schema == "hf-hub":  # config and weights both come from the repo; open_clip ignores pretrained then
        why = _hf_missing(ident, [("open_clip_config.json",)], hub)
        if why:
            raise ConfigError(f"{mkey} = {name!r}: its config is not in the local cache and the hub cannot be "
                              f"reached ({why}); run where the hub is reachable or use a local-dir: model")
        return None
    if schema == "local-dir":
        try:
            with open(os.path.join(ident, "open_clip_config.json"), encoding="utf-8") as f:
                cfg = json.load(f)["model_cfg"]
        except FileNotFoundError:
            raise ConfigError(f"{mkey} = {name!r}: no open_clip_config.json in that folder") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"{mkey} = {name!r}: its open_clip_config.json has no readable model_cfg "
                              f"({_one_line(exc, 80)})") from None
        text = cfg.get("text_cfg", {})
        if text.get("hf_model_name") or text.get("hf_tokenizer_name"):
            _check_local_hf_text(mkey, name, ident, text, hub)
        return cfg
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


def _check_local_hf_text(mkey: str, name: str, folder: str, text: dict, hub: dict) -> None:
    """A local-dir: model's HF text tower: read from the folder where it holds the files (local_text_tower), as
    load does, else by name as a built-in model's."""
    if not _has_transformers():
        raise ConfigError(f"{mkey} = {name!r} needs the transformers package for its text tower: pip install "
                          f"transformers, or choose another model")
    tower = local_text_tower(name)
    model_dir = tower.model_dir if tower else None
    hf_model = text.get("hf_model_name")
    if hf_model and model_dir is None:  # by name: its config, and its weights unless a CLIP checkpoint has them
        weights = [] if _dir_checkpoint(folder) else [("model.safetensors", "pytorch_model.bin")]
        why = _hf_missing(hf_model, [("config.json",), *weights], hub)
        if why:
            raise ConfigError(f"{mkey} = {name!r}: its text tower {hf_model} is neither in the folder nor in the "
                              f"local HF cache, and the hub cannot be reached ({why}); put {hf_model}'s config.json "
                              f"in {LOCAL_TEXT_DIR}/ of the folder")
    if text.get("hf_tokenizer_name"):
        try:
            _tokenizer(name, tower)
        except Exception as exc:  # noqa: BLE001 - whatever breaks here breaks every task
            raise ConfigError(f"{mkey} = {name!r}: its tokenizer does not load from the folder ({_one_line(exc, 100)})"
                              f"; put the HF tokenizer files (tokenizer.json ...) in {LOCAL_TEXT_DIR}/ or beside "
                              f"open_clip_config.json") from None
    if model_dir is not None:
        if tower.text_cfg.get("hf_model_pretrained") and not any(
                os.path.isfile(os.path.join(model_dir, f)) for f in ("model.safetensors", "pytorch_model.bin")):
            raise ConfigError(f"{mkey} = {name!r}: no CLIP checkpoint (open_clip_model.safetensors) in the folder "
                              f"and no text model weights in {model_dir}; add the checkpoint")
        # the HF config from the folder, no weights: config errors show, the hub is not asked
        _build(mkey, name, "", "", None, load_weights=False, text_cfg={**tower.text_cfg, "hf_model_pretrained": False})


def _has_transformers() -> bool:
    return importlib.util.find_spec("transformers") is not None


def _build(mkey: str, name: str, pkey: str, pretrained: str, checkpoint: str | None, **model_kwargs) -> None:
    """Build the model on the meta device (no memory, no init: config errors show) and, for a local checkpoint up
    to _BIG_CHECKPOINT, load it the way create_model does (a checkpoint of another architecture shows)."""
    load = checkpoint is not None and os.path.getsize(checkpoint) <= _BIG_CHECKPOINT
    logging.disable(logging.WARNING)  # open_clip's "initialized randomly" would read as if the run used that
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch: copying into meta parameters is a no-op (it is the point)
            with torch.device("meta"):
                model = open_clip.create_model(name, pretrained=None, device="meta", **model_kwargs)
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

    if _hub_offline():
        return "HF_HUB_OFFLINE is set"
    return _unreachable(constants.ENDPOINT, hub)


def _hub_offline() -> bool:
    """HF_HUB_OFFLINE, also when set after huggingface_hub was imported (its constant is read once, at import)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


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
