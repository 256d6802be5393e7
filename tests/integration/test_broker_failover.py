"""Broker failover: Plone and a worker given Celery's failover list of two brokers.

Runs once, in the Redis run (two Redis servers of its own; RabbitMQ would need a second
node, which this machine cannot start cheaply). The drill itself is failover_drill.py,
run as a process of its own because it boots Zope on a database of its own. It kills the
first broker while it holds 10 undelivered messages, then queues 10 more.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BROKER
from conftest import IN_CI

HERE = Path(__file__).parent
BATCH = 10

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(BROKER != "redis", reason="runs once, in the Redis run"),
]


def run_drill(base_dir: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, str(HERE / "failover_drill.py"), str(base_dir)],
        capture_output=True,
        text=True,
        timeout=500,
        env={k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "PLONECELERY_"))},
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("FAILOVER ")]
    assert completed.returncode == 0 and lines, (completed.stdout + completed.stderr)[-5000:]
    return json.loads(lines[-1].removeprefix("FAILOVER "))


def test_first_broker_killed_nothing_lost_nothing_doubled(tmp_path):
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (the drill starts two of its own)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    report = run_drill(tmp_path)
    print("broker failover:", json.dumps({k: v for k, v in report.items() if k != "final"}))

    first, second = (url.rsplit(":", 1)[1].split("/")[0] for url in report["brokers"].split(";"))
    # Every task ran, once: before the kill, the ones lost with the first broker, after it.
    assert len(report["final"]) == 3 * BATCH
    assert set(report["final"].values()) == {1}, report["final"]
    # The messages that died with the first broker came back through the outbox relay,
    # which the worker ran against the second one...
    assert report["relayed"]["lost"] == BATCH
    # ...while Plone's own sends after the kill went to the second broker at once.
    assert report["relayed"]["after"] == 0
    assert report["relayed"]["before"] == 0
    assert report["worker_alive"]
    lines = "\n".join(report["worker_broker_lines"])
    assert f"Connected to redis://:**@127.0.0.1:{first}/0" in lines
    assert f"Connected to redis://:**@127.0.0.1:{second}/0" in lines
