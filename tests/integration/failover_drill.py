"""Broker failover drill: Plone and a worker given two Redis brokers, the first one killed.

Run by test_broker_failover.py as a process of its own (it boots Zope, which the test
process has done already for another database)::

    python failover_drill.py BASE_DIR

Starts two Redis servers on free ports, a ZEO server, a Plone site and a prefork worker
(the WorkerHarness), all with ``CELERY_BROKER_URL=redis://127.0.0.1:A/0;redis://127.0.0.1:B/0``
(Celery's failover list). Then, each batch committed from this process as a Plone client:

1. ``before``: 10 tasks while both brokers run; wait for their effects;
2. ``lost``: the worker is stopped (SIGSTOP), 10 tasks are sent to A, and A is SIGKILLed
   with them (it keeps nothing on disk, so these messages are gone); the worker goes on
   (SIGCONT);
3. ``after``: 10 tasks with A down.

Prints one JSON line: the effect count of every task, how many of each batch the outbox
relay had to send again (``attempts`` > 1), the seconds from the kill to the last effect,
whether the worker process lived through it, and the worker's log lines about broker
connections. Exit code 0 once the report is printed, whatever it says: the
test asserts on it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

BATCH = 10
TIMEOUT = 120


def start_redis(port: int, directory: Path) -> subprocess.Popen:
    directory.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(directory)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )  # fmt: skip


def queue(harness, prefix: str) -> dict[str, str]:
    """BATCH count_run tasks committed in one transaction; {key: task id}."""
    import sample_tasks
    import transaction

    keys = [f"{prefix}-{n}" for n in range(BATCH)]
    with harness.session():
        sent = {key: sample_tasks.count_run.delay(key).id for key in keys}
        transaction.commit()
    return sent


def relayed(harness, sent: dict[str, str]) -> int:
    """How many of ``sent`` the outbox relay sent again."""
    from collective.plonecelery.outbox import records

    ids = set(sent.values())
    with harness.session() as portal:
        outbox = records.get_outbox(portal._p_jar, create=False)
        return sum(
            record.attempts > 1
            for _, record in records.iter_records(outbox)
            if record.task_id in ids
        )


def effects(harness, keys) -> dict[str, int]:
    with harness.session() as portal:
        runs = getattr(portal, "_plonecelery_test_runs", {})
        return {key: runs.get(key, 0) for key in keys}


def wait_for_effects(harness, keys) -> dict[str, int]:
    deadline = time.monotonic() + TIMEOUT
    while True:
        counts = effects(harness, keys)
        if all(counts.values()) or time.monotonic() > deadline:
            return counts
        time.sleep(0.5)


def main(base_dir: Path) -> dict:
    from collective.plonecelery.devtools import instance

    ports = [instance.free_port(), instance.free_port()]
    servers = [start_redis(port, base_dir / f"redis-{port}") for port in ports]
    for port in ports:
        instance.wait_for_port("127.0.0.1", port, timeout=30)
    environment = {
        "CELERY_BROKER_URL": ";".join(f"redis://127.0.0.1:{port}/0" for port in ports),
        "CELERY_BROKER_TRANSPORT_OPTIONS": json.dumps({"polling_interval": 0.1}),
        "CELERY_RESULT_BACKEND": f"db+sqlite:///{base_dir}/results.sqlite",
        "CELERY_IMPORTS": "sample_tasks",
        "PLONECELERY_SERVER_URL": "https://www.example.org",
        "PLONECELERY_OUTBOX_GRACE": "2",
        "PLONECELERY_OUTBOX_RELAY_INTERVAL": "1",
        "PLONECELERY_WORKER_HEARTBEAT": "1",
        "PLONECELERY_OUTBOX_STARTED_TIMEOUT": "5",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
    }
    os.environ.update(environment)
    from collective.plonecelery.devtools.harness import WorkerHarness

    harness = WorkerHarness(base_dir=base_dir, environment=environment)
    report: dict = {"brokers": environment["CELERY_BROKER_URL"]}
    try:
        harness.start()
        batches = {"before": queue(harness, "before")}
        report["before"] = wait_for_effects(harness, batches["before"])
        os.killpg(harness.worker.pid, signal.SIGSTOP)
        try:
            batches["lost"] = queue(harness, "lost")
            servers[0].kill()
            servers[0].wait(timeout=10)
        finally:
            os.killpg(harness.worker.pid, signal.SIGCONT)
        killed = time.monotonic()
        batches["after"] = queue(harness, "after")
        for name in ("lost", "after"):
            report[name] = wait_for_effects(harness, batches[name])
        report["seconds_to_last_effect"] = round(time.monotonic() - killed, 1)
        time.sleep(3)  # a late duplicate would show up now
        report["final"] = effects(harness, [key for sent in batches.values() for key in sent])
        report["relayed"] = {name: relayed(harness, sent) for name, sent in batches.items()}
        report["worker_alive"] = harness.worker.poll() is None
        log = harness.worker_log.read_text(errors="replace")
        report["worker_broker_lines"] = [
            line for line in log.splitlines() if "redis://" in line or "failover" in line.lower()
        ][-10:]
    finally:
        harness.stop()
        for server in servers:
            if server.poll() is None:
                server.terminate()
                server.wait(timeout=10)
    return report


if __name__ == "__main__":
    print("FAILOVER " + json.dumps(main(Path(sys.argv[1]).absolute())), flush=True)
