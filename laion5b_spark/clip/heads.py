"""NSFW and watermark scores, from weights given as files - never downloaded, never unpickled.

* ``NsfwHead``: LAION's detector is an MLP on the (normalized) CLIP image embedding with a sigmoid output
  (github.com/LAION-AI/CLIP-based-NSFW-Detector; Dense-ReLU layers, dropout only in training). Its Keras weights no
  longer load in current TensorFlow, so the head is defined here in torch and reads a safetensors file with
  ``layers.<i>.weight`` / ``layers.<i>.bias`` (torch layout: out x in); layer sizes come from the shapes.
  Converting the Keras file once: load it with an old TensorFlow (2.x, h5py), and for each Dense layer i write
  ``kernel.T`` as ``layers.<i>.weight`` and ``bias`` as ``layers.<i>.bias`` (docs/CLIP.md has the script).
* ``WatermarkModel``: LAION's is a timm EfficientNet-B3a with two classes on 256 px images; the file is a
  safetensors state dict for ``timm.create_model(arch, num_classes=2)``; ``pwatermark`` is the softmax of
  ``watermark_class``.
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file


def _weights(path: str, device: str) -> dict[str, torch.Tensor]:
    if not path.endswith(".safetensors"):
        raise ValueError(f"{path}: weights must be a .safetensors file (no pickles are loaded)")
    return load_file(path, device=device)


class NsfwHead(torch.nn.Module):
    def __init__(self, sizes: list[int]):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        x = emb
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return torch.sigmoid(x[:, 0])

    @classmethod
    def load(cls, path: str, embed_dim: int, device: str) -> "NsfwHead":
        w = _weights(path, device)
        n = len({k.split(".")[1] for k in w if k.startswith("layers.")})
        if n == 0:
            raise ValueError(f"{path}: no layers.<i>.weight tensors (see the NsfwHead docstring for the layout)")
        sizes = [w["layers.0.weight"].shape[1]] + [w[f"layers.{i}.weight"].shape[0] for i in range(n)]
        if sizes[0] != embed_dim:
            raise ValueError(f"{path}: the head takes {sizes[0]}-d embeddings, the CLIP model gives {embed_dim}-d "
                             "(LAION's heads exist for ViT-L/14 (768) and ViT-B/32 (512))")
        head = cls(sizes).to(device)
        head.load_state_dict(w)
        return head.eval()


class WatermarkModel:
    def __init__(self, path: str, device: str, arch: str = "efficientnet_b3a", image_size: int = 256,
                 watermark_class: int = 0):
        import timm

        self.net = timm.create_model(arch, pretrained=False, num_classes=2)
        self.net.load_state_dict(_weights(path, "cpu"))
        self.net = self.net.to(device).eval()
        self.device, self.size, self.cls = torch.device(device), image_size, watermark_class
        # on the device: a per-call copy from host memory would wait for the work already queued there
        self.mean = torch.tensor([0.485, 0.456, 0.406], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor([0.229, 0.224, 0.225], device=self.device).view(1, 3, 1, 1)

    @property
    def input_spec(self) -> tuple[tuple[int, ...], torch.dtype]:
        return (self.size, self.size, 3), torch.uint8

    def prepare(self, image):
        """In a decode thread: the image squashed to size x size, uint8 H x W x 3 (normalized on the device)."""
        import numpy as np

        return np.asarray(image.convert("RGB").resize((self.size, self.size)), dtype=np.uint8)

    @torch.inference_mode()
    def score_prepared(self, batch: torch.Tensor) -> torch.Tensor:
        """A batch of ``prepare`` outputs on the device -> pwatermark, float32: the arithmetic of ``pixels`` and
        ``__call__``, batched on the device."""
        x = batch.permute(0, 3, 1, 2).float().div_(255)
        return self(x)

    def pixels(self, image) -> torch.Tensor:
        """PIL image -> 3 x size x size float tensor in [0, 1] (normalized in ``__call__``)."""
        import numpy as np

        im = image.convert("RGB").resize((self.size, self.size))
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        x = (batch.to(self.device, non_blocking=True) - self.mean) / self.std
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            logits = self.net(x)
        return torch.softmax(logits.float(), dim=1)[:, self.cls]
