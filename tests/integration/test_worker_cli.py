"""The worker command line and pools: plonecelery, celery -A, solo and threads."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest
import sample_tasks
import transaction
from conftest import BROKER
from conftest import plonecelery_cli

from collective.plonecelery.devtools import instance
from collective.plonecelery.devtools.instance import bin_path

pytestmark = pytest.mark.timeout(300)

TIMEOUT = 60


@pytest.mark.parametrize("pool", ["solo", "threads"])
def test_other_pools_run_zope_tasks(harness, tmp_path, pool):
    """A second worker with another pool, on a queue of its own."""
    queue = f"pool-{pool}-{uuid.uuid4().hex[:6]}"
    log_file = tmp_path / f"{pool}.log"
    env = {**os.environ, **harness.environment, **harness.worker_env}
    worker = instance.start_worker(
        zope_conf=harness.zope_conf,
        env=env,
        args=("-l", "info", "-P", pool, "-c", "2", "-Q", queue, "-n", f"{queue}@%h"),
        log_file=log_file,
    )
    try:
        with harness.session() as portal:
            results = [
                sample_tasks.create_document.apply_async(
                    (portal, f"{queue}-{i}", f"made by the {pool} pool"), queue=queue
                )
                for i in range(3)
            ]
            seen = sample_tasks.whoami.apply_async(queue=queue)
            transaction.commit()
        assert [r.get(timeout=TIMEOUT) for r in results] == [f"{queue}-{i}" for i in range(3)]
        assert seen.get(timeout=TIMEOUT)["user"] == "admin"
        # Its presence, without any broadcast: the main process runs the tasks and beats.
        document = json.loads(plonecelery_cli(harness, "workers", "--json"))
        mine = [p for p in document["processes"] if p["nodename"].startswith(f"{queue}@")]
        assert [(p["pool"], p["pid"], p["alive"]) for p in mine] == [(pool, worker.pid, True)]
    finally:
        instance.stop_process(worker)
    assert f"{queue}@" in log_file.read_text()
    document = json.loads(plonecelery_cli(harness, "workers", "--json", "--all"))
    mine = [p for p in document["processes"] if p["nodename"].startswith(f"{queue}@")]
    assert [p["stopped"] is not None for p in mine] == [True], "a clean stop is recorded"
    with harness.session() as portal:
        assert {f"{queue}-{i}" for i in range(3)} <= set(portal.objectIds())


@pytest.mark.skipif(BROKER == "sqlite", reason="remote control needs a broadcast-capable broker")
@pytest.mark.parametrize("command", ["plonecelery", "celery"])
def test_celery_tools_work_with_zope_conf(harness, command):
    """`plonecelery --zope-conf ... inspect` and `celery -A ...app inspect` with ZOPE_CONF."""
    env = {**os.environ, **harness.environment, **harness.worker_env}
    if command == "plonecelery":
        argv = [str(bin_path("plonecelery")), "--zope-conf", str(harness.zope_conf)]
    else:
        argv = [str(bin_path("celery")), "-A", "collective.plonecelery.app"]
        env["ZOPE_CONF"] = str(harness.zope_conf)
    completed = subprocess.run(
        [*argv, "inspect", "registered", "--timeout", "10"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    assert "sample_tasks.create_document" in completed.stdout
    assert "collective.plonecelery.outbox.relay_outbox" in completed.stdout


def test_plonecelery_without_zope_conf_says_what_to_do():
    env = {key: value for key, value in os.environ.items() if key != "ZOPE_CONF"}
    completed = subprocess.run(
        [str(bin_path("plonecelery")), "worker"], env=env, capture_output=True, text=True
    )
    assert completed.returncode == 2
    assert "--zope-conf" in completed.stderr
