"""Signed task messages end to end (issue 9, B and C): real ``plonecelery worker`` processes
with CELERY_SECURITY_* set, messages queued by Plone code or published by hand.

The session's regular (unsigned) worker is stopped for this module, so that only the signing
worker consumes and relays. It accepts nothing but ``auth`` content (``only_signed`` shows
it refusing an unsigned message), so every message it runs was signed: the tests below run
one down each send path (Plone code, the outbox relay, a conflict retry, a dead-letter
retry, the worker's periodic ticks, Celery beat, ``group()``). Needs a TCP broker (Redis,
RabbitMQ): skipped on the SQLite run.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import transaction
from celery.security.certificate import Certificate
from celery.security.certificate import FSCertStore
from celery.security.key import PrivateKey
from celery.security.serialization import SecureSerializer
from conftest import BROKER
from conftest import plonecelery_cli
from hostile_support import tally
from kombu import Connection
from kombu import Exchange
from kombu import Queue
from kombu.utils.json import dumps as json_dumps

from collective.plonecelery import keys
from collective.plonecelery.app import app
from collective.plonecelery.devtools import instance
from collective.plonecelery.devtools.instance.processes import spawn
from collective.plonecelery.dispatch import PendingMessages

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(BROKER == "sqlite", reason="signed messages are tested on TCP brokers"),
]

RUN = uuid.uuid4().hex[:6]
QUEUE = f"plonecelery-signed-{RUN}"
TASK = "sample_tasks.record_user"


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Key A (current), B (old: rotation), C (a stranger's). The store trusts A and B."""
    base = tmp_path_factory.mktemp("pki")
    made = {name: keys.create(base / name, days=30, cn=f"plonecelery-{name}") for name in "ABC"}
    store = base / "store"
    store.mkdir()
    for name in "AB":
        (store / f"{name}.pem").write_bytes(
            Path(made[name]["CELERY_SECURITY_CERTIFICATE"]).read_bytes()
        )
    for settings in made.values():
        settings["CELERY_SECURITY_CERT_STORE"] = str(store / "*.pem")
    return made


def serializer(settings) -> SecureSerializer:
    with (
        open(settings["CELERY_SECURITY_KEY"]) as key,
        open(settings["CELERY_SECURITY_CERTIFICATE"]) as cert,
    ):
        return SecureSerializer(
            PrivateKey(key.read()),
            Certificate(cert.read()),
            FSCertStore(settings["CELERY_SECURITY_CERT_STORE"]),
            "sha256",
        )


def broker_url(harness) -> str:
    return harness.worker_env.get("CELERY_BROKER_URL") or harness.environment["CELERY_BROKER_URL"]


@pytest.fixture(scope="module")
def signing_worker(harness, pki):
    """A worker that signs with A and trusts A and B, consuming QUEUE; regular worker off."""
    harness.stop_worker()
    default_queue = harness.environment["CELERY_TASK_DEFAULT_QUEUE"]
    log = harness.log_dir / f"signing-worker-{RUN}.log"
    env = {**os.environ, **harness.environment, **harness.worker_env, **pki["A"]}
    worker = instance.start_worker(
        zope_conf=harness.zope_conf,
        env=env,
        # The default queue too: relay requests (relay_outbox) travel there.
        args=("-l", "info", "-c", "1", "-P", "prefork", "-Q", f"{QUEUE},{default_queue}"),
        log_file=log,
    )
    try:
        wait_for(lambda: "ready." in log.read_text(errors="replace"), what="worker ready")
        yield log
    finally:
        instance.stop_process(worker)
        harness.start_worker()
        from conftest import delete_queue

        delete_queue(broker_url(harness), QUEUE)


def wait_for(predicate, *, timeout=60, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def runs(harness) -> dict:
    with harness.session(user="admin") as portal:
        return dict(getattr(portal, "_plonecelery_test_runs", {}) or {})


def envelope(harness, user="admin", unrestricted=False) -> dict:
    return {"site": harness.site_path, "user": user, "unrestricted": unrestricted}


def message(key, env, *, task_id=None, sealed=None):
    """Headers and body (protocol 2) of a record_user call; the body seals ``sealed``."""
    task_id = task_id or str(uuid.uuid4())
    headers = {
        "lang": "py",
        "task": TASK,
        "id": task_id,
        "root_id": task_id,
        "parent_id": None,
        "group": None,
        "retries": 0,
        "eta": None,
        "expires": None,
        "timelimit": [None, None],
        "argsrepr": repr((key,)),
        "kwargsrepr": "{}",
        "origin": "test",
        "ignore_result": False,
        "plonecelery": env,
    }
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    embed["plonecelery"] = env if sealed is None else sealed
    embed["plonecelery_for"] = [task_id, TASK]
    return headers, [[key], {}, embed]


def publish(harness, headers, payload, *, content_type="application/data"):
    queue = Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)
    with Connection(broker_url(harness), connect_timeout=10) as connection:
        connection.Producer().publish(
            payload,
            exchange=queue.exchange,
            routing_key=QUEUE,
            declare=[queue],
            headers=headers,
            content_type=content_type,
            content_encoding="utf-8",
        )


def signed_by(settings, body) -> str:
    return serializer(settings).serialize(body)


def resign(payload: str, *, body=None, signer=None) -> str:
    """Repack a signed payload with another body or signer id, keeping the signature."""
    packer = SecureSerializer()
    unpacked = packer._unpack(payload)
    return packer._pack(
        body if body is not None else unpacked["body"],
        unpacked["content_type"],
        unpacked["content_encoding"],
        signer=signer if signer is not None else unpacked["signer"],
        signature=unpacked["signature"],
    )


def test_signed_messages_run_and_forged_ones_never_do(harness, pki, signing_worker):
    good = f"good-{RUN}"
    old = f"rotated-{RUN}"
    bad = {
        name: f"{name}-{RUN}"
        for name in (
            "unsigned",
            "stranger",
            "other-key",
            "body",
            "user",
            "unrestricted",
            "task-id",
        )
    }
    # Signed with A, B (key rotation: B's messages still run), and the forgeries.
    headers, body = message(good, envelope(harness, user="admin"))
    publish(harness, headers, signed_by(pki["A"], body))
    headers, body = message(old, envelope(harness, user="admin"))
    publish(harness, headers, signed_by(pki["B"], body))

    headers, body = message(bad["unsigned"], envelope(harness))
    publish(harness, headers, json_dumps(body), content_type="application/json")

    headers, body = message(bad["stranger"], envelope(harness))
    publish(harness, headers, signed_by(pki["C"], body))

    headers, body = message(bad["other-key"], envelope(harness))
    a_signer = serializer(pki["A"])._cert.get_id()
    publish(harness, headers, resign(signed_by(pki["C"], body), signer=a_signer))

    headers, body = message(bad["body"], envelope(harness))
    signed = signed_by(pki["A"], body)
    raw = SecureSerializer()._unpack(signed)["body"]
    publish(harness, headers, resign(signed, body=raw.replace(b"body-", b"bodx-")))

    # The envelope is altered after signing: another user, or unrestricted.
    headers, body = message(bad["user"], envelope(harness, user="bob"))
    headers["plonecelery"] = envelope(harness, user="admin")
    publish(harness, headers, signed_by(pki["A"], body))
    headers, body = message(bad["unrestricted"], envelope(harness, user=None))
    headers["plonecelery"] = envelope(harness, user=None, unrestricted=True)
    publish(harness, headers, signed_by(pki["A"], body))

    # A signed body replayed under another task id.
    headers, body = message(bad["task-id"], envelope(harness))
    signed = signed_by(pki["A"], body)
    headers["id"] = headers["root_id"] = str(uuid.uuid4())
    publish(harness, headers, signed)

    # A last good message: once it has run, every message before it was handled.
    last = f"last-{RUN}"
    headers, body = message(last, envelope(harness, user="admin"))
    publish(harness, headers, signed_by(pki["A"], body))

    done = wait_for(lambda: last in runs(harness) and runs(harness), what="the last message")
    ran = [name for name, key in bad.items() if key in done]
    tally("messages: forged or tampered signed messages", inputs=len(bad), writes=len(ran))
    assert done[good] == "admin:False"
    assert done[old] == "admin:False"
    for name, key in bad.items():
        assert key not in done, f"the {name} forgery ran"
        assert "bodx" not in "".join(done)
    log = signing_worker.read_text(errors="replace")
    assert "Refusing to deserialize untrusted content of type json" in log
    assert "not in CELERY_SECURITY_CERT_STORE" in log
    assert log.count("bad signature") >= 2  # other key, altered body
    assert "user='bob'" in log and "altered after signing" in log
    assert "unrestricted=True" in log
    assert "id or task name was changed after signing" in log
    assert "catching classes that do not inherit" not in log


@pytest.fixture
def signing_here(pki):
    """This process (a Plone client) signs with key A for the duration of a test."""
    from kombu.serialization import registry

    from collective.plonecelery.config import settings_from_environ
    from collective.plonecelery.signing import apply_signing

    settings = settings_from_environ({**os.environ, **pki["A"]})
    apply_signing(settings)
    before = {name: app.conf[name] for name in ("task_serializer", "accept_content")}
    app.conf.update(task_serializer="auth", accept_content=["auth"])
    yield
    app.conf.update(before)
    registry._set_default_serializer("json")
    registry.enable("json")


def test_plone_code_queues_signed_tasks_and_the_relay_signs_too(
    harness, signing_worker, signing_here
):
    from sample_tasks import record_user

    queued, relayed = f"queued-{RUN}", f"relayed-{RUN}"
    with harness.session(user="admin") as portal:
        record_user.apply_async((queued,), queue=QUEUE)
        transaction.commit()
    with harness.session(user="admin") as portal:
        record_user.apply_async((relayed,), queue=QUEUE)
        # Nothing is sent after this commit: only the outbox record is left, for the relay
        # of the (signing) worker to send.
        PendingMessages.of(transaction.get()).messages.clear()
        transaction.commit()
        assert portal is not None
    done = wait_for(lambda: relayed in runs(harness) and runs(harness), what="the relay")
    assert done[queued] == "admin:False"
    assert done[relayed] == "admin:False"
    log = signing_worker.read_text(errors="replace")
    assert "Outbox relay sent" in log


# -- every other send path (issue 9): each message below runs on a worker that accepts
# nothing but signed ('auth') content, so it ran only because its sender signed it.


def log_mark(log: Path) -> int:
    return log.stat().st_size


def log_since(log: Path, mark: int) -> str:
    with open(log, "rb") as file:
        file.seek(mark)
        return file.read().decode(errors="replace")


def assert_nothing_refused(text: str) -> None:
    assert "Refusing" not in text, [line for line in text.splitlines() if "Refusing" in line]


@pytest.fixture(scope="module")
def only_signed(harness, signing_worker):
    """The signing worker refuses an unsigned message (and never runs it): what makes the
    tests below proof that their messages were signed."""
    key = f"only-signed-{RUN}"
    mark = log_mark(signing_worker)
    headers, body = message(key, envelope(harness))
    publish(harness, headers, json_dumps(body), content_type="application/json")
    wait_for(
        lambda: (
            "Refusing to deserialize untrusted content of type json"
            in log_since(signing_worker, mark)
        ),
        what="the unsigned message refused",
    )
    assert key not in runs(harness)
    return signing_worker


def test_a_conflict_retry_is_signed_by_the_worker(harness, only_signed, signing_here):
    from sample_tasks import conflict_then_succeed

    mark = log_mark(only_signed)
    with harness.session(user="admin") as portal:
        # Raises ConflictError once: the worker's retry message carries the second attempt.
        result = conflict_then_succeed.apply_async((portal, f"retried-{RUN}", 1), queue=QUEUE)
        transaction.commit()
    assert result.get(timeout=60) == 1  # request.retries of the attempt that succeeded
    log = log_since(only_signed, mark)
    assert "hit ConflictError" in log and "retry 1 of 3" in log
    assert_nothing_refused(log)


def test_a_dead_letter_retried_from_the_command_line_is_signed(
    harness, only_signed, signing_here, pki, monkeypatch
):
    from sample_tasks import fail_unless_flag

    from collective.plonecelery import deadletters

    key = f"dead-letter-{RUN}"
    with harness.session(user="admin"):
        failed = fail_unless_flag.apply_async((key,), queue=QUEUE)
        transaction.commit()

    def letter():
        with harness.session(user="admin") as portal:
            try:
                return deadletters.get(portal._p_jar, failed.id)
            except KeyError:
                return None

    wait_for(letter, what="the dead letter")
    with harness.session(user="admin") as portal:
        portal._plonecelery_test_flag = True
        transaction.commit()
    mark = log_mark(only_signed)
    try:
        # `plonecelery deadletters retry` signs with the key of its own environment (the
        # REST API's and the control panel's retries call the same deadletters.retry()).
        for name, value in pki["A"].items():
            monkeypatch.setenv(name, value)
        output = plonecelery_cli(harness, "deadletters", "retry", failed.id)
        new_id = output.strip().rsplit(" ", 1)[-1]
        assert fail_unless_flag.AsyncResult(new_id).get(timeout=60) == key
    finally:
        with harness.session(user="admin") as portal:
            portal._plonecelery_test_flag = False
            transaction.commit()
    assert runs(harness)[key] == 1
    assert_nothing_refused(log_since(only_signed, mark))


def test_the_workers_periodic_ticks_are_signed(harness, only_signed):
    """The relay's and the blog schedule's requests, queued by the worker's own timer."""
    mark = log_mark(only_signed)
    names = (
        "collective.plonecelery.outbox.relay_outbox",
        "collective.plonecelery.importer.due_sources",
    )

    def ran(log, name):
        return any(f"Task {name}[" in line and "succeeded in" in line for line in log.splitlines())

    def both_ran():
        log = log_since(only_signed, mark)
        return all(ran(log, name) for name in names) and log

    # Every second and every 5 s here (conftest.py).
    log = wait_for(both_ran, timeout=30, what="a relay tick and a blog schedule tick")
    assert "Could not queue" not in log
    assert_nothing_refused(log)


def test_celery_beat_sends_signed(harness, only_signed, pki, tmp_path):
    """``plonecelery beat``, with a schedule entry for a Zope task (docs/tasks.rst)."""
    key = f"beat-{RUN}"
    schedule = {
        f"signed-{RUN}": {
            "task": "sample_tasks.record_user",
            "schedule": 1.0,
            "args": [key],
            "options": {"site": harness.site_path, "queue": QUEUE, "run_as": "admin"},
        }
    }
    env = {**os.environ, **harness.environment, **harness.worker_env, **pki["A"]}
    env["CELERY_BEAT_SCHEDULE"] = json_dumps(schedule)
    log = harness.log_dir / f"beat-{RUN}.log"
    mark = log_mark(only_signed)
    beat = spawn(
        [
            instance.bin_path("plonecelery"),
            "--zope-conf", harness.zope_conf,
            "beat", "-l", "info",
            "-s", tmp_path / "beat-schedule",
            "--pidfile", tmp_path / "beat.pid",
        ],
        env=env,
        log_file=log,
    )  # fmt: skip
    try:
        done = wait_for(lambda: key in runs(harness) and runs(harness), what="a beat run")
    finally:
        instance.stop_process(beat)
    assert done[key] == "admin:False"
    assert "Scheduler: Sending due task" in log.read_text(errors="replace")
    assert_nothing_refused(log_since(only_signed, mark))


def test_a_group_of_zope_tasks_is_signed(harness, only_signed, signing_here):
    from celery import group
    from sample_tasks import record_user

    keys_ = [f"group-{index}-{RUN}" for index in range(3)]
    mark = log_mark(only_signed)
    with harness.session(user="admin"):
        # Sent at once, each member with a producer (docs/known-issues.rst): no outbox.
        result = group(record_user.s(key) for key in keys_).apply_async(queue=QUEUE)
        transaction.commit()
    assert sorted(result.get(timeout=60)) == sorted(keys_)
    done = runs(harness)
    assert [done[key] for key in keys_] == ["admin:False"] * 3
    assert_nothing_refused(log_since(only_signed, mark))


def test_require_signing_stops_a_worker_without_it(harness):
    log = harness.log_dir / f"unsigned-worker-{RUN}.log"
    env = {**os.environ, **harness.environment, **harness.worker_env}
    env["PLONECELERY_REQUIRE_SIGNING"] = "true"
    for name in (
        "CELERY_SECURITY_KEY",
        "CELERY_SECURITY_CERTIFICATE",
        "CELERY_SECURITY_CERT_STORE",
    ):
        env.pop(name, None)
    try:
        worker = instance.start_worker(
            zope_conf=harness.zope_conf, env=env, args=("-l", "info", "-Q", QUEUE), log_file=log
        )
    except RuntimeError:
        worker = None
    if worker is not None:
        try:
            worker.wait(timeout=60)
        finally:
            instance.stop_process(worker)
        assert worker.returncode != 0
    assert "PLONECELERY_REQUIRE_SIGNING is on but message signing is not configured" in (
        log.read_text(errors="replace")
    )


def test_a_worker_with_a_remote_broker_and_no_signing_warns(harness):
    log = harness.log_dir / f"remote-worker-{RUN}.log"
    env = {**os.environ, **harness.environment, **harness.worker_env}
    env["CELERY_BROKER_URL"] = "redis://192.0.2.1:6379/0"  # TEST-NET-1: never answers
    worker = instance.start_worker(
        zope_conf=harness.zope_conf, env=env, args=("-l", "info", "-Q", QUEUE), log_file=log
    )
    try:
        wait_for(
            lambda: (
                "is not on this machine and messages are not signed"
                in log.read_text(errors="replace")
            ),
            what="the warning",
        )
    finally:
        instance.stop_process(worker)
