"""Pipeline configuration: built-in defaults, a TOML profile (conf/pipeline/*.toml), then ``--set`` overrides.

Every key has a default here, so a profile only says what differs. Unknown keys are an error that names the
key and the valid ones: a typo must not silently fall back to a default on a 5B run.
"""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path

DEFAULTS: dict = {
    "lake": {
        # passed to fsspec for the lake root, e.g. {endpoint_url = "...", anon = false} for s3://
        "storage_options": {},
    },
    "run": {
        "commit_interval_s": 10.0,  # how often the driver adds finished units to the manifest
        "progress_interval_s": 10.0,
        "error_samples_per_reason": 5,  # per unit, written to LAKE/<table>/_errors/
        # a run of another job writing the same table holds it while its heartbeat (every 30 s) is younger than this;
        # older, it is taken for killed and no longer keeps a writer out
        "writer_stale_s": 600.0,
    },
    "extract": {
        "min_alt_length": 5,  # LAION: alt text < 5 characters dropped
        "max_url_length": 2000,
        "exclude_extensions": [".svg"],
        "language_detection": True,
        # pycld2's result is kept when it says reliable and covers at least this share of the text,
        # else "nolang" (bench/language/README.md has the comparison that chose pycld2 and 0.7)
        "min_language_share": 0.7,
        "input_retries": 3,
        "input_retry_wait_s": 2.0,
        "max_record_bytes": 32 * 1024 * 1024,  # bigger records are counted as corrupt, not parsed
        "max_alt_chars": 4096,  # huge attributes are cut, not kept whole
        "input_base_url": "https://data.commoncrawl.org/",  # for wat.paths.gz / warc.paths.gz manifests
        "input_storage_options": {},  # fsspec options for s3:// inputs, e.g. {anon = true} for s3://commoncrawl
    },
    "download": {
        "shard_rows": 10_000,  # pairs_unique rows per unit (one output file)
        "threads": 32,  # concurrent fetches per task
        "decode_slots": 4,  # of those, how many decode/resize at once (bench/download: 4 beat 2 and 32)
        "max_per_host": 4,  # connections to one host at once, per task
        "min_interval_s": 0.0,  # between request starts to one host, per task
        "retries": 2,  # per URL after the first try (timeouts, resets, 429/5xx)
        "backoff_base_s": 1.0,
        "max_retry_after_s": 60.0,  # a longer Retry-After gives up on the URL (rate_limited)
        "user_agent": "laion5b-spark/0.1 (image-text dataset research; +https://github.com/laion5b-spark)",
        "user_agent_token": "laion5b-spark",  # the name X-Robots-Tag lines address
        "respect_robots_tags": True,
        "robots_txt": False,  # also obey robots.txt, fetched once per origin per worker (RFC 9309)
        # TDMRep opt-outs (EU DSM art. 4): the tdm-reservation header; with robots_txt also /.well-known/tdmrep.json
        "respect_tdmrep": True,
        "allow": [],  # networks / address:port admitted despite being private, e.g. ["10.0.0.0/8"]
        "connect_to": [],  # "host=address:port" ("*" = every host), as curl --connect-to: mirrors, the demo
        "max_bytes": 20 * 2**20,
        "max_header_bytes": 64 * 1024,  # one response head (status line + headers); 1xx responses: at most 5
        "connect_timeout_s": 5.0,
        "read_timeout_s": 10.0,
        "deadline_s": 30.0,  # per image, redirects included
        "max_redirects": 5,
        "image_size": 256,
        "resize_mode": "border",  # no, keep_ratio, keep_ratio_largest, center_crop, border (img2dataset's)
        "resize_only_if_bigger": False,
        "encode_format": "jpg",
        "encode_quality": 95,
        "skip_reencode": False,
        "min_bytes": 0,  # LAION: 5120
        "min_image_size": 0,
        "max_pixels": 89_478_485,  # canvas and first frame, from the header (LAION's/PIL's 89.5 MP)
        # a JPEG with more scans is refused before decoding (decompression_bomb): libjpeg passes over the image once
        # per scan; its progression writes 10 (colour) or 18 (CMYK), mozjpeg picks from at most 64; libtiff's limit
        "max_jpeg_scans": 100,
        "max_exif_bytes": 65_536,  # EXIF parsed from at most this many bytes (a JPEG's APP1 holds 65,533)
        "max_aspect_ratio": 0.0,  # 0: no limit
        "formats": ["jpeg", "png", "webp", "gif"],
        "reduced_decode": True,
        "webdataset": False,  # also a webdataset tar per shard (img2dataset's layout), listed beside the parquet
        "exif": True,  # the exif column (JSON of EXIF tags, img2dataset's format; its default too)
        "denylist": [],  # image (and URL) hash lists, as dedup's --denylist
        # failures --retry-failed fetches again (the others - 404, not an image, robots - would fail the same way)
        "retry_reasons": ["dns_error", "connect_error", "tls_error", "timeout", "truncated_body", "http_error",
                          "rate_limited", "robots_unreachable"],
    },
    "clip": {
        "model": "ViT-B-32",
        "pretrained": "laion2b_s34b_b79k",  # an open_clip tag, a checkpoint path (.safetensors/.pt), or "" (random)
        "threshold": 0.28,  # LAION-5B English, ViT-B/32 (LAION-400M used 0.30)
        "multilingual_model": "",  # e.g. "xlm-roberta-base-ViT-B-32" for non-English rows; "" = clip.model
        # "open_clip": multilingual_model is an open_clip model with its own image tower; "mclip": a
        # sentence-transformers text model (hub id or folder, e.g. sentence-transformers/clip-ViT-B-32-multilingual-v1)
        # scored against clip.model's images, as LAION-5B did (multilingual_pretrained must then be "")
        "multilingual_kind": "open_clip",
        "multilingual_pretrained": "",
        "multilingual_threshold": 0.26,
        "nolang_threshold": 0.26,  # rows whose language is "nolang": LAION-5B's laion1B-nolang bucket
        "english": ["en"],  # languages clip.model scores when a multilingual model is set
        "batch_size": 256,  # images per model call (the GPU batch)
        "read_rows": 1024,  # images rows read at once (whole row groups, one chunk read ahead): bounds memory
        "decode_threads": 8,
        "gpu_decode": False,  # true: JPEGs decoded (nvJPEG) and resized on the GPU; a batch it refuses goes to CPU
        # per clip task, as a stage-level resource profile (standalone/YARN/K8s; ignored in local mode):
        # 0 = the cluster's spark.task.resource.gpu.amount / spark.task.cpus, which suit the CPU stages
        "task_gpus": 0.0,  # e.g. 0.5: two clip tasks share a GPU
        "task_cpus": 0,  # e.g. 8: each clip task's decode pool and torch threads get 8 cores
        "nsfw_head": "",  # .safetensors of the NSFW MLP (docs/CLIP.md); "" = punsafe stays null
        "watermark_model": "",  # .safetensors of the watermark classifier; "" = pwatermark stays null
        "watermark_arch": "efficientnet_b3a",
        "watermark_size": 256,
        "watermark_class": 0,
    },
    "index": {
        # which rows get vectors: "dataset" (the release, as LAION's indices) or "scored" (every scored image)
        "source": "dataset",
        # which CLIP model's rows: "main" (clip.model) or "multilingual" (clip.multilingual_model), as the last clip
        # run was configured; LAION-5B shipped one index per subset (2B-en, 2B-multi) for this reason
        "model": "main",
        "image": True,  # build LAKE/index/image (image embeddings)
        "text": True,  # build LAKE/index/text (caption embeddings)
        # autofaiss: the index must fit max_index_memory_usage; the build may use current_memory_available
        "max_index_memory_usage": "16G",
        "current_memory_available": "32G",
        "index_key": "",  # a faiss factory string to force one (e.g. "IVF4096,PQ64"); "" = autofaiss chooses
        "index_param": "",
        "max_index_query_time_ms": 10.0,
        "min_nearest_neighbors_to_retrieve": 20,
        "nb_cores": 0,  # build threads on the driver; 0 = all
        "distributed": "",  # "pyspark": autofaiss builds index shards on the executors (5B-scale builds)
        "recall_queries": 1000,  # sampled vectors searched exactly and in the index: recall@k in the run record
        "recall_k": 10,
        "seed": 0,
        # near-duplicate images (dedup_images): image cosine >= threshold (SemDeDup's eps 0.04 -> 0.96)
        "near_dup": True,
        "near_dup_threshold": 0.96,
        "near_dup_k": 16,  # neighbours searched per image
        "near_dup_margin": 0.02,  # candidates down to threshold - margin in the index, then checked exactly
        # search parameters for the near-duplicate pass, e.g. "nprobe=16,efSearch=32" ("" = the ones autofaiss tuned
        # for max_index_query_time_ms: one query at a time; a pass over every row can afford fewer probes per query)
        "near_dup_index_param": "",
    },
    "dedup": {
        # "url_text": one row per (normalized URL, text) - LAION-400M; "url": one row per normalized URL - LAION-5B
        "key": "url_text",
        "max_text_chars": 4096,  # longer texts are dropped as text_too_long (extract cuts at 4096)
        "file_mb": 128.0,  # target size of pairs_unique's parquet files (LAION's were ~1 GB; see docs/DEDUP.md)
        "shuffle": True,  # spread rows over files in a seeded random order, so download shards mix hosts
        "seed": 42,
        "shuffle_block_rows": 256,  # the shuffle moves blocks of this many consecutive rows (docs/DEDUP.md)
        "rows_per_task": 2_000_000,  # input rows one task reads (keys, then whole rows): bounds task memory
        "bucket_mb": 64.0,  # key bytes one reduce task holds: the number of key buckets follows from it
        "denylist": [],  # URL / URL-hash / image-hash lists (parquet, CSV, text); also --denylist
        "opt_out_domains": [],  # domain opt-out lists (text: host, or .suffix for a domain and its subdomains)
        "top_domains": 20,  # how many domains the duplicate summary lists
    },
    "ingest": {
        # rows per unit of a parquet list, cut at row-group boundaries (a bigger row group is a unit of its own);
        # a CSV/TSV/JSONL list is one unit per file. Resume is keyed by the rows units cover, not by this value
        "unit_rows": 500_000,
        "batch_rows": 65_536,  # rows read at once inside a unit
        "csv_block_bytes": 1 << 22,  # pyarrow's CSV/TSV block; a row over it sends the file to the row-by-row reader
        # captions shorter after cleanup are dropped as alt_too_short; lists were filtered already: 1 keeps them all
        "min_text_length": 1,
        "exclude_extensions": [],  # URL extensions dropped as excluded_extension (extract's is [".svg"])
        "language_detection": True,  # detect (extract's detector) where the list gives no language; else nolang
        "input_storage_options": {},  # fsspec options for s3:// (and other remote) lists, e.g. {anon = true}
    },
    "export": {
        # digits of the shard numbers (webdataset/<bucket>/00003.tar): one shard per dataset unit, so enough for
        # the units a release will ever have (10**digits); recorded in the release's manifest, fixed once written
        "shard_digits": 5,
        "join_rows_per_task": 4_000_000,  # uids (dataset + duplicates) one task of the duplicate join holds
    },
    "compact": {
        # image bytes are dropped for scored rows whose similarity is below every bucket's threshold minus this
        # margin; a margin keeps the images a later, lower threshold would take (0.02: down to 0.24 for 0.26)
        "margin": 0.0,
        # clip's tasks write each file's compaction as they score it (~the kept bytes, into images' staging), so
        # compact takes it instead of reading the file whole once more; false: compact reads every file itself
        "in_clip": True,
    },
}


class ConfigError(ValueError):
    """A broken configuration: the job stops before any work with this message."""


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                sources: dict[str, str] | None = None) -> dict:
    """The effective configuration. ``sources``, when given, receives ``section.key`` -> where its value came from
    (a profile's path or the ``--set`` item) for every value that is not the default."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist (profiles live in conf/pipeline/)")
        try:
            data = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from exc
        _merge(cfg, data, str(p), "", sources)
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. extract.min_alt_length=3")
        _merge(cfg, _nest(key.strip().split("."), _parse_value(raw.strip())), f"--set {item}", "", sources)
    return cfg


def _parse_value(raw: str):
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw  # a bare word is a string


def _nest(keys: list[str], value):
    out = value
    for k in reversed(keys):
        out = {k: out}
    return out


def _merge(base: dict, new: dict, origin: str, prefix: str, sources: dict[str, str] | None = None) -> None:
    for key, value in new.items():
        name = f"{prefix}{key}"
        if key not in base:
            valid = ", ".join(f"{prefix}{k}" for k in base)
            raise ConfigError(f"{origin}: unknown setting {name!r}; valid here: {valid}")
        default = base[key]
        if isinstance(default, dict):
            if not isinstance(value, dict):
                raise ConfigError(f"{origin}: {name!r} must be a table of settings")
            if key.endswith("storage_options"):  # free-form fsspec options: keys merge, none is unknown
                default.update(value)
                if sources is not None:
                    sources.update({f"{name}.{k}": origin for k in value})
            else:
                _merge(default, value, origin, f"{name}.", sources)
            continue
        if isinstance(default, bool) and not isinstance(value, bool):
            raise ConfigError(f"{origin}: {name!r} must be true or false, got {value!r}")
        if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(default) is not type(value):
            raise ConfigError(f"{origin}: {name!r} must be {type(default).__name__}, got {value!r}")
        base[key] = value
        if sources is not None:
            sources[name] = origin


def typed(cls, section: dict, **extra):
    """A stage's frozen settings from its section (``cls``'s fields are the section's keys): lists become tuples,
    so the settings compare and hash; the defaults stay in DEFAULTS alone."""
    from dataclasses import fields

    names = {f.name for f in fields(cls)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in section.items() if k in names}
    try:
        return cls(**values, **extra)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{cls.__name__}: {exc}") from exc


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def format_config(cfg: dict, sources: dict[str, str], sections: list[str]) -> list[str]:
    """``sections`` of the effective configuration as TOML a profile could hold, each value commented with where it
    came from ("default", the profile's path, or the ``--set`` item that gave it)."""
    lines: list[str] = []
    for section in sections:
        lines.append(f"[{section}]")
        rows = []
        for key, value in cfg[section].items():
            name = f"{section}.{key}"
            if isinstance(value, dict) and key.endswith("storage_options"):
                origin = ", ".join(sorted({o for k, o in sources.items() if k.startswith(name + ".")})) or "default"
            else:
                origin = sources.get(name, "default")
            rows.append((f"{key} = {_toml_value(value)}", origin))
        width = min(max(len(r) for r, _ in rows), 60) if rows else 0
        lines += [f"{r.ljust(width)}  # {o}" for r, o in rows]
        lines.append("")
    return lines
