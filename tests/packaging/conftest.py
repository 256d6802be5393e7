"""Fixtures of the packaging tests: the built artefacts and a fresh virtualenv.

These tests build the sdist and the wheel, install the wheel (not the checkout)
into a new virtualenv with ``constraints.txt``, and run real servers from that
install. They run once per ``make test``, not once per broker. Nothing here is
optional: a missing tool or service fails the test in CI (``CI=true``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
#: What a buildout of buildout.cfg needs besides the add-on itself.
BUILDOUT_EXTRAS = ("Plone", "plone.recipe.zeoserver", "plone.recipe.zope2instance", "zc.recipe.egg")
#: Downloads and buildout eggs kept between runs (keyed by constraints.txt and setup.py).
CACHE = Path(
    os.environ.get("PLONECELERY_TEST_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    / "collective.plonecelery-tests"
)


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


def pip_configuration() -> dict[str, list[str]]:
    """pip's index-url, extra-index-url and find-links, as pip itself sees them now
    (``pip config list``: /etc/pip.conf, /etc/xdg/pip, ~/.config/pip, PIP_* variables)."""
    completed = run([sys.executable, "-m", "pip", "config", "list"], timeout=60)
    found: dict[str, list[str]] = {"index-url": [], "extra-index-url": [], "find-links": []}
    for line in completed.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in found:
            for item in value.strip().strip("'\"").split():
                if item not in found[name]:
                    found[name].append(item)
    return found


def stop(process: subprocess.Popen | None, timeout: float = 30) -> None:
    """SIGTERM to the process group (started with start_new_session), then SIGKILL."""
    if process is None:
        return
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
            # Leftovers of the group (pool processes, zdaemon's child) go too.
            os.killpg(process.pid, signal.SIGKILL)
        except subprocess.TimeoutExpired:
            continue
        except ProcessLookupError:
            pass
        return


@contextmanager
def processes() -> Iterator[list[subprocess.Popen]]:
    """A list to append started processes to; all are stopped, last first, on exit."""
    started: list[subprocess.Popen] = []
    try:
        yield started
    finally:
        for process in reversed(started):
            stop(process)


def spawn(args, *, log: Path, **kwargs) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(arg) for arg in args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            **kwargs,
        )


def wait_for(predicate, *, what: str, timeout: float, logs: list[Path] = ()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tails = "\n".join(
        f"--- {log}\n{log.read_text(errors='replace')[-3000:]}" for log in logs if log.exists()
    )
    pytest.fail(f"{what} within {timeout} s\n{tails}")


def port_open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


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
def wheelhouse(dist) -> Path:
    """Every distribution the add-on and buildout.cfg need, fetched by pip the way pip
    is configured here (``pip download ... -c constraints.txt``), plus the fresh wheel.

    Kept in CACHE between runs while constraints.txt and setup.py are unchanged.
    """
    key = hashlib.sha256(CONSTRAINTS.read_bytes() + (ROOT / "setup.py").read_bytes())
    folder = CACHE / f"wheelhouse-{key.hexdigest()[:16]}"
    if not (folder / ".complete").exists():
        started = time.monotonic()
        folder.mkdir(parents=True, exist_ok=True)
        run(
            [sys.executable, "-m", "pip", "download", "-q", "-d", folder, dist.wheel]
            + list(BUILDOUT_EXTRAS)
            + ["zc.buildout", "-c", CONSTRAINTS],
            env=clean_environment(),
            timeout=1200,
        )
        (folder / ".complete").write_text("")
        print(f"pip downloaded the wheelhouse in {time.monotonic() - started:.0f} s")
    for old in folder.glob("collective_plonecelery-*.whl"):
        old.unlink()
    shutil.copy2(dist.wheel, folder)
    return folder


@pytest.fixture(scope="session")
def installed(tmp_path_factory, dist, wheelhouse) -> Venv:
    """A new virtualenv with the wheel installed by name, as a release would be:

    ``pip install collective.plonecelery==VERSION -c constraints.txt``, from the
    wheelhouse pip filled (``--no-index --find-links``): not editable, not the checkout.
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
            "--no-index",
            "--find-links",
            wheelhouse,
            "-c",
            CONSTRAINTS,
        ],
        cwd=venv.path.parent,
        env=clean_environment(),
        timeout=900,
    )
    print(f"installed the wheel into {venv.path} in {time.monotonic() - started:.0f} s")
    return venv
