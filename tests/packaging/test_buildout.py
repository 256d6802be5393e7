"""buildout.cfg builds a working ZEO server, Plone instance and worker.

From a copy of the checkout in a temporary directory, as an admin would:
``python3.11 -m venv . && bin/pip install zc.buildout -c constraints.txt``,
``bin/buildout``, then ``bin/zeoserver``, the site, ``bin/instance fg`` and
``bin/worker worker``; a task queued in the site runs in the worker.

Buildout gets its distributions the way pip does here: pip fetches them with its
own configuration (``pip config list``) into the session's wheelhouse, and
buildout's ``index`` and ``find-links`` point at that folder and at pip's own
find-links. No host name is written anywhere. Eggs are kept in CACHE between
runs, so only the first run on a machine unpacks every egg.
"""

from __future__ import annotations

import json
import shutil
import sys
import time

import httpx
import pytest
from conftest import CACHE
from conftest import CONSTRAINTS
from conftest import HERE
from conftest import ROOT
from conftest import clean_environment
from conftest import free_port
from conftest import pip_configuration
from conftest import port_open
from conftest import processes
from conftest import run
from conftest import spawn
from conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "var",
    "etc",
    "bin",
    "parts",
    "eggs",
    "develop-eggs",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "_build",
    ".installed.cfg",
)


def local_cfg(*, wheelhouse, zeo_port: int, http_port: int) -> str:
    """A local.cfg extending buildout.cfg: pip's package sources, the test's ports."""
    pip = pip_configuration()
    find_links = [str(wheelhouse)] + [link.removeprefix("file://") for link in pip["find-links"]]
    eggs = CACHE / "buildout-eggs"
    eggs.mkdir(parents=True, exist_ok=True)
    return "\n".join(
        [
            "[buildout]",
            "extends = buildout.cfg",
            # Everything comes through pip: its wheelhouse is buildout's index.
            f"index = {wheelhouse.as_uri()}",
            "find-links =",
            *(f"    {link}" for link in find_links),
            f"eggs-directory = {eggs}",
            "",
            "[settings]",
            f"zeo-address = 127.0.0.1:{zeo_port}",
            f"http-address = {http_port}",
            f"server-url = http://localhost:{http_port}",
            "",
        ]
    )


def test_buildout_zeoserver_instance_worker(tmp_path, wheelhouse):
    timings = {}
    started = time.monotonic()
    project = tmp_path / "project"
    shutil.copytree(ROOT, project, ignore=IGNORE)
    assert not project.is_relative_to(ROOT)
    zeo_port, http_port = free_port(), free_port()
    (project / "local.cfg").write_text(
        local_cfg(wheelhouse=wheelhouse, zeo_port=zeo_port, http_port=http_port)
    )
    env = clean_environment()
    run([sys.executable, "-m", "venv", project], cwd=project)
    run(
        [project / "bin" / "pip", "install", "-q", "-c", CONSTRAINTS, "zc.buildout"]
        + ["--no-index", "--find-links", wheelhouse],
        cwd=project,
        env=env,
    )
    buildout = run(
        [project / "bin" / "buildout", "-c", "local.cfg"], cwd=project, env=env, timeout=1500
    )
    timings["buildout"] = time.monotonic() - started
    assert "Versions had to be automatically picked" not in buildout.stdout, buildout.stdout
    for script in ("zeoserver", "instance", "worker", "zopepy"):
        assert (project / "bin" / script).exists(), buildout.stdout[-3000:]
    zope_conf = project / "parts" / "instance" / "etc" / "zope.conf"
    conf = zope_conf.read_text()
    assert "server-sync on" in conf and "<clientstorage>" in conf
    assert "CELERY_BROKER_URL sqla+sqlite:///" in conf

    log_dir = project / "var" / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = {name: log_dir / f"test-{name}.log" for name in ("zeo", "instance", "worker")}
    task_env = clean_environment(
        CELERY_IMPORTS="ship_tasks", PYTHONPATH=str(HERE), PLONECELERY_OUTBOX_RELAY_INTERVAL="1"
    )
    with processes() as started_processes:
        started_processes.append(
            spawn([project / "bin" / "zeoserver", "fg"], log=logs["zeo"], cwd=project, env=env)
        )
        wait_for(
            lambda: port_open(zeo_port), what="ZEO did not listen", timeout=60, logs=[logs["zeo"]]
        )
        run(
            [project / "bin" / "zopepy", "-m", "collective.plonecelery.devtools.instance"]
            + ["create-site", "--zope-conf", zope_conf, "--admin-password", "admin"],
            cwd=project,
            env=env,
            timeout=600,
        )
        timings["site"] = time.monotonic() - started
        started_processes.append(
            spawn([project / "bin" / "instance", "fg"], log=logs["instance"], cwd=project, env=env)
        )
        started_processes.append(
            spawn(
                [project / "bin" / "worker", "worker", "-l", "info", "-c", "1"],
                log=logs["worker"],
                cwd=project,
                env=task_env,
            )
        )
        wait_for(
            lambda: port_open(http_port),
            what="bin/instance did not listen",
            timeout=180,
            logs=[logs["instance"]],
        )
        assert httpx.get(f"http://127.0.0.1:{http_port}/Plone", timeout=60).status_code == 200
        wait_for(
            lambda: "ready." in logs["worker"].read_text(errors="replace"),
            what="bin/worker was not ready",
            timeout=180,
            logs=[logs["worker"]],
        )
        queued = run(
            [project / "bin" / "zopepy", HERE / "queue_tasks.py", zope_conf, "/Plone"],
            cwd=project,
            env=task_env,
            timeout=300,
        )
        timings["task"] = time.monotonic() - started
    result = json.loads(queued.stdout.strip().splitlines()[-1])
    assert result["created"]["user"] == "admin"
    assert result["created"]["path"].startswith("/Plone/doc-")
    assert result["retitled"] == {"title": "Retitled by a worker", "user": "admin"}
    # The buildout's develop egg: the copy, not the checkout.
    assert result["package"].startswith(str(project / "src")), result["package"]
    worker_log = logs["worker"].read_text(errors="replace")
    assert "ship_tasks.create_document" in worker_log
    assert "Ignoring CELERY_" not in worker_log
    timings["total"] = time.monotonic() - started
    print(
        "buildout test timings (s from start): "
        + json.dumps({k: round(v) for k, v in timings.items()})
    )
