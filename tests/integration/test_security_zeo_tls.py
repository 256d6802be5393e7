"""ZEO over TLS (issue 9): Plone and a worker as TLS clients of a ZEO server that speaks
nothing else.

Runs once, in the RabbitMQ run (the broker does not matter; ZEO does). The drill is
zeo_tls_drill.py, run as a process of its own because it boots Zope on a database of
its own: throwaway CAs and certificates, the WorkerHarness with ``zeo_tls``, one task,
then three clients the server must refuse.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import BROKER
from conftest import require_service

HERE = Path(__file__).parent
BROKER_URL = "amqp://guest:guest@127.0.0.1:5672//"

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.zeo,
    pytest.mark.skipif(BROKER != "amqp", reason="runs once, in the RabbitMQ run"),
]


def run_drill(base_dir: Path) -> dict:
    completed = subprocess.run(
        [sys.executable, str(HERE / "zeo_tls_drill.py"), str(base_dir), BROKER_URL],
        capture_output=True,
        text=True,
        timeout=240,
        env={k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "PLONECELERY_"))},
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("ZEOTLS ")]
    assert completed.returncode == 0 and lines, (completed.stdout + completed.stderr)[-5000:]
    return json.loads(lines[-1].removeprefix("ZEOTLS "))


def test_a_worker_over_zeo_tls_and_clients_without_the_right_certificate_refused(tmp_path):
    require_service("amqp", 5672)
    report = run_drill(tmp_path)
    print("zeo over tls:", json.dumps({k: v for k, v in report.items() if "conf" not in k}))

    # The task the worker ran wrote through its TLS connection, once.
    assert report["runs"] == {"over-tls": 1}
    assert report["worker_alive"]
    # Both sides were configured for TLS: the server accepts nothing else...
    zeo_conf = report["zeo_conf"]
    assert "<ssl>" in zeo_conf and "authenticate " in zeo_conf and "zeo-ca.pem" in zeo_conf
    assert "<ssl>" in report["zope_conf"] and "server-hostname localhost" in report["zope_conf"]
    # ...so a client with a certificate of our CA gets in, within the probe's wait,
    assert report["right_client"] == "connected"
    # while one without TLS, one with another CA's certificate, and one that does not
    # trust the server's certificate never do.
    for probe in ("plain_client", "wrong_ca_client", "right_client_wrong_server_ca"):
        assert report[probe].startswith("ClientDisconnected"), (probe, report[probe])
    # Refused clients never reached ZEO's protocol: only the site creation, this
    # drill's Zope, the worker and the right-certificate probe did (the worker's
    # prefork child may open one more connection of its own).
    assert 4 <= report["zeo_handshakes"] <= 6, report["zeo_handshakes"]
