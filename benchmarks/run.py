"""Benchmarks of collective.plonecelery on Redis, against plain Celery.

Usage (``make bench`` runs it with the defaults)::

    .venv/bin/python benchmarks/run.py [--tasks 300] [--rounds 5]
        [--commits 40] [--commit-reps 15] [--redis redis://127.0.0.1:6379]

What it starts, all on loopback and under a temporary directory in /tmp that
is removed afterwards (kept, and named, when something fails):

* a ZEO server, a Plone site, and Zope booted in this process, which queues
  the Zope-aware tasks (:class:`collective.plonecelery.devtools.harness.WorkerHarness`);
* one ``plonecelery worker`` (prefork, ``-c 1``, our defaults: ``acks_late``,
  prefetch multiplier 1) that runs them;
* one plain ``python -m celery -A plain_celery worker`` with the very same
  Celery settings and arguments, for the baseline.

Redis db 11 is the broker, db 12 the result backend; the queues have names of
their own per run and are deleted at the end, with the results.

It measures:

1. Throughput, end to end (queue N tasks, wait until every result is ready),
   of a plain Celery no-op (the baseline), and of Zope-aware no-op, read and
   write tasks, each with the transactional outbox on and off. Rounds
   alternate the kinds, in a rotating order; medians are reported, and ratios
   to the baseline of the same round.
2. What queuing tasks adds to the committing transaction in this process:
   blocks of transactions that each write one attribute and commit, with 0, 1
   or 10 ``delay()`` calls (outbox on and off). The after-commit hook sends
   the messages, so the commit includes the round trips to Redis. The tasks
   go to a queue no worker consumes, so that no worker competes for the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
WORKER_ARGS = ("-l", "info", "-c", "1", "-P", "prefork")
RESULT_TIMEOUT = 120.0
SUCCEEDED = re.compile(r"Task (\S+)\[[^\]]+\] succeeded in ([0-9.e-]+)s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/run.py",
        description="Throughput of Zope-aware tasks vs plain Celery, and the cost "
        "of queuing a task in a committing transaction (Redis, one worker).",
    )
    parser.add_argument("--tasks", type=int, default=300, help="tasks per throughput batch (300)")
    parser.add_argument(
        "--rounds", type=int, default=5, help="throughput rounds over all kinds (5)"
    )
    parser.add_argument("--commits", type=int, default=40, help="transactions per timed block (40)")
    parser.add_argument(
        "--commit-reps", type=int, default=15, help="repetitions of the commit blocks (15)"
    )
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379",
        help="Redis server, without a db number (db 11 and 12 are used)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, Data.fs)"
    )
    options = parser.parse_args(argv)
    for name in ("tasks", "rounds", "commits", "commit_reps"):
        if getattr(options, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if urlsplit(options.redis).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--redis must be on loopback (127.0.0.1, localhost or ::1)")
    return options


# -- statistics ------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values)


def p90(values: list[float]) -> float:
    """90th percentile (the value itself when there is only one)."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=10, method="inclusive")[8]


# -- the processes -------------------------------------------------------------


@dataclass
class Setup:
    """Names and settings of one run."""

    redis: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def queue(self) -> str:
        return f"plonecelery-bench-{self.run_id}"

    @property
    def plain_queue(self) -> str:
        return f"plonecelery-bench-plain-{self.run_id}"

    @property
    def sink_queue(self) -> str:
        return f"plonecelery-bench-sink-{self.run_id}"

    @property
    def broker_url(self) -> str:
        return f"{self.redis.rstrip('/')}/11"

    @property
    def backend_url(self) -> str:
        return f"{self.redis.rstrip('/')}/12"

    def environment(self) -> dict[str, str]:
        """CELERY_*/PLONECELERY_* settings for this process and the Zope worker."""
        return {
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_RESULT_BACKEND": self.backend_url,
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
            "CELERY_TASK_ROUTES": json.dumps({"bench_tasks.sink": {"queue": self.sink_queue}}),
            "CELERY_IMPORTS": "bench_tasks",
            # The sink's records stay pending on purpose: the relay must not
            # re-send them in the middle of a measurement.
            "PLONECELERY_OUTBOX_GRACE": "3600",
        }

    def worker_args(self, *, name: str, queue: str) -> tuple[str, ...]:
        return (*WORKER_ARGS, "-Q", queue, "-n", f"{name}-{self.run_id}@%h")


def module_environment() -> dict[str, str]:
    """Let workers import our modules, without writing bytecode next to them."""
    return {"PYTHONPATH": str(HERE), "PYTHONDONTWRITEBYTECODE": "1"}


def plain_settings(setup: Setup) -> dict:
    """collective.plonecelery's Celery settings, for the plain app and its queue."""
    from collective.plonecelery.config import settings_from_environ

    settings = settings_from_environ(setup.environment())
    settings["task_default_queue"] = setup.plain_queue
    settings.pop("imports", None)
    settings.pop("task_routes", None)
    return settings


def start_plain_worker(*, setup: Setup, log_file: Path) -> subprocess.Popen:
    """``python -m celery -A plain_celery worker`` with no Zope anywhere near.

    Its settings come from ``BENCH_PLAIN_SETTINGS`` (see :func:`main`).
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CELERY_", "PLONECELERY_", "ZOPE_CONF"))
    }
    env.update(module_environment())
    env["BENCH_PLAIN_SETTINGS"] = os.environ["BENCH_PLAIN_SETTINGS"]
    args = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "plain_celery",
        "worker",
        *setup.worker_args(name="plain-bench", queue=setup.plain_queue),
    ]
    with open(log_file, "ab") as log:
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=HERE,
            start_new_session=True,
        )
    try:
        wait_for_text(log_file, "ready.", process=process, timeout=60)
    except BaseException:
        from collective.plonecelery.devtools.instance import stop_process

        stop_process(process)
        raise
    return process


def wait_for_text(path: Path, text: str, *, process: subprocess.Popen, timeout: float) -> None:
    """Wait until ``path`` contains ``text``; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise RuntimeError(
                f"{process.args[:5]} exited with code {process.returncode}; see {path}"
            )
        time.sleep(0.2)
    raise TimeoutError(f"No {text!r} in {path} after {timeout} s")


class LogReader:
    """Task run times (``succeeded in X s``) a worker logged since the last read."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def skip(self) -> None:
        self.offset = self.path.stat().st_size

    def run_times(self, task_name: str) -> list[float]:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read().decode("utf-8", "replace")
            self.offset = log.tell()
        return [float(t) for name, t in SUCCEEDED.findall(text) if name == task_name]


# -- the outbox switch ---------------------------------------------------------


def outbox_available() -> bool:
    """Whether this version has the transactional outbox (``PLONECELERY_OUTBOX``)."""
    from collective.plonecelery.config import AddonSettings

    return "outbox" in AddonSettings.__dataclass_fields__


def set_outbox(enabled: bool) -> None:
    """Switch the outbox for tasks queued from this process from now on.

    ``ZopeTask`` reads ``PLONECELERY_OUTBOX`` once per task and caches it
    (``addon_settings``); drop those caches so the new value is read. Only the
    queuing side decides: the worker claims a record when the message names one.
    """
    from collective.plonecelery.app import app

    os.environ["PLONECELERY_OUTBOX"] = "true" if enabled else "false"
    for task in app.tasks.values():
        task.__dict__.pop("addon_settings", None)
        settings = getattr(task, "addon_settings", None)
        if settings is not None and settings.outbox != enabled:
            raise RuntimeError(
                f"{task.name} did not take PLONECELERY_OUTBOX={enabled}: "
                "update set_outbox() to how ZopeTask reads its settings now."
            )


# -- 1. throughput -------------------------------------------------------------


@dataclass
class Kind:
    """One kind of task measured for throughput."""

    key: str
    label: str
    outbox: bool | None  # None: not a Zope task
    send: Callable[[int], list]  # queues n tasks, returns their AsyncResults
    check: Callable[[list, int], None]  # raises if the results are wrong
    app: object
    task_name: str
    log: LogReader
    worker_pid: int  # the worker's main process (its pool is counted too)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its descendants, so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return 0.0  # gone (a pool process that was replaced)
    # Fields after the command name, which may contain spaces: utime, stime
    # are fields 14 and 15 of proc(5), here 11 and 12.
    fields = stat.rsplit(")", 1)[1].split()
    own = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return own + sum(cpu_seconds(int(child)) for child in children)


@dataclass
class Batch:
    """What one batch of tasks measured."""

    rate: float  # tasks/s, end to end
    run_times: list[float]  # seconds, as the worker logged them
    worker_cpu: float  # CPU seconds per task, worker main + pool processes
    zeo_cpu: float  # CPU seconds per task of the ZEO server


def zope_sender(harness, task, *args) -> Callable[[int], list]:
    """Queue n calls in one transaction (sent by its after-commit hook)."""
    import transaction

    def send(n: int) -> list:
        with harness.session(user="admin"):
            results = [task.delay(*args) for _ in range(n)]
            transaction.commit()
        return results

    return send


def plain_sender(task) -> Callable[[int], list]:
    """Publish n calls through one producer, as our after-commit hook does."""

    def send(n: int) -> list:
        with task.app.producer_or_acquire() as producer:
            return [task.apply_async(producer=producer) for _ in range(n)]

    return send


def expect_all(value) -> Callable[[list, int], None]:
    def check(values: list, n: int) -> None:
        wrong = [v for v in values if v != value]
        if len(values) != n or wrong:
            raise AssertionError(f"Expected {n} x {value!r}, got {len(values)} ({wrong[:3]})")

    return check


def expect_counter() -> Callable[[list, int], None]:
    def check(values: list, n: int) -> None:
        # One worker, one process: the increments are serial and none is lost.
        if len(set(values)) != n or max(values) - min(values) != n - 1:
            raise AssertionError(f"Counter values are not {n} consecutive integers")

    return check


def run_batch(kind: Kind, n: int, *, zeo_pid: int, issued: list[str]) -> Batch:
    """Queue n tasks of ``kind`` and wait until all results are ready."""
    from celery.result import ResultSet

    kind.log.skip()
    worker_cpu, zeo_cpu = cpu_seconds(kind.worker_pid), cpu_seconds(zeo_pid)
    start = time.perf_counter()
    results = kind.send(n)
    values = ResultSet(results, app=kind.app).get(timeout=RESULT_TIMEOUT, propagate=True)
    elapsed = time.perf_counter() - start
    worker_cpu, zeo_cpu = cpu_seconds(kind.worker_pid) - worker_cpu, cpu_seconds(zeo_pid) - zeo_cpu
    issued.extend(r.id for r in results)
    kind.check(values, n)
    time.sleep(0.3)  # the worker logs the last lines after storing the result
    return Batch(
        rate=n / elapsed,
        run_times=kind.log.run_times(kind.task_name),
        worker_cpu=worker_cpu / n,
        zeo_cpu=zeo_cpu / n,
    )


def measure_throughput(
    kinds: list[Kind], *, tasks: int, rounds: int, zeo_pid: int, issued: list[str]
) -> dict[str, list[Batch]]:
    """Rounds over all kinds, in a rotating order. Returns the batches per kind."""
    batches = {k.key: [] for k in kinds}
    print(f"Warming up ({min(50, tasks)} tasks of each kind)...", flush=True)
    for kind in kinds:
        select_kind(kind)
        run_batch(kind, min(50, tasks), zeo_pid=zeo_pid, issued=issued)
    for round_no in range(rounds):
        shift = round_no % len(kinds)
        rates = {}
        for kind in kinds[shift:] + kinds[:shift]:
            select_kind(kind)
            batch = run_batch(kind, tasks, zeo_pid=zeo_pid, issued=issued)
            batches[kind.key].append(batch)
            rates[kind.key] = batch.rate
        print(
            f"  round {round_no + 1}/{rounds}: "
            + ", ".join(f"{k} {r:.0f}/s" for k, r in rates.items()),
            flush=True,
        )
    return batches


def select_kind(kind: Kind) -> None:
    if kind.outbox is not None:
        set_outbox(kind.outbox)


# -- 2. the cost of queuing in a committing transaction ------------------------


@dataclass
class CommitVariant:
    key: str
    label: str
    tasks: int
    outbox: bool | None


def time_commits(*, doc, sink, transactions: int, tasks: int) -> float:
    """Mean seconds per transaction: write one attribute, queue ``tasks``, commit."""
    import transaction

    start = time.perf_counter()
    for i in range(transactions):
        transaction.begin()
        doc.bench_value = i
        for _ in range(tasks):
            sink.delay()
        transaction.commit()
    return (time.perf_counter() - start) / transactions


def measure_commit_cost(harness, *, doc_id: str, transactions: int, reps: int, variants) -> dict:
    """Per repetition, one block per variant (rotating order); returns seconds."""
    from bench_tasks import sink

    blocks = {v.key: [] for v in variants}
    with harness.session(user="admin") as portal:
        doc = portal[doc_id]
        for variant in variants:  # warm-up, not recorded
            if variant.outbox is not None:
                set_outbox(variant.outbox)
            time_commits(doc=doc, sink=sink, transactions=5, tasks=variant.tasks)
        for rep in range(reps):
            shift = rep % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                if variant.outbox is not None:
                    set_outbox(variant.outbox)
                blocks[variant.key].append(
                    time_commits(doc=doc, sink=sink, transactions=transactions, tasks=variant.tasks)
                )
    return blocks


# -- reporting -----------------------------------------------------------------


def machine_description() -> str:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpu = model or platform.machine()
    return f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}"


def versions(redis_client) -> str:
    from importlib.metadata import version

    names = ("collective.plonecelery", "Products.CMFPlone", "celery", "kombu", "redis", "ZODB")
    parts = [f"{name} {version(name)}" for name in names]
    parts.append(f"Redis server {redis_client.info('server')['redis_version']}")
    return ", ".join(parts)


def table(headers: list[str], rows: list[list[str]]) -> str:
    """An reStructuredText simple table (also readable in a terminal)."""
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]
    rule = "  ".join("=" * w for w in widths)
    lines = [rule, "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), rule]
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    lines.append(rule)
    return "\n".join(lines)


def throughput_table(kinds: list[Kind], batches: dict[str, list[Batch]]) -> str:
    """Medians over rounds; the ratio is taken round by round, then its median."""
    plain = batches["plain"]
    rows = []
    for kind in kinds:
        mine = batches[kind.key]
        rates = [b.rate for b in mine]
        ratios = [b.rate / base.rate for b, base in zip(mine, plain, strict=True)]
        run_times = [t for b in mine for t in b.run_times]
        rows.append(
            [
                kind.label,
                f"{median(rates):.0f}",
                f"{min(rates):.0f}-{max(rates):.0f}",
                f"{median(ratios):.2f}x",
                f"{median(run_times) * 1000:.2f}" if run_times else "?",
                f"{median([b.worker_cpu for b in mine]) * 1000:.2f}",
                f"{median([b.zeo_cpu for b in mine]) * 1000:.2f}",
            ]
        )
    return table(
        ["task", "tasks/s", "range", "vs plain", "in task ms", "worker CPU ms", "ZEO CPU ms"],
        rows,
    )


def commit_table(variants: list[CommitVariant], blocks: dict) -> str:
    base = blocks["none"]
    rows = [["no task (baseline)", f"{median(base) * 1000:.2f}", "", ""]]
    for variant in variants:
        if variant.key == "none":
            continue
        per_task = [
            (with_tasks - without) / variant.tasks * 1000
            for with_tasks, without in zip(blocks[variant.key], base, strict=True)
        ]
        rows.append(
            [
                variant.label,
                f"{median(blocks[variant.key]) * 1000:.2f}",
                f"{median(per_task):.3f}",
                f"{p90(per_task):.3f}",
            ]
        )
    return table(["transaction", "ms/txn", "per task ms (median)", "per task ms (p90)"], rows)


# -- main ----------------------------------------------------------------------


def cleanup_redis(client_url: str, *, queues: list[str], backend_url: str, ids: list[str]):
    """Delete this run's queues, their routing tables, and the results of its tasks."""
    import redis

    broker = redis.Redis.from_url(client_url)
    broker.delete(*queues)
    # kombu's routing tables of the exchanges named after our queues.
    for prefix in ("_kombu.binding.", "_kombu.binding_permanent."):
        broker.delete(*(prefix + queue for queue in queues))
    backend = redis.Redis.from_url(backend_url)
    for start in range(0, len(ids), 1000):
        backend.delete(*(f"celery-task-meta-{i}" for i in ids[start : start + 1000]))


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    # Nothing may be written into the repository, not even the __pycache__
    # of bench_tasks and plain_celery (imported later, from this directory).
    sys.dont_write_bytecode = True
    import redis

    setup = Setup(redis=options.redis)
    try:
        redis_client = redis.Redis.from_url(setup.broker_url)
        redis_client.ping()
    except redis.RedisError as exc:
        print(f"Redis is not reachable at {setup.broker_url} ({exc}): start it first.")
        return 2

    base_dir = Path(tempfile.mkdtemp(prefix="plonecelery-bench-"))
    environment = setup.environment()
    os.environ.update(environment)
    # This process queues the baseline's tasks through the same plain app.
    os.environ["BENCH_PLAIN_SETTINGS"] = json.dumps(plain_settings(setup))
    sys.path.insert(0, str(HERE))
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    print(f"Benchmark run {setup.run_id} in {base_dir}", flush=True)

    from collective.plonecelery.devtools.harness import WorkerHarness

    harness = WorkerHarness(
        base_dir=base_dir,
        environment=environment,
        worker_args=setup.worker_args(name="zope-bench", queue=setup.queue),
        worker_env=module_environment(),
    )
    plain_worker = None
    issued: list[str] = []
    failed = True
    try:
        print("Starting ZEO, creating the Plone site, starting the workers...", flush=True)
        harness.start()
        plain_log = harness.log_dir / "plain-worker.log"
        plain_worker = start_plain_worker(setup=setup, log_file=plain_log)
        report = run_measurements(
            harness=harness, options=options, plain_worker=plain_worker, issued=issued
        )
        finished = datetime.now(UTC)
        print()
        print(f"Date: {started:%Y-%m-%d %H:%M} UTC ({(finished - started).seconds} s)")
        print(f"Machine: {machine_description()}")
        # Other processes on the machine compete for the same cores.
        print(f"Load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
        print(f"Versions: {versions(redis_client)}")
        print(
            f"Command: .venv/bin/python benchmarks/run.py --tasks {options.tasks} "
            f"--rounds {options.rounds} --commits {options.commits} "
            f"--commit-reps {options.commit_reps}"
        )
        print(report)
        failed = False
    finally:
        if plain_worker is not None:
            from collective.plonecelery.devtools.instance import stop_process

            stop_process(plain_worker)
        harness.stop()
        cleanup_redis(
            setup.broker_url,
            queues=[setup.queue, setup.plain_queue, setup.sink_queue],
            backend_url=setup.backend_url,
            ids=issued,
        )
        if failed or options.keep:
            print(f"Logs and data kept in {base_dir}", file=sys.stderr)
        else:
            shutil.rmtree(base_dir, ignore_errors=True)
    return 0


def run_measurements(*, harness, options, plain_worker: subprocess.Popen, issued: list[str]):
    """Both measurements; returns the report text."""
    import transaction
    from plone import api

    with harness.session(user="admin") as portal:
        uids = {}
        for name in ("bench-read", "bench-write", "bench-commit"):
            doc = api.content.create(container=portal, type="Document", id=name, title=name)
            uids[name] = doc.UID()
        transaction.commit()

    outbox_modes = (False, True) if outbox_available() else (None,)
    kinds = throughput_kinds(
        harness=harness,
        plain_worker=plain_worker,
        outbox_modes=outbox_modes,
        read_uid=uids["bench-read"],
        write_id="bench-write",
    )
    print(f"Throughput: {options.rounds} rounds of {options.tasks} tasks per kind", flush=True)
    batches = measure_throughput(
        kinds,
        tasks=options.tasks,
        rounds=options.rounds,
        zeo_pid=harness.zeo.process.pid,
        issued=issued,
    )

    variants = commit_variants(outbox_modes)
    print(
        f"Commit cost: {options.commit_reps} repetitions of {options.commits} "
        "transactions per variant",
        flush=True,
    )
    blocks = measure_commit_cost(
        harness,
        doc_id="bench-commit",
        transactions=options.commits,
        reps=options.commit_reps,
        variants=variants,
    )
    set_outbox(True)

    sections = [
        "Throughput, one worker (prefork -c 1). Medians over rounds; 'range' is "
        "min-max over rounds; 'vs plain' is the median of the ratios to the plain "
        "no-op of the same round; 'in task ms' is the run time the worker logs "
        "(Zope set-up, task, commit); CPU columns are CPU time per task of the "
        "worker (main + pool process) and of the ZEO server.",
        throughput_table(kinds, batches),
        "Time added to a committing transaction by queuing tasks (one small write "
        "per transaction; difference to the no-task blocks of the same repetition, "
        "per task; median and p90 over repetitions):",
        commit_table(variants, blocks),
    ]
    if None in outbox_modes:
        sections.append(
            "TODO: this version has no PLONECELERY_OUTBOX setting, so the rows with "
            "and without the transactional outbox are missing (see set_outbox())."
        )
    else:
        sections.append(relay_summary(harness))
    return "\n\n".join(sections)


def mode_key(outbox: bool | None) -> str:
    return {None: "", False: "-off", True: "-on"}[outbox]


def mode_label(outbox: bool | None) -> str:
    return {None: "", False: ", outbox off", True: ", outbox on (default)"}[outbox]


def throughput_kinds(*, harness, plain_worker, outbox_modes, read_uid: str, write_id: str):
    """The plain baseline, then each Zope-aware task in each outbox mode."""
    import bench_tasks
    import plain_celery

    kinds = [
        Kind(
            key="plain",
            label="plain Celery no-op (baseline)",
            outbox=None,
            send=plain_sender(plain_celery.noop),
            check=expect_all("ok"),
            app=plain_celery.app,
            task_name=plain_celery.noop.name,
            log=LogReader(harness.log_dir / "plain-worker.log"),
            worker_pid=plain_worker.pid,
        )
    ]
    zope_log = LogReader(harness.worker_log)
    read, write = bench_tasks.read_title, bench_tasks.write_counter
    zope_kinds = (
        ("noop", "no-op", bench_tasks.noop, (), expect_all("ok")),
        ("read", "read (catalog query)", read, (read_uid,), expect_all("bench-read")),
        ("write", "write (set attribute)", write, (write_id,), expect_counter()),
    )
    for key, label, task, args, check in zope_kinds:
        for outbox in outbox_modes:
            kinds.append(
                Kind(
                    key=f"{key}{mode_key(outbox)}",
                    label=f"Zope {label}{mode_label(outbox)}",
                    outbox=outbox,
                    send=zope_sender(harness, task, *args),
                    check=check,
                    app=task.app,
                    task_name=task.name,
                    log=zope_log,
                    worker_pid=harness.worker.pid,
                )
            )
    return kinds


def commit_variants(outbox_modes) -> list[CommitVariant]:
    variants = [CommitVariant("none", "no task", 0, None)]
    for tasks in (1, 10):
        for outbox in outbox_modes:
            label = f"{tasks} task{'s' if tasks > 1 else ''}{mode_label(outbox)}"
            variants.append(CommitVariant(f"{tasks}{mode_key(outbox)}", label, tasks, outbox))
    return variants


def relay_summary(harness) -> str:
    """How the outbox relay fared in the worker, and what the outbox holds now."""
    from collective.plonecelery.outbox import records as outbox

    times = LogReader(harness.worker_log).run_times("collective.plonecelery.outbox.relay_outbox")
    with harness.session(user="admin") as portal:
        held = outbox.counts(portal._p_jar)
    text = f"Outbox records at the end: {held}."
    if times:
        text += (
            f" Relay runs in the worker: {len(times)}, median "
            f"{median(times) * 1000:.0f} ms, slowest {max(times) * 1000:.0f} ms."
        )
    return text


if __name__ == "__main__":
    sys.exit(main())
