"""The one entry point: ``l5s`` / ``python -m laion5b_spark``, its subcommands, and every job's --print-config."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from laion5b_spark import cli
from laion5b_spark.config import DEFAULTS

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _installed_jobs() -> list[str]:
    names = []
    for name, (module, _, _) in cli.JOBS.items():
        try:
            __import__(module)
        except ModuleNotFoundError:
            continue
        names.append(name)
    return names


def _toml_part(out: str) -> dict:
    """The configuration part of --print-config's output (the Spark properties after it are not TOML)."""
    return tomllib.loads(out.split("\n# Spark properties")[0])


def test_help_lists_every_job_and_tool(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in [*cli.JOBS, *cli.TOOLS]:
        assert f"  {name} " in out, name
    assert cli.main([]) == 2  # no command: the help, and a usage exit code


def test_an_unknown_command_is_one_line_and_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["extrat", "--lake", "x"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'extrat'" in err and "extract" in err


@pytest.mark.parametrize("name", _installed_jobs())
def test_print_config_of_every_job_says_where_each_value_came_from(name, capsys):
    rc = cli.main([name, "--print-config", "--config", str(ROOT / "conf/pipeline/sample.toml"),
                   "--set", "run.progress_interval_s=3"])
    assert rc == 0
    out = capsys.readouterr().out
    cfg = _toml_part(out)  # what it prints is a profile one could load again
    assert cfg["run"]["progress_interval_s"] == 3.0
    assert "progress_interval_s = 3.0" in out and "# --set run.progress_interval_s=3" in out
    assert "commit_interval_s = " in out and "# default" in out
    own = cli.job_class(name)
    sections = own.config_sections or (name,)
    for section in sections:
        if section in DEFAULTS:
            assert set(cfg[section]) == set(DEFAULTS[section]), section


def test_print_config_names_the_profile_for_its_values(capsys):
    sample = ROOT / "conf/pipeline/sample.toml"
    expected = tomllib.loads(sample.read_text())["clip"]
    assert cli.main(["clip", "--print-config", "--config", str(sample)]) == 0
    out = capsys.readouterr().out
    cfg = _toml_part(out)
    for key, value in expected.items():
        assert cfg["clip"][key] == value
        line = next(ln for ln in out.splitlines() if ln.startswith(f"{key} = "))
        assert line.endswith(f"# {sample}"), line
    assert "# Spark properties from" in out and "spark.master" in out


def test_print_config_with_a_wrong_setting_is_one_line_and_exit_2(capsys):
    assert cli.main(["download", "--print-config", "--set", "download.thread=8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown setting 'download.thread'" in err[0] and "download.threads" in err[0]


def test_launcher_options_are_taken_out_and_the_rest_goes_to_the_job():
    local, profile, submit, rest = cli._split_launcher_args(
        ["--lake", "L", "--local", "--spark-profile", "node-16c", "--submit-arg=--master=spark://h:7077", "--dry-run"])
    assert (local, profile, submit, rest) == (True, "node-16c", ["--master=spark://h:7077"], ["--lake", "L", "--dry-run"])
    cmd = cli.submit_command("extract", rest, profile, submit)
    assert cmd[1:3] == ["--properties-file", str(ROOT / "conf/spark/node-16c.conf")]
    assert cmd[3] == "--master=spark://h:7077" and cmd[4].endswith("submit_entry.py") and cmd[5:] == ["extract", *rest]


def test_an_unknown_spark_profile_is_one_line_and_exit_2(tmp_path, capsys):
    assert cli.main(["dedup", "--lake", str(tmp_path), "--spark-profile", "nope"]) == 2
    assert "no Spark profile 'nope'" in capsys.readouterr().err


def test_search_without_an_index_says_what_to_run(tmp_path, capsys):
    assert cli.main(["search", "--lake", str(tmp_path), "a red circle"]) == 2
    assert "run jobs/index.py" in capsys.readouterr().err


def test_local_run_in_process_lists_the_units(spark, sample_crawl, tmp_path, capsys):
    crawl = Path(sample_crawl["root"])
    rc = cli.main(["extract", "--local", "--lake", str(tmp_path / "lake"), "--input", str(crawl / "wat.paths.gz"),
                   "--input-base-url", f"{crawl}/", "--dry-run"])
    assert rc == 0
    assert "units" in capsys.readouterr().out.lower()


def test_console_script_and_python_m_run_a_job_through_spark_submit(sample_crawl, tmp_path):
    """The installed ``l5s`` starts spark-submit, which runs the job in its own driver; ``python -m`` is the same."""
    crawl = Path(sample_crawl["root"])
    lake = tmp_path / "lake"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYSPARK_GATEWAY")}
    l5s = BIN / "l5s"
    cmd = [str(l5s)] if l5s.exists() else [sys.executable, "-m", "laion5b_spark"]
    done = subprocess.run([*cmd, "extract", "--lake", str(lake), "--input", str(crawl / "wat.paths.gz"),
                           "--input-base-url", f"{crawl}/", "--config", str(ROOT / "conf/pipeline/sample.toml")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "succeeded" in done.stdout + done.stderr
    assert any((lake / "pairs" / "data").iterdir())
    again = subprocess.run([sys.executable, "-m", "laion5b_spark", "describe", str(lake), "--check", "--rows", "0"],
                           capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]


def test_a_missing_profile_file_is_one_line_and_exit_2_before_anything_is_printed(tmp_path, capsys):
    assert cli.main(["dedup", "--print-config", "--spark-profile", str(tmp_path / "nope.conf")]) == 2
    out = capsys.readouterr()
    assert out.out == "" and "nope.conf does not exist" in out.err
