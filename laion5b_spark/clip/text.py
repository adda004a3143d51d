"""CLIP text encoding off the GPU's critical path: open_clip's tokenizer in Rust, the text tower on the batch's length.

open_clip's ``SimpleTokenizer`` costs ~50-120 us a caption in Python (ftfy, html unescape, regex, BPE), and
``CLIP.encode_text`` always runs the full 77-token context while captions average 15-20 tokens. This module gives
the same ids and the same embeddings for less:

``FastClipTokenizer(context_length=77, bpe_path=open_clip's default)``
    ``tok(texts) -> LongTensor [n, L]``, L = the batch's longest caption (SOT..EOT) <= context_length, zero padded;
    ``tok.full_width(texts) -> LongTensor [n, context_length]``, equal to ``SimpleTokenizer()(texts)`` for any text.
    Cleaning stays in Python, as open_clip does it (ftfy skipped only where it provably changes nothing, see
    ``ftfy_is_noop``); pre-tokenization, byte mapping, BPE, SOT/EOT, truncation (EOT kept last) and padding run in
    a ``tokenizers.Tokenizer`` built from open_clip's own vocabulary file, with the GIL released - so a background
    thread can tokenize the next batch while the GPU works.
``fast_tokenizer_for(tokenizer_or_model_name) -> FastClipTokenizer | None``
    One (cached) for an open_clip ``SimpleTokenizer`` with the standard vocabulary, cleaning and pattern; None for
    any other tokenizer (HF, SigLIP, canonicalize cleaning, reduction masks): use open_clip's then.
``encode_text_tokens(model, tokens) -> Tensor``
    ``model.encode_text`` on a token batch cut to its real length L (``tokens`` = the first L columns of the
    full-width batch, the rest being zero padding); ValueError for a model where that is not exact
    (``truncation_is_exact(model)`` says which).
``text_encoder_for(tokenizer_or_model_name, model) -> FastTextEncoder(tokenize, encode) | None``
    Both of the above bound to one model when both are exact for it; None means: ``tokenizer(texts)`` full width and
    ``model.encode_text``.

Why the cut is exact: every step of the text tower but attention acts on each position alone (embedding, LayerNorm,
MLP, layer scale, projection), and with the causal mask position p attends only to positions <= p. By induction
over the layers, the hidden state at p < L is the same with or without positions L..76. The pooled position is
< L: argmax pooling takes the first maximum of the ids, and the dropped columns are zeros, no larger than any id;
eos pooling takes the first ``eos_id`` (never 0, checked), absent from zero columns; 'first' takes 0. So padding
never reaches the pooled vector. 'last' pooling, a non-causal mask (SigLIP-style), a class token (CoCa) or an HF
tower break this, and get None / ValueError.
"""

from __future__ import annotations

import gzip
import html
import re
import threading
import unicodedata
import weakref
from functools import lru_cache
from typing import Callable, NamedTuple, Sequence

import ftfy
import ftfy.badness
import ftfy.chardata
import numpy as np
import regex
import torch
from open_clip import tokenizer as oc_tokenizer
from open_clip.transformer import text_global_pool
from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers

SOT, EOT = "<start_of_text>", "<end_of_text>"
# SimpleTokenizer's pre-tokenization pattern (IGNORECASE), checked verbatim before a fast tokenizer stands in for it
OPEN_CLIP_PATTERN = SOT + "|" + EOT + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
# open_clip's text matches the special alternative (case-insensitively) only in captions that spell a special token;
# those go through open_clip itself, so the Rust pattern can leave the alternative out
_SPECIAL_RE = regex.compile(SOT + "|" + EOT, regex.IGNORECASE)


# ---- cleaning: open_clip's _clean_lower, with ftfy skipped where it is the identity --------------------------------

# ftfy.fix_text is a chain of fixers; the proof below reads ftfy 6.3's code (ftfy/__init__.py fix_and_explain):
# other versions always run it
_FTFY_SKIP_VERIFIED = ftfy.__version__.startswith("6.3.")
_FTFY_MAX_SEGMENT = ftfy.TextFixerConfig().max_decode_length


def _codepoint_class(codepoints, escape: Callable[[int], str]) -> str:
    """A regex character class of the codepoints, as ranges; ``escape`` writes one codepoint in the engine's syntax."""
    cps = sorted(set(codepoints))
    parts, i = [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(escape(cps[i]) if i == j else escape(cps[i]) + "-" + escape(cps[j]))
        i = j + 1
    return "[" + "".join(parts) + "]"


def _python_escape(cp: int) -> str:
    return "\\U%08x" % cp


def _oniguruma_escape(cp: int) -> str:
    return "\\x{%x}" % cp


def _ftfy_active_re() -> re.Pattern:
    """Characters some ftfy fixer other than fix_encoding changes, and the start of an HTML entity.

    Built from ftfy's own tables: C0/C1 controls and DEL (remove_control_chars, fix_c1_controls, terminal escapes
    start with ESC, fix_line_breaks' CR), U+2028/2029 (line breaks), surrogates, the ligature, width and control
    translation tables, the curly quotes."""
    bmp = "".join(map(chr, range(0x10000)))
    active = set(range(0x00, 0x20)) | set(range(0x7F, 0xA0)) | {0x2028, 0x2029} | set(range(0xD800, 0xE000))
    active |= set(ftfy.chardata.LIGATURES) | set(ftfy.chardata.WIDTH_MAP) | set(ftfy.chardata.CONTROL_CHARS)
    for quotes in (ftfy.chardata.SINGLE_QUOTE_RE, ftfy.chardata.DOUBLE_QUOTE_RE, ftfy.chardata.C1_CONTROL_RE):
        active |= {ord(c) for c in quotes.findall(bmp)}
    # unescape_html changes only &#?[0-9A-Za-z]{1,24};
    return re.compile(_codepoint_class(active, _python_escape) + "|&[#0-9A-Za-z]")


def _mojibake_clue_re() -> re.Pattern | None:
    """Characters without which ftfy's mojibake test ``badness.is_bad`` is false (it costs ~10 us; this search, well
    under 1): from each alternative of its BADNESS_RE, the smallest set of non-ASCII characters that alternative
    must match at some position - read from the parsed pattern, so None (always run is_bad) if an alternative has
    no such item."""
    try:  # Python's own regex parser (private; on any surprise, no shortcut)
        from re import _constants as sre, _parser
        bad = ftfy.badness.BADNESS_RE
        tree = _parser.parse(bad.pattern, bad.flags)
    except Exception:
        return None
    if bad.flags & re.IGNORECASE or len(tree.data) != 1 or tree.data[0][0] is not sre.BRANCH:
        return None
    clues = set()
    for alternative in tree.data[0][1][1]:
        required = []  # top-level literals and classes of the alternative: each must match one character
        for op, arg in alternative.data:
            if op is sre.LITERAL:
                required.append({arg})
            elif op is sre.IN and all(o in (sre.LITERAL, sre.RANGE) for o, _ in arg):
                required.append(set().union(*({a} if o is sre.LITERAL else set(range(a[0], a[1] + 1))
                                               for o, a in arg)))
        required = [chars for chars in required if min(chars) >= 0x80]
        if not required:
            return None
        clues |= min(required, key=len)
    return re.compile(_codepoint_class(clues, _python_escape))


_FTFY_ACTIVE = _ftfy_active_re() if _FTFY_SKIP_VERIFIED else None
_MOJIBAKE_CLUE = _mojibake_clue_re() if _FTFY_SKIP_VERIFIED else None


def ftfy_is_noop(text: str) -> bool:
    """True only where ``ftfy.fix_text(text) == text`` by ftfy's own code (cheap: a regex search or two and an NFC
    quick check; ftfy's ~10 us mojibake test only for text holding one of its clue characters).

    fix_text splits at newlines (none here: controls are excluded) and runs fix_and_explain once per segment, which
    loops over: unescape_html (needs ``&[#0-9A-Za-z]``), fix_encoding (returns ASCII text, and text where
    ``badness.is_bad`` is false, unchanged), fix_c1_controls, fix_latin_ligatures, fix_character_width,
    uncurl_quotes, fix_line_breaks, fix_surrogates, remove_terminal_escapes, remove_control_chars (each changes only
    characters in ``_FTFY_ACTIVE``), then NFC (identity iff ``is_normalized``). All identity: the loop stops."""
    if _FTFY_ACTIVE is None or len(text) >= _FTFY_MAX_SEGMENT or _FTFY_ACTIVE.search(text) is not None:
        return False
    if text.isascii():
        return True
    if not unicodedata.is_normalized("NFC", text):
        return False
    return (_MOJIBAKE_CLUE is not None and _MOJIBAKE_CLUE.search(text) is None) or not ftfy.badness.is_bad(text)


def clean(text: str) -> str:
    """open_clip's ``_clean_lower`` (basic_clean, whitespace_clean, lower), exactly."""
    if not ftfy_is_noop(text):
        text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))  # returns at once without '&'
    return " ".join(text.split()).lower()  # split() strips too, as basic_clean's and whitespace_clean's strip()


# ---- the Rust tokenizer -------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def open_clip_vocab(bpe_path: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """(token -> id, merges in rank order), read from the vocabulary file exactly as SimpleTokenizer reads it."""
    merges = gzip.open(bpe_path).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in merges[1:49152 - 256 - 2 + 1]]
    vocab = list(oc_tokenizer.bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab] + ["".join(m) for m in merges] + [SOT, EOT]
    return dict(zip(vocab, range(len(vocab)))), merges


@lru_cache(maxsize=None)
def _pretokenize_pattern() -> str:
    """OPEN_CLIP_PATTERN without the special alternative, for Oniguruma, with every class spelled out as the
    codepoints Python's ``regex`` module (the one open_clip runs) matches with IGNORECASE - so neither the Unicode
    version of Oniguruma's tables nor its case folding matters (e.g. 's also matches 'ſ; U+0345 matches nothing)."""
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)

    def cls(pattern: str) -> str:
        return _codepoint_class(map(ord, regex.findall(pattern, every, flags=regex.IGNORECASE)), _oniguruma_escape)

    alternatives = ["".join(cls(regex.escape(ch)) for ch in word) for word in _CONTRACTIONS]
    alternatives += [cls(r"[\p{L}]") + "+", cls(r"[\p{N}]"), cls(r"[^\s\p{L}\p{N}]") + "+"]
    return "|".join(alternatives)


# Captions go to Rust as one string, one per line: a cleaned caption holds no whitespace but ' ', so a line break
# (an added token, matched before pre-tokenization) separates them exactly, and one Encoding object replaces n of
# them (measured: ~5 us a caption less)
_SEPARATOR = "\n"


def _rust_tokenizer(bpe_path: str) -> Tokenizer:
    vocab, merges = open_clip_vocab(bpe_path)
    rust = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>", ignore_merges=False))
    rust.pre_tokenizer = pre_tokenizers.Sequence([
        # invert + removed: keep the matches, drop what lies between them, as regex.findall does
        pre_tokenizers.Split(Regex(_pretokenize_pattern()), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),  # GPT-2's byte map, as bytes_to_unicode
    ])
    rust.add_special_tokens([AddedToken(_SEPARATOR, special=True, normalized=False)])
    return rust


class FastClipTokenizer:
    """open_clip's SimpleTokenizer (standard vocabulary, 'lower' cleaning, plain truncation) with the same ids, in
    Rust. Thread-safe; ``__call__`` releases the GIL for the Rust part."""

    def __init__(self, context_length: int = oc_tokenizer.DEFAULT_CONTEXT_LENGTH,
                 bpe_path: str = oc_tokenizer.default_bpe()):
        if context_length < 2:
            raise ValueError("context_length must hold SOT and EOT")
        self.context_length = context_length
        self.bpe_path = bpe_path
        vocab, _ = open_clip_vocab(bpe_path)
        self.sot_token_id, self.eot_token_id = vocab[SOT], vocab[EOT]
        self._rust = _rust_tokenizer(bpe_path)
        self._separator_id = self._rust.token_to_id(_SEPARATOR)
        self._reference = None  # open_clip's own, for the rare caption that spells a special token
        self._lock = threading.Lock()

    def __call__(self, texts: str | Sequence[str]) -> torch.LongTensor:
        """[n, L] ids, L = the longest caption's SOT..EOT length (2..context_length), zero padded."""
        return torch.from_numpy(self.encode(texts))

    def full_width(self, texts: str | Sequence[str]) -> torch.LongTensor:
        """[n, context_length] ids: what open_clip's tokenizer returns."""
        ids = self.encode(texts)
        out = np.zeros((len(ids), self.context_length), dtype=np.int64)
        out[:, :ids.shape[1]] = ids
        return torch.from_numpy(out)

    def encode(self, texts: str | Sequence[str]) -> np.ndarray:
        """int64 [n, L], as ``__call__``."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            return np.zeros((0, 2), dtype=np.int64)
        cleaned = [clean(t) for t in texts]
        spelled = [i for i, t in enumerate(cleaned) if "<" in t and _SPECIAL_RE.search(t)]
        for i in spelled:
            cleaned[i] = ""
        cleaned.append("")  # a separator after every caption
        joined = self._rust.encode_batch_fast([_SEPARATOR.join(cleaned)], add_special_tokens=False)[0]  # GIL free
        ids = self._frame(np.array(joined.ids, dtype=np.int64), len(texts))
        if spelled:
            ids = self._patch_spelled(ids, texts, spelled)
        return ids

    def _frame(self, flat: np.ndarray, n: int) -> np.ndarray:
        """Separator-terminated BPE ids -> [n, L] rows SOT + the first context_length-2 ids + EOT, zero padded:
        open_clip's truncation, which cuts SOT + ids + EOT to context_length and puts EOT back last."""
        ends = np.flatnonzero(flat == self._separator_id)
        starts = np.concatenate(([0], ends[:-1] + 1))
        kept = np.minimum(ends - starts, self.context_length - 2)
        out = np.zeros((n, int(kept.max(initial=0)) + 2), dtype=np.int64)
        out[:, 0] = self.sot_token_id
        out[np.arange(n), kept + 1] = self.eot_token_id
        row = np.repeat(np.arange(n), kept)
        col = np.arange(int(kept.sum())) - np.repeat(np.cumsum(kept) - kept, kept)  # 0.. within each row
        out[row, col + 1] = flat[np.repeat(starts, kept) + col]
        return out

    def _patch_spelled(self, ids: np.ndarray, texts, rows: list[int]) -> np.ndarray:
        with self._lock:
            if self._reference is None:
                self._reference = oc_tokenizer.SimpleTokenizer(self.bpe_path, context_length=self.context_length)
        full = self._reference([texts[i] for i in rows]).numpy()
        # a row ends at its last EOT (nonzero; "!" is id 0, so zeros before it are tokens, not padding)
        width = max(ids.shape[1], int(full.shape[1] - np.argmax((full != 0)[:, ::-1], axis=1).min()))
        out = np.zeros((len(ids), width), dtype=np.int64)
        out[:, :ids.shape[1]] = ids
        out[rows] = full[:, :width]
        return out


_STANDARD_TOKENIZERS: dict[tuple[str, int], FastClipTokenizer] = {}
_standard_lock = threading.Lock()


def fast_tokenizer_for(tokenizer_or_model_name) -> FastClipTokenizer | None:
    """A FastClipTokenizer (one per context length, cached) when the open_clip tokenizer - or the one
    ``open_clip.get_tokenizer(name)`` returns - is a plain SimpleTokenizer with the standard vocabulary, else None."""
    tok = tokenizer_or_model_name
    if isinstance(tok, str):
        import open_clip
        tok = open_clip.get_tokenizer(tok)
    if type(tok) is not oc_tokenizer.SimpleTokenizer or tok.reduction_fn is not None \
            or tok.clean_fn is not oc_tokenizer._clean_lower or not tok.context_length:
        return None
    if tok.pat.pattern != OPEN_CLIP_PATTERN or not tok.pat.flags & regex.IGNORECASE \
            or tok.byte_encoder != oc_tokenizer.bytes_to_unicode():
        return None
    bpe_path = oc_tokenizer.default_bpe()
    vocab, merges = open_clip_vocab(bpe_path)
    if tok.encoder != vocab or tok.bpe_ranks != dict(zip(merges, range(len(merges)))) \
            or tok.all_special_ids != [vocab[SOT], vocab[EOT]]:
        return None
    key = (bpe_path, tok.context_length)
    with _standard_lock:
        if key not in _STANDARD_TOKENIZERS:
            _STANDARD_TOKENIZERS[key] = FastClipTokenizer(tok.context_length, bpe_path)
        return _STANDARD_TOKENIZERS[key]


# ---- the text tower on the batch's length -------------------------------------------------------------------------

class _TowerKind(NamedTuple):
    parts: str  # where the tower's modules live: "model" (CLIP) or "text" (CustomTextCLIP's TextTransformer)
    pool_type: str
    eos_id: int | None


_TRUNCATABLE_POOLS = ("argmax", "eos", "first")
_tower_kinds: "weakref.WeakKeyDictionary[torch.nn.Module, _TowerKind | None]" = weakref.WeakKeyDictionary()


def _is_causal(mask) -> bool:
    """Position i never attends to j > i: -inf (float) or True (bool) over the whole strict upper triangle."""
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or mask.shape[0] != mask.shape[1]:
        return False
    future = torch.ones(mask.shape, dtype=torch.bool, device=mask.device).triu(1)
    blocked = mask if mask.dtype == torch.bool else torch.isneginf(mask)
    return bool(blocked[future].all())


def _tower_kind(model) -> _TowerKind | None:
    from open_clip.model import CLIP, CustomTextCLIP
    from open_clip.transformer import CustomResidualAttentionBlock, ResidualAttentionBlock, TextTransformer, Transformer

    # the code encode_text_tokens mirrors must be the code the model runs: no subclass overriding it
    if isinstance(model, CLIP) and type(model).encode_text is CLIP.encode_text:
        parts, kind = model, _TowerKind("model", model.text_pool_type, getattr(model, "text_eos_id", None))
    elif isinstance(model, CustomTextCLIP) and type(model).encode_text is CustomTextCLIP.encode_text \
            and type(model.text) is TextTransformer:
        parts = model.text
        if parts.cls_emb is not None or parts.use_pad_mask or parts.output_tokens:
            return None
        kind = _TowerKind("text", parts.pool_type, getattr(parts, "eos_id", None))
    else:
        return None
    if kind.pool_type not in _TRUNCATABLE_POOLS or (kind.pool_type == "eos" and not kind.eos_id):
        return None
    if type(parts.transformer) is not Transformer:
        return None
    if not all(type(b) in (ResidualAttentionBlock, CustomResidualAttentionBlock)
               for b in parts.transformer.resblocks):
        return None
    if not _is_causal(getattr(parts, "attn_mask", None)):
        return None
    return kind


def truncation_is_exact(model) -> bool:
    """Whether ``encode_text_tokens`` equals ``model.encode_text`` for this model (checked once per model)."""
    if model not in _tower_kinds:
        _tower_kinds[model] = _tower_kind(model)
    return _tower_kinds[model] is not None


def encode_text_tokens(model, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(full-width tokens)`` from ``tokens`` [n, L] = their first L columns (the rest zeros):
    positional embedding and causal mask cut to L (exact: see the module docstring). Runs under the caller's
    autocast / inference mode, as encode_text would; not normalized."""
    if not truncation_is_exact(model):
        raise ValueError(f"{type(model).__name__}: the text tower cannot run on truncated tokens exactly; "
                         "use model.encode_text with full-width tokens")
    kind = _tower_kinds[model]
    parts = model if kind.parts == "model" else model.text
    length = tokens.shape[1]
    if not 1 <= length <= parts.positional_embedding.shape[0]:
        raise ValueError(f"{length} token columns; the model takes 1..{parts.positional_embedding.shape[0]}")
    cast_dtype = parts.transformer.get_cast_dtype()
    x = parts.token_embedding(tokens).to(cast_dtype)
    x = x + parts.positional_embedding[:length].to(cast_dtype)
    x = parts.transformer(x, attn_mask=parts.attn_mask[:length, :length])
    x = parts.ln_final(x)
    x = text_global_pool(x, tokens, kind.pool_type, eos_token_id=kind.eos_id)
    if parts.text_projection is not None:
        if isinstance(parts.text_projection, torch.nn.Linear):
            x = parts.text_projection(x)
        else:
            x = x @ parts.text_projection
    return x


class FastTextEncoder(NamedTuple):
    tokenize: Callable[[Sequence[str]], torch.Tensor]  # texts -> [n, L] CPU ids (a FastClipTokenizer)
    encode: Callable[[torch.Tensor], torch.Tensor]  # [n, L] ids on the model's device -> [n, embed_dim]


def text_encoder_for(tokenizer_or_model_name, model) -> FastTextEncoder | None:
    """(tokenize, encode) giving ``model.encode_text(open_clip tokenizer(texts))`` for this model, when the fast
    tokenizer and the truncated tower are both exact for it; else None."""
    tokenizer = fast_tokenizer_for(tokenizer_or_model_name)
    if tokenizer is None or not truncation_is_exact(model):
        return None
    parts = model if _tower_kinds[model].parts == "model" else model.text
    if tokenizer.context_length != parts.positional_embedding.shape[0]:
        return None

    def encode(tokens: torch.Tensor) -> torch.Tensor:
        return encode_text_tokens(model, tokens)

    return FastTextEncoder(tokenizer, encode)
