"""The sdist and the wheel carry every file the add-on needs, and install cleanly."""

from __future__ import annotations

import os
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from conftest import DEVSERVER_MODULE
from conftest import ROOT
from conftest import clean_environment
from conftest import free_port
from conftest import run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

PACKAGE = ROOT / "src" / "collective" / "plonecelery"


def package_data_files() -> set[str]:
    """Every non-Python file of the package in the checkout, relative to src/."""
    return {
        path.relative_to(ROOT / "src").as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file()
        and path.suffix not in (".py", ".pyc", ".pyo")
        and "__pycache__" not in path.parts
    }


def test_wheel_carries_zcml_profiles_templates_and_locales(dist):
    names = set(zipfile.ZipFile(dist.wheel).namelist())
    print(f"{dist.wheel.name}: {len(names)} files")
    expected = package_data_files()
    assert expected, "no data files found in the checkout?"
    assert expected <= names, f"missing from the wheel: {sorted(expected - names)}"
    assert "collective/plonecelery/configure.zcml" in names
    # Served at @plonecelery-openapi (restapi/openapi.py reads it from the package).
    assert "collective/plonecelery/restapi/openapi.yaml" in names
    assert sum(name.endswith("/configure.zcml") for name in names) >= 4
    assert {name for name in names if "/profiles/" in name and name.endswith(".xml")} >= {
        "collective/plonecelery/profiles/default/metadata.xml",
        "collective/plonecelery/profiles/uninstall/metadata.xml",
    }
    assert any(name.endswith(".pt") for name in names)
    assert any(name.endswith(".pot") for name in names)


def test_sdist_carries_package_data_and_what_setup_py_reads(dist):
    with tarfile.open(dist.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    expected = {"src/" + name for name in package_data_files()}
    assert expected <= names, f"missing from the sdist: {sorted(expected - names)}"
    assert {"README.rst", "CHANGES.rst", "setup.py", "MANIFEST.in", "constraints.txt"} <= names


def test_check_manifest():
    run([Path(sys.executable).parent / "check-manifest", "-v", ROOT], cwd=ROOT, timeout=300)


def test_twine_check(dist):
    completed = run(
        [Path(sys.executable).parent / "twine", "check", "--strict", dist.sdist, dist.wheel]
    )
    assert completed.stdout.count("PASSED") == 2, completed.stdout


def test_installed_package_is_the_wheel_not_the_checkout(installed, tmp_path):
    completed = run(
        [installed.python, "-c", "import collective.plonecelery as p; print(p.__file__)"],
        cwd=tmp_path,
        env=clean_environment(),
    )
    location = Path(completed.stdout.strip())
    assert location.is_relative_to(installed.path), location
    assert not location.is_relative_to(ROOT), location
    zcml = location.parent / "configure.zcml"
    assert zcml.is_file()


def test_smoke_devserver_check_from_the_installed_wheel(installed, tmp_path):
    """ZEO, a Plone site, a worker, the demo blog, a signed webhook, the imported post:
    all from the wheel's installation, run from a directory outside the checkout."""
    workdir = tmp_path / "smoke"
    workdir.mkdir()
    assert not workdir.is_relative_to(ROOT)
    env = clean_environment(
        PLONECELERY_ZEO_PORT=str(free_port()),
        PLONECELERY_HTTP_PORT=str(free_port()),
        PLONECELERY_BLOG_PORT=str(free_port()),
    )
    completed = run(
        [installed.python, "-m", DEVSERVER_MODULE, "--check"],
        cwd=workdir,
        env=env,
        timeout=600,
        check=False,
    )
    logs = "\n".join(
        f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted((workdir / "var" / "log").glob("*.log"))
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr + logs
    assert "OK: " in completed.stdout
    assert "the webhook's post was imported" in completed.stdout
    assert os.path.isdir(workdir / "var" / "filestorage")
