"""The name a CLIP model goes by in the lake (``scored.model``), without loading it: what the index job
matches rows on, since two models' embeddings live in different spaces."""

from __future__ import annotations

import os


def model_label(model: str, pretrained: str | None) -> str:
    """``ViT-B-32/laion2b_s34b_b79k``; a checkpoint path gives its file name; no weights give ``random``."""
    return f"{model}/{os.path.basename(pretrained) if pretrained else 'random'}"
