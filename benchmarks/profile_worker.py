"""Where a worker pool process spends its CPU time on Zope-aware tasks (py-spy).

Usage::

    .venv/bin/pip install py-spy   # a profiler, not a dependency of the add-on
    .venv/bin/python benchmarks/profile_worker.py [--task read] [--outbox on]
        [--seconds 30] [--top 40] [--raw /tmp/stacks.txt]

It starts what ``run.py`` starts (ZEO, a Plone site, one ``plonecelery worker``
prefork ``-c 1`` on Redis), keeps the worker busy with batches of one kind of task,
and samples the pool process with ``py-spy record --format raw`` (CPU samples
only: time the process spends waiting for Redis or ZEO is not counted). It prints
the functions with the largest share of samples, inclusive (the function and what
it calls) and self (the function's own code), so the two can be read together.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import run

TASKS = ("noop", "read", "write")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks/profile_worker.py")
    parser.add_argument("--task", choices=TASKS, default="read")
    parser.add_argument("--outbox", choices=("on", "off"), default="on")
    parser.add_argument("--seconds", type=int, default=30, help="sampling time (30)")
    parser.add_argument("--top", type=int, default=40, help="functions to print (40)")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379")
    return parser.parse_args(argv)


def pool_pid(worker_pid: int) -> int:
    children = Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"Expected one pool process under {worker_pid}, got {children}")
    return int(children[0])


def summarise(stacks: Path, top: int) -> str:
    """Inclusive and self shares per function, from py-spy's collapsed stacks."""
    inclusive, own = collections.Counter(), collections.Counter()
    total = 0
    for line in stacks.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        count = int(count)
        total += count
        names = [frame.split(" (")[0] + " " + short(frame) for frame in frames.split(";")]
        for name in set(names):
            inclusive[name] += count
        own[names[-1]] += count
    lines = [f"{total} samples", "", "inclusive %  function (file)"]
    lines += [f"{100 * n / total:10.1f}  {name}" for name, n in inclusive.most_common(top)]
    lines += ["", "self %       function (file)"]
    lines += [f"{100 * n / total:10.1f}  {name}" for name, n in own.most_common(top)]
    return "\n".join(lines)


def short(frame: str) -> str:
    """``(site-packages/pkg/mod.py)`` of a py-spy frame ``name (path:line)``."""
    if " (" not in frame:
        return ""
    where = frame.split(" (", 1)[1].rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "src/", "lib/python3"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"({where})"


def main(argv=None) -> int:
    options = parse_args(argv)
    py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if py_spy is None:
        print("py-spy is not installed: .venv/bin/pip install py-spy")
        return 2
    sys.dont_write_bytecode = True
    setup = run.Setup(redis=options.redis)
    base_dir = Path(tempfile.mkdtemp(prefix="plonecelery-profile-"))
    environment = setup.environment()
    os.environ.update(environment)
    os.environ["BENCH_PLAIN_SETTINGS"] = json.dumps(run.plain_settings(setup))
    sys.path.insert(0, str(run.HERE))

    from collective.plonecelery.devtools.harness import WorkerHarness

    harness = WorkerHarness(
        base_dir=base_dir,
        environment=environment,
        worker_args=setup.worker_args(name="zope-profile", queue=setup.queue),
        worker_env=run.module_environment(),
    )
    issued: list[str] = []
    try:
        harness.start()
        import bench_tasks
        import transaction
        from plone import api

        with harness.session(user="admin") as portal:
            uid = api.content.create(
                container=portal, type="Document", id="bench-read", title="bench-read"
            ).UID()
            api.content.create(container=portal, type="Document", id="bench-write")
            transaction.commit()
        run.set_outbox(options.outbox == "on")
        task, args = {
            "noop": (bench_tasks.noop, ()),
            "read": (bench_tasks.read_title, (uid,)),
            "write": (bench_tasks.write_counter, ("bench-write",)),
        }[options.task]
        send = run.zope_sender(harness, task, *args)
        from celery.result import ResultSet

        ResultSet(send(50), app=task.app).get(timeout=run.RESULT_TIMEOUT)  # warm-up
        raw = options.raw or base_dir / "stacks.txt"
        stop = threading.Event()

        def keep_busy():
            # Batches of tasks, each waited for, so the queue never runs dry or floods.
            while not stop.is_set():
                results = send(100)
                issued.extend(r.id for r in results)
                ResultSet(results, app=task.app).get(timeout=run.RESULT_TIMEOUT)

        pid = pool_pid(harness.worker.pid)
        print(
            f"Sampling pool process {pid} for {options.seconds} s ({options.task}, "
            f"outbox {options.outbox})...",
            flush=True,
        )
        profiler = subprocess.Popen(
            [
                py_spy,
                "record",
                "--pid",
                str(pid),
                "--duration",
                str(options.seconds),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(raw),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        busy = threading.Thread(target=keep_busy)
        busy.start()
        profiler.wait()
        stop.set()
        busy.join()
        print(summarise(raw, options.top))
    finally:
        harness.stop()
        run.cleanup_redis(
            setup.broker_url,
            queues=[setup.queue, setup.sink_queue],
            backend_url=setup.backend_url,
            ids=issued,
        )
        shutil.rmtree(base_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
