"""Spark session setup.

Under ``spark-submit`` the session is already configured (``--properties-file conf/spark/X.conf``) and is used
as it is. Run as ``python jobs/<stage>.py`` (debugging, tests), the same profile file is read here instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

PROFILE_DIR = Path(__file__).resolve().parent.parent / "conf" / "spark"


class EnvironmentProblem(RuntimeError):
    """Something outside the project is missing (Java, ...): the message says what to install."""


def read_properties(path: str | Path) -> dict[str, str]:
    """Parse a spark-defaults style file: ``key value`` or ``key=value`` per line, ``#`` comments."""
    props: dict[str, str] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.match(r"(\S+?)\s*(?:=|\s)\s*(.*)$", line)
        if m:
            props[m.group(1)] = m.group(2).strip()
    return props


def profile_path(profile: str) -> Path:
    p = Path(profile)
    if p.suffix == ".conf" or p.exists():
        if not p.is_file():
            raise EnvironmentProblem(f"Spark profile {p} does not exist (profiles live in {PROFILE_DIR})")
        return p
    p = PROFILE_DIR / f"{profile}.conf"
    if not p.exists():
        have = ", ".join(sorted(x.stem for x in PROFILE_DIR.glob("*.conf")))
        raise EnvironmentProblem(f"no Spark profile {profile!r}: choose one of {have} or give a .conf path")
    return p


def derive_profile(profile: str, out_path: str | Path, overrides: dict[str, str]) -> str:
    """Write a copy of a profile with some properties changed (benchmarks, tests); returns its path."""
    props = read_properties(profile_path(profile))
    props.update(overrides)
    Path(out_path).write_text("".join(f"{k} {v}\n" for k, v in props.items()))
    return str(out_path)


def check_java(min_version: int = 17) -> str:
    java = os.path.join(os.environ["JAVA_HOME"], "bin", "java") if os.environ.get("JAVA_HOME") else shutil.which("java")
    if not java or not os.path.exists(java):
        raise EnvironmentProblem(
            f"Java {min_version}+ is needed by Spark and was not found. Install it "
            "(Debian/Ubuntu: apt-get install -y openjdk-17-jre-headless) or set JAVA_HOME."
        )
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    major = int(m.group(1)) if m else 0
    if major == 1 and m and m.group(2):  # "1.8.0" style
        major = int(m.group(2))
    if major < min_version:
        raise EnvironmentProblem(f"Spark needs Java {min_version}+, found {major} at {java}: install openjdk-17.")
    return java


def under_spark_submit() -> bool:
    return "PYSPARK_GATEWAY_PORT" in os.environ


def get_session(app_name: str, profile: str = "local", extra: dict[str, str] | None = None):
    """The job's SparkSession: spark-submit's when there is one, else one built from ``conf/spark/<profile>``."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.appName(app_name)
    if not under_spark_submit():
        check_java()
        props = read_properties(profile_path(profile))
        props.update(extra or {})
        if props.get("spark.master", "local").startswith("local"):
            os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        for k, v in props.items():
            builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("L5S_SPARK_LOG_LEVEL", "WARN"))
    return spark
