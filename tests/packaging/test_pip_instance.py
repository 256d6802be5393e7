"""The Plone 6 pip way: the wheel installed by pip, an instance from ``mkwsgiinstance``
switched to a ZEO client, and ``plonecelery --zope-conf instance/etc/zope.conf worker``.

What an admin types (docs/installation.rst, "With pip")::

    python3.11 -m venv venv
    venv/bin/pip install collective.plonecelery -c constraints.txt
    venv/bin/mkwsgiinstance -d instance -u admin:admin
    # edit instance/etc/zope.conf: ZEO <clientstorage> with server-sync on,
    # CELERY_* in <environment>; write instance/etc/zeo.conf
    venv/bin/runzeo -C instance/etc/zeo.conf
    venv/bin/python -m collective.plonecelery.devtools.instance create-site \\
        --zope-conf instance/etc/zope.conf --admin-password admin
    venv/bin/runwsgi instance/etc/zope.ini
    venv/bin/plonecelery --zope-conf instance/etc/zope.conf worker -l info
"""

from __future__ import annotations

import json
import re

import pytest
from conftest import HERE
from conftest import clean_environment
from conftest import free_port
from conftest import port_open
from conftest import processes
from conftest import run
from conftest import spawn
from conftest import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def zeo_client_section(*, zeo_port: int, blob_dir) -> str:
    """What replaces mkwsgiinstance's FileStorage: ZEO's own client section."""
    return f"""<zodb_db main>
   <clientstorage>
     server 127.0.0.1:{zeo_port}
     storage 1
     blob-dir {blob_dir}
     shared-blob-dir on
     wait-timeout 30
     server-sync on
   </clientstorage>
   mount-point /
</zodb_db>"""


def make_zeo_client(zope_conf, *, zeo_port: int, blob_dir, environment: dict[str, str]) -> None:
    """The admin's edit of mkwsgiinstance's zope.conf, done as text."""
    text = zope_conf.read_text()
    text, count = re.subn(
        r"<zodb_db main>.*?</zodb_db>",
        zeo_client_section(zeo_port=zeo_port, blob_dir=blob_dir),
        text,
        count=1,
        flags=re.S,
    )
    assert count == 1, "mkwsgiinstance's zope.conf has no <zodb_db main> section?"
    lines = "\n".join(f"  {name} {value}" for name, value in environment.items())
    # The section itself, not the commented-out example above it.
    text, count = re.subn(
        r"^<environment>\n", f"<environment>\n{lines}\n", text, count=1, flags=re.M
    )
    assert count == 1, "mkwsgiinstance's zope.conf has no <environment> section?"
    zope_conf.write_text("%import ZEO\n" + text)


def test_pip_install_mkwsgiinstance_and_worker(installed, tmp_path):
    home = tmp_path / "site"
    home.mkdir()
    env = clean_environment()
    run(
        [installed.bin("mkwsgiinstance"), "-d", home / "instance", "-u", "admin:admin"],
        cwd=home,
        env=env,
    )
    var = home / "instance" / "var"
    (var / "blobstorage").mkdir(parents=True, exist_ok=True)
    zeo_port = free_port()
    zope_conf = home / "instance" / "etc" / "zope.conf"
    make_zeo_client(
        zope_conf,
        zeo_port=zeo_port,
        blob_dir=var / "blobstorage",
        environment={
            "CELERY_BROKER_URL": f"sqla+sqlite:///{var}/celery-broker.sqlite",
            "CELERY_RESULT_BACKEND": f"db+sqlite:///{var}/celery-results.sqlite",
            # collective.celery style values are fine too:
            "CELERY_ACCEPT_CONTENT": "['json']",
        },
    )
    zeo_conf = home / "instance" / "etc" / "zeo.conf"
    zeo_conf.write_text(
        f"""<zeo>
  address 127.0.0.1:{zeo_port}
</zeo>
<filestorage 1>
  path {var}/Data.fs
  blob-dir {var}/blobstorage
</filestorage>
"""
    )
    task_env = clean_environment(CELERY_IMPORTS="ship_tasks", PYTHONPATH=str(HERE))
    zeo_log, worker_log = home / "zeo.log", home / "worker.log"
    with processes() as started:
        started.append(spawn([installed.bin("runzeo"), "-C", zeo_conf], log=zeo_log, env=env))
        wait_for(
            lambda: port_open(zeo_port), what="runzeo did not listen", timeout=60, logs=[zeo_log]
        )
        run(
            [installed.python, "-m", "collective.plonecelery.devtools.instance", "create-site"]
            + ["--zope-conf", zope_conf, "--admin-password", "admin"],
            cwd=home,
            env=env,
            timeout=600,
        )
        started.append(
            spawn(
                [installed.bin("plonecelery"), "--zope-conf", "instance/etc/zope.conf", "worker"]
                + ["-l", "info", "-c", "1"],
                log=worker_log,
                cwd=home,
                env=task_env,
            )
        )
        wait_for(
            lambda: "ready." in worker_log.read_text(errors="replace"),
            what="the worker was not ready",
            timeout=180,
            logs=[worker_log],
        )
        queued = run(
            [installed.python, HERE / "queue_tasks.py", zope_conf, "/Plone"],
            cwd=home,
            env=task_env,
            timeout=300,
        )
    result = json.loads(queued.stdout.strip().splitlines()[-1])
    assert result["package"].startswith(str(installed.path)), result["package"]
    assert result["created"]["user"] == "admin"
    assert result["retitled"] == {"title": "Retitled by a worker", "user": "admin"}
    log = worker_log.read_text(errors="replace")
    assert "ship_tasks.retitle_as_admin" in log
    assert "Ignoring CELERY_" not in log
