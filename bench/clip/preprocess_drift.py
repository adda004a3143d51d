"""bench/clip: how far the stored image moves CLIP's view of it from what CLIP's own preprocessing of the original
would see.

    python bench/clip/preprocess_drift.py [--json bench/clip/preprocess_drift.json] [--seed 0]

LAION's workers scored the ORIGINAL image with CLIP's eval transform (short side to 224 px bicubic, centre crop
224). This project scores what the download stage stored. For each image the model input is computed two ways:

  (a) original bytes -> open_clip's preprocess
  (b) original bytes -> the download resizer (laion5b_spark/download/image.py, img2dataset's modes) -> JPEG as
      download stores it -> open_clip's preprocess

for several download settings: border 256 (the project default: the image padded to a white square), keep_ratio
224 and 256 (short side = size; smaller images are upscaled, lanczos), keep_ratio 224 with resize_only_if_bigger
(smaller images stored as they are, so CLIP's bicubic upsamples them as it would the original), and "no" (the
original decoded and re-encoded as download does: the floor any stored JPEG has).

Images: the sample crawl's pictures, drawn by its image server's generator (laion5b_spark/sample/image_server.py
``picture``, no Spark, no server): blob pictures of 200-999 px a side (varied aspect ratios) and 384 px shape
pictures; plus crops of shape pictures at 4:3, 3:4, 16:9 and 1:2, and sample pictures shrunk to a short side below
224 px (what keep_ratio upscales).

Models: ViT-B-32 with RANDOM weights (no real weights can be fetched offline: its figures say how far the input
moves through a ViT-B-32's layers, not how OpenAI's weights would score it) and the project's trained tiny CLIP
``l5s-tiny`` (32 px input; laion5b_spark/sample/assets/l5s-tiny-shapes.safetensors). Reported per (model,
setting): mean and max |delta similarity| of the image embedding against a fixed caption, mean and min cosine
between (a) and (b) image embeddings, mean |delta| of the normalized input tensors, and for l5s-tiny on the shape
pictures how many keep/drop decisions at its threshold (0.7162) flip against each picture's own caption.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from laion5b_spark.download.image import ImageProcessor, ImageSettings  # noqa: E402
from laion5b_spark.sample import shapes  # noqa: E402
from laion5b_spark.sample.crawl import IMAGE_HOST, make_page  # noqa: E402
from laion5b_spark.sample.image_server import outcome, picture  # noqa: E402

TINY_WEIGHTS = os.path.join(ROOT, "laion5b_spark", "sample", "assets", "l5s-tiny-shapes.safetensors")
TINY_THRESHOLD = 0.7162  # conf/pipeline/sample.toml clip.threshold
CAPTION = "a photo of a red circle"  # the fixed caption every image is compared with
SETTINGS = {  # name -> the download settings (image_size, resize_mode, resize_only_if_bigger)
    "border 256 (default)": (256, "border", False),
    "keep_ratio 224": (224, "keep_ratio", False),
    "keep_ratio 256": (256, "keep_ratio", False),
    "keep_ratio 224, only if bigger": (224, "keep_ratio", True),
    "no resize (JPEG re-encode only)": (256, "no", False),  # the floor: what storing as JPEG alone moves
}
CROPS = {"4:3": (4, 3), "3:4": (3, 4), "16:9": (16, 9), "1:2": (1, 2)}


def sample_paths(pages: int, seed: int) -> list[str]:
    """Image paths of generated sample-crawl pages that the image server answers with a picture."""
    rng = random.Random(seed)
    paths = []
    for page in range(pages):
        _, _, body = make_page(rng, site=page % 40, page=page)
        for src in re.findall(r'<img src="([^"]+)"', body.decode("ascii", "ignore")):
            if not src.startswith(IMAGE_HOST):
                continue  # relative, data:, javascript:, other hosts: the same generator, fewer of them
            path = src[len(IMAGE_HOST):].split("#")[0]
            if len(path) < 300 and not path.endswith(".svg") and outcome(path) == "image" and path not in paths:
                paths.append(path)
    return paths


def originals(seed: int, blobs: int, shape_pictures: int, crops_per_ratio: int, small: int) -> list[dict]:
    """[{group, bytes, caption (shape pictures: their own)}]: the original images, as an image host serves them."""
    paths = sample_paths(400, seed)
    shape_paths = [p for p in paths if p.startswith("/shapes/")]
    blob_paths = [p for p in paths if not p.startswith("/shapes/")]
    rng = random.Random(seed)
    out = []
    for p in blob_paths[:blobs]:
        out.append({"group": "sample pictures", "bytes": picture(p)[0], "caption": None})
    for p in shape_paths[:shape_pictures]:
        c, s = p.split("/")[2].split("-")
        out.append({"group": "shape pictures (square)", "bytes": picture(p)[0], "caption": f"a {c} {s}"})
    for ratio, (rw, rh) in CROPS.items():  # the largest crop of that ratio around the shape's centre of mass
        for p in shape_paths[:crops_per_ratio]:
            c, s = p.split("/")[2].split("-")
            im = Image.open(io.BytesIO(picture(p)[0])).convert("RGB")
            w, h = im.size
            cw, ch = (w, w * rh // rw) if rw >= rh else (h * rw // rh, h)
            fg = np.abs(np.asarray(im, np.int16) - np.asarray(im, np.int16)[0, 0]).sum(-1) > 40
            ys, xs = np.nonzero(fg) if fg.any() else ([h // 2], [w // 2])
            cx, cy = int(np.mean(xs)), int(np.mean(ys))
            x0, y0 = min(max(0, cx - cw // 2), w - cw), min(max(0, cy - ch // 2), h - ch)
            out.append({"group": f"shape crops {ratio}", "bytes": shapes.jpeg(im.crop((x0, y0, x0 + cw, y0 + ch)), 90),
                        "caption": f"a {c} {s}"})
    for p in blob_paths[blobs:blobs + small]:  # shrunk: a short side of 64-216 px
        im = Image.open(io.BytesIO(picture(p)[0])).convert("RGB")
        short = rng.randrange(64, 217, 8)
        k = short / min(im.size)
        out.append({"group": "small pictures (short side < 224)",
                    "bytes": shapes.jpeg(im.resize((max(1, round(im.width * k)), max(1, round(im.height * k))),
                                                   Image.BICUBIC), 90), "caption": None})
    return out


def stored(data: bytes, processor: ImageProcessor) -> bytes:
    res = processor(data)
    if res.image is None:
        raise RuntimeError(f"the download resizer refused a sample picture: {res.reason} {res.message}")
    return res.image


def load_model(name: str):
    open_clip.add_model_config(os.path.join(ROOT, "laion5b_spark", "clip", "model_configs"))
    torch.manual_seed(0)  # the random ViT-B-32 is the same on every run
    weights = TINY_WEIGHTS if name == "l5s-tiny" else None
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights, weights_only=True)
    return model.eval(), preprocess, open_clip.get_tokenizer(name)


@torch.inference_mode()
def embed(model, preprocess, blobs: list[bytes], batch: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(normalized input tensors, L2-normalized image embeddings) of JPEG/PNG/WebP bytes."""
    x = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in blobs])
    emb = torch.cat([model.encode_image(x[i:i + batch]) for i in range(0, len(x), batch)])
    return x, torch.nn.functional.normalize(emb.float(), dim=-1)


@torch.inference_mode()
def embed_texts(model, tokenizer, texts: list[str]) -> torch.Tensor:
    return torch.nn.functional.normalize(model.encode_text(tokenizer(texts)).float(), dim=-1)


def measure(name: str, images: list[dict], variants: dict[str, list[bytes]]) -> dict:
    model, preprocess, tokenizer = load_model(name)
    x0, e0 = embed(model, preprocess, [im["bytes"] for im in images])
    cap = embed_texts(model, tokenizer, [CAPTION])[0]
    s0 = e0 @ cap
    groups = [im["group"] for im in images]
    own = [i for i, im in enumerate(images) if im["caption"]]
    own_emb = embed_texts(model, tokenizer, [images[i]["caption"] for i in own]) if own else None
    # the scale a delta is read against: how much the similarity differs between the original images
    out = {"similarity_of_originals": {"mean": float(s0.mean()), "std": float(s0.std())}}
    for setting, blobs in variants.items():
        x1, e1 = embed(model, preprocess, blobs)
        dsim = (e1 @ cap - s0).abs()
        cos = (e0 * e1).sum(-1)
        dpix = (x1 - x0).abs().flatten(1).mean(1)
        row = {"dsim_mean": float(dsim.mean()), "dsim_max": float(dsim.max()), "cos_mean": float(cos.mean()),
               "cos_min": float(cos.min()), "dpix_mean": float(dpix.mean()), "dpix_max": float(dpix.max()),
               "by_group": {}}
        for g in dict.fromkeys(groups):
            idx = torch.tensor([i for i, gg in enumerate(groups) if gg == g])
            row["by_group"][g] = {"images": len(idx), "dsim_mean": float(dsim[idx].mean()),
                                  "dsim_max": float(dsim[idx].max()), "cos_min": float(cos[idx].min()),
                                  "dpix_mean": float(dpix[idx].mean())}
        if name == "l5s-tiny" and own:
            idx = torch.tensor(own)
            a, b = (e0[idx] * own_emb).sum(-1), (e1[idx] * own_emb).sum(-1)
            row["own_caption"] = {"images": len(own), "dsim_mean": float((b - a).abs().mean()),
                                  "dsim_max": float((b - a).abs().max()),
                                  "flips_at_threshold": int(((a >= TINY_THRESHOLD) != (b >= TINY_THRESHOLD)).sum()),
                                  "kept_original": int((a >= TINY_THRESHOLD).sum())}
        out[setting] = row
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", default=os.path.join(HERE, "preprocess_drift.json"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--blobs", type=int, default=160, help="sample pictures (200-999 px, varied aspect ratios)")
    ap.add_argument("--shapes", type=int, default=60, help="square shape pictures")
    ap.add_argument("--crops", type=int, default=15, help="crops of shape pictures per aspect ratio")
    ap.add_argument("--small", type=int, default=40, help="sample pictures shrunk below 224 px")
    ap.add_argument("--models", default="ViT-B-32,l5s-tiny")
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    t0 = time.time()
    images = originals(args.seed, args.blobs, args.shapes, args.crops, args.small)
    variants = {}
    for setting, (size, mode, only_bigger) in SETTINGS.items():
        proc = ImageProcessor(ImageSettings(image_size=size, resize_mode=mode, resize_only_if_bigger=only_bigger))
        variants[setting] = [stored(im["bytes"], proc) for im in images]
    sizes = [Image.open(io.BytesIO(im["bytes"])).size for im in images]
    results = {m: measure(m, images, variants) for m in args.models.split(",")}
    report = {
        "command": " ".join(["python bench/clip/preprocess_drift.py", *(argv if argv is not None else sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - t0, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"open_clip {open_clip.__version__}",
        "caption": CAPTION, "weights": {"ViT-B-32": "random (seed 0): no real weights offline",
                                        "l5s-tiny": os.path.relpath(TINY_WEIGHTS, ROOT)},
        "images": {g: sum(im["group"] == g for im in images) for g in dict.fromkeys(im["group"] for im in images)},
        "original_sizes": {"short_side_min": min(min(s) for s in sizes), "short_side_max": max(min(s) for s in sizes),
                           "aspect_max": round(max(max(s) / min(s) for s in sizes), 2)},
        # what each setting costs on disk: mean JPEG bytes and pixels of the stored images
        "stored": {setting: {"kb_mean": round(sum(map(len, blobs)) / len(blobs) / 1024, 1),
                             "kpixels_mean": round(sum(w * h for w, h in (Image.open(io.BytesIO(b)).size
                                                                           for b in blobs)) / len(blobs) / 1000, 1)}
                   for setting, blobs in variants.items()},
        "results": results,
    }
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"{len(images)} images {report['images']}; caption {CAPTION!r}; {report['seconds']} s")
    print("| model | stored as | mean abs dsim | max abs dsim | mean cos(a,b) | min cos(a,b) | mean abs dpixel |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for m, rows in results.items():
        label = "ViT-B-32 (random weights)" if m == "ViT-B-32" else f"{m} (trained)"
        for setting in SETTINGS:
            r = rows[setting]
            print(f"| {label} | {setting} | {r['dsim_mean']:.4f} | {r['dsim_max']:.4f} | {r['cos_mean']:.4f} "
                  f"| {r['cos_min']:.4f} | {r['dpix_mean']:.4f} |")
    print("stored: " + "; ".join(f"{k} {v['kb_mean']} KB, {v['kpixels_mean']} kpixels"
                                 for k, v in report["stored"].items()))
    for m, rows in results.items():
        o = rows["similarity_of_originals"]
        print(f"{m}: similarity of the originals to the caption: mean {o['mean']:.4f}, std {o['std']:.4f}")
    for m, rows in results.items():
        for setting in SETTINGS:
            r = rows[setting]
            if "own_caption" in r:
                o = r["own_caption"]
                print(f"{m}, {setting}: own caption of {o['images']} shape pictures: mean abs dsim "
                      f"{o['dsim_mean']:.4f}, max {o['dsim_max']:.4f}, {o['flips_at_threshold']} decisions flip at "
                      f"{TINY_THRESHOLD} ({o['kept_original']} kept on the original)")
    print("\nmean abs dsim by image group (ViT-B-32 random | l5s-tiny):")
    for setting in SETTINGS:
        for g in report["images"]:
            cells = " | ".join(f"{results[m][setting]['by_group'][g]['dsim_mean']:.4f}" for m in results)
            print(f"  {setting:32s} {g:36s} {cells}")
    print(f"-> {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
