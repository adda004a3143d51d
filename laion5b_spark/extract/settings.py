"""The extract stage's settings, typed once on the driver (values and defaults: config.DEFAULTS["extract"])."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import ConfigError, typed


@dataclass(frozen=True)
class ExtractSettings:
    min_alt_length: int
    max_url_length: int
    exclude_extensions: tuple
    language_detection: bool
    min_language_share: float
    input_retries: int
    input_retry_wait_s: float
    max_record_bytes: int
    max_alt_chars: int
    input_base_url: str
    input_storage_options: dict

    @classmethod
    def from_config(cls, cfg: dict) -> "ExtractSettings":
        s = typed(cls, cfg["extract"])
        if s.min_alt_length < 0 or s.max_url_length < 1 or s.max_alt_chars < 1 or s.max_record_bytes < 1:
            raise ConfigError("extract.min_alt_length must be >= 0 and max_url_length, max_alt_chars, "
                              "max_record_bytes >= 1")
        if not 0.0 <= s.min_language_share <= 1.0:
            raise ConfigError(f"extract.min_language_share = {s.min_language_share}: a share in [0, 1]")
        return s
