"""A task over TLS to a real Redis (``rediss://``, issue 9 D); a wrong CA fails at start-up.

The TLS Redis is started here (redis-server --tls-port, throwaway CA and server certificate
made with cryptography), so the test runs once, in the Redis run of the matrix.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import subprocess
import time
import uuid

import pytest
from celery import Celery
from conftest import BROKER
from conftest import IN_CI
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from collective.plonecelery.devtools import instance

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(BROKER != "redis", reason="the TLS broker is a Redis of the test's own"),
]

RUN = uuid.uuid4().hex[:6]
QUEUE = f"plonecelery-tls-{RUN}"


def _name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem_key(key):
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_ca(directory, cn):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{cn}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert, path


def make_server_cert(directory, ca_key, ca_cert):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(_pem_key(key))
    return directory / "server.pem", directory / "server.key"


def wait_for_tls_redis(port, ca_path, proc, timeout=30):
    """PING over TLS until it answers (a bare TCP probe upsets redis-server 7.0's TLS port)."""
    import redis

    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, "redis-server exited"
        try:
            client = redis.Redis(
                host="127.0.0.1", port=port, ssl=True, ssl_ca_certs=str(ca_path), socket_timeout=2
            )
            if client.ping():
                client.close()
                return
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):
    server = shutil.which("redis-server")
    if server is None:
        message = "redis-server is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    base = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert, ca_path = make_ca(base, "test-ca")
    _, _, wrong_ca = make_ca(base, "wrong-ca")
    cert, key = make_server_cert(base, ca_key, ca_cert)
    port = instance.free_port()
    proc = subprocess.Popen(
        [
            server,
            "--port", "0",
            "--tls-port", str(port),
            "--tls-cert-file", str(cert),
            "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca_path),
            "--tls-auth-clients", "no",
            "--save", "",
            "--appendonly", "no",
            "--bind", "127.0.0.1",
            "--dir", str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for_tls_redis(port, ca_path, proc)
        yield {"url": f"rediss://127.0.0.1:{port}/0", "ca": str(ca_path), "wrong_ca": str(wrong_ca)}
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def tls_option(ca):
    return json.dumps({"ssl_cert_reqs": "CERT_REQUIRED", "ssl_ca_certs": ca})


def start(harness, tls_redis, ca, log):
    env = {**os.environ, **harness.environment, **harness.worker_env}
    env["CELERY_BROKER_URL"] = tls_redis["url"]
    env["CELERY_BROKER_USE_SSL"] = tls_option(ca)
    return instance.start_worker(
        zope_conf=harness.zope_conf,
        env=env,
        args=("-l", "info", "-c", "1", "-Q", QUEUE),
        log_file=log,
    )


def test_a_task_runs_over_tls(harness, tls_redis, monkeypatch):
    import ssl

    # Celery prefers $CELERY_BROKER_URL (the session's broker, set by the harness) to
    # the broker= argument: without this the sender would talk TLS to a plain Redis.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)

    log = harness.log_dir / f"tls-worker-{RUN}.log"
    worker = start(harness, tls_redis, tls_redis["ca"], log)
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text(errors="replace"):
            assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        sender = Celery(
            "tls-sender",
            broker=tls_redis["url"],
            broker_use_ssl={"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": tls_redis["ca"]},
            backend=harness.environment["CELERY_RESULT_BACKEND"],
        )
        envelope = {"site": harness.site_path, "user": "admin", "unrestricted": False}
        result = sender.send_task(
            "sample_tasks.whoami", queue=QUEUE, headers={"plonecelery": envelope}
        )
        answer = result.get(timeout=60)
        assert answer["user"] == "admin"
    finally:
        instance.stop_process(worker)


def test_a_wrong_ca_stops_the_worker_with_a_clear_error(harness, tls_redis):
    log = harness.log_dir / f"tls-wrong-ca-{RUN}.log"
    started = time.monotonic()
    try:
        worker = start(harness, tls_redis, tls_redis["wrong_ca"], log)
    except RuntimeError:
        worker = None
    if worker is not None:
        try:
            assert worker.wait(timeout=60) != 0
        finally:
            instance.stop_process(worker)
    assert time.monotonic() - started < 60
    text = log.read_text(errors="replace")
    assert "TLS to the broker failed" in text and "certificate verify failed" in text, text[-2000:]
