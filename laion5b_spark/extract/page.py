"""What extraction learns from one HTML page, whichever format it came from (WARC HTML or WAT JSON)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class Image(NamedTuple):
    """A tuple, so that PairBuilder can transpose a unit's images into columns with one zip (per-image Python
    was the extract stage's bottleneck: bench/extract)."""

    src: str
    alt: str | None  # None: no alt attribute
    width: str | None = None  # raw attribute values; parsed later
    height: str | None = None
    alt_is_raw_html: bool = False  # undecoded attribute text (entities still in it): old-style WATs only


@dataclass(slots=True)
class Page:
    url: str
    base: str | None = None  # <base href>
    license: str | None = None  # href of the first rel="license" link
    images: list[Image] = field(default_factory=list)
