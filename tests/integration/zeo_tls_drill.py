"""ZEO over TLS drill: a ZEO server that speaks TLS only, Plone and a worker as its clients.

Run by test_security_zeo_tls.py as a process of its own (it boots Zope, which the test
process has done already for another database)::

    python zeo_tls_drill.py BASE_DIR BROKER_URL

Makes a throwaway CA with a server certificate (localhost, 127.0.0.1) and a client
certificate, and a second CA with a client certificate of its own. Starts the
WorkerHarness with ``zeo_tls`` (ZEO, the site creation, this process and the worker
all on TLS), queues one ``count_run`` task from here and waits for its effect. While
the server runs it also tries two clients that must be refused: one without TLS and
one whose certificate the other CA signed.

Prints one JSON line (``ZEOTLS {...}``): the effect count, the outcome of the two
refused clients (and of one with a right certificate, the probe's control), zope.conf,
the server's zeo.conf and how many clients got as far as ZEO's handshake. Exit code 0
once the report is printed, whatever it says: the test asserts on it.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from tls_certs import make_ca  # noqa: E402 - next to this file
from tls_certs import make_leaf  # noqa: E402

TIMEOUT = 60
REFUSAL_WAIT = 5


def try_client(address: tuple[str, int], ssl_context=None) -> str:
    """Open a ZEO ClientStorage with a short wait; "connected" or the error it died of."""
    import ZEO

    started = time.monotonic()
    try:
        storage = ZEO.client(
            address,
            wait_timeout=REFUSAL_WAIT,
            ssl=ssl_context,
            ssl_server_hostname="localhost" if ssl_context else None,
        )
    except Exception as exc:  # ZEO raises ClientDisconnected when it never connects
        return f"{type(exc).__name__} after {time.monotonic() - started:.1f}s"
    storage.close()
    return "connected"


def client_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    return context


def main(base_dir: Path, broker_url: str) -> dict:
    from collective.plonecelery.devtools import instance

    certs = base_dir / "certs"
    certs.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert, ca = make_ca(certs, "zeo-ca")
    other_key, other_cert, other_ca = make_ca(certs, "other-ca")
    server_tls = instance.ZeoTLS(ca, *make_leaf(certs, "server", ca_key, ca_cert, server=True))
    client_tls = instance.ZeoTLS(ca, *make_leaf(certs, "client", ca_key, ca_cert, server=False))
    stranger = make_leaf(certs, "stranger", other_key, other_cert, server=False)

    environment = {
        "CELERY_BROKER_URL": broker_url,
        "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps({"polling_interval": 0.1}),
        "CELERY_RESULT_BACKEND": f"db+sqlite:///{base_dir}/results.sqlite",
        "CELERY_TASK_DEFAULT_QUEUE": f"plonecelery-zeotls-{uuid.uuid4().hex[:8]}",
        "CELERY_IMPORTS": "sample_tasks",
        "PLONECELERY_SERVER_URL": "https://www.example.org",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    os.environ.update(environment)
    from collective.plonecelery.devtools.harness import WorkerHarness

    harness = WorkerHarness(
        base_dir=base_dir,
        environment=environment,
        zeo_tls=(server_tls, client_tls),
        # A node name of its own: on RabbitMQ a second "celery@host" (the session's
        # worker runs too) cannot take the exclusive remote-control queue and exits.
        worker_args=("-l", "info", "-c", "1", "-P", "prefork", "-n", f"zeo-tls-{os.getpid()}@%h"),
    )
    report: dict = {}
    try:
        harness.start()
        import sample_tasks
        import transaction

        with harness.session():
            sample_tasks.count_run.delay("over-tls")
            transaction.commit()
        deadline = time.monotonic() + TIMEOUT
        while True:
            with harness.session() as portal:
                runs = dict(getattr(portal, "_plonecelery_test_runs", {}))
            if runs.get("over-tls") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(1)  # a duplicate would show up now
        with harness.session() as portal:
            report["runs"] = dict(getattr(portal, "_plonecelery_test_runs", {}))
        address = (harness.zeo.host, harness.zeo.port)
        # The probe itself works: a client with a right certificate gets in.
        report["right_client"] = try_client(
            address, client_context(ca, client_tls.certificate, client_tls.key)
        )
        report["plain_client"] = try_client(address)
        report["wrong_ca_client"] = try_client(address, client_context(ca, *stranger))
        # The other way round: our client certificate, but the server checked against the
        # other CA, as a client fooled into talking to an impostor would.
        report["right_client_wrong_server_ca"] = try_client(
            address, client_context(other_ca, client_tls.certificate, client_tls.key)
        )
        report["zeo_conf"] = harness.zeo.conf_path.read_text()
        report["zope_conf"] = harness.zope_conf.read_text()
        report["worker_alive"] = harness.worker.poll() is None
    finally:
        harness.stop()
    log = (harness.log_dir / "zeo.log").read_text(errors="replace")
    # Refused clients never get as far as ZEO's protocol handshake.
    report["zeo_handshakes"] = log.count("received handshake")
    return report


if __name__ == "__main__":
    report = main(Path(sys.argv[1]).absolute(), sys.argv[2])
    print("ZEOTLS " + json.dumps(report), flush=True)
