"""CLIP models through open_clip, loaded once per Python worker and device.

``pretrained`` is what open_clip takes: a tag (``laion2b_s34b_b79k``, ``openai``; fetched from the hub on a
connected cluster), a local checkpoint path (``.safetensors`` or a torch file, always read with
``weights_only=True`` - never unpickled), or empty for random weights (tests, throughput benchmarks).
The project's own small configs (``l5s-tiny``) live in ``model_configs/`` and are registered on import.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import numpy as np
import open_clip
import torch

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


def check_loadable(settings) -> None:
    """Placeholder until the driver-side model check lands (see the clip issue notes)."""
