"""Train the project's tiny CLIP model (open_clip config ``l5s-tiny``) on coloured shapes, on a CPU, in a minute.

No CLIP weights can be downloaded where this project is built and tested, yet the clip stage must be shown
to filter for real: this model learns which caption names which colour and shape. It is committed as
``laion5b_spark/sample/assets/l5s-tiny-shapes.safetensors`` (fp16) with the threshold chosen on held-out pairs
(``.json`` beside it); tests and ``make demo`` use it.

    python -m laion5b_spark.sample.train_tiny_clip [--steps 1500] [--out laion5b_spark/sample/assets]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

import numpy as np
import torch

from . import shapes

ASSETS = os.path.join(os.path.dirname(__file__), "assets")
NAME = "l5s-tiny-shapes"


def batch(n: int, rng: random.Random, preprocess, tokenizer):
    ims, caps = [], []
    for _ in range(n):
        c, s = shapes.sample(rng)
        ims.append(preprocess(shapes.draw(c, s, rng)))
        caps.append(shapes.caption(c, s, rng))
    return torch.stack(ims), tokenizer(caps)


def choose_threshold(sims: np.ndarray, fits: np.ndarray) -> float:
    """The cut that best separates fitting from mismatched pairs (balanced accuracy); among equally good cuts,
    the middle one, so that the margin is the same on both sides."""
    cuts = np.unique(sims)
    acc = np.array([(sims[fits] >= t).mean() + (sims[~fits] < t).mean() for t in cuts])
    best = cuts[acc == acc.max()]
    # a cut t keeps sims >= t: the good range reaches down to the largest mismatched score below it
    below = sims[sims < best.min()]
    low = below.max() if below.size else best.min()
    return float((low + best.max()) / 2)


def main(argv: list[str] | None = None) -> int:
    import open_clip
    from safetensors.torch import save_file

    from ..clip import models  # registers l5s-tiny

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=ASSETS)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    model, _, preprocess = open_clip.create_model_and_transforms("l5s-tiny", pretrained=None)
    tokenizer = open_clip.get_tokenizer("l5s-tiny")
    loss_fn = open_clip.ClipLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=args.steps, pct_start=0.1)
    t0 = time.time()
    model.train()
    for step in range(args.steps):
        images, texts = batch(args.batch, rng, preprocess, tokenizer)
        img, txt, scale = model(images, texts)
        loss = loss_fn(img, txt, scale)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(f"step {step:5d} loss {loss.item():.3f} ({time.time() - t0:.0f}s)", flush=True)
    model.eval()
    # the threshold, from held-out pairs scored as the clip job scores them (JPEG bytes -> its preprocess)
    m = models.ClipModel("l5s-tiny", model, preprocess, tokenizer, torch.device("cpu"))
    held = shapes.pairs(2000, seed=args.seed + 1)
    from PIL import Image
    import io

    pix = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b, _, _ in held])
    sims = (m.encode_images(pix) * m.encode_texts([c for _, c, _ in held])).sum(-1).numpy()
    fits = np.array([f for _, _, f in held])
    threshold = choose_threshold(sims, fits)
    kept, dropped = (sims[fits] >= threshold).mean(), (sims[~fits] < threshold).mean()
    print(f"held-out: threshold {threshold:.4f} keeps {kept:.1%} of fitting pairs, drops {dropped:.1%} of mismatched")
    os.makedirs(args.out, exist_ok=True)
    state = {k: v.detach().half().contiguous() for k, v in model.state_dict().items()}
    save_file(state, os.path.join(args.out, f"{NAME}.safetensors"))
    with open(os.path.join(args.out, f"{NAME}.json"), "w") as f:
        json.dump({"model": "l5s-tiny", "threshold": round(threshold, 4), "held_out_kept": round(float(kept), 4),
                   "held_out_dropped": round(float(dropped), 4), "steps": args.steps, "batch": args.batch,
                   "seed": args.seed}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
