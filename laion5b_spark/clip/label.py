"""The name a CLIP model (or an mclip text tower) goes by in the lake (``scored.model``), without loading it: what the index job
matches rows on, since two models' embeddings live in different spaces."""

from __future__ import annotations

import os


def model_label(model: str, pretrained: str | None) -> str:
    """``ViT-B-32/laion2b_s34b_b79k``; a checkpoint path gives its file name; no weights give ``random``."""
    return f"{model}/{os.path.basename(pretrained) if pretrained else 'random'}"


LOCAL_DIR_PREFIX = "local-dir:"


def local_folder(ident: str) -> str | None:
    """The folder ``ident`` names (``local-dir:/path`` or an absolute path), or None for a hub id."""
    if ident.startswith(LOCAL_DIR_PREFIX):
        return os.path.abspath(os.path.expanduser(ident[len(LOCAL_DIR_PREFIX):]))
    path = os.path.expanduser(ident)
    return path if os.path.isabs(path) else None


def mclip_label(ident: str) -> str:
    """What the lake's ``scored.model`` says for this model, without loading it: the folder's base name or the hub
    repo's name (a local copy named as the repo gets the same label), e.g. ``mclip:clip-ViT-B-32-multilingual-v1``."""
    folder = local_folder(ident)
    name = os.path.basename(os.path.normpath(folder)) if folder else ident.rstrip("/").rsplit("/", 1)[-1]
    return f"mclip:{name}"
