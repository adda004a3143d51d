"""The extract job: input listing and one unit's work, on top of the shared UnitJob."""

from __future__ import annotations

from ..job import Unit, UnitContext, UnitJob, UnitResult, language_line
from .inputs import list_units
from .settings import ExtractSettings
from .unit import extract_unit


class ExtractJob(UnitJob):
    name = "extract"
    output_table = "pairs"
    description = (
        "Common Crawl WAT/WARC files -> image-text pairs (the `pairs` table of the lake).\n\n"
        "One Spark task per input file. Committed files are skipped, so rerunning the same command resumes.\n"
        "WAT records (JSON metadata) and WARC HTML responses give the same pairs for the same page."
    )
    epilog = """examples:
  spark-submit --properties-file conf/spark/local.conf jobs/extract.py --lake ./lake --input 'crawl/*.warc.wat.gz'
  spark-submit jobs/extract.py --lake s3://bucket/lake \\
      --input s3://commoncrawl/crawl-data/CC-MAIN-2024-10/wat.paths.gz --set extract.input_base_url=s3://commoncrawl/
  python jobs/extract.py --lake ./lake --input ./sample --set extract.min_alt_length=3   # debugging, local Spark

inputs: local paths, globs and folders; s3:// (and other fsspec) URLs; http(s) URLs; Common Crawl path manifests
(wat.paths.gz, warc.paths.gz) whose lines are resolved against extract.input_base_url.
output: LAKE/pairs (see laion5b_spark/schemas.py), run record in LAKE/_runs/extract/, bad-input samples in
LAKE/pairs/_errors/.
"""

    def add_arguments(self, parser) -> None:
        parser.add_argument("--input", nargs="+", required=True, metavar="PATH_OR_MANIFEST",
                            help="input files, folders, globs, URLs or *.paths(.gz) manifests")
        parser.add_argument("--input-base-url", help="base URL for manifest lines (default: extract.input_base_url)")

    def settings(self, args, cfg, lake) -> ExtractSettings:
        return ExtractSettings.from_config(cfg)

    def list_units(self, args, settings: ExtractSettings, lake) -> list[Unit]:
        base = args.input_base_url or settings.input_base_url
        return list_units(args.input, base, settings.input_storage_options)

    def process_unit(self, unit: Unit, ctx: UnitContext) -> UnitResult:
        return extract_unit(unit, ctx)

    def describe_info(self, info: dict) -> list[str]:
        lines = language_line("pairs", info.get("languages", {}))
        if info.get("bytes"):
            mb = info["bytes"] / 1e6
            lines.append(f"read {mb:,.1f} MB in {info.get('seconds', 0):,.1f} task-seconds "
                         f"({mb / max(info.get('seconds', 0), 1e-9):,.1f} MB/s per task), "
                         f"{info.get('html_pages', 0):,} HTML pages")
        return lines
