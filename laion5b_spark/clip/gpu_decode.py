"""``clip.gpu_decode``: a batch's JPEGs decoded by nvJPEG (``torchvision.io.decode_jpeg`` on the device) and
resized there, so decode cores stop being what limits a GPU.

The device path reproduces open_clip's eval transform (Resize of the short side with bicubic antialiasing, then
CenterCrop) with torch ops, rounding to uint8 where PIL would, and the watermark head's squash resize. It is not
bit-identical to the CPU path: nvJPEG's IDCT and torch's bicubic filter differ from libjpeg-turbo's and PIL's by
a level or two of 255 (tests/test_clip_gpu_path.py bounds the difference on CPU with torchvision's own decoder).
A batch nvJPEG refuses (a PNG, a corrupt file) is decoded on the CPU, like any other batch, by the caller.
"""

from __future__ import annotations

import numpy as np
import torch


def _resize_crop(steps) -> tuple[int, int, str] | None:
    """(resize short side, crop size, interpolation) of a Resize(int) + CenterCrop(square) transform, else None."""
    from torchvision import transforms as T

    resize = [t for t in steps if isinstance(t, T.Resize)]
    crop = [t for t in steps if isinstance(t, T.CenterCrop)]
    if len(resize) != 1 or len(crop) != 1 or steps.index(resize[0]) > steps.index(crop[0]):
        return None
    size, (ch, cw) = resize[0].size, crop[0].size
    size = size[0] if isinstance(size, (list, tuple)) and len(size) == 1 else size
    if not isinstance(size, int) or ch != cw or resize[0].max_size is not None:
        return None
    mode = resize[0].interpolation.value  # "bicubic" / "bilinear"
    if mode not in ("bicubic", "bilinear"):
        return None
    others = [t for t in steps if t not in (resize[0], crop[0])]
    if any(type(t).__name__ not in ("MaybeConvertMode", "Lambda") and getattr(t, "__name__", "") != "_convert_to_rgb"
           for t in others):
        return None
    return size, ch, mode


def _to_u8(x: torch.Tensor) -> torch.Tensor:
    return x.clamp_(0, 255).round_().to(torch.uint8)


class DeviceDecoder:
    def __init__(self, towers: dict[int, tuple[int, int, str]], watermark_size: int | None, device: torch.device):
        self.towers, self.watermark_size, self.device = towers, watermark_size, device

    @classmethod
    def for_models(cls, towers: list, watermark, device: torch.device) -> "DeviceDecoder | None":
        specs = {}
        for t, tower in enumerate(towers):
            steps = list(getattr(tower.pil_steps, "transforms", [])) if tower.pil_steps is not None else None
            spec = _resize_crop(steps) if steps else None
            if spec is None:
                return None
            specs[t] = spec
        return cls(specs, watermark.size if watermark is not None else None, device)

    def decode(self, jpgs: list[bytes], towers: tuple[int, ...]) -> tuple[dict | None, np.ndarray | None]:
        """{tower index or "wm": uint8 N x H x W x 3 batch on the device}, and which rows decoded; (None, None)
        when the device decoder refuses the batch."""
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            data = [torch.frombuffer(bytearray(j), dtype=torch.uint8) for j in jpgs]
            images = decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
        except Exception:  # noqa: BLE001 - not JPEG, corrupt, unsupported: the CPU path decides row by row
            return None, None
        out = {}
        for t in towers:
            size, crop, mode = self.towers[t]
            out[t] = torch.stack([self._resize_crop(im, size, crop, mode) for im in images])
        if self.watermark_size:
            s = self.watermark_size
            out["wm"] = torch.stack([self._squash(im, s) for im in images])
        return out, np.ones(len(jpgs), dtype=bool)

    @staticmethod
    def _resize_crop(im: torch.Tensor, size: int, crop: int, mode: str) -> torch.Tensor:
        """3 x H x W uint8 -> crop x crop x 3 uint8: torchvision's Resize(size) size rule, then CenterCrop."""
        h, w = im.shape[1:]
        short, long = (h, w) if h <= w else (w, h)
        new_short, new_long = size, int(size * long / short)
        nh, nw = (new_short, new_long) if h <= w else (new_long, new_short)
        x = im[None].float()
        if (nh, nw) != (h, w):
            x = torch.nn.functional.interpolate(x, size=(nh, nw), mode=mode, antialias=True, align_corners=False)
        x = _to_u8(x)[0]
        top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
        if nh < crop or nw < crop:  # CenterCrop pads with zeros first
            pad_h, pad_w = max(0, crop - nh), max(0, crop - nw)
            x = torch.nn.functional.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
            nh, nw = x.shape[1:]
            top, left = int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))
        return x[:, top:top + crop, left:left + crop].permute(1, 2, 0).contiguous()

    @staticmethod
    def _squash(im: torch.Tensor, size: int) -> torch.Tensor:
        x = torch.nn.functional.interpolate(im[None].float(), size=(size, size), mode="bicubic", antialias=True,
                                            align_corners=False)
        return _to_u8(x)[0].permute(1, 2, 0).contiguous()
