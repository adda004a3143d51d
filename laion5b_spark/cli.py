"""``l5s`` (or ``python -m laion5b_spark``): one entry point for every job and tool.

A job's subcommand runs it through spark-submit with this environment's Python on the driver and the executors (the
same as ``deploy/submit.sh jobs/<job>.py``), or in this process with ``--local`` (a local Spark session built from
``--spark-profile``). Every other argument goes to the job unchanged, so ``l5s extract --help`` is the job's own help.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
from pathlib import Path

from .spark import EnvironmentProblem, check_java, profile_path

# subcommand -> (module, class) of a job; (module, function) of a tool
JOBS: dict[str, tuple[str, str, str]] = {
    "extract": ("laion5b_spark.extract.job", "ExtractJob", "WAT/WARC files -> pairs"),
    "ingest": ("laion5b_spark.ingest.job", "IngestJob", "an existing URL list (LAION, DataComp, CC12M) -> pairs"),
    "dedup": ("laion5b_spark.dedup.job", "DedupJob", "pairs -> pairs_unique"),
    "download": ("laion5b_spark.download.job", "DownloadJob", "pairs_unique -> images"),
    "clip": ("laion5b_spark.clip.job", "ClipJob", "images -> scored + dataset"),
    "compact": ("laion5b_spark.compact.job", "CompactJob", "images without the bytes of rows below every threshold"),
    "index": ("laion5b_spark.index.job", "IndexJob", "scored -> knn indices + dedup_images"),
    "export": ("laion5b_spark.export.job", "ExportJob", "dataset minus duplicates -> the release"),
    "stats": ("laion5b_spark.stats.job", "StatsJob", "the funnel, reasons and plots -> _reports/stats"),
}
TOOLS: dict[str, tuple[str, str, str]] = {
    "describe": ("laion5b_spark.describe", "main", "tables, counts, runs; --check verifies the lake contract"),
    "vacuum": ("laion5b_spark.vacuum", "main", "remove what no manifest lists (dry run unless --apply)"),
    "search": ("laion5b_spark.cli", "search_main", "nearest rows to a text, an image or a uid"),
    "serve": ("laion5b_spark.index.serve", "main", "clip-retrieval compatible search service over the indices"),
}
SUBMIT_ENTRY = Path(__file__).with_name("submit_entry.py")


def parser() -> argparse.ArgumentParser:
    width = max(map(len, [*JOBS, *TOOLS]))
    lines = ["jobs (spark-submit by default; --local runs in this process):"]
    lines += [f"  {name.ljust(width)}  {what}" for name, (_, _, what) in JOBS.items()]
    lines += ["", "tools:"] + [f"  {name.ljust(width)}  {what}" for name, (_, _, what) in TOOLS.items()]
    lines += ["", "examples:",
              "  l5s extract --lake ./lake --input build/sample-crawl/wat.paths.gz --input-base-url build/sample-crawl/",
              "  l5s download --lake s3://bucket/lake --config conf/pipeline/laion400m.toml --spark-profile node-16c",
              "  l5s clip --print-config --config conf/pipeline/laion5b.toml",
              "  l5s search --lake ./lake 'a red circle' -k 5",
              "",
              "Job options of the launcher itself (the rest goes to the job):",
              "  --local                   run the job in this process (a local Spark session from --spark-profile)",
              "  --spark-profile NAME      conf/spark/NAME.conf: spark-submit's --properties-file, or the local session's",
              "  --submit-arg ARG          one more spark-submit argument (repeatable), e.g. --submit-arg=--master=...",
              "",
              "`l5s JOB --help` is the job's own help."]
    p = argparse.ArgumentParser(prog="l5s", description="laion5b-spark: Common Crawl or a URL list -> a LAION-5B-class "
                                "image-text dataset, as Spark jobs over one parquet lake.",
                                epilog="\n".join(lines), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=[*JOBS, *TOOLS], metavar="COMMAND", help="a job or a tool (below)")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the command's own arguments")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        parser().print_help()
        return 0 if argv else 2
    ns = parser().parse_args(argv[:1])  # an unknown command: argparse's one line, exit 2
    rest = argv[1:]
    if ns.command in TOOLS:
        module, func, _ = TOOLS[ns.command]
        return _load(module, func)(rest)
    return run_job(ns.command, rest)


def _load(module: str, attr: str):
    try:
        return getattr(importlib.import_module(module), attr)
    except ModuleNotFoundError as exc:
        if not exc.name or not module.startswith(exc.name):
            raise
        print(f"l5s: {module} is not in this installation ({exc}); reinstall the package", file=sys.stderr)
        raise SystemExit(2)


def job_class(name: str):
    module, cls, _ = JOBS[name]
    return _load(module, cls)


def job(name: str):
    """The job, its usage lines naming ``l5s NAME``."""
    instance = job_class(name)()
    instance.prog = f"l5s {name}"
    return instance


def run_job(name: str, args: list[str]) -> int:
    """Run job ``name`` with ``args``: in this process (``--local``, ``--help``, ``--print-config``) or spark-submit."""
    local, profile, submit_args, job_args = _split_launcher_args(args)
    if profile is not None:
        job_args += ["--spark-profile", profile]
    cls = job_class(name)
    if local or not cls.uses_spark or any(a in ("-h", "--help", "--print-config") for a in job_args):
        return job(name).main(job_args)
    try:
        cmd = submit_command(name, job_args, profile or "local", submit_args)
        check_java()  # spark-submit's own failures all exit 1, which reads as "partial": say it here, exit 2
    except EnvironmentProblem as exc:
        print(f"[{name}] error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.flush()
    os.execvpe(cmd[0], cmd, submit_env())  # the job's exit code is the launcher's


def _split_launcher_args(args: list[str]) -> tuple[bool, str | None, list[str], list[str]]:
    local, profile, submit, rest = False, None, [], []
    it = iter(args)
    for a in it:
        if a == "--local":
            local = True
        elif a in ("--spark-profile", "--submit-arg"):
            value = next(it, None)
            if value is None:
                print(f"l5s: {a} needs a value", file=sys.stderr)
                raise SystemExit(2)
            profile, submit = (value, submit) if a == "--spark-profile" else (profile, submit + [value])
        elif a.startswith("--spark-profile="):
            profile = a.split("=", 1)[1]
        elif a.startswith("--submit-arg="):
            submit.append(a.split("=", 1)[1])
        else:
            rest.append(a)
    return local, profile, submit, rest


def spark_submit() -> str:
    """The spark-submit of the pyspark package in this environment (it finds its Spark only there)."""
    import pyspark

    path = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    if path.exists():
        return str(path)
    found = shutil.which("spark-submit")
    if not found:
        raise EnvironmentProblem("no spark-submit found (pyspark's bin/ or PATH): reinstall pyspark, or use --local")
    return found


def submit_command(name: str, job_args: list[str], profile: str, submit_args: list[str]) -> list[str]:
    return [spark_submit(), "--properties-file", str(profile_path(profile)), *submit_args,
            str(SUBMIT_ENTRY), name, *job_args]


def submit_env() -> dict[str, str]:
    """What deploy/submit.sh sets: this Python for the driver and the executors, loopback for local mode, GPUs in
    nvidia-smi's order, the project's log4j settings."""
    env = dict(os.environ)
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    conf_dir = profile_path("local").parent
    if conf_dir.is_dir():
        env.setdefault("SPARK_CONF_DIR", str(conf_dir))
    bindir = str(Path(sys.executable).parent)
    if bindir not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env


def search_main(argv: list[str]) -> int:
    """``l5s search``: the k nearest rows of the release to one query, printed as a table or JSON lines."""
    from .config import ConfigError
    from .lake import Lake, LakeError

    p = argparse.ArgumentParser(prog="l5s search", description=search_main.__doc__)
    p.add_argument("--lake", required=True, help="lake root with a committed index (jobs/index.py)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("query", nargs="?", help="a text query")
    q.add_argument("--image", help="an image file to search with")
    q.add_argument("--uid", type=int, help="a row's uid: its own embedding is the query")
    p.add_argument("-k", type=int, default=10, help="results (default 10)")
    p.add_argument("--index", choices=["image", "text"], default="image",
                   help="which index to search (default image: captions find pictures)")
    p.add_argument("--json", action="store_true", help="one JSON object per result")
    args = p.parse_args(argv)
    if args.k < 1:
        p.error("-k must be >= 1")
    if args.image and not os.path.isfile(args.image):
        p.error(f"--image {args.image}: no such file")
    from .index.search import search

    try:
        found = search(Lake(args.lake), text=args.query, image=args.image, uid=args.uid, k=args.k, index=args.index)
    except (LakeError, ConfigError, KeyError) as exc:
        print(f"l5s search: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(found.to_json(orient="records", lines=True, force_ascii=False).rstrip())
    else:
        import pandas as pd

        with pd.option_context("display.max_colwidth", 60, "display.width", 200):
            print(found[[c for c in ("rank", "score", "uid", "url", "text", "similarity") if c in found]]
                  .to_string(index=False))
    return 0
