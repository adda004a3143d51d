"""Caption cleanup: entities, mojibake, whitespace, control characters, NFC; and HTML5 attribute decoding.

Order matters. Raw attribute text (an old-style WAT keeps it as the page wrote it) is decoded first, with the
HTML5 rules for attribute values (``decode_attribute``). ftfy then sees the text as the page gave it: mojibake
is often UTF-8 read as Latin-1/cp1252, whose second byte may be a C1 control or a no-break space
(``Ã\\x97`` is ``×``, ``Ã\\xa0`` is ``à``), so whitespace collapse and control removal come after it, not before.
ftfy's own control-character removal is off: a control is a space whether or not ftfy ran on the caption.
ftfy's full fix costs ~35 us per caption - more than the rest of extraction - so it runs only where its own
badness test (~4 us, non-ASCII text only) says there is mojibake; clean text just gets NFC, which is what ftfy
would have applied to it.
"""

from __future__ import annotations

import re
import unicodedata
from html.entities import html5 as _NAMED

import ftfy
from ftfy.badness import is_bad

# remove_control_chars=False: ftfy would delete C0 controls and DEL where it runs ("foo\x01bar Ã©té" ->
# "foobar été") while _collapse makes them spaces where it does not ("foo\x01bar été" -> "foo bar été")
_FTFY = ftfy.TextFixerConfig(unescape_html=False, explain=False, remove_control_chars=False)
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# Mojibake ftfy can undo is UTF-8 read as Latin-1/cp1252/cp1251/...: it always shows Latin-1 supplement,
# cp1252 punctuation, Latin Extended or Cyrillic letters. Text without any (CJK, Arabic, Thai, ...) skips the
# badness test.
_MOJIBAKE_CHARS = re.compile("[\u0080-\u024f\u02c6-\u02dc\u0370-\u03ff\u0400-\u045f\u2013-\u2122\ufffd]")

# -- HTML5 character references in attribute values (WHATWG HTML, 13.2.5.72-80) ----------------------------------
# names a browser also accepts without ';' (the legacy ones: &amp &lt &copy &not ...); every one also has a ';' form
_LEGACY = frozenset(name for name in _NAMED if not name.endswith(";"))
_LEGACY_MAX = max(map(len, _LEGACY))
# numeric references to 0x80-0x9F mean what Windows-1252 puts there; the five bytes it leaves undefined stay
_C1_REPLACEMENT = {}
for _b in range(0x80, 0xA0):
    try:
        _C1_REPLACEMENT[_b] = bytes([_b]).decode("cp1252")
    except UnicodeDecodeError:
        pass
_REFERENCE = re.compile(r"&(?:#([xX])([0-9A-Fa-f]+)|#([0-9]+)|([A-Za-z0-9]+))(;?)")


def decode_attribute(raw: str) -> str:
    """The value an HTML5 tokenizer gives for raw attribute text: newlines normalized, NUL as U+FFFD, character
    references decoded, numeric ones with HTML5's replacement rules. The longest name wins, and a legacy name
    (one that needs no ';': ``&amp &lt &copy &not &para`` ...) followed by an alphanumeric or '=' is left as it is:
    ``id=7&param=2`` keeps ``&para``, and ``&notit;`` stays as written (in text, not in an attribute, it would be
    ``¬it;``). ``html.unescape`` implements the rules for text, not attributes.

    >>> decode_attribute("&notin; &notit; &not; &not!")
    '∉ &notit; ¬ ¬!'
    >>> decode_attribute("id=7&param=2&amp;x=&#x80;&#0;")
    'id=7&param=2&x=€\ufffd'
    """
    if "\r" in raw:
        raw = raw.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in raw:
        raw = raw.replace("\x00", "\ufffd")
    if "&" not in raw:
        return raw
    return _REFERENCE.sub(_reference, raw)


def _reference(m: re.Match) -> str:
    name = m.group(4)
    if name is None:
        digits = (m.group(2) or m.group(3)).lstrip("0")
        code = int(digits or "0", 16 if m.group(1) else 10) if len(digits) <= 8 else 0x110000
        if code == 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
            return "\ufffd"
        return _C1_REPLACEMENT.get(code) or chr(code)  # the ';' is optional and consumed
    if m.group(5) and name + ";" in _NAMED:
        return _NAMED[name + ";"]
    for n in range(min(len(name), _LEGACY_MAX), 1, -1):
        if name[:n] in _LEGACY:
            # in an attribute a legacy name followed by an alphanumeric or '=' is not a reference
            if n < len(name) or m.string.startswith("=", m.end()):
                return m.group(0)
            return _NAMED[name]
    return m.group(0)


def clean_caption(alt: str, *, raw_html: bool, max_chars: int) -> str:
    if len(alt) > max_chars:
        alt = alt[:max_chars]  # a 1 MB attribute is not a caption; keep the cost bounded
    text = decode_attribute(alt) if raw_html else alt
    if text.isascii():
        return _collapse(text)
    cleaned = _collapse(_fix_mojibake(text))  # ftfy first: the mojibake may hold C1 controls or U+00A0
    if cleaned != text:
        cleaned = _collapse(_fix_mojibake(cleaned))  # ... or a stray control may have hidden it from ftfy
    if not unicodedata.is_normalized("NFC", cleaned):
        cleaned = unicodedata.normalize("NFC", cleaned)
    return cleaned


def _fix_mojibake(text: str) -> str:
    if _MOJIBAKE_CHARS.search(text) and is_bad(text):
        return ftfy.fix_text(text, _FTFY)
    return text


def _collapse(text: str) -> str:
    """Whitespace runs and control characters as one space, none at the ends."""
    text = " ".join(text.split())
    if _CONTROL.search(text):
        text = " ".join(_CONTROL.sub(" ", text).split())
    return text
