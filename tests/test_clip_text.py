"""laion5b_spark.clip.text: the Rust tokenizer gives open_clip's ids for any text, and the text tower run on the
batch's length gives encode_text's embeddings - or the helpers say None where that would not be exact."""

import importlib.util

import ftfy
import open_clip
import pytest
import regex
import torch
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP
from open_clip.tokenizer import SimpleTokenizer
from tokenizers import Regex, pre_tokenizers

import laion5b_spark.clip.models  # noqa: F401  (registers l5s-tiny)
from laion5b_spark.clip import text

_spec = importlib.util.spec_from_file_location("text_bench", ROOT / "bench" / "clip" / "text_bench.py")
text_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(text_bench)


def _lengths(tokens: torch.Tensor) -> torch.Tensor:
    """SOT..EOT length of each row: up to its last nonzero id ("!" is id 0, so zeros before the EOT are tokens)."""
    return tokens.shape[1] - (tokens != 0).flip(1).int().argmax(1)


@pytest.fixture(scope="module")
def reference():
    return open_clip.get_tokenizer("ViT-B-32")


@pytest.fixture(scope="module")
def fast():
    tok = text.fast_tokenizer_for("ViT-B-32")
    assert isinstance(tok, text.FastClipTokenizer) and tok.context_length == 77
    return tok


@pytest.fixture(scope="module")
def captions():
    return text_bench.realistic_captions(200, seed=1)


# ---- tokenizer: identical ids ---------------------------------------------------------------------------------------

# what open_clip's cleaning and pattern treat specially: entities (ftfy's and html's, doubly escaped), mojibake,
# emoji sequences, scripts, combining marks (U+0345 matches no class with IGNORECASE), case folds ('ſ is 's),
# spelled special tokens (even hidden in a punctuation run), controls, line breaks, wide forms, ligatures, quotes
_FRAGMENTS = ["&amp;", "&#39;", "&lt;b&gt;", "&amp;amp;amp;", "&nbsp;", "&copy", "&#x1F600;", "&#0;", "&#128;",
              "&notit;", "AT&T", "Ã©", "Ã¨", "â€™", "â€œ", "Ã", "Â ", "ÃƒÂ©", "Ð¿Ñ€Ð¸", "🌸", "👩‍👩‍👧", "❤️", "🇫🇷",
              "中文字", "日本語の", "한국어", "ᄀ\u1161", "Ελληνικά ΣΑΣ", "Привет", "é", "e\u0301", "\u0345", "İstanbul",
              "ß", "ſ", "'s", "'S", "'ſ", "'ll", "'LL", "'Re", "'vE", "'d", "<start_of_text>", "<END_OF_TEXT>",
              "<ſtart_of_text>", "!!<start_of_text>", "\x00", "\x1b[31m", "\x1c", "\x7f", "\x85", "\x9c", "\r\n",
              "\u2028", "\t", "\u3000", "ﬁ", "ＡＢＣ", "ｶﾀｶﾅ", "’", "“", "\ufeff", "\u200b", "\u206a", "\ud83d",
              "123", "4.5", "½", "²", "١٢٣", "Ⅻ", " ", "  ", "Ǆ", "K", "Å"]
_texts = st.one_of(
    st.text(max_size=40),
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=6)), max_size=12).map("".join),
    st.lists(st.one_of(st.sampled_from(_FRAGMENTS), st.text(max_size=6)), max_size=12).map(" ".join),
    st.lists(st.sampled_from(["dog", "a", "Ã©", "photo", "&amp;", "中", "🌸", "12"]), min_size=60, max_size=120)
    .map(" ".join),  # beyond 77 tokens: truncation keeps EOT last
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_texts, min_size=1, max_size=6))
def test_fast_tokenizer_ids_equal_open_clips_for_any_text(reference, fast, batch):
    want = reference(batch)
    got = fast.full_width(batch)
    for t, w, g in zip(batch, want, got):
        assert g.tolist() == w.tolist(), repr(t)
    short = fast(batch)
    assert short.shape[1] == int(_lengths(want).max())  # the longest caption's SOT..EOT
    assert torch.equal(short, want[:, :short.shape[1]])
    for t in batch:  # skipping ftfy is only ever done where ftfy is the identity
        if text.ftfy_is_noop(t):
            assert ftfy.fix_text(t) == t, repr(t)


def test_fast_tokenizer_on_realistic_captions(reference, fast, captions):
    fixed = ["", "   ", "\t\n", "a", "Tom &amp; Jerry &#8212; a classic", "CafÃ© au lait", "ＬＯＵＤ ＮＯＩＳＥＳ",
             "<start_of_text> caption <end_of_text> " + "word " * 90, "I ❤️ NY", "x" * 300]
    batch = captions + fixed
    assert torch.equal(fast.full_width(batch), reference(batch))
    assert torch.equal(fast(captions[:50]), reference(captions[:50])[:, :fast(captions[:50]).shape[1]])
    assert fast([]).shape == (0, 2) and fast("one text").shape[0] == 1


def test_pretokenization_classes_match_the_regex_module_for_every_codepoint(reference):
    """The Oniguruma pattern spells out the classes of Python's regex module; each codepoint between letters and
    between punctuation shows its class (letter runs, digits one by one, punctuation runs, dropped)."""
    split = pre_tokenizers.Split(Regex(text._pretokenize_pattern()), behavior="removed", invert=True)
    every = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for s in ("a".join(every), "!".join(every), "'".join(every[:0x3000]) + "'re've'll'RE'Ve'lL'ſ'S'D"):
        assert [p for p, _ in split.pre_tokenize_str(s)] == regex.findall(reference.pat, s), s[:3]


def test_ftfy_is_skipped_only_where_it_is_provably_a_noop():
    assert text._FTFY_ACTIVE is not None and text._MOJIBAKE_CLUE is not None  # the verified ftfy version
    for plain in ("Red wooden chair, for sale (2 pcs) & more", "海辺の夕日と白い灯台の風景", "🌸 sale", "한국어 문장"):
        assert text.ftfy_is_noop(plain) and ftfy.fix_text(plain) == plain
    for fixed in ("Caf&eacute;", "CafÃ©", "it’s", "a\r\nb", "ﬁne", "ＬＯＵＤ", "e\u0301", "x\x00"):
        assert not text.ftfy_is_noop(fixed)


def test_fast_tokenizer_for_only_the_standard_simple_tokenizer():
    assert text.fast_tokenizer_for("l5s-tiny").context_length == 16
    assert text.fast_tokenizer_for(open_clip.get_tokenizer("ViT-B-32")) is text.fast_tokenizer_for("ViT-B-32")
    assert text.fast_tokenizer_for(SimpleTokenizer(clean="canonicalize")) is None
    assert text.fast_tokenizer_for(SimpleTokenizer(reduction_mask="simple")) is None
    assert text.fast_tokenizer_for(SimpleTokenizer(additional_special_tokens=["<mask>"])) is None
    assert text.fast_tokenizer_for(lambda texts: None) is None


# ---- text tower on the batch's length -------------------------------------------------------------------------------

def _tiny_clip(cls=CLIP, **text_cfg) -> torch.nn.Module:
    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=16)
    cfg = CLIPTextCfg(context_length=16, vocab_size=49408, width=32, heads=2, layers=2, **text_cfg)
    return cls(embed_dim=32, vision_cfg=vision, text_cfg=cfg).eval()


def _mixed(captions, n_short: int, long_words: int) -> list[str]:
    return ["", "a dog"] + captions[:n_short] + ["a photo of " + " ".join(["red house"] * long_words)]


@pytest.mark.parametrize("name, long_words", [("l5s-tiny", 10), ("ViT-B-32", 40)])
def test_truncated_tower_equals_encode_text(captions, name, long_words):
    torch.manual_seed(0)
    model = open_clip.create_model(name, pretrained=None).eval()
    encoder = text.text_encoder_for(name, model)
    assert encoder is not None
    ref_tokenizer = open_clip.get_tokenizer(name)
    ctx = ref_tokenizer.context_length
    with torch.inference_mode():
        for batch in (_mixed(captions, 6, long_words), captions[20:26], ["", "a cat"]):
            tokens = encoder.tokenize(batch)
            full = ref_tokenizer(batch)
            assert tokens.shape[1] <= ctx and torch.equal(tokens, full[:, :tokens.shape[1]])
            torch.testing.assert_close(encoder.encode(tokens), model.encode_text(full), atol=1e-5, rtol=0)
        assert encoder.tokenize(_mixed(captions, 6, long_words)).shape[1] == ctx  # one row at full context
        assert encoder.tokenize(["", "a cat"]).shape[1] == 4


def test_positions_after_eot_never_reach_the_pooled_vector(captions):
    """Why the cut is exact: causal attention. Garbage ids after the EOT (below it, so argmax still finds the EOT)
    change nothing."""
    model = _tiny_clip()
    batch = [c[:25] for c in captions[:8]] + ["", "a b"]
    tokens = text.fast_tokenizer_for(open_clip.get_tokenizer("l5s-tiny")).full_width(batch)
    noisy = tokens.clone()
    for i, n in enumerate(_lengths(tokens).tolist()):
        noisy[i, n:] = torch.randint(1, 49000, (tokens.shape[1] - n,))
    assert (noisy != tokens).sum() > 30
    with torch.inference_mode():
        torch.testing.assert_close(model.encode_text(noisy), model.encode_text(tokens), atol=1e-6, rtol=0)


@pytest.mark.parametrize("cls, cfg", [(CLIP, {}), (CLIP, {"pool_type": "eos", "eos_id": 49407}),
                                      (CLIP, {"pool_type": "first"}), (CustomTextCLIP, {}),
                                      (CLIP, {"qk_norm": True, "scale_heads": True})])
def test_truncated_tower_exact_for_other_causal_configs(captions, cls, cfg):
    model = _tiny_clip(cls, **cfg)
    tok = text.fast_tokenizer_for(open_clip.get_tokenizer("l5s-tiny"))
    batch = ["", "a dog", "two cats on a sofa", "🌸 sale", captions[3][:30]]  # all shorter than the context
    assert text.truncation_is_exact(model) and tok(batch).shape[1] < 16
    with torch.inference_mode():
        torch.testing.assert_close(text.encode_text_tokens(model, tok(batch)),
                                   model.encode_text(tok.full_width(batch)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("cls, cfg", [(CLIP, {"pool_type": "last"}), (CLIP, {"pool_type": "none"}),
                                      (CLIP, {"no_causal_mask": True}), (CustomTextCLIP, {"no_causal_mask": True}),
                                      (CustomTextCLIP, {"embed_cls": True}), (CLIP, {"pool_type": "eos", "eos_id": 0})])
def test_fallback_where_truncation_is_not_exact(cls, cfg):
    model = _tiny_clip(cls, **cfg)
    assert not text.truncation_is_exact(model)
    assert text.text_encoder_for("l5s-tiny", model) is None
    with pytest.raises(ValueError):
        text.encode_text_tokens(model, torch.zeros((1, 4), dtype=torch.long))


def test_fallback_for_a_non_standard_tokenizer_or_other_context():
    model = _tiny_clip()
    assert text.text_encoder_for(SimpleTokenizer(context_length=16, clean="canonicalize"), model) is None
    assert text.text_encoder_for("ViT-B-32", model) is None  # 77-token tokenizer, 16-position model
    assert text.text_encoder_for("l5s-tiny", model) is not None
