"""Fixtures of the packaging tests: the built artefacts and a fresh virtualenv.

These tests build the sdist and the wheel, install the wheel (not the checkout)
into a new virtualenv with ``constraints.txt``, and run real servers from that
install. They run once per ``make test``, not once per broker. Nothing here is
optional: a missing tool or service fails the test in CI (``CI=true``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).parent
CONSTRAINTS = ROOT / "constraints.txt"
IN_CI = os.environ.get("CI", "").lower() == "true"
#: The dev server module run by the smoke test (``--check``); one place to change
#: should it move (e.g. to collective.plonecelery.devtools.devserver).
DEVSERVER_MODULE = "collective.plonecelery.devtools.devserver"
DISTRIBUTION = "collective.plonecelery"


def clean_environment(**extra: str) -> dict[str, str]:
    """Our environment without anything pointing at the checkout or its venv."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "VIRTUAL_ENV", "ZOPE_CONF", "PYTHONHOME")
        and not key.startswith(("CELERY_", "PLONECELERY_"))
    }
    env.update(extra)
    return env


def run(args, *, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """``subprocess.run`` with text output; a failure shows the command's output."""
    completed = subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )
    if check and completed.returncode != 0:
        pytest.fail(
            f"{' '.join(map(str, args))} exited with {completed.returncode}:\n"
            f"{completed.stdout[-4000:]}\n{completed.stderr[-4000:]}"
        )
    return completed


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Dist:
    """The sdist and wheel of one ``python -m build``."""

    directory: Path
    sdist: Path
    wheel: Path
    version: str


@dataclass
class Venv:
    """A virtualenv made for a test, outside the source tree."""

    path: Path

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    @property
    def python(self) -> Path:
        return self.bin("python")


@pytest.fixture(scope="session")
def dist(tmp_path_factory) -> Dist:
    """``python -m build`` of the checkout: the sdist, then the wheel built from it."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=out, timeout=300)
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    version = wheel.name.split("-")[1]
    return Dist(directory=out, sdist=sdist, wheel=wheel, version=version)


@pytest.fixture(scope="session")
def installed(tmp_path_factory, dist) -> Venv:
    """A new virtualenv with the wheel installed from its file name, as a release would be:

    ``pip install collective.plonecelery==VERSION -c constraints.txt`` (``--find-links``
    names the folder holding the wheel; everything else comes from pip's usual places).
    """
    venv = Venv(tmp_path_factory.mktemp("venv") / "venv")
    started = time.monotonic()
    run([sys.executable, "-m", "venv", venv.path])
    run(
        [
            venv.bin("pip"),
            "install",
            "-q",
            f"{DISTRIBUTION}=={dist.version}",
            "--find-links",
            dist.directory,
            "-c",
            CONSTRAINTS,
        ],
        cwd=venv.path.parent,
        env=clean_environment(),
        timeout=900,
    )
    print(f"installed the wheel into {venv.path} in {time.monotonic() - started:.0f} s")
    return venv
