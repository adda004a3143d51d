"""Extract's units: one input file each, from paths, globs, folders, URLs or Common Crawl path manifests."""

from __future__ import annotations

import io
import re
from typing import BinaryIO

import fsspec

from ..config import ConfigError
from ..job import Unit

_CRAWL = re.compile(r"CC-MAIN-\d{4}-\d{2}")
_MANIFEST = re.compile(r"\.paths(\.gz)?$")
_GLOB = re.compile(r"[*?\[]")


class InputUnreachable(OSError):
    """The input could not be opened or read; worth another try later."""


class InputMissing(InputUnreachable):
    """The input does not exist (404, no such file): retrying now will not help."""


def list_units(inputs: list[str], base_url: str, storage_options: dict) -> list[Unit]:
    """Units sorted by key; a file named twice is one unit. A missing local/s3 input is a ConfigError."""
    units: dict[str, Unit] = {}
    for arg in inputs:
        for u in _expand(arg, base_url, storage_options):
            units.setdefault(u.key, u)
    if not units:
        raise ConfigError(f"--input {' '.join(inputs)}: no input files found")
    return [units[k] for k in sorted(units)]


def crawl_of(key: str) -> str | None:
    """The Common Crawl id a path names (CC-MAIN-2024-10), or None."""
    m = _CRAWL.search(key)
    return m.group(0) if m else None


def _unit(key: str, source: str, size: int | None) -> Unit:
    return Unit(key=key, source=source, size=size, meta=(("crawl", crawl_of(key)),))


def _expand(arg: str, base_url: str, storage_options: dict):
    if _MANIFEST.search(arg):
        with fsspec.open(arg, "rt", compression="infer", **_opts(arg, storage_options)) as f:
            for line in f:
                rel = line.strip()
                if not rel or rel.startswith("#"):
                    continue
                source = rel if "://" in rel else base_url.rstrip("/") + "/" + rel.lstrip("/")
                yield _unit(rel, source, None)
        return
    if arg.startswith(("http://", "https://")):
        yield _unit(arg, arg, None)  # listing a web server is not possible; size unknown
        return
    fs, path = fsspec.core.url_to_fs(arg, **_opts(arg, storage_options))
    proto = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = "" if proto in ("file", "local") else f"{proto}://"
    if _GLOB.search(path):
        found = fs.glob(path, detail=True)
    elif fs.isdir(path):
        found = {p: i for p, i in fs.find(path, detail=True).items()
                 if not p.rsplit("/", 1)[-1].startswith(("_", ".")) and not _MANIFEST.search(p)}
    elif fs.exists(path):
        found = {path: fs.info(path)}
    else:
        raise ConfigError(f"--input {arg}: no such file or folder")
    for p, info in found.items():
        if info.get("type") == "file":
            yield _unit(prefix + p, prefix + p, info.get("size"))


def _opts(arg: str, storage_options: dict) -> dict:
    return storage_options if arg.startswith(("s3://", "gs://", "az://", "abfs://")) else {}


class _GuardedReader:
    """Turns any read failure of the underlying stream into InputUnreachable (so the unit is retried)."""

    def __init__(self, f: BinaryIO):
        self.f = f
        self.bytes_read = 0

    def _call(self, method, *args) -> bytes:
        try:
            return method(*args)
        except Exception as exc:  # noqa: BLE001 - network stacks raise many types
            raise InputUnreachable(f"read failed after {self.bytes_read} bytes: {type(exc).__name__}: {exc}") from exc

    def read(self, n: int = -1) -> bytes:
        data = self._call(self.f.read, n)
        self.bytes_read += len(data)
        return data

    def peek(self, n: int) -> bytes:
        return self._call(self.f.peek, n)[:n]

    def close(self) -> None:
        try:
            self.f.close()
        except Exception:  # noqa: BLE001 - closing a broken connection must not hide the real outcome
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_input(source: str, storage_options: dict) -> _GuardedReader:
    """Open once; the caller (extract_unit) owns retrying, so that a dead input costs one backoff series."""
    try:
        f = fsspec.open(source, "rb", compression=None, **_opts(source, storage_options)).open()
    except FileNotFoundError as exc:
        raise InputMissing(f"not found: {source}") from exc
    except Exception as exc:  # noqa: BLE001 - network stacks raise many types
        raise InputUnreachable(f"could not open {source}: {type(exc).__name__}: {exc}") from exc
    if not hasattr(f, "peek"):
        f = io.BufferedReader(f, buffer_size=1 << 20)
    return _GuardedReader(f)
