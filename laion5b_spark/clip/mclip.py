"""mCLIP: a multilingual text encoder distilled into a CLIP model's text space, scored against that CLIP model's
image embedding (LAION-5B scored its non-English and nolang rows with
``sentence-transformers/clip-ViT-B-32-multilingual-v1`` against OpenAI ViT-B/32's image tower).

Read from the sentence-transformers layout with transformers alone: ``modules.json`` lists a Transformer (its
folder holds the HF config, tokenizer and weights, plus ``sentence_bert_config.json``), a Pooling, then Dense and
Normalize modules. Dense weights are read from ``model.safetensors``, or ``pytorch_model.bin`` with
``weights_only=True`` - never unpickled. sentence-transformers itself is not needed at run time.

``ident`` is a folder (an absolute path or ``local-dir:/path``) or a hub id, taken from the local HF cache only
when ``HF_HUB_OFFLINE=1``. ``check_mclip`` runs on the driver; ``load_mclip`` in the workers.
"""

from __future__ import annotations

import gc
import inspect
import json
import os
import threading
from dataclasses import dataclass

import torch

from ..config import ConfigError
from .label import local_folder, mclip_label  # noqa: F401 - mclip_label is part of this module's API
from .models import _hf_missing, _hub_down, _hub_offline, _one_line

_MODULE_KINDS = ("Transformer", "Pooling", "Dense", "Normalize")
# sentence-transformers' legacy pooling flags, in the order its Pooling concatenates the modes
_LEGACY_POOLING = {"pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max",
                   "pooling_mode_mean_tokens": "mean", "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                   "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}
_POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens")
_ACTIVATIONS = {"Identity": torch.nn.Identity, "Tanh": torch.nn.Tanh, "ReLU": torch.nn.ReLU, "GELU": torch.nn.GELU,
                "Sigmoid": torch.nn.Sigmoid}
_MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                  "pytorch_model.bin.index.json")
_DENSE_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# what a hub model is fetched with: configs, vocabularies and safetensors weights (.bin only where no safetensors)
_HUB_PATTERNS = ["*.json", "*.txt", "*.model", "*.safetensors"]


class LayoutError(ValueError):
    """The folder is not a sentence-transformers model this module reads; the message says what is wrong."""


class MissingFile(LayoutError):
    """A file the layout needs is not there (for a hub model: not in the local cache)."""


@dataclass(frozen=True)
class Dense:
    path: str  # the module's folder
    in_features: int
    out_features: int
    bias: bool
    activation: str  # a key of _ACTIVATIONS


@dataclass(frozen=True)
class Layout:
    """What modules.json and the modules' configs say, checked; no weights read."""

    folder: str
    transformer: str  # the Transformer module's folder: HF config, tokenizer, weights
    max_seq_length: int | None
    do_lower_case: bool
    pooling: tuple[str, ...]
    width: int  # the text model's hidden size, as the Pooling config says
    heads: tuple  # Dense, or "normalize", in modules.json order
    dim: int  # the output size

    @property
    def dense(self) -> list[Dense]:
        return [h for h in self.heads if isinstance(h, Dense)]


def read_layout(folder: str) -> Layout:
    """The model in ``folder`` as a Layout; LayoutError (MissingFile for an absent file) says what does not fit."""
    modules = _read_json(folder, "modules.json", "the sentence-transformers module list")
    if not isinstance(modules, list) or not all(isinstance(m, dict) and "type" in m for m in modules):
        raise LayoutError("modules.json is not a list of modules with a type")
    kinds = []
    for m in sorted(modules, key=lambda m: m.get("idx", 0)):
        ref = str(m["type"])
        kind = ref.rsplit(".", 1)[-1]
        if not ref.startswith("sentence_transformers.") or kind not in _MODULE_KINDS:
            raise LayoutError(f"module {m.get('path') or '.'!r} is a {ref}: only Transformer, Pooling, Dense and "
                              f"Normalize modules are read; choose a model without it")
        kinds.append((kind, _module_dir(folder, m.get("path", ""))))
    if [k for k, _ in kinds[:2]] != ["Transformer", "Pooling"] \
            or any(k not in ("Dense", "Normalize") for k, _ in kinds[2:]):
        raise LayoutError(f"modules.json lists {', '.join(k for k, _ in kinds)}: a Transformer, a Pooling, then "
                          f"Dense or Normalize modules are read")

    transformer = kinds[0][1]
    st_config = _read_json(transformer, "sentence_bert_config.json", optional=True) or {}
    _read_json(transformer, "config.json", "transformers' config of the text model")
    _need(transformer, _TOKENIZER_FILES, "the text model's tokenizer")
    _need(transformer, _MODEL_WEIGHTS, "the text model's weights (model.safetensors)")

    pooling_config = _read_json(kinds[1][1], "config.json", "the Pooling module's config")
    pooling = _pooling_modes(pooling_config)
    width = pooling_config.get("embedding_dimension", pooling_config.get("word_embedding_dimension"))
    if not isinstance(width, int):
        raise LayoutError("the Pooling config has no word_embedding_dimension")
    dim = width * len(pooling)
    heads: list = []
    for kind, path in kinds[2:]:
        if kind == "Normalize":
            config = _read_json(path, "config.json", optional=True) or {}
            _sentence_embedding_only(config, "Normalize")
            heads.append("normalize")
            continue
        dense = _dense(path, _read_json(path, "config.json", "the Dense module's config"))
        if dense.in_features != dim:
            raise LayoutError(f"the Dense module in {os.path.basename(path)!r} takes {dense.in_features} inputs, but "
                              f"the modules before it give {dim}")
        heads.append(dense)
        dim = dense.out_features
    return Layout(folder, transformer, st_config.get("max_seq_length"), bool(st_config.get("do_lower_case", False)),
                  pooling, width, tuple(heads), dim)


def _module_dir(folder: str, path: str) -> str:
    if os.path.isabs(path) or os.path.normpath(path).split(os.sep)[0] == "..":
        raise LayoutError(f"modules.json names a module folder {path!r} outside the model")
    return os.path.join(folder, path) if path else folder


def _read_json(folder: str, name: str, what: str = "", optional: bool = False):
    path = os.path.join(folder, name)
    if not os.path.isfile(path):
        if optional:
            return None
        raise MissingFile(f"no {name} in {folder} ({what})")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise LayoutError(f"{path} does not read as JSON ({_one_line(exc, 80)})") from None


def _need(folder: str, names: tuple[str, ...], what: str) -> str:
    for name in names:
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    raise MissingFile(f"no {' / '.join(names)} in {folder} ({what})")


def _pooling_modes(config: dict) -> tuple[str, ...]:
    """The pooling modes as sentence-transformers reads them: ``pooling_mode`` (a mode or a list), or the legacy
    ``pooling_mode_*`` flags (mean when none is set)."""
    modes = config.get("pooling_mode")
    if modes is None:
        modes = [mode for flag, mode in _LEGACY_POOLING.items() if config.get(flag)] or ["mean"]
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    other = [m for m in modes if m not in _POOLING_MODES]
    if other or not modes:
        raise LayoutError(f"pooling mode {', '.join(other) or 'none'}: only {', '.join(_POOLING_MODES)} are read")
    return modes


def _dense(path: str, config: dict) -> Dense:
    _sentence_embedding_only(config, "Dense")
    if config.get("use_residual"):
        raise LayoutError("a Dense module with use_residual is not read; choose a model without it")
    # sentence-transformers' Dense defaults to Tanh when its config names no activation
    ref = config.get("activation_function") or "torch.nn.modules.activation.Tanh"
    activation = ref.rsplit(".", 1)[-1]
    if not ref.startswith("torch.") or activation not in _ACTIVATIONS:
        raise LayoutError(f"the Dense activation {ref} is not read; only torch.nn {', '.join(_ACTIVATIONS)} are")
    try:
        dense = Dense(path, int(config["in_features"]), int(config["out_features"]), bool(config.get("bias", True)),
                      activation)
    except (KeyError, TypeError, ValueError):
        raise LayoutError(f"the Dense config in {path} needs in_features and out_features") from None
    _need(path, _DENSE_WEIGHTS, "the Dense module's weights")
    return dense


def _sentence_embedding_only(config: dict, kind: str) -> None:
    for key in ("module_input_name", "module_output_name"):
        if config.get(key) not in (None, "sentence_embedding"):
            raise LayoutError(f"a {kind} module on {config[key]!r} is not read (only on the sentence embedding)")


def dense_weights(dense: Dense) -> dict[str, torch.Tensor]:
    """``linear.weight`` (and ``linear.bias``) of a Dense module, checked against its config."""
    st = os.path.join(dense.path, "model.safetensors")
    if os.path.isfile(st):
        from safetensors.torch import load_file

        state = load_file(st)
    else:
        state = torch.load(os.path.join(dense.path, "pytorch_model.bin"), map_location="cpu", weights_only=True)
    want = {"linear.weight": (dense.out_features, dense.in_features)}
    if dense.bias:
        want["linear.bias"] = (dense.out_features,)
    for key, shape in want.items():
        got = state.get(key)
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != shape:
            raise LayoutError(f"the Dense weights in {dense.path} have no {key} of shape {list(shape)} "
                              f"(got {list(got.shape) if isinstance(got, torch.Tensor) else 'none'})")
    return {k: state[k].float() for k in want}


def resolve_folder(ident: str) -> str:
    """The local folder of ``ident``: itself, or a hub model's snapshot in the HF cache (fetched there unless
    HF_HUB_OFFLINE is set)."""
    folder = local_folder(ident)
    if folder is not None:
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"mclip model folder {folder} does not exist")
        return folder
    from huggingface_hub import hf_hub_download, snapshot_download

    offline = _hub_offline()
    try:
        folder = snapshot_download(ident, allow_patterns=_HUB_PATTERNS, local_files_only=offline)
    except Exception as exc:  # noqa: BLE001 - say which model and why in one line
        raise FileNotFoundError(f"mclip model {ident}: not in the local HF cache"
                                f"{' and HF_HUB_OFFLINE is set' if offline else ''} ({_one_line(exc, 120)})") from None
    if not offline:  # .bin weights only where a module has no safetensors: a repo with both is not fetched twice
        try:
            modules = _read_json(folder, "modules.json", "the sentence-transformers module list")
        except LayoutError:
            return folder  # read_layout says what is wrong
        for m in modules if isinstance(modules, list) else []:
            sub = m.get("path", "") if isinstance(m, dict) else ""
            if str(m.get("type", "")).rsplit(".", 1)[-1] in ("Transformer", "Dense") \
                    and not os.path.isfile(os.path.join(folder, sub, "model.safetensors")) \
                    and not os.path.isfile(os.path.join(folder, sub, "model.safetensors.index.json")):
                hf_hub_download(ident, "pytorch_model.bin", subfolder=sub or None)
    return folder


class MClipText:
    """A sentence-transformers text encoder (Transformer -> Pooling -> Dense -> L2 norm) on one device; its
    embeddings live in the space of the CLIP model it was distilled into, compared with that model's images."""

    def __init__(self, ident: str, device: str):
        from tokenizers import Tokenizer
        from tokenizers.normalizers import Lowercase
        from tokenizers.normalizers import Sequence as NormalizerSequence
        from transformers import AutoModel, AutoTokenizer

        layout = read_layout(resolve_folder(ident))
        self.ident = ident
        self.name = mclip_label(ident)  # the lake's scored.model for rows this model scored
        self.dim = layout.dim
        self.device = torch.device(device)
        hf_tokenizer = AutoTokenizer.from_pretrained(layout.transformer)
        if not hf_tokenizer.is_fast or hf_tokenizer.pad_token_id is None:
            raise LayoutError(f"the tokenizer in {layout.transformer} is not a fast (Rust) tokenizer with a padding "
                              f"token")
        self.model = AutoModel.from_pretrained(layout.transformer, dtype=torch.float32).to(self.device).eval()
        # as sentence-transformers: max_seq_length, else the tokenizer's limit capped at the model's positions
        max_length = layout.max_seq_length or min(hf_tokenizer.model_max_length,
                                                  getattr(self.model.config, "max_position_embeddings", 1 << 30))
        # an own copy of the Rust tokenizer, configured once: encode_batch then only reads it, from any thread
        # (transformers' __call__ re-sets truncation and padding on its shared tokenizer per call)
        tokenizer = Tokenizer.from_str(hf_tokenizer.backend_tokenizer.to_str())
        if layout.do_lower_case:  # as sentence-transformers: a Lowercase step in front, unless one is there
            normalizer = tokenizer.normalizer
            steps = list(normalizer) if isinstance(normalizer, NormalizerSequence) else \
                [normalizer] if normalizer is not None else []
            if not any(isinstance(s, Lowercase) for s in steps):
                tokenizer.normalizer = NormalizerSequence([Lowercase(), *steps])
        tokenizer.enable_truncation(max_length, direction=hf_tokenizer.truncation_side)
        tokenizer.enable_padding(direction=hf_tokenizer.padding_side, pad_id=hf_tokenizer.pad_token_id,
                                 pad_type_id=hf_tokenizer.pad_token_type_id, pad_token=hf_tokenizer.pad_token)
        self._tokenizer = tokenizer
        self.max_seq_length = max_length
        # token_type_ids only where the tokenizer makes them and the model's forward names them (DistilBERT: no)
        self._type_ids = "token_type_ids" in hf_tokenizer.model_input_names and \
            "token_type_ids" in inspect.signature(self.model.forward).parameters
        self.pooling = layout.pooling
        heads = []
        for head in layout.heads:
            if head == "normalize":
                heads.append(_Normalize())
                continue
            linear = torch.nn.Linear(head.in_features, head.out_features, bias=head.bias)
            linear.load_state_dict({k.removeprefix("linear."): v for k, v in dense_weights(head).items()})
            heads.append(torch.nn.Sequential(linear, _ACTIVATIONS[head.activation]()))
        self.heads = torch.nn.Sequential(*heads).to(self.device).eval()

    @property
    def dtype_context(self):
        """bf16 autocast on GPU, plain fp32 on CPU (as ClipModel)."""
        if self.device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Token ids and attention mask on the CPU, padded to the batch's longest and cut to max_seq_length; from
        any thread (the Rust tokenizer releases the GIL)."""
        encodings = self._tokenizer.encode_batch(list(texts))
        shape = (len(encodings), len(encodings[0].ids) if encodings else 0)
        out = {"input_ids": torch.tensor([e.ids for e in encodings], dtype=torch.long).view(shape),
               "attention_mask": torch.tensor([e.attention_mask for e in encodings], dtype=torch.long).view(shape)}
        if self._type_ids:
            out["token_type_ids"] = torch.tensor([e.type_ids for e in encodings], dtype=torch.long).view(shape)
        return out

    @torch.inference_mode()
    def encode_tokens(self, tokens: dict) -> torch.Tensor:
        """``tokenize``'s output -> L2-normalized text embeddings on the device, float32 [n, dim]."""
        feats = {k: v.to(self.device, non_blocking=True) for k, v in tokens.items()}
        if feats["input_ids"].shape[0] == 0:
            return torch.empty(0, self.dim, device=self.device)
        with self.dtype_context:
            hidden = self.model(**feats)[0]
        # pooling and the Dense layers in fp32: they are small, and sums over tokens lose most in bf16
        x = pool(hidden.float(), feats["attention_mask"], self.pooling)
        return torch.nn.functional.normalize(self.heads(x).float(), dim=-1)

    def encode_texts(self, texts: list[str]) -> torch.Tensor:
        return self.encode_tokens(self.tokenize(texts))


class _Normalize(torch.nn.Module):
    def forward(self, x):
        return torch.nn.functional.normalize(x, dim=-1)


def pool(hidden: torch.Tensor, mask: torch.Tensor, modes: tuple[str, ...]) -> torch.Tensor:
    """Token embeddings [n, t, d] -> sentence embeddings [n, d * len(modes)], as sentence-transformers' Pooling
    computes each mode (padding positions masked out), concatenated in ``modes`` order."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    out = []
    for mode in modes:
        if mode == "cls":  # the first real token (right padding: position 0)
            first = mask.to(torch.int).argmax(dim=1)
            out.append(hidden[torch.arange(hidden.shape[0], device=hidden.device), first])
        elif mode == "max":
            out.append(hidden.masked_fill(m == 0, float("-inf")).max(dim=1).values)
        else:  # mean, mean_sqrt_len_tokens
            count = torch.clamp(m.sum(dim=1), min=1e-9)
            out.append((hidden * m).sum(dim=1) / (count if mode == "mean" else torch.sqrt(count)))
    return torch.cat(out, dim=-1)


_loaded: dict[str, tuple[str, MClipText]] = {}  # device -> (ident, model): one mclip model per device
_lock = threading.Lock()


def load_mclip(ident: str, device: str) -> MClipText:
    """The model for (ident, device), loaded once per process. Another ident for the same device replaces the model
    there, and its memory goes back to the device before the new one loads."""
    key = _device_key(device)
    with _lock:
        held = _loaded.get(key)
        if held is not None and held[0] == ident:
            return held[1]
        if held is not None:
            del held, _loaded[key]
            _release(key)
        model = MClipText(ident, device)
        _loaded[key] = (ident, model)
        return model


def evict(device: str) -> None:
    """Forget the mclip model loaded on ``device`` and give its memory back to the device."""
    key = _device_key(device)
    with _lock:
        if _loaded.pop(key, None) is not None:
            _release(key)


def _device_key(device: str) -> str:
    """One key per physical device: "cuda" is the current CUDA device, as torch reads it."""
    d = torch.device(device)
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return str(d)


def _release(device: str) -> None:
    gc.collect()  # the model goes once nothing else holds it; the cached blocks then go back to the device
    if device.startswith("cuda") and torch.cuda.is_available():
        torch.cuda.empty_cache()


def check_mclip(key: str, ident: str, hub: dict, embed_dim: int | None) -> None:
    """On the driver: an mclip model that cannot load, or whose embeddings cannot be compared with clip.model's
    images (``embed_dim``; None: unknown), stops the run with a one-line ConfigError saying what to do."""
    folder = local_folder(ident)
    if folder is None:
        folder = _check_hub_id(key, ident, hub)
        if folder is None:
            return  # not cached, but the hub answers: the workers fetch it
    elif not os.path.isdir(folder):
        raise ConfigError(f"{key} = {ident!r}: no such folder; give a sentence-transformers model folder "
                          f"(modules.json, 1_Pooling/, 2_Dense/ ...) or a hub id")
    try:
        layout = read_layout(folder)
        _check_text_model(layout)
        for dense in layout.dense:
            dense_weights(dense)  # small (768 x 512 for clip-ViT-B-32-multilingual-v1): read and checked
    except MissingFile as exc:
        if local_folder(ident) is not None:
            raise ConfigError(f"{key} = {ident!r}: {exc}; give a complete sentence-transformers model folder "
                              f"(as the hub repo has it)") from None
        why = _hub_down(hub)  # a partly cached hub model: the workers fetch the rest if the hub answers
        if why:
            raise ConfigError(f"{key} = {ident!r}: {exc} in the local HF cache, and the hub cannot be reached "
                              f"({why}); run once where the hub is reachable to fill the cache (HF_HOME), or give "
                              f"a local folder") from None
        return
    except LayoutError as exc:
        raise ConfigError(f"{key} = {ident!r}: {exc}") from None
    if embed_dim is not None and layout.dim != embed_dim:
        raise ConfigError(f"{key} = {ident!r} gives {layout.dim}-d text embeddings but clip.model's images are "
                          f"{embed_dim}-d: its similarity is only meaningful against the CLIP model it was "
                          f"distilled into (clip-ViT-B-32-multilingual-v1: ViT-B-32 openai); set clip.model to it")


def _check_hub_id(key: str, ident: str, hub: dict) -> str | None:
    """A hub id's cached snapshot folder; None when it is not cached but the hub answers."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(ident)
    except ValueError:
        raise ConfigError(f"{key} = {ident!r} is neither a hub id (org/name) nor a folder (an absolute path or "
                          f"local-dir:/path)") from None
    why = _hf_missing(ident, [("modules.json",)], hub)
    if why:
        hint = f"; there is a folder {ident!r} here: give local-dir:{ident}" if os.path.isdir(ident) else \
            "; or give a local folder (local-dir:/path)"
        raise ConfigError(f"{key} = {ident!r}: the model is not in the local HF cache and the hub cannot be reached "
                          f"({why}); run once where the hub is reachable to fill the cache (HF_HOME){hint}")
    try:
        return snapshot_download(ident, allow_patterns=_HUB_PATTERNS, local_files_only=True)
    except Exception:  # noqa: BLE001 - not cached (the hub answered, or _hf_missing would have said)
        return None


def _check_text_model(layout: Layout) -> None:
    """transformers reads the text model's config and tokenizer (no weights), and its width fits the Pooling's."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = AutoConfig.from_pretrained(layout.transformer)
        AutoTokenizer.from_pretrained(layout.transformer)
    except Exception as exc:  # noqa: BLE001 - whatever breaks here breaks every task
        raise LayoutError(f"transformers cannot read the text model in {layout.transformer} "
                          f"({_one_line(exc, 120)})") from None
    width = getattr(config, "hidden_size", None)
    if isinstance(width, int) and width != layout.width:
        raise LayoutError(f"the text model is {width} wide but the Pooling config says {layout.width}")
