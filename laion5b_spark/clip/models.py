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

import open_clip
import torch

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
            label = f"{model_name}/{os.path.basename(weights) if weights else 'random'}"
            _cache[key] = ClipModel(label, model, preprocess, open_clip.get_tokenizer(model_name),
                                    torch.device(device))
        return _cache[key]
