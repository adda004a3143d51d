"""Caption language with pycld2 (CLD2; chosen over CLD3 and langid in bench/language/README.md).

``language`` is an ISO 639-1 code when CLD2 says the result is reliable and the language covers at least
``min_share`` of the text, else ``"nolang"`` (LAION's third bucket). ``language_score`` is that share (0..1).
"""

from __future__ import annotations

import re

import pycld2

NOLANG = "nolang"
_CODE_FIX = {"zh-Hant": "zh", "iw": "he", "in": "id", "un": NOLANG, "xxx": NOLANG}
# characters CLD2 rejects as "invalid UTF-8": C0/C1 controls other than whitespace, noncharacters, surrogates
_CLD2_BAD = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f-\x9f\ufdd0-\ufdef\ufffe\uffff\ud800-\udfff]")


class LanguageDetector:
    def __init__(self, min_share: float = 0.7, cache_size: int = 200_000):
        self.min_share = min_share
        self.cache: dict[str, tuple[str, float]] = {}
        self.cache_size = cache_size

    def __call__(self, text: str) -> tuple[str, float]:
        hit = self.cache.get(text)
        if hit is not None:
            return hit
        result = self._detect(text)
        if len(self.cache) >= self.cache_size:
            self.cache.clear()  # alt texts repeat a lot within a file; a plain bounded dict is enough
        self.cache[text] = result
        return result

    def many(self, texts: list[str]) -> list[tuple[str, float]]:
        """The result for each text; cache hits without a method call each (most rows are hits)."""
        hit = self.cache.get
        return [hit(x) or self(x) for x in texts]

    def _detect(self, text: str) -> tuple[str, float]:
        try:
            reliable, _, details = pycld2.detect(text)
        except (pycld2.error, UnicodeEncodeError, ValueError):
            try:
                reliable, _, details = pycld2.detect(_CLD2_BAD.sub(" ", text))
            except (pycld2.error, UnicodeEncodeError, ValueError):
                return NOLANG, 0.0
        _, code, percent, _ = details[0]
        share = percent / 100.0
        code = _CODE_FIX.get(code, code)
        if not reliable or share < self.min_share or code == NOLANG:
            return NOLANG, share
        return code, share
