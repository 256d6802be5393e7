"""Goal 6 of issue 12: the task table once per broker.

``run.py`` calls :func:`measure` last, with its running stack. For each broker (Redis,
RabbitMQ, the embedded SQLite broker, and kombu's SQLAlchemy transport on PostgreSQL and on
MariaDB), this process and two workers switch to that broker: a ``plonecelery worker``
(prefork ``-c 1``, our defaults) in place of the benchmark's worker, and a plain Celery worker
with the same settings (the baseline, as in ``run.py``). The result backend stays Redis
(db 12) for all, so that only the broker differs. Then ``--broker-rounds`` rounds of
``--broker-tasks`` tasks per kind (plain no-op; Zope no-op, read and write with the outbox on),
in a rotating order, after a warm-up. The SQL brokers get a fresh database each, dropped at
the end; the SQLite broker is a file in the run's temporary directory.
"""

from __future__ import annotations

import os

import run
from run import table

BROKERS = ("redis", "amqp", "sqlite", "postgresql", "mysql")
LABELS = {
    "redis": "Redis",
    "amqp": "RabbitMQ",
    "sqlite": "SQLite (kombu SQLAlchemy, file)",
    "postgresql": "PostgreSQL (kombu SQLAlchemy)",
    "mysql": "MariaDB (kombu SQLAlchemy)",
}
KINDS = ("plain", "noop-on", "read-on", "write-on")
#: kombu's SQLAlchemy transport (virtual, polling every second when a worker waits).
SQL = ("sqlite", "postgresql", "mysql")


def reachable(port: int) -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def broker_url(name: str, *, setup, base_dir, databases: list) -> str | None:
    from collective.plonecelery.devtools import instance

    if name == "redis":
        return setup.broker_url
    if name == "amqp":
        return "amqp://guest:guest@127.0.0.1:5672//" if reachable(5672) else None
    if name == "sqlite":
        return f"sqla+sqlite:///{base_dir}/broker.sqlite"
    kind, port = {
        "postgresql": (instance.PostgreSQLDatabase, 5432),
        "mysql": (instance.MySQLDatabase, 3306),
    }[name]
    if not reachable(port):
        return None
    database = kind.fresh(prefix="plonecelery_bench")
    databases.append(database)
    return database.url("sqla+")


def use_broker(app, settings: dict) -> None:
    """Point ``app`` (in this process) at another broker: new settings, fresh pools.

    Celery reads ``CELERY_BROKER_URL`` from the environment before its settings, so that
    changes too (for both apps of this process: they share the broker).
    """
    os.environ["CELERY_BROKER_URL"] = settings["broker_url"]
    app.conf.update(settings)
    # update() keeps what the new settings lack: Redis' visibility_timeout would reach
    # SQLAlchemy's create_engine() on the SQL brokers.
    app.conf.broker_transport_options = settings.get("broker_transport_options") or {}
    # Not closed: kombu's pools are shared per broker URL, and a closed one would come back
    # for the same URL (Redis again at the end).
    app._pool = None
    app.amqp._producer_pool = None


def measure(*, harness, options, setup, plain_workers, read_uid, write_id, issued) -> dict:
    import bench_tasks
    import plain_celery

    from collective.plonecelery.app import app
    from collective.plonecelery.config import settings_from_environ
    from collective.plonecelery.devtools.instance import stop_process

    run.set_outbox(True)
    tasks, rounds = (3, 1) if options.quick else (options.broker_tasks, options.broker_rounds)
    own_settings = settings_from_environ()
    plain_base = run.plain_settings(setup)
    worker_env = dict(harness.worker_env)
    databases: list = []
    numbers: dict = {}
    # The benchmark's own plain workers would compete for the CPU: stop them for this part.
    # This part runs last: the benchmark's workers are not started again.
    for process in plain_workers.values():
        stop_process(process)
    try:
        for name in options.brokers:
            url = broker_url(name, setup=setup, base_dir=harness.base_dir, databases=databases)
            if url is None:
                numbers[name] = {"label": LABELS[name], "skipped": "not running"}
                print(f"Broker {name}: not running, skipped", flush=True)
                continue
            n, r = (tasks, rounds)
            if name in SQL and not options.quick:
                n, r = options.sql_broker_tasks, 1
            print(f"Broker {LABELS[name]}: {r} round(s) of {n} tasks per kind", flush=True)
            env = {**setup.environment(), "CELERY_BROKER_URL": url}
            use_broker(app, settings_from_environ({**os.environ, **env}))
            plain = {
                **{k: v for k, v in plain_base.items() if not k.startswith("broker_")},
                **_broker_keys(settings_from_environ(env)),
            }
            use_broker(plain_celery.app, plain)
            harness.stop_worker()
            harness.worker_env = {**worker_env, "CELERY_BROKER_URL": url}
            harness.start_worker()
            plain_log = harness.log_dir / f"plain-{name}-worker.log"
            plain_worker = run.start_plain_worker(
                setup=setup,
                log_file=plain_log,
                settings=plain,
                name=f"plain-{name}-bench",
                queue=setup.plain_queue,
            )
            try:
                kinds = _kinds(
                    harness=harness,
                    setup=setup,
                    plain_worker=plain_worker,
                    plain_log=plain_log,
                    read_uid=read_uid,
                    write_id=write_id,
                    bench_tasks=bench_tasks,
                    plain_celery=plain_celery,
                )
                batches = run.measure_throughput(
                    kinds,
                    tasks=n,
                    rounds=r,
                    zeo_pid=harness.zeo.process.pid,
                    issued=issued,
                )
                numbers[name] = {
                    "label": LABELS[name],
                    "tasks": n,
                    "rounds": r,
                    **run.throughput_numbers(kinds, batches),
                }
            finally:
                stop_process(plain_worker)
                _delete_queues(url, [setup.queue, setup.plain_queue], name=name)
    finally:
        use_broker(app, own_settings)
        use_broker(plain_celery.app, plain_base)
        # The last part of a run: the benchmark's own worker is not started again.
        harness.stop_worker()
        harness.worker_env = worker_env
        for database in databases:
            try:
                database.drop()
            except Exception as exc:  # noqa: BLE001 (reported, the run goes on)
                print(f"Could not drop {database.name}: {exc}", flush=True)
    return numbers


def _broker_keys(settings: dict) -> dict:
    return {key: value for key, value in settings.items() if key.startswith("broker_")}


def _delete_queues(url: str, queues: list[str], *, name: str) -> None:
    """Leave nothing of the run in a shared RabbitMQ (Redis is cleaned by run.py, the SQL
    databases are dropped, the SQLite file goes with the temporary directory)."""
    if name != "amqp":
        return
    from kombu import Connection

    with Connection(url, connect_timeout=5) as connection:
        channel = connection.default_channel
        for queue in queues:
            channel.queue_delete(queue)
            channel.exchange_delete(queue)


def _kinds(
    *, harness, setup, plain_worker, plain_log, read_uid, write_id, bench_tasks, plain_celery
):
    zope_log = run.LogReader(harness.worker_log)
    kinds = [
        run.Kind(
            key="plain",
            label="plain Celery no-op, same settings (baseline)",
            outbox=None,
            send=run.plain_sender(plain_celery.noop, setup.plain_queue),
            check=run.expect_all("ok"),
            app=plain_celery.app,
            task_name=plain_celery.noop.name,
            log=run.LogReader(plain_log),
            worker_pid=plain_worker.pid,
        )
    ]
    for key, label, task, args, check in (
        ("noop-on", "Zope no-op", bench_tasks.noop, (), run.expect_all("ok")),
        ("read-on", "Zope read", bench_tasks.read_title, (read_uid,), run.expect_all("bench-read")),
        ("write-on", "Zope write", bench_tasks.write_counter, (write_id,), run.expect_counter()),
    ):
        kinds.append(
            run.Kind(
                key=key,
                label=f"{label}, outbox on",
                outbox=True,
                send=run.zope_sender(harness, task, *args),
                check=check,
                app=task.app,
                task_name=task.name,
                log=zope_log,
                worker_pid=harness.worker.pid,
            )
        )
    return kinds


def goals(data: dict) -> list[dict]:
    measured = [n for n in data.values() if "skipped" not in n]
    return [
        {
            "goal": "6. task table per broker",
            "value": f"{len(measured)} of {len(data)}",
            "baseline": None,
            "unit": "brokers",
            "ratio": None,
            "target": "every broker",
            "met": len(measured) == len(data) == len(BROKERS),
        }
    ]


def report(data: dict) -> str:
    rows = []
    for numbers in data.values():
        if "skipped" in numbers:
            rows.append([numbers["label"], "", "skipped: " + numbers["skipped"], "", "", "", ""])
            continue
        cells = [numbers["label"], f"{numbers['tasks']} x {numbers['rounds']}"]
        for key in KINDS:
            n = numbers[key]
            cells.append(
                f"{n['tasks_per_s']:.0f}"
                if key == "plain"
                else f"{n['tasks_per_s']:.0f} ({n['vs_plain']:.2f}x)"
            )
        cells.append(" / ".join(f"{numbers[k]['worker_cpu_ms']:.1f}" for k in KINDS))
        rows.append(cells)
    return "\n".join(
        [
            "Task table per broker (goal 6): tasks/s, end to end, one worker per kind "
            "(prefork -c 1), result backend Redis for all; in brackets the ratio to the plain "
            "no-op on the same broker (median of the rounds' ratios); worker CPU ms per task "
            "for plain / no-op / read / write:",
            table(
                [
                    "broker",
                    "tasks x rounds",
                    "plain no-op",
                    "Zope no-op",
                    "Zope read",
                    "Zope write",
                    "worker CPU ms",
                ],
                rows,
            ),
        ]
    )
