"""bench/clip/text_bench: CLIP text encoding on the CPU - open_clip's tokenizer vs laion5b_spark.clip.text's, and the
text tower on full 77-token rows vs rows cut to the batch's length.

    python bench/clip/text_bench.py [--captions 10000] [--batch-size 256] [--threads 0]

Prints, single thread for the tokenizers:
  tokenize   CPU us per caption over --captions realistic captions (realistic_captions: alt-text-like English with
             a long-tail vocabulary, product titles, other languages, entities, mojibake, emoji, a few long ones)
             in batches of --batch-size: open_clip's SimpleTokenizer on its first pass (empty BPE cache, a new
             worker) and its second (warm cache); FastClipTokenizer's total, its Python cleaning (GIL held; the
             share of captions whose ftfy pass was skipped) and its Rust part, and how much of a Python loop's speed
             is left beside the Rust part running in another thread (~100%: the GIL is released)
  text tower ViT-B-32 random weights, fp32, a --batch-size batch of ~15-20 token captions: encode_text on
             [n, 77] vs encode_text_tokens on [n, L] (ms per batch, best of 3), and their largest difference
--threads sets torch's intra-op threads for the tower (0: torch's default).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

_BRANDS = ["Nike", "IKEA", "Samsung", "Lego", "Canon", "Bosch", "Levi's", "KitchenAid", "Adidas", "Sony"]
_PRODUCT_TAILS = ["Men’s Running Shoes, Size 10.5", "2-Pack 100% Cotton T-Shirt – Navy", "4K UHD Smart TV (2023)",
                  "Stainless Steel 5-Qt Stand Mixer", "Women’s “Classic” Denim Jacket", "Set of 6 Dinner Plates",
                  "Wireless Earbuds w/ Charging Case", "Cordless Drill 18V Li-Ion"]
_SUFFIXES = ["", "", "", " | Free Shipping", " - stock photo", " (photo)", " #summer #travel", " 1200x800",
             " :: Gallery", " — Image 3 of 12"]
_ODD = ["Caf&eacute; au lait &amp; croissants", "Tom &amp; Jerry &#8212; a classic", "CafÃ© au lait on a table",
        "Itâ€™s a beautiful day", "🌸 Spring sale 🌸 up to 50% off!", "I ❤️ NY souvenir mug",
        "ＬＯＵＤ ＮＯＩＳＥＳ poster", "ﬁne art print, ﬂowers", "AT&amp;T &copy 2020 shop sign",
        "Price &#128;5 &lt;cheap&gt;"]


def _vocab_words() -> list[str]:
    """Whole words of CLIP's BPE vocabulary in merge order (roughly by frequency): a long-tail English lexicon."""
    from laion5b_spark.clip.text import open_clip_vocab
    from open_clip.tokenizer import default_bpe

    vocab, _ = open_clip_vocab(default_bpe())
    return [w[:-4] for w in vocab if w.endswith("</w>") and w[:-4].isascii() and w[:-4].isalpha() and len(w) > 6]


def realistic_captions(n: int, seed: int = 0) -> list[str]:
    """n alt-text-like captions, ~15-20 CLIP tokens on average, with the variety a crawl has."""
    from laion5b_spark.sample import crawl, shapes

    rng = random.Random(seed)
    words = _vocab_words()
    foreign = [c for lang in crawl._FOREIGN.values() for c in lang]

    def tail_word() -> str:  # a Zipf-ish draw: common words often, the long tail now and then
        return words[int(len(words) * rng.random() ** 2.5)]

    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.30:
            cap = crawl.english_caption(rng)
            cap += " " + " ".join(tail_word() for _ in range(rng.randint(0, 6)))
        elif r < 0.50:
            cap = " ".join(tail_word() for _ in range(rng.randint(3, 14))).capitalize()
        elif r < 0.65:
            cap = f"{rng.choice(_BRANDS)} {rng.choice('ABCDXZ')}{rng.randint(10, 9999)} {rng.choice(_PRODUCT_TAILS)}"
        elif r < 0.78:
            cap = rng.choice(foreign)
        elif r < 0.85:
            cap = shapes.caption(*shapes.sample(rng), rng)
        elif r < 0.93:
            cap = rng.choice(_ODD)
        elif r < 0.97:
            cap = f"{crawl.english_caption(rng)}, {tail_word()} and {tail_word()} in {rng.randint(1900, 2024)}"
        else:  # a long description, beyond 77 tokens
            cap = ". ".join(crawl.english_caption(rng) for _ in range(rng.randint(6, 12)))
        out.append(cap + rng.choice(_SUFFIXES))
    return out


def _lengths(ids):
    """SOT..EOT length of each row of an id array: up to its last nonzero id ("!" is id 0)."""
    return ids.shape[1] - (ids != 0)[:, ::-1].argmax(1)


def _per_caption_us(fn, batches, repeat: int = 1, captions: int | None = None) -> float:
    """CPU time of this process per caption, best of ``repeat`` passes: single-threaded code, and steadier than the
    wall clock on a shared machine."""
    best = float("inf")
    for _ in range(repeat):
        t = time.process_time()
        for b in batches:
            fn(b)
        best = min(best, time.process_time() - t)
    return best / (captions or sum(map(len, batches))) * 1e6


def _python_speed_left(work) -> float:
    """Main-thread Python loop rate while ``work`` runs in another thread, over its rate while that thread sleeps
    as long: the share of the GIL the work leaves (the same loop both times)."""
    def spin(stop: threading.Event) -> float:
        n, start = 0, time.perf_counter()
        while not stop.is_set():
            n += 1
        return n / (time.perf_counter() - start)

    def rate_while(target) -> float:
        stop = threading.Event()
        t = threading.Thread(target=lambda: (target(), stop.set()))
        t.start()
        rate = spin(stop)
        t.join()
        return rate

    start = time.perf_counter()
    busy = rate_while(work)
    idle = rate_while(lambda: time.sleep(time.perf_counter() - start))
    return busy / idle


def bench_tokenizers(captions: list[str], batch_size: int) -> None:
    import open_clip
    from laion5b_spark.clip import text

    batches = [captions[i:i + batch_size] for i in range(0, len(captions), batch_size)]
    fast = text.fast_tokenizer_for("ViT-B-32")
    simple = open_clip.tokenizer.SimpleTokenizer()  # a fresh one: empty BPE cache, as a new worker's
    cold = _per_caption_us(simple, batches)
    warm = _per_caption_us(simple, batches)
    fast_us = _per_caption_us(fast, batches, repeat=3)
    clean_us = _per_caption_us(lambda b: [text.clean(t) for t in b], batches, repeat=3)
    joined = [text._SEPARATOR.join([text.clean(t) for t in b] + [""]) for b in batches]

    def rust(lines: str):
        return fast._rust.encode_batch_fast([lines], add_special_tokens=False)

    rust_us = _per_caption_us(rust, joined, repeat=3, captions=len(captions))
    left = _python_speed_left(lambda: [rust(j) for j in joined * 3])
    skipped = sum(map(text.ftfy_is_noop, captions)) / len(captions)
    lengths = _lengths(fast.encode(captions))
    print(f"captions: {len(captions)}, mean {lengths.mean():.1f} tokens (SOT..EOT), "
          f"{(lengths == fast.context_length).mean():.1%} cut at {fast.context_length}")
    print(f"tokenize  open_clip SimpleTokenizer  {cold:6.1f} us/caption (first pass)  {warm:5.1f} (warm BPE cache)")
    print(f"tokenize  FastClipTokenizer          {fast_us:6.1f} us/caption  (x{cold / fast_us:.1f} / "
          f"x{warm / fast_us:.1f}) = {clean_us:.1f} cleaning in Python (ftfy skipped for {skipped:.0%}) + "
          f"{rust_us:.1f} Rust + framing")
    print(f"          the Rust part releases the GIL: a Python loop keeps {left:.0%} of its speed beside it")


def bench_tower(captions: list[str], batch_size: int) -> None:
    import open_clip
    import torch
    from laion5b_spark.clip import text

    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    fast = text.fast_tokenizer_for("ViT-B-32")
    lengths = _lengths(fast.encode(captions))
    pick = [c for c, n in zip(captions, lengths) if 15 <= n <= 20][:batch_size]
    short = fast(pick)
    full = fast.full_width(pick)

    def best_ms(fn) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return min(times) * 1e3

    with torch.inference_mode():
        model.encode_text(full)  # warm-up
        ref = model.encode_text(full)
        cut = text.encode_text_tokens(model, short)
        full_ms = best_ms(lambda: model.encode_text(full))
        cut_ms = best_ms(lambda: text.encode_text_tokens(model, short))
    diff = (ref - cut).abs().max().item()
    print(f"text tower ViT-B-32 fp32 CPU ({torch.get_num_threads()} threads), {len(pick)} captions, "
          f"L={short.shape[1]}: encode_text [n,77] {full_ms:.0f} ms, encode_text_tokens [n,{short.shape[1]}] "
          f"{cut_ms:.0f} ms (x{full_ms / cut_ms:.1f}); max |diff| {diff:.1e}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    captions = realistic_captions(args.captions)
    bench_tokenizers(captions, args.batch_size)
    bench_tower(captions, args.batch_size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
