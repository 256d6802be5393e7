"""Real processes for integration tests: ZEO, a Plone site, a worker, a broker.

``PLONECELERY_TEST_BROKER`` picks the broker: ``sqlite`` (default, embedded),
``redis``, ``amqp``, or the SQLAlchemy transport on a real database, ``postgresql``
or ``mysql`` (MariaDB; a fresh database per run, dropped at the end, holds the
messages and the results). ``PLONECELERY_TEST_DATABASE`` picks the ZODB storage:
``zeo`` (default) or ``relstorage`` (on a fresh PostgreSQL database; tests marked
``zeo`` are skipped). Outside CI a service that is not running skips the tests
that need it; in CI (``CI=true``) they fail instead, since ``.ci/run`` starts
the services.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

HERE = Path(__file__).parent
BROKER = os.environ.get("PLONECELERY_TEST_BROKER", "sqlite")
DATABASE = os.environ.get("PLONECELERY_TEST_DATABASE", "zeo")
IN_CI = os.environ.get("CI", "").lower() == "true"
BROKER_PORTS = {"redis": 6379, "amqp": 5672, "postgresql": 5432, "mysql": 3306}
#: The brokers that are kombu's SQLAlchemy transport on a database server.
SQL_BROKERS = ("postgresql", "mysql")

# Tasks used by the tests live in sample_tasks.py next to this file; the
# worker finds them through CELERY_IMPORTS and PYTHONPATH, as add-ons would.
sys.path.insert(0, str(HERE))


def _reachable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def require_service(name: str, port: int) -> None:
    """Skip (outside CI) or fail (in CI) unless ``name`` listens on 127.0.0.1:``port``."""
    if not _reachable(port):
        message = f"{name} is not running on 127.0.0.1:{port}"
        if IN_CI:
            pytest.fail(message + " (CI must start it: see .ci/run)")
        pytest.skip(message)


def pytest_collection_modifyitems(config, items):
    if DATABASE == "zeo":
        return
    skip = pytest.mark.skip(reason=f"a ZEO drill; PLONECELERY_TEST_DATABASE={DATABASE}")
    for item in items:
        if item.get_closest_marker("zeo"):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def broker_database():
    """For the postgresql and mysql brokers: a fresh database, dropped at the end."""
    if BROKER not in SQL_BROKERS:
        yield None
        return
    require_service(BROKER, BROKER_PORTS[BROKER])
    from collective.plonecelery.devtools import instance

    kind = instance.PostgreSQLDatabase if BROKER == "postgresql" else instance.MySQLDatabase
    database = kind.fresh()
    yield database
    database.drop()


def broker_environment(base_dir: Path, database=None) -> dict[str, str]:
    """CELERY_* settings for the chosen broker, isolated from other runs.

    ``database``: the :func:`broker_database` of the postgresql and mysql brokers.
    """
    run = uuid.uuid4().hex[:8]
    sqlite_results = f"db+sqlite:///{base_dir}/results.sqlite"
    if BROKER == "redis":
        urls = {
            "CELERY_BROKER_URL": "redis://127.0.0.1:6379/9",
            "CELERY_RESULT_BACKEND": "redis://127.0.0.1:6379/10",
        }
        port = 6379
    elif BROKER == "amqp":
        urls = {
            "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
            "CELERY_RESULT_BACKEND": sqlite_results,
        }
        port = 5672
    elif BROKER in SQL_BROKERS:
        urls = {
            "CELERY_BROKER_URL": database.url("sqla+"),
            "CELERY_RESULT_BACKEND": database.url("db+"),
        }
        port = None  # broker_database checked it
    elif BROKER == "sqlite":
        urls = {
            "CELERY_BROKER_URL": f"sqla+sqlite:///{base_dir}/broker.sqlite",
            "CELERY_RESULT_BACKEND": sqlite_results,
        }
        port = None
    else:
        raise ValueError(
            f"PLONECELERY_TEST_BROKER={BROKER!r}: use sqlite, redis, amqp, postgresql or mysql"
        )
    if port is not None:
        require_service(BROKER, port)
    if BROKER in ("redis", "amqp"):
        # Not for the SQLAlchemy transport: it passes these to create_engine().
        urls["CELERY_BROKER_TRANSPORT_OPTIONS"] = json.dumps({"polling_interval": 0.1})
    return {
        **urls,
        # A queue of our own: messages left over by other runs never reach us.
        "CELERY_TASK_DEFAULT_QUEUE": f"plonecelery-test-{run}",
        # test_queues.py: its routed tasks go to a queue that only its own worker consumes.
        "CELERY_TASK_ROUTES": json.dumps(
            {"sample_tasks.routed_*": {"queue": f"plonecelery-test-{run}-imports"}}
        ),
        "CELERY_IMPORTS": "sample_tasks",
        "PLONECELERY_CONFLICT_BACKOFF": "0.05",
        "PLONECELERY_CONFLICT_RETRIES": "3",
        "PLONECELERY_SERVER_URL": "https://www.example.org",
        # Relay pending outbox records quickly, so broker outages heal fast.
        "PLONECELERY_OUTBOX_GRACE": "2",
        "PLONECELERY_OUTBOX_RELAY_INTERVAL": "1",
        # Blog sources' schedule runs every 5 s (test_import_schedule.py); a run that
        # finds nothing due is one read of the site's sources. Not every second: with the
        # relay's ticks, two messages a second are more than one busy SQLite-broker worker
        # takes, and the relay's ticks (which expire after 2 s here) then never run.
        "PLONECELERY_BLOG_SCHEDULE_INTERVAL": "5",
        # Workers beat every second; a started task nobody reports for 5 s is sent again.
        "PLONECELERY_WORKER_HEARTBEAT": "1",
        "PLONECELERY_OUTBOX_STARTED_TIMEOUT": "5",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }


@pytest.fixture(scope="session")
def broker_proxy():
    """For brokers on a server: the Plone side reaches the broker through a proxy
    that tests can stop (see brokerproxy.py); ``None`` for sqlite."""
    if BROKER == "sqlite":
        yield None
        return
    from brokerproxy import BrokerProxy

    proxy = BrokerProxy(target_port=BROKER_PORTS[BROKER]).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def harness(tmp_path_factory, broker_database, broker_proxy):
    """ZEO (or RelStorage) + Plone site + one prefork worker, this process as a client."""
    if DATABASE not in ("zeo", "relstorage"):
        raise ValueError(f"PLONECELERY_TEST_DATABASE={DATABASE!r}: use zeo or relstorage")
    if DATABASE == "relstorage":
        require_service("postgresql", BROKER_PORTS["postgresql"])
    base_dir = tmp_path_factory.mktemp("plonecelery")
    environment = broker_environment(base_dir, broker_database)
    worker_env = {}
    if broker_proxy is not None:
        # The worker talks to the broker directly (it can relay the outbox
        # while Plone cannot reach the broker); Plone goes through the proxy.
        worker_env["CELERY_BROKER_URL"] = environment["CELERY_BROKER_URL"]
        environment["CELERY_BROKER_URL"] = environment["CELERY_BROKER_URL"].replace(
            f":{BROKER_PORTS[BROKER]}/", f":{broker_proxy.port}/"
        )
    # The port plone_http will serve on, known before the worker starts: WebSub hubs call
    # the site back at PLONECELERY_PUBLIC_URL (test_websub.py).
    from collective.plonecelery.devtools import instance

    http_port = instance.free_port()
    environment["PLONECELERY_PUBLIC_URL"] = f"http://127.0.0.1:{http_port}/{{site}}"
    os.environ.update(environment)
    from collective.plonecelery.devtools.harness import WorkerHarness

    harness = WorkerHarness(
        base_dir=base_dir, environment=environment, worker_env=worker_env, database=DATABASE
    )
    harness.http_port = http_port
    try:
        harness.start()
    except Exception:
        harness.stop()
        raise
    yield harness
    harness.stop()
    if BROKER in ("redis", "amqp"):
        delete_queue(
            worker_env.get("CELERY_BROKER_URL") or environment["CELERY_BROKER_URL"],
            environment["CELERY_TASK_DEFAULT_QUEUE"],
        )


def delete_queue(broker_url: str, name: str) -> None:
    """Leave no messages of this run in the shared broker (relay ticks, test leftovers)."""
    from kombu import Connection

    with Connection(broker_url, connect_timeout=5) as connection:
        channel = connection.default_channel
        channel.queue_delete(name)
        channel.exchange_delete(name)


@pytest.fixture(scope="session")
def plone_http(harness):
    """A real Plone WSGI instance (waitress) on the harness's database; its base URL."""
    return harness.start_http(port=harness.http_port)


def plonecelery_cli(harness, *args) -> str:
    """Run ``plonecelery --zope-conf <the harness's zope.conf> ARGS``; its stdout."""
    from collective.plonecelery.devtools.instance import bin_path

    env = {**os.environ, **harness.environment, **harness.worker_env}
    completed = subprocess.run(
        [str(bin_path("plonecelery")), "--zope-conf", str(harness.zope_conf), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed.stdout


def pytest_terminal_summary(terminalreporter):
    """The hostile-input tallies (issue 9), when such tests ran: see hostile_support.py."""
    import hostile_support

    if hostile_support.TALLY:
        terminalreporter.write_sep("-", "hostile input (inputs / 5xx / writes / payloads / conns)")
        terminalreporter.write_line(hostile_support.tally_table())
    for line in hostile_support.NOTES:
        terminalreporter.write_line(line)
