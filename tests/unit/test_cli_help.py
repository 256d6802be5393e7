"""``plonecelery ... --help`` answers without zope.conf, ZEO or Zope."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PLONECELERY = Path(sys.executable).parent / "plonecelery"

#: Runs main() and tells whether Zope was imported on the way.
PROBE = """
import sys
from collective.plonecelery.cli import main
code = main(sys.argv[1:])
print("ZOPE-IMPORTED" if "Zope2" in sys.modules else "ZOPE-NOT-IMPORTED")
sys.exit(code)
"""


def environment(**extra):
    env = {key: value for key, value in os.environ.items() if key != "ZOPE_CONF"}
    return {**env, **extra}


def run(*args, env=None, probe=False):
    argv = [sys.executable, "-c", PROBE, *args] if probe else [str(PLONECELERY), *args]
    return subprocess.run(
        argv, env=env or environment(), capture_output=True, text=True, timeout=120, cwd="/"
    )


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["--zope-conf", "/no/such.conf", "--help"]])
def test_top_level_help(args):
    completed = run(*args)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("usage: plonecelery [--zope-conf ZOPE_CONF] COMMAND")
    assert "deadletters" in completed.stdout and "import" in completed.stdout


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("worker", "Usage: plonecelery worker [OPTIONS]"),
        ("beat", "Usage: plonecelery beat [OPTIONS]"),
        ("inspect", "Usage: plonecelery inspect [OPTIONS]"),
        ("deadletters", "usage: plonecelery deadletters"),
        ("import", "usage: plonecelery import"),
    ],
)
def test_command_help_without_zope(command, expected):
    completed = run(command, "--help", probe=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert expected in completed.stdout
    assert "ZOPE-NOT-IMPORTED" in completed.stdout


def test_worker_help_ignores_zope_conf_in_the_environment(tmp_path):
    """Even with $ZOPE_CONF set (to a file that would not boot), help boots nothing."""
    broken = tmp_path / "zope.conf"
    broken.write_text("this is not a zope.conf\n")
    completed = run("worker", "--help", env=environment(ZOPE_CONF=str(broken)), probe=True)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "--concurrency" in completed.stdout
    assert "ZOPE-NOT-IMPORTED" in completed.stdout


def test_deadletters_subcommand_help():
    completed = run("deadletters", "retry", "-h")
    assert completed.returncode == 0, completed.stderr
    assert "usage: plonecelery deadletters retry" in completed.stdout


def test_bad_zope_conf_is_one_clear_line():
    completed = run("--zope-conf", "/no/such/zope.conf", "worker", "-l", "info")
    assert completed.returncode == 2
    lines = completed.stderr.strip().splitlines()
    assert lines == [
        "plonecelery: no such zope.conf: /no/such/zope.conf "
        "(pass --zope-conf with your instance's etc/zope.conf)."
    ]


def test_bad_zope_conf_from_the_environment():
    completed = run("worker", env=environment(ZOPE_CONF="/no/such/zope.conf"))
    assert completed.returncode == 2
    assert "Traceback" not in completed.stderr
    assert "no such zope.conf: /no/such/zope.conf" in completed.stderr


def test_no_zope_conf_says_what_to_do():
    completed = run("worker")
    assert completed.returncode == 2
    assert "--zope-conf" in completed.stderr
