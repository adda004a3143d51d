"""Tiny multilingual text models built offline for tests, in the layouts the real ones ship in (random weights,
fixed seeds): an mclip model in the sentence-transformers layout (``build_tiny_mclip``) and an open_clip model whose
text tower is a Hugging Face model (``build_tiny_open_clip_hf``). A WordPiece tokenizer is trained on a few hundred
generated captions in several scripts, so every language tokenizes to real word pieces."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

# (colours, objects, template) per language: latin, cyrillic, CJK, arabic, greek and devanagari scripts
_WORDS = {
    "en": (["red", "blue", "green", "yellow", "black", "white"], ["cat", "dog", "house", "car", "tree", "flower"],
           "a {c} {o}"),
    "de": (["rote", "blaue", "grüne", "gelbe", "schwarze", "weiße"],
           ["Katze", "Tasse", "Lampe", "Brücke", "Blume", "Jacke"], "eine {c} {o}"),
    "fr": (["rouge", "bleue", "verte", "jaune", "noire", "blanche"],
           ["voiture", "maison", "fleur", "tasse", "chaise", "lampe"], "une {o} {c}"),
    "ru": (["красный", "синий", "зелёный", "жёлтый", "чёрный", "белый"],
           ["кот", "дом", "автомобиль", "цветок", "стол", "мост"], "{c} {o}"),
    "zh": (["红色的", "蓝色的", "绿色的", "黄色的", "黑色的", "白色的"], ["猫", "狗", "房子", "汽车", "树", "花"],
           "一只{c}{o}"),
    "ja": (["赤い", "青い", "緑の", "黄色い", "黒い", "白い"], ["猫", "犬", "家", "車", "木", "花"],
           "{c}{o}の写真"),
    "ar": (["أحمر", "أزرق", "أخضر", "أصفر", "أسود", "أبيض"], ["قطة", "كلب", "بيت", "سيارة", "شجرة", "زهرة"],
           "{o} {c}"),
    "el": (["κόκκινη", "μπλε", "πράσινη", "κίτρινη", "μαύρη", "άσπρη"],
           ["γάτα", "πόρτα", "καρέκλα", "λάμπα", "κούπα", "γέφυρα"], "μια {c} {o}"),
    "hi": (["लाल", "नीला", "हरा", "पीला", "काला", "सफ़ेद"], ["बिल्ली", "कुत्ता", "घर", "गाड़ी", "पेड़", "फूल"],
           "{c} {o}"),
}
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0-4


def captions() -> list[str]:
    """324 captions, 36 per language (every colour with every object)."""
    return [tpl.format(c=c, o=o) for colours, objects, tpl in _WORDS.values() for c in colours for o in objects]


def sample_captions() -> list[str]:
    """One caption per language, mixed case, one unknown to the vocabulary (emoji) and an empty one."""
    return ["A Red CAT", "eine grüne Lampe", "une maison blanche", "синий мост", "一只黄色的汽车", "白い花の写真",
            "زهرة أبيض", "μια κίτρινη γέφυρα", "काला घर", "🦜", ""]


def train_tokenizer(vocab_size: int = 600):
    """A BERT-style WordPiece tokenizer (cased; CJK split per character) as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=False, strip_accents=False, handle_chinese_chars=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(captions(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS))
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]",
                                   model_input_names=["input_ids", "attention_mask"])


def build_tiny_mclip(folder, dim: int = 64, *, width: int = 32, pooling: str = "mean", activation: str = "Identity",
                     bias: bool = False, do_lower_case: bool = False, max_seq_length: int = 12,
                     seed: int = 0) -> str:
    """A tiny mclip model in the sentence-transformers layout of clip-ViT-B-32-multilingual-v1 (modules.json: 0
    Transformer = a DistilBERT, 1_Pooling, 2_Dense ``width`` -> ``dim``) in ``folder``; returns the folder.
    ``dim``: the main CLIP model's embed_dim (l5s-tiny: 64)."""
    from safetensors.torch import save_file
    from transformers import DistilBertConfig, DistilBertModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=width, n_layers=2, n_heads=2, hidden_dim=2 * width,
                              max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id)
    DistilBertModel(config).eval().save_pretrained(folder)
    _write(folder / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": do_lower_case})
    flags = {"cls": "cls_token", "mean": "mean_tokens", "max": "max_tokens",
             "mean_sqrt_len_tokens": "mean_sqrt_len_tokens"}
    _write(folder / "1_Pooling" / "config.json", {  # the legacy flags, as the real model has them
        "word_embedding_dimension": width, **{f"pooling_mode_{flag}": mode == pooling for mode, flag in flags.items()}})
    linear = torch.nn.Linear(width, dim, bias=bias)
    _write(folder / "2_Dense" / "config.json", {"in_features": width, "out_features": dim, "bias": bias,
                                                "activation_function": _ACTIVATION_REFS[activation]})
    save_file({f"linear.{k}": v.contiguous() for k, v in linear.state_dict().items()},
              str(folder / "2_Dense" / "model.safetensors"))
    _write(folder / "modules.json", [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}])
    return str(folder)


_ACTIVATION_REFS = {"Identity": "torch.nn.modules.linear.Identity", "Tanh": "torch.nn.modules.activation.Tanh"}


def build_tiny_open_clip_hf(folder, text_dir: str = "text", *, embed_dim: int = 64, context_length: int = 16,
                            seed: int = 0) -> str:
    """A tiny open_clip model whose text tower is an HF model, in the ``local-dir:`` layout: open_clip_config.json
    naming ``xlm-roberta-base`` as LAION's xlm-roberta-base-ViT-B-32 does, open_clip_model.safetensors, and the
    tiny XLM-R's config.json and tokenizer files in ``folder/text_dir`` ("" = beside the config). Built without
    the hub: the names in the saved config are the hub's, the model was built from the local files."""
    import open_clip
    from safetensors.torch import save_file
    from transformers import XLMRobertaConfig

    folder = Path(folder)
    hf_dir = folder / text_dir if text_dir else folder
    hf_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer()
    tokenizer.save_pretrained(hf_dir)
    pad = tokenizer.pad_token_id
    # XLM-R numbers positions from pad + 1: room for context_length tokens after it
    XLMRobertaConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=context_length + pad + 2, pad_token_id=pad,
                     bos_token_id=2, eos_token_id=3).save_pretrained(hf_dir)
    text_cfg = {"hf_model_name": "xlm-roberta-base", "hf_tokenizer_name": "xlm-roberta-base",
                "hf_proj_type": "mlp", "hf_pooler_type": "mean_pooler", "context_length": context_length}
    vision_cfg = {"image_size": 32, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8}  # l5s-tiny's
    torch.manual_seed(seed)
    model = open_clip.model.CustomTextCLIP(embed_dim=embed_dim, vision_cfg=vision_cfg, text_cfg={
        **text_cfg, "hf_model_name": str(hf_dir), "hf_tokenizer_name": str(hf_dir), "hf_model_pretrained": False})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "open_clip_model.safetensors"))
    _write(folder / "open_clip_config.json", {"model_cfg": {"embed_dim": embed_dim, "vision_cfg": vision_cfg,
                                                            "text_cfg": text_cfg}, "preprocess_cfg": {}})
    return str(folder)


def _write(path: Path, value) -> None:
    os.makedirs(path.parent, exist_ok=True)
    path.write_text(json.dumps(value, ensure_ascii=False, indent=1), encoding="utf-8")
