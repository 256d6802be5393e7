"""A task over TLS to a real broker (issue 9 D); a wrong CA stops the worker at start-up.

The TLS brokers are started here, with a throwaway CA and server certificate (tls_certs.py),
so each test runs once per broker of the matrix: in the Redis run against a
``redis-server --tls-port`` of its own (``rediss://``), in the RabbitMQ run against a second
RabbitMQ node of its own that listens for TLS only (``amqps://``). The system's RabbitMQ
on 5672 is left alone: the node has its own node name, ports, data, logs and Erlang cookie.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from celery import Celery
from conftest import BROKER
from conftest import IN_CI
from tls_certs import make_ca
from tls_certs import make_leaf

from collective.plonecelery.devtools import instance
from collective.plonecelery.devtools.instance.processes import spawn

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        BROKER not in ("redis", "amqp"), reason="TLS brokers of the test's own: Redis, RabbitMQ"
    ),
]

RUN = uuid.uuid4().hex[:6]
QUEUE = f"plonecelery-tls-{RUN}"
#: Debian's own scripts; /usr/sbin's wrappers switch to the rabbitmq user and its home.
RABBITMQ_BIN = Path("/usr/lib/rabbitmq/bin")
#: Giving up on a broker that does not answer TLS: it took 3.5-4 s here.
START_TIMEOUT = 60


def missing(message):
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


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
        missing("redis-server is not installed")
    base = tmp_path_factory.mktemp("tls")
    ca_key, ca_cert, ca_path = make_ca(base, "test-ca")
    _, _, wrong_ca = make_ca(base, "wrong-ca")
    cert, key = make_leaf(base, "server", ca_key, ca_cert, server=True)
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
        yield {
            "url": f"rediss://127.0.0.1:{port}/0",
            "ca": str(ca_path),
            "wrong_ca": str(wrong_ca),
            # CELERY_BROKER_USE_SSL: redis-py's names, with the ssl_ prefix.
            "options": lambda ca: {"ssl_cert_reqs": "CERT_REQUIRED", "ssl_ca_certs": ca},
        }
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def wait_for_tls_amqp(port, ca_path, proc, timeout=START_TIMEOUT) -> float:
    """Log in as guest over TLS until the node lets us; the seconds it took."""
    import amqp

    started = time.monotonic()
    while True:
        assert proc.poll() is None, "rabbitmq-server exited"
        connection = amqp.Connection(
            f"127.0.0.1:{port}",
            ssl={"ca_certs": str(ca_path), "cert_reqs": ssl.CERT_REQUIRED},
            connect_timeout=2,
        )
        try:
            connection.connect()
        except Exception:
            connection.collect()
            # Refused while the node boots (a TLS error would be a broken test setup).
            if time.monotonic() - started > timeout:
                raise
            time.sleep(0.2)
        else:
            connection.close()
            return time.monotonic() - started


def rabbitmqctl(environment, *args, timeout=60):
    return subprocess.run(
        [RABBITMQ_BIN / "rabbitmqctl", "-n", environment["RABBITMQ_NODENAME"], *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def tls_rabbitmq(tmp_path_factory):
    """A second RabbitMQ node, TLS only (``listeners.tcp = none``), stopped at the end."""
    server = RABBITMQ_BIN / "rabbitmq-server"
    if not server.exists():
        missing(f"{server} is not installed (Debian's rabbitmq-server package)")
    base = tmp_path_factory.mktemp("tls-rabbitmq")
    ca_key, ca_cert, ca_path = make_ca(base, "test-ca")
    _, _, wrong_ca = make_ca(base, "wrong-ca")
    cert, key = make_leaf(base, "server", ca_key, ca_cert, server=True)
    port = instance.free_port()
    (base / "rabbitmq.conf").write_text(
        "listeners.tcp = none\n"
        f"listeners.ssl.default = 127.0.0.1:{port}\n"
        f"ssl_options.cacertfile = {ca_path}\n"
        f"ssl_options.certfile = {cert}\n"
        f"ssl_options.keyfile = {key}\n"
        "ssl_options.verify = verify_none\n"
        "ssl_options.fail_if_no_peer_cert = false\n"
    )
    (base / "enabled_plugins").write_text("[].\n")
    (base / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's (its NODENAME)
    home = base / "home"  # rabbitmq-server and rabbitmqctl share the cookie made here
    home.mkdir()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
        "HOME": str(home),
        "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
        "RABBITMQ_NODENAME": f"plonecelery-tls-{os.getpid()}@localhost",
        "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
        "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
        "RABBITMQ_LOG_BASE": str(base / "log"),
        # Not the system node's (5672 + 20000): Erlang distribution on a port of its own.
        "RABBITMQ_DIST_PORT": str(instance.free_port()),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
    }
    log = base / "rabbitmq-server.log"
    proc = spawn([server], env=environment, log_file=log, cwd=base)
    try:
        seconds = wait_for_tls_amqp(port, ca_path, proc)
        print(f"TLS RabbitMQ node {environment['RABBITMQ_NODENAME']}: TLS after {seconds:.1f}s")
        yield {
            "url": f"amqps://guest:guest@127.0.0.1:{port}//",
            "ca": str(ca_path),
            "wrong_ca": str(wrong_ca),
            "seconds": seconds,
            # CELERY_BROKER_USE_SSL: py-amqp's (Python's ssl) names; server_hostname null:
            # check the certificate against the URL's host (py-amqp checks no name without).
            "options": lambda ca: {
                "ca_certs": ca,
                "cert_reqs": "CERT_REQUIRED",
                "server_hostname": None,
            },
        }
    finally:
        stopped = rabbitmqctl(environment, "stop")
        # The node's processes (beam.smp and its helpers) are in the group of ours.
        instance.stop_process(proc)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.fixture(scope="module")
def tls_broker(request):
    """The TLS broker of this run's kind: Redis or RabbitMQ."""
    return request.getfixturevalue("tls_redis" if BROKER == "redis" else "tls_rabbitmq")


def start(harness, tls_broker, ca, log):
    env = {**os.environ, **harness.environment, **harness.worker_env}
    env["CELERY_BROKER_URL"] = tls_broker["url"]
    env["CELERY_BROKER_USE_SSL"] = json.dumps(tls_broker["options"](ca))
    return instance.start_worker(
        zope_conf=harness.zope_conf,
        env=env,
        args=("-l", "info", "-c", "1", "-Q", QUEUE, "-n", f"tls-{RUN}@%h"),
        log_file=log,
    )


def test_a_task_runs_over_tls(harness, tls_broker, monkeypatch):
    # Celery prefers $CELERY_BROKER_URL (the session's broker, set by the harness) to
    # the broker= argument: without this the sender would talk TLS to a plain broker.
    monkeypatch.delenv("CELERY_BROKER_URL", raising=False)

    log = harness.log_dir / f"tls-worker-{RUN}.log"
    worker = start(harness, tls_broker, tls_broker["ca"], log)
    try:
        deadline = time.monotonic() + 60
        while "ready." not in log.read_text(errors="replace"):
            assert worker.poll() is None, log.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        options = tls_broker["options"](tls_broker["ca"])
        options = {k: getattr(ssl, v) if k.endswith("cert_reqs") else v for k, v in options.items()}
        sender = Celery(
            "tls-sender",
            broker=tls_broker["url"],
            broker_use_ssl=options,
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


def test_a_wrong_ca_stops_the_worker_with_a_clear_error(harness, tls_broker):
    log = harness.log_dir / f"tls-wrong-ca-{RUN}.log"
    started = time.monotonic()
    try:
        worker = start(harness, tls_broker, tls_broker["wrong_ca"], log)
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
    # The hint names the options of this broker's client library.
    assert ("ca_certs in CELERY_BROKER_USE_SSL" in text) == (BROKER == "amqp"), text[-2000:]


@pytest.mark.skipif(BROKER != "amqp", reason="py-amqp's server_hostname")
def test_a_certificate_for_another_host_is_refused(tls_broker):
    """``server_hostname`` is checked: the certificate names localhost and 127.0.0.1 only."""
    from collective.plonecelery.brokertls import check_broker_tls
    from collective.plonecelery.config import settings_from_environ
    from collective.plonecelery.exceptions import ConfigurationError

    options = {**tls_broker["options"](tls_broker["ca"]), "server_hostname": "broker.example.org"}
    settings = settings_from_environ(
        {"CELERY_BROKER_URL": tls_broker["url"], "CELERY_BROKER_USE_SSL": json.dumps(options)}
    )
    with pytest.raises(ConfigurationError, match="not valid for 'broker.example.org'"):
        check_broker_tls(settings)
    # The same options with the URL's host connect.
    check_broker_tls(
        {**settings, "broker_use_ssl": {**settings["broker_use_ssl"], "server_hostname": None}}
    )
