"""The local instance plumbing with real processes: ZEO, site creation, WSGI.

Also runs ``python -m collective.plonecelery.devtools.devserver --check`` end to end
once the ``plonecelery`` command can start a worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest
from conftest import BROKER

from collective.plonecelery.devtools import instance

pytestmark = [
    pytest.mark.timeout(300),
    # The instance tooling starts its own stack (make run's SQLite broker): one run is enough.
    pytest.mark.skipif(BROKER != "sqlite", reason="broker-independent: the SQLite run covers it"),
]

SITE_ID = "Plone"
TITLE = "Instance plumbing test site"


def get_until(url: str, *, expect: int = 200, timeout: float = 60, **kwargs) -> httpx.Response:
    """GET ``url`` until it answers ``expect`` (Zope may be reconnecting)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=35, **kwargs)
        except httpx.TransportError as exc:
            last = exc
        else:
            if response.status_code == expect:
                return response
            last = f"HTTP {response.status_code}"
        time.sleep(0.5)
    raise AssertionError(f"{url} did not answer {expect} within {timeout} s: {last}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """ZEO + zope.conf + a Plone site + a running WSGI server."""
    base = tmp_path_factory.mktemp("instance")
    var_dir = base / "var"
    logs = var_dir / "log"
    zeo = instance.start_zeo(var_dir=var_dir, log_file=logs / "zeo.log")
    wsgi = None
    try:
        zope_conf = instance.write_zope_conf(
            path=base / "etc" / "zope.conf",
            zeo_address=zeo.address,
            var_dir=var_dir,
            blob_dir=zeo.blob_dir,
            environment={
                "PLONECELERY_SERVER_URL": "http://localhost:8080",
                "CELERY_BROKER_URL": "redis://:pa$$word@localhost:6379/0",
            },
        )
        created = [
            instance.create_site(
                zope_conf=zope_conf,
                site_id=SITE_ID,
                title=TITLE,
                admin_password="s3cret-$pass",
                log_file=logs / "create-site.log",
            )
            for _ in range(2)
        ]
        port = instance.free_port()
        zope_ini = instance.write_zope_ini(
            path=base / "etc" / "zope.ini", zope_conf=zope_conf, host="127.0.0.1", port=port
        )
        wsgi = instance.start_wsgi(
            zope_ini=zope_ini, host="127.0.0.1", port=port, log_file=logs / "wsgi.log"
        )
        yield {
            "zeo": zeo,
            "wsgi": wsgi,
            "created": created,
            "url": f"http://127.0.0.1:{port}/{SITE_ID}",
            "zope_conf": zope_conf,
            "logs": logs,
        }
    finally:
        instance.stop_process(wsgi)
        zeo.stop()


def test_create_site_is_idempotent(stack):
    assert stack["created"] == [True, False]


def test_zope_conf_carries_environment_and_zeo_client(stack):
    text = stack["zope_conf"].read_text()
    assert "PLONECELERY_SERVER_URL http://localhost:8080" in text
    assert f"server {stack['zeo'].address}" in text
    assert "shared-blob-dir on" in text


def test_zope_reads_environment_verbatim(stack):
    # Parse zope.conf with Zope's own schema, in a fresh process.
    code = (
        "import json, sys\n"
        "from Zope2.Startup.options import ZopeWSGIOptions\n"
        "opts = ZopeWSGIOptions(configfile=sys.argv[1])()\n"
        "print(json.dumps(opts.configroot.environment))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(stack["zope_conf"])],
        capture_output=True,
        text=True,
        check=True,
    )
    environment = json.loads(result.stdout.splitlines()[-1])
    assert environment["CELERY_BROKER_URL"] == "redis://:pa$$word@localhost:6379/0"
    assert environment["PLONECELERY_SERVER_URL"] == "http://localhost:8080"


def test_site_answers(stack):
    response = get_until(stack["url"])
    assert TITLE in response.text


def test_restapi_answers(stack):
    response = get_until(stack["url"] + "/++api++/", headers={"Accept": "application/json"})
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["@id"] == stack["url"]


def test_admin_can_log_in(stack):
    url = stack["url"] + "/++api++/@users/admin"
    headers = {"Accept": "application/json"}
    response = get_until(url, headers=headers, auth=("admin", "s3cret-$pass"))
    assert response.json()["username"] == "admin"
    denied = httpx.get(url, headers=headers, auth=("admin", "wrong"))
    assert denied.status_code == 401


def test_wsgi_reconnects_after_zeo_restart(stack):
    zeo = stack["zeo"]
    old_pid = zeo.process.pid
    zeo.restart()
    assert zeo.process.pid != old_pid
    assert instance.port_is_open("127.0.0.1", zeo.port)
    response = get_until(stack["url"], timeout=60)
    assert TITLE in response.text
    assert stack["wsgi"].poll() is None
    # The same Zope process connected a second time, to the new server.
    wsgi_log = (stack["logs"] / "wsgi.log").read_text()
    assert "Reconnected to storage" in wsgi_log


def test_wait_for_port_reports_dead_process(tmp_path):
    log = tmp_path / "dead.log"
    log.write_text("boom: no such thing\n")
    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    proc.wait()
    with pytest.raises(RuntimeError, match=r"exited with code 3(.|\n)*boom"):
        instance.wait_for_port("127.0.0.1", instance.free_port(), process=proc, log_file=log)


def test_stop_process_kills_what_ignores_sigterm():
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout.readline().strip() == b"ready"
    started = time.monotonic()
    assert instance.stop_process(proc, timeout=1) == -9
    assert time.monotonic() - started < 10


def test_devserver_check(tmp_path):
    """`make run`'s main job on embedded defaults: a signed webhook to the site
    ends as imported content (SQLite broker, ZEO, Plone, worker, demo blog)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CELERY_", "PLONECELERY_"))
    }
    http_port = instance.free_port()
    env.update(
        PLONECELERY_ZEO_PORT=str(instance.free_port()),
        PLONECELERY_HTTP_PORT=str(http_port),
        PLONECELERY_BLOG_PORT=str(instance.free_port()),
    )
    result = subprocess.run(
        [sys.executable, "-m", "collective.plonecelery.devtools.devserver", "--check"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"http://localhost:{http_port}/Plone" in output
    assert "OK" in result.stdout
    assert f":{http_port}/Plone/news/welcome-to-the-demo-blog" in result.stdout
    password_file = tmp_path / "var" / "admin-password.txt"
    assert password_file.stat().st_mode & 0o777 == 0o600
    zope_conf = (tmp_path / "etc" / "zope.conf").read_text()
    assert f"sqla+sqlite:///{tmp_path}/var/celery-broker.sqlite" in zope_conf
    assert (tmp_path / "var" / "log" / "worker.log").exists()
    # Everything was stopped: the ports are free again.
    assert not instance.port_is_open("127.0.0.1", http_port)
    assert not instance.port_is_open("127.0.0.1", int(env["PLONECELERY_ZEO_PORT"]))


def test_bad_celery_setting_stops_the_worker_at_start_up(tmp_path):
    """A value that cannot be parsed fails start-up with a message naming it."""
    zeo = instance.start_zeo(var_dir=tmp_path / "var")
    try:
        conf = instance.write_zope_conf(
            path=tmp_path / "etc" / "zope.conf",
            zeo_address=zeo.address,
            var_dir=tmp_path / "var",
            blob_dir=zeo.blob_dir,
            environment={"CELERY_WORKER_PREFETCH_MULTIPLIER": "lots"},
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "PLONECELERY_"))}
        completed = subprocess.run(
            [str(instance.bin_path("plonecelery")), "--zope-conf", str(conf), "worker"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
    finally:
        zeo.stop()
    assert completed.returncode != 0
    assert "CELERY_WORKER_PREFETCH_MULTIPLIER" in completed.stderr
