"""Image links from WARC HTML responses: decode the body right, then read <img>, <base> and rel=license.

Charset order (as browsers): byte-order mark, HTTP ``Content-Type`` charset, ``<meta charset>`` /
``http-equiv`` in the first 4 KB, then statistical detection. Only WHATWG encoding labels count
(https://encoding.spec.whatwg.org/#names-and-labels): a label browsers do not know (``undefined``, ``cp037``,
``punycode``, ...) is ignored, as browsers ignore it, and the next source decides - Python knows many codecs no
browser would apply to a page (EBCDIC, punycode, rot13, its ``undefined`` codec that always raises). Each WHATWG
encoding decodes with the Python codec closest to what a browser does (``gb2312`` as gb18030, ``iso-8859-1`` as
cp1252, ``shift_jis`` as cp932, ...), which is what keeps legacy CJK and Cyrillic pages free of U+FFFD.
``x-user-defined`` maps bytes 0x80-0xFF to U+F780-U+F7FF; the ``replacement`` encoding (``iso-2022-kr``,
``hz-gb-2312``, ...) shows browsers nothing of the page, so neither does it us (decode_error).

Parsing runs under a hard limit: lexbor builds the tree in time quadratic (or worse) in shapes no real page has
- deep nesting walked by later tags, thousands of attributes on one tag, formatting elements reconstructed after
every block, markup a scanner takes for raw text or a comment - and no estimate made before parsing can be sound
without being an HTML tree builder itself. So lexbor runs in a child process (one per Python worker, started on
the first page and kept): a page that takes more than ``MAX_PARSE_SECONDS`` of its CPU time, or more than
``MAX_PARSE_MEMORY`` of memory, stops it and is counted as ``record_too_complex``; the next page gets a new one.
Real pages take milliseconds (tests/test_extract_html.py); a crash of lexbor costs its record, not the unit.
"""

from __future__ import annotations

import atexit
import codecs
import marshal
import os
import re
import select
import signal
import struct
import subprocess
import sys
import threading
import time

from resiliparse.parse.encoding import detect_encoding
from selectolax.lexbor import LexborHTMLParser, SelectolaxError

from .page import Image, Page

_META_CHARSET = re.compile(
    rb"""<meta[^>]+?charset\s*=\s*["']?\s*([a-zA-Z0-9_.:-]+)""", re.IGNORECASE)

# WHATWG encoding -> (Python codec, its labels), from https://encoding.spec.whatwg.org/encodings.json
_ENCODINGS = {
    "UTF-8": ("utf-8", "unicode-1-1-utf-8 unicode11utf8 unicode20utf8 utf-8 utf8 x-unicode20utf8"),
    "IBM866": ("cp866", "866 cp866 csibm866 ibm866"),
    "ISO-8859-2": ("iso8859-2", "csisolatin2 iso-8859-2 iso-ir-101 iso8859-2 iso88592 iso_8859-2 iso_8859-2:1987 l2 "
                                "latin2"),
    "ISO-8859-3": ("iso8859-3", "csisolatin3 iso-8859-3 iso-ir-109 iso8859-3 iso88593 iso_8859-3 iso_8859-3:1988 l3 "
                                "latin3"),
    "ISO-8859-4": ("iso8859-4", "csisolatin4 iso-8859-4 iso-ir-110 iso8859-4 iso88594 iso_8859-4 iso_8859-4:1988 l4 "
                                "latin4"),
    "ISO-8859-5": ("iso8859-5", "csisolatincyrillic cyrillic iso-8859-5 iso-ir-144 iso8859-5 iso88595 iso_8859-5 "
                                "iso_8859-5:1988"),
    "ISO-8859-6": ("iso8859-6", "arabic asmo-708 csiso88596e csiso88596i csisolatinarabic ecma-114 iso-8859-6 "
                                "iso-8859-6-e iso-8859-6-i iso-ir-127 iso8859-6 iso88596 iso_8859-6 iso_8859-6:1987"),
    "ISO-8859-7": ("iso8859-7", "csisolatingreek ecma-118 elot_928 greek greek8 iso-8859-7 iso-ir-126 iso8859-7 "
                                "iso88597 iso_8859-7 iso_8859-7:1987 sun_eu_greek"),
    "ISO-8859-8": ("iso8859-8", "csiso88598e csisolatinhebrew hebrew iso-8859-8 iso-8859-8-e iso-ir-138 iso8859-8 "
                                "iso88598 iso_8859-8 iso_8859-8:1988 visual"),
    "ISO-8859-8-I": ("iso8859-8", "csiso88598i iso-8859-8-i logical"),  # same bytes; logical order is display
    "ISO-8859-10": ("iso8859-10", "csisolatin6 iso-8859-10 iso-ir-157 iso8859-10 iso885910 l6 latin6"),
    "ISO-8859-13": ("iso8859-13", "iso-8859-13 iso8859-13 iso885913"),
    "ISO-8859-14": ("iso8859-14", "iso-8859-14 iso8859-14 iso885914"),
    "ISO-8859-15": ("iso8859-15", "csisolatin9 iso-8859-15 iso8859-15 iso885915 iso_8859-15 l9"),
    "ISO-8859-16": ("iso8859-16", "iso-8859-16"),
    "KOI8-R": ("koi8-r", "cskoi8r koi koi8 koi8-r koi8_r"),
    "KOI8-U": ("koi8-u", "koi8-ru koi8-u"),
    "macintosh": ("mac-roman", "csmacintosh mac macintosh x-mac-roman"),
    "windows-874": ("cp874", "dos-874 iso-8859-11 iso8859-11 iso885911 tis-620 windows-874"),
    "windows-1250": ("cp1250", "cp1250 windows-1250 x-cp1250"),
    "windows-1251": ("cp1251", "cp1251 windows-1251 x-cp1251"),
    "windows-1252": ("cp1252", "ansi_x3.4-1968 ascii cp1252 cp819 csisolatin1 ibm819 iso-8859-1 iso-ir-100 iso8859-1 "
                               "iso88591 iso_8859-1 iso_8859-1:1987 l1 latin1 us-ascii windows-1252 x-cp1252"),
    "windows-1253": ("cp1253", "cp1253 windows-1253 x-cp1253"),
    "windows-1254": ("cp1254", "cp1254 csisolatin5 iso-8859-9 iso-ir-148 iso8859-9 iso88599 iso_8859-9 "
                               "iso_8859-9:1989 l5 latin5 windows-1254 x-cp1254"),
    "windows-1255": ("cp1255", "cp1255 windows-1255 x-cp1255"),
    "windows-1256": ("cp1256", "cp1256 windows-1256 x-cp1256"),
    "windows-1257": ("cp1257", "cp1257 windows-1257 x-cp1257"),
    "windows-1258": ("cp1258", "cp1258 windows-1258 x-cp1258"),
    "x-mac-cyrillic": ("mac-cyrillic", "x-mac-cyrillic x-mac-ukrainian"),
    "GBK": ("gb18030", "chinese csgb2312 csiso58gb231280 gb2312 gb_2312 gb_2312-80 gbk iso-ir-58 x-gbk"),
    "gb18030": ("gb18030", "gb18030"),
    "Big5": ("big5hkscs", "big5 big5-hkscs cn-big5 csbig5 x-x-big5"),
    "EUC-JP": ("euc_jp", "cseucpkdfmtjapanese euc-jp x-euc-jp"),
    "ISO-2022-JP": ("iso2022_jp", "csiso2022jp iso-2022-jp"),
    "Shift_JIS": ("cp932", "csshiftjis ms932 ms_kanji shift-jis shift_jis sjis windows-31j x-sjis"),
    "EUC-KR": ("cp949", "cseuckr csksc56011987 euc-kr iso-ir-149 korean ks_c_5601-1987 ks_c_5601-1989 ksc5601 "
                        "ksc_5601 windows-949"),
    "replacement": ("replacement", "csiso2022kr hz-gb-2312 iso-2022-cn iso-2022-cn-ext iso-2022-kr replacement"),
    "UTF-16BE": ("utf-16-be", "unicodefffe utf-16be"),
    "UTF-16LE": ("utf-16-le", "csunicode iso-10646-ucs-2 ucs-2 unicode unicodefeff utf-16 utf-16le"),
    "x-user-defined": ("x-user-defined", "x-user-defined"),
}
_CODEC_OF_LABEL = {label: codec for codec, labels in _ENCODINGS.values() for label in labels.split()}
_NOT_PYTHON = ("replacement", "x-user-defined")
assert all(codecs.lookup(c).name == c for c in _CODEC_OF_LABEL.values() if c not in _NOT_PYTHON)
# WHATWG's windows-874 and windows-1250..1258 are Microsoft's tables plus: the bytes those leave undefined in
# 0x80-0x9F are the C1 controls of the same value, and 0xCA is U+05BA in windows-1255; their other undefined bytes
# are errors there too (https://encoding.spec.whatwg.org/index-windows-1252.txt, ...). Python's codecs reject all
# of them, which sent a page declaring windows-1252 with a 0x81 to detection (and maybe another codec).


def _whatwg_single_byte(codec: str) -> str:
    table = []
    for b in range(256):
        try:
            table.append(bytes([b]).decode(codec))
        except UnicodeDecodeError:
            table.append(chr(b) if 0x80 <= b < 0xA0 else "\ufffe")  # U+FFFE: undefined, for charmap_decode
    if codec == "cp1255":
        table[0xCA] = "\u05ba"
    return "".join(table)


_SINGLE_BYTE = {c: _whatwg_single_byte(c) for c in ["cp874"] + [f"cp125{i}" for i in range(9)]}
# x-user-defined: ASCII as is, bytes 0x80-0xFF to U+F780-U+F7FF (decoded as latin-1, then moved)
_X_USER_DEFINED = {c: 0xF780 + c - 0x80 for c in range(0x80, 0x100)}
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


class ReplacementEncoding(ValueError):
    """The page's charset is WHATWG's replacement encoding: browsers show nothing of it."""


def codec_for(label: str | None) -> str | None:
    """Python codec (or "replacement" / "x-user-defined") of a WHATWG encoding label; None for any other label."""
    if not label:
        return None
    return _CODEC_OF_LABEL.get(label.strip("\t\n\f\r \"'").lower())


def decode_body(body: bytes, http_charset: str | None) -> tuple[str, str, bool]:
    """(text, codec, clean): clean is False when no candidate decoded strictly and bytes were replaced."""
    for bom, codec in _BOMS:
        if body.startswith(bom):
            return body.decode(codec, "replace"), codec, True
    candidates = []
    http = codec_for(http_charset)
    meta = codec_for(_meta_charset(body))
    # HTML's prescan: a <meta> cannot switch to UTF-16 (the bytes it was read from were ASCII) nor x-user-defined
    meta = {"utf-16-le": "utf-8", "utf-16-be": "utf-8", "x-user-defined": "cp1252"}.get(meta, meta)
    for c in (http, meta):
        if c and c not in candidates:
            candidates.append(c)
    if candidates and candidates[0] == "replacement":
        raise ReplacementEncoding(f"charset {http_charset if http else _meta_charset(body)!r} is WHATWG's "
                                  f"replacement encoding: browsers show nothing of this page")
    candidates = [c for c in candidates if c != "replacement"]
    for c in candidates:
        try:
            return _decode(body, c, "strict"), c, True
        except UnicodeDecodeError:
            continue
    detected = _detected(body)
    try:
        return _decode(body, detected, "strict"), detected, True
    except UnicodeDecodeError:
        chosen = candidates[0] if candidates else detected
        return _decode(body, chosen, "replace"), chosen, False


def _decode(body: bytes, codec: str, errors: str) -> str:
    table = _SINGLE_BYTE.get(codec)
    if table is not None:
        return codecs.charmap_decode(body, errors, table)[0]
    if codec == "x-user-defined":
        return body.decode("latin-1").translate(_X_USER_DEFINED)
    return body.decode(codec, errors)


def _detected(body: bytes) -> str:
    label = detect_encoding(body) or ""
    codec = codec_for(label) or codec_for(label.replace("_", "-"))
    return codec if codec and codec not in _NOT_PYTHON else "utf-8"


def _meta_charset(body: bytes) -> str | None:
    m = _META_CHARSET.search(body, 0, 4096)
    return m.group(1).decode("ascii", "replace") if m else None


# --- parsing, in a child process under hard limits ---
# CPU time one page may take in lexbor (the tree builder's super-linear shapes cost seconds to hours; real pages
# take milliseconds) and the memory lexbor may add to the parser process (whose baseline is ~30 MB).
MAX_PARSE_SECONDS = 1.0
MAX_PARSE_MEMORY = 1 << 30
# Bodies over this many bytes are not parsed (a gzip/br Content-Encoding can inflate a 1 MB record ~1000x); no
# Common Crawl page comes near it: Common Crawl truncates payloads at 1 MiB.
MAX_HTML_BYTES = 32 << 20
# a parser process that never gets the CPU it needs (an overloaded machine) is given up after this much wall time
_MAX_PARSE_WALL_SECONDS = 30.0
_POLL_MS = 50  # how often the CPU time of a parse that has not answered yet is looked at
_REPLY = struct.Struct("<BdQ")  # kind, the child's CPU seconds so far, payload length
_OK, _OUT_OF_MEMORY, _ERROR = 0, 1, 2



class RecordTooComplex(ValueError):
    """A record over the per-record limits: counted as record_too_complex, not parsed."""


def page_from_html(html: str, page_url: str) -> Page:
    """The page's <base href>, rel=license link and <img src> tags, parsed by lexbor in the parser process.
    Raises RecordTooComplex over MAX_PARSE_SECONDS / MAX_PARSE_MEMORY."""
    # lone surrogates dropped, as selectolax drops them when it encodes a str
    base, license_url, images = _PARSER.parse(html.encode("utf-8", "ignore"))
    return Page(url=page_url, base=base, license=license_url,
                images=[Image(src=src, alt=alt, width=width, height=height) for src, alt, width, height in images])


def page_fields(html: bytes) -> tuple:
    """(base href, license href, [(src, alt, width, height)]) of UTF-8 HTML: what the parser process sends back."""
    tree = LexborHTMLParser(html)
    base = tree.css_first("base[href]")
    base_href = base.attributes.get("href") if base is not None else None
    license_url = None
    for selector in ("link[rel]", "a[rel]"):  # <head> links first, as a WAT lists them
        for node in tree.css(selector):
            href = node.attributes.get("href")
            if href and "license" in (node.attributes.get("rel") or "").lower().split():
                license_url = href
                break
        if license_url:
            break
    images = []
    for node in tree.css("img[src]"):
        a = node.attributes
        images.append((a.get("src") or "", a.get("alt"), a.get("width"), a.get("height")))
    return base_href, license_url, images


class _ParserProcess:
    """lexbor in a child process, one page at a time: the page's UTF-8 bytes go to its stdin, page_fields' result
    comes back on its stdout. A parse that runs past MAX_PARSE_SECONDS of the child's CPU time is stopped by
    SIGKILL; the child runs with an address-space limit of its baseline + MAX_PARSE_MEMORY. Started on first use,
    after a kill and in a forked process (a child belongs to the process that started it)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._poller = None
        self._owner = 0
        self._child_cpu = -1  # the CPU the child is bound to (-2: binding is not possible here)
        self._cpu = 0.0  # the child's CPU seconds when it last answered
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def parse(self, data: bytes) -> tuple:
        with self._lock:
            for attempt in (0, 1):
                proc = self._child()
                self._follow(proc.pid)
                try:
                    _write_all(proc.stdin.fileno(), struct.pack("<Q", len(data)), data)
                    break
                except OSError:  # BrokenPipeError: the child died since the last page (killed from outside)
                    self._drop()
                    if attempt:
                        raise
            kind, payload = self._reply(proc, len(data))
            if kind == _OUT_OF_MEMORY:
                self._drop()  # (a fresh process for the next page: this one's heap is at its limit)
        if kind == _OK:
            return marshal.loads(payload)
        if kind == _OUT_OF_MEMORY:
            raise RecordTooComplex(f"the parse needed more than its {MAX_PARSE_MEMORY >> 20} MiB of memory "
                                   f"({payload.decode(errors='replace')})")
        raise RuntimeError(f"parser process: {payload.decode(errors='replace')}")

    def _follow(self, pid: int) -> None:
        """Keep the child on the CPU this process runs on: the two take turns, and waking a process on another
        CPU cost more than the parse of an ordinary page (~130 us a page on a VM, ~70 us so)."""
        if self._child_cpu == -2:
            return
        cpu = _current_cpu()
        if cpu != self._child_cpu and cpu >= 0:
            try:
                os.sched_setaffinity(pid, {cpu})
            except (OSError, AttributeError):  # not allowed here, or no such call on this system
                cpu = -2
            self._child_cpu = cpu

    def _reply(self, proc: subprocess.Popen, size: int) -> tuple[int, bytes]:
        fd = proc.stdout.fileno()
        started = time.monotonic()
        while not self._poller.poll(_POLL_MS):
            used = self._cpu_seconds(proc.pid) - self._cpu
            waited = time.monotonic() - started
            if used > MAX_PARSE_SECONDS or waited > _MAX_PARSE_WALL_SECONDS:
                self._drop()
                if used > MAX_PARSE_SECONDS:
                    raise RecordTooComplex(f"parsing took over {MAX_PARSE_SECONDS:g} s of CPU ({size:,} bytes of "
                                           f"HTML): stopped")
                raise RecordTooComplex(f"parsing took over {_MAX_PARSE_WALL_SECONDS:g} s of wall time with "
                                       f"{used:.1f} s of CPU ({size:,} bytes of HTML): stopped")
        try:
            kind, cpu, payload = _read_frame(fd)
        except EOFError:  # the child died during the parse
            status = proc.wait()
            self._drop()
            if status == -signal.SIGXCPU:  # its own CPU backstop (see _serve)
                raise RecordTooComplex(f"parsing took over {MAX_PARSE_SECONDS:g} s of CPU: stopped") from None
            raise RuntimeError(f"the parser process died (exit status {status}) parsing {size:,} bytes of "
                               f"HTML") from None
        self._cpu = cpu
        return kind, payload

    def _cpu_seconds(self, pid: int) -> float:
        """utime + stime of a process, from /proc (without /proc: the last known value, and only wall time limits
        a parse)."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return self._cpu
        fields = stat[stat.rindex(b")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / self._ticks

    def _child(self) -> subprocess.Popen:
        if self._proc is not None:
            if self._owner == os.getpid():
                return self._proc
            self._proc.stdin.close()  # inherited through a fork: the parent's child; only our copies of its pipes go
            self._proc.stdout.close()
            self._proc = None
        # the child imports what this process imports (a Spark worker adds --py-files to sys.path as it runs);
        # glibc keeps up to 64 MB it freed instead of giving the heap back and faulting it in again for every page
        # (lexbor frees each document whole: that cost the parser more than the parse itself)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
                   MALLOC_TRIM_THRESHOLD_=str(64 << 20), MALLOC_MMAP_THRESHOLD_=str(32 << 20))
        code = "import sys; from laion5b_spark.extract.html import _serve; _serve(int(sys.argv[1]), float(sys.argv[2]))"
        proc = subprocess.Popen([sys.executable, "-c", code, str(MAX_PARSE_MEMORY), str(MAX_PARSE_SECONDS)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, bufsize=0)
        poller = select.poll()
        poller.register(proc.stdout.fileno(), select.POLLIN)
        try:
            if not poller.poll(_MAX_PARSE_WALL_SECONDS * 1000):
                raise EOFError
            _, cpu, _ = _read_frame(proc.stdout.fileno())  # "ready"
        except EOFError:
            proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()
            raise RuntimeError(f"the parser process did not start (exit status {proc.returncode}; its stderr "
                               f"says why)") from None
        self._proc, self._poller, self._owner, self._cpu, self._child_cpu = proc, poller, os.getpid(), cpu, -1
        return proc

    def _drop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdin.close()
        proc.stdout.close()

    def close(self) -> None:
        """Stop the parser process (the next page starts a new one)."""
        with self._lock:
            if self._proc is not None and self._owner == os.getpid():
                self._drop()
            self._proc = None


def _cpu_getter():
    try:
        import ctypes

        getcpu = ctypes.CDLL(None).sched_getcpu
        getcpu.restype = ctypes.c_int
        getcpu()
        return getcpu
    except Exception:  # noqa: BLE001 - no glibc/musl: the child is left where the scheduler puts it
        return lambda: -1


_current_cpu = _cpu_getter()
_PARSER = _ParserProcess()
atexit.register(_PARSER.close)


def _write_all(fd: int, *parts: bytes) -> None:
    """Write the parts in one system call where the pipe takes them."""
    done = os.writev(fd, parts)
    for part in parts:
        if done >= len(part):
            done -= len(part)
            continue
        view = memoryview(part)[done:]
        done = 0
        while view:
            view = view[os.write(fd, view):]


def _read_frame(fd: int) -> tuple[int, float, bytes]:
    """A reply: (kind, CPU seconds, payload); one read for the usual small one."""
    head = os.read(fd, 1 << 16)
    while len(head) < _REPLY.size:
        more = os.read(fd, 1 << 16)
        if not more:
            raise EOFError
        head += more
    kind, cpu, n = _REPLY.unpack_from(head)
    payload = head[_REPLY.size:]
    return kind, cpu, payload + _read_exactly(fd, n - len(payload)) if len(payload) < n else payload


def _read_exactly(fd: int, n: int) -> bytes:
    chunks = []
    while n:
        chunk = os.read(fd, min(n, 1 << 20))
        if not chunk:
            raise EOFError
        chunks.append(chunk)
        n -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _serve(memory_limit: int, cpu_limit: float) -> None:
    """The parser process: reads pages (8-byte length, then UTF-8 HTML) until its stdin closes, answers each with
    _REPLY and a marshal of page_fields' result."""
    import resource

    requests, replies = os.dup(0), os.dup(1)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the replies
    # die with the parent (Linux; strictly: with the thread that started us); the CPU backstop below, and the end
    # of stdin, cover the rest
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001
        pass
    if memory_limit > 0:
        try:
            with open("/proc/self/statm") as f:
                limit = int(f.read().split()[0]) * resource.getpagesize() + memory_limit
            hard = resource.getrlimit(resource.RLIMIT_AS)[1]
            if hard != resource.RLIM_INFINITY:
                limit = min(limit, hard)
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
        except (OSError, ValueError):  # no /proc: no memory limit (the CPU limit still holds)
            pass
    resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))  # no core files
    cpu_hard = resource.getrlimit(resource.RLIMIT_CPU)[1]

    def reply(kind: int, payload: bytes) -> float:
        ru = resource.getrusage(resource.RUSAGE_SELF)
        cpu = ru.ru_utime + ru.ru_stime
        _write_all(replies, _REPLY.pack(kind, cpu, len(payload)), payload)
        return cpu

    cpu = reply(_OK, b"")  # ready
    pending = b""
    while True:
        try:
            while len(pending) < 8:  # the 8-byte length and, usually, the whole page in one read
                more = os.read(requests, 1 << 16)
                if not more:
                    raise EOFError
                pending += more
            (n,) = struct.unpack_from("<Q", pending)
            if len(pending) < 8 + n:
                pending += _read_exactly(requests, 8 + n - len(pending))
            data, pending = pending[8:8 + n], pending[8 + n:]
        except EOFError:
            return
        # a backstop should the parent not stop this parse (the kernel sends SIGXCPU)
        soft = int(cpu) + int(cpu_limit) + 3
        if cpu_hard == resource.RLIM_INFINITY or soft < cpu_hard:
            resource.setrlimit(resource.RLIMIT_CPU, (soft, cpu_hard))
        try:
            kind, payload = _OK, marshal.dumps(page_fields(data))
        except (MemoryError, SelectolaxError) as exc:  # lexbor fails its parse when an allocation fails
            kind, payload = _OUT_OF_MEMORY, f"{type(exc).__name__}: {exc}".encode()
        except Exception as exc:  # noqa: BLE001 - a bug: the record is counted as parse_error
            kind, payload = _ERROR, f"{type(exc).__name__}: {exc}".encode()
        data = None
        cpu = reply(kind, payload)
