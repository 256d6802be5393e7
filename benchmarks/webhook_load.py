"""Load on the webhook endpoint: concurrent signed senders against a real Plone instance.

Usage::

    .venv/bin/python benchmarks/webhook_load.py [--senders 20] [--requests 50]
        [--warmup 3] [--threads 4] [--schemes standard-webhooks,ghost]
        [--drain 180] [--phase-timeout 300] [--redis redis://127.0.0.1:6379] [--keep]

What it starts, all on loopback and under a temporary directory in /tmp that is
removed afterwards (kept, and named, when something fails or with ``--keep``):

* a ZEO server, a Plone site, one ``plonecelery worker`` (prefork ``-c 1``) and
  Zope booted in this process (:class:`collective.plonecelery.devtools.harness.WorkerHarness`);
  Redis db 13 is the broker and db 14 the result backend, with a queue of the run's own;
* a Plone WSGI instance on the same ZEO server: ``runwsgi`` with waitress and
  ``--threads`` threads (4, waitress' and our ``write_zope_ini`` default);
* the demo Ghost blog (:mod:`collective.plonecelery.devtools.demo_blog`), in this process. The
  sources read it, so every queued import really runs in the worker: it fetches the post
  over HTTP, then imports it or finds it unchanged ("skipped").

For each signature scheme it creates a Ghost-kind source through
``POST @blog-sources`` (as the admin) and then, one phase after the other:

1. a warm-up (``--warmup`` deliveries per sender, all senders at once; not recorded);
2. the baseline: 1 sender, ``--requests`` deliveries;
3. ``--senders`` senders at once, ``--requests`` deliveries each.

For standard-webhooks it then re-sends the deliveries of phase 3 (1 sender, then all
senders): the endpoint answers 200 "duplicate" and writes, commits and queues nothing,
so the difference to phases 2-3 is what the write, the commit and the queuing cost.

Every sender is a thread with an ``httpx.Client`` of its own (keep-alive) and sends no
``Accept`` header, like real platforms. Every delivery is unique (``webhook-id`` and body),
so deduplication does not short-circuit it, and is signed right before it is sent.
Between phases the benchmark waits (at most ``--drain`` seconds) until the worker has run
every import queued so far, so that each phase starts with an idle worker; during a phase
the worker imports in the background, as in production.

It reports, per phase: requests, errors (any answer but 202 with a task; 200 "duplicate"
when re-sending), accepted deliveries per second (from the common start to the last
answer), median/p90/p99/max latency, answers slower than 2 s (Ghost's webhook timeout),
the deepest waitress task queue it logged, the requests Zope retried after a ZODB
conflict (and, at the end, which object conflicted), and how long after the phase the
worker finished its imports; the ratios of many senders to one; CPU time per request of
waitress, ZEO, the worker, Redis (the whole server) and this process.

A phase stops sending after ``--phase-timeout`` seconds; a request times out after 60 s.
At the end the run deletes its queue, its kombu routing tables and its task results.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from dataclasses import field
from datetime import UTC
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
REQUEST_TIMEOUT = 60.0
#: Ghost gives up on a webhook request after 2 s (and retries it): answers slower than this
#: are counted apart.
SLOW = 2.0
SITE_ID = "plone"
TARGET = "news"
IMPORT_TASK = "collective.plonecelery.importer.import_post"
READY_STATES = ("SUCCESS", "FAILURE", "REVOKED")
QUEUE_DEPTH = re.compile(r"Task queue depth is (\d+)")
RELAY_SENT = re.compile(r"Outbox relay sent (\d+) pending task")
#: Zope's SiteErrorLog line for a request that lost a ZODB conflict and is retried.
CONFLICT = re.compile(
    r"(?:Read)?ConflictError at \S+: database (read conflict|conflict) error \(oid (0x[0-9a-f]+)"
)

#: A delivery for (sender index, sequence number): its key, URL, body, headers.
Delivery = tuple[str, str, bytes, dict[str, str]]
MakeDelivery = Callable[[int, int], Delivery]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmarks/webhook_load.py",
        description="Latency and throughput of POST @blog-webhook under concurrent signed "
        "senders, against a real Plone WSGI instance (waitress) on ZEO, Redis and a worker.",
    )
    parser.add_argument("--senders", type=int, default=20, help="concurrent senders (20)")
    parser.add_argument(
        "--requests", type=int, default=50, help="deliveries per sender and phase (50)"
    )
    parser.add_argument(
        "--warmup", type=int, default=3, help="warm-up deliveries per sender, not recorded (3)"
    )
    parser.add_argument("--threads", type=int, default=4, help="waitress threads (4)")
    parser.add_argument(
        "--schemes",
        default="standard-webhooks,ghost",
        help="signature schemes to measure, comma-separated (standard-webhooks,ghost)",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=180.0,
        help="seconds to wait for the worker's imports between phases (180)",
    )
    parser.add_argument(
        "--phase-timeout",
        type=float,
        default=300.0,
        help="seconds after which a phase stops sending (300)",
    )
    parser.add_argument(
        "--redis",
        default="redis://127.0.0.1:6379",
        help="Redis server, without a db number (db 13 and 14 are used)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the temporary directory (logs, Data.fs)"
    )
    options = parser.parse_args(argv)
    for name in ("senders", "requests", "threads"):
        if getattr(options, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if options.warmup < 0:
        parser.error("--warmup must be 0 or more")
    options.schemes = [s.strip() for s in options.schemes.split(",") if s.strip()]
    unknown = set(options.schemes) - {"standard-webhooks", "ghost"}
    if unknown or not options.schemes:
        parser.error("--schemes takes standard-webhooks and/or ghost")
    if urlsplit(options.redis).hostname not in ("127.0.0.1", "localhost", "::1"):
        parser.error("--redis must be on loopback (127.0.0.1, localhost or ::1)")
    return options


# -- statistics ----------------------------------------------------------------


def percentile(values: list[float], pct: int) -> float:
    """The ``pct``-th percentile (inclusive method; the value itself for one sample).

    >>> percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50)
    3.0
    """
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


# -- the run's names and settings ------------------------------------------------


@dataclass
class Setup:
    """Names and settings of one run."""

    redis: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def queue(self) -> str:
        return f"plonecelery-webhook-bench-{self.run_id}"

    @property
    def broker_url(self) -> str:
        return f"{self.redis.rstrip('/')}/13"

    @property
    def backend_url(self) -> str:
        return f"{self.redis.rstrip('/')}/14"

    def environment(self) -> dict[str, str]:
        """CELERY_* settings for this process, the WSGI instance and the worker."""
        return {
            "CELERY_BROKER_URL": self.broker_url,
            "CELERY_RESULT_BACKEND": self.backend_url,
            "CELERY_TASK_DEFAULT_QUEUE": self.queue,
        }

    def worker_args(self) -> tuple[str, ...]:
        return (
            *("-l", "info", "-c", "1", "-P", "prefork"),
            *("-Q", self.queue, "-n", f"webhook-bench-{self.run_id}@%h"),
        )


# -- deliveries ----------------------------------------------------------------


@dataclass
class Source:
    """A blog source of the run and how to sign deliveries for it."""

    scheme: str
    source_id: str
    secret: str
    url: str  # the webhook URL, with ?event= for Ghost


def new_secret(scheme: str) -> str:
    """A secret as the platform would show it (standard-webhooks: ``whsec_`` + base64)."""
    if scheme == "standard-webhooks":
        return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode("ascii")
    return secrets.token_hex(16)


def delivery_maker(
    source: Source, *, phase: str, post_ids: list[str], ghost_bodies: dict[str, dict]
) -> MakeDelivery:
    """Deliveries unique per (phase, sender, sequence), signed when made.

    Made again with the same ``phase`` (standard-webhooks), a delivery has the same
    ``webhook-id`` and body, hence the same delivery id: that is how duplicates are sent.
    """
    from collective.plonecelery.blogs.verify.signatures import sign

    def make(sender: int, seq: int) -> Delivery:
        key = f"{phase}-{sender}-{seq}"
        post_id = post_ids[(sender + seq) % len(post_ids)]
        if source.scheme == "standard-webhooks":
            payload = {"type": "post.updated", "data": {"id": post_id, "bench": key}}
        else:
            # A full Ghost post envelope (a few kB, like Ghost's), marked as unique.
            payload = json.loads(json.dumps(ghost_bodies[post_id]))
            payload["post"]["current"]["bench"] = key
        body = json.dumps(payload, separators=(",", ":")).encode()
        options = {"msg_id": f"msg_{key}"} if source.scheme == "standard-webhooks" else {}
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "webhook-load/1.0",
            **sign(scheme=source.scheme, secret=source.secret, body=body, **options),
        }
        return key, source.url, body, headers

    return make


# -- sending -------------------------------------------------------------------


@dataclass
class Sent:
    """One request: delivery key, latency (s), HTTP status (0: no answer), task id, error."""

    key: str
    latency: float
    status: int
    task: str | None
    error: str | None


@dataclass
class Phase:
    """What one phase measured."""

    scheme: str
    kind: str  # "fresh" or "duplicate"
    senders: int
    sent: list[Sent]
    wall: float  # seconds, from the start signal until the last answer
    cpu: dict[str, float]  # CPU seconds per process, during the phase
    queue_depth: int  # highest "Task queue depth" waitress logged (0: none)
    conflicts: Counter  # ("conflict" or "read conflict", oid in hex) -> requests retried
    drained: float = 0.0  # seconds after the phase until the worker had run its imports
    pending: int = 0  # imports still not run after --drain seconds

    @property
    def ok(self) -> list[Sent]:
        return [s for s in self.sent if s.error is None]

    @property
    def errors(self) -> list[Sent]:
        return [s for s in self.sent if s.error is not None]

    @property
    def rate(self) -> float:
        return len(self.ok) / self.wall if self.wall else 0.0

    def latencies(self) -> list[float]:
        return [s.latency for s in self.ok]


def one_line(text: str, *, limit: int = 160) -> str:
    """``text`` on one line, shortened (for error summaries)."""
    return " ".join(text.split())[:limit]


def check_answer(response, *, duplicate: bool) -> tuple[str | None, str | None]:
    """``(task id, error)``: 202 with a task for fresh deliveries, 200 duplicate for re-sent."""
    expected = 200 if duplicate else 202
    if response.status_code != expected:
        return None, f"{response.status_code}: {one_line(response.text)}"
    try:
        answer = response.json()
    except ValueError:
        return None, f"{response.status_code} without JSON: {one_line(response.text)}"
    if bool(answer.get("duplicate")) != duplicate or not answer.get("task"):
        return None, f"{response.status_code} unexpected answer: {one_line(response.text)}"
    return answer["task"], None


def send_phase(
    *,
    senders: int,
    per_sender: int,
    make: MakeDelivery,
    duplicate: bool,
    timeout: float,
    refused_before: frozenset[str] = frozenset(),
) -> tuple[list[Sent], float]:
    """``senders`` threads send ``per_sender`` deliveries each; returns them and the wall time.

    All threads start together (a barrier); a thread stops sending after ``timeout`` s.
    Re-sent deliveries (``duplicate``) whose key is in ``refused_before`` were never
    recorded, so 202 is their right answer.
    """
    import httpx

    results: list[list[Sent]] = [[] for _ in range(senders)]
    start = threading.Barrier(senders + 1)
    failures: list[BaseException] = []

    def sender(index: int) -> None:
        try:
            with httpx.Client(timeout=REQUEST_TIMEOUT) as client:
                # Blog platforms send no Accept header.
                del client.headers["Accept"]
                start.wait()
                stop_at = time.monotonic() + timeout
                for seq in range(per_sender):
                    if time.monotonic() > stop_at:
                        break
                    key, url, body, headers = make(index, seq)
                    began = time.perf_counter()
                    try:
                        response = client.post(url, content=body, headers=headers)
                    except httpx.HTTPError as exc:
                        elapsed = time.perf_counter() - began
                        results[index].append(Sent(key, elapsed, 0, None, type(exc).__name__))
                        continue
                    elapsed = time.perf_counter() - began
                    task, error = check_answer(
                        response, duplicate=duplicate and key not in refused_before
                    )
                    results[index].append(Sent(key, elapsed, response.status_code, task, error))
        except BaseException as exc:  # reported by run_together
            failures.append(exc)
            start.abort()

    wall = run_together(sender, senders=senders, start=start, failures=failures)
    return [s for sent in results for s in sent], wall


def run_together(target, *, senders: int, start: threading.Barrier, failures: list) -> float:
    """Run ``target(index)`` in ``senders`` threads that wait on ``start`` (a barrier of
    ``senders + 1``); the wall time from the common start to the last thread's end.

    A target appends what it raised to ``failures`` (and aborts ``start``): the first is
    raised here.
    """
    threads = [
        threading.Thread(target=target, args=(i,), name=f"sender-{i}") for i in range(senders)
    ]
    for thread in threads:
        thread.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass  # a sender failed before the start: its error is raised below
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    if failures:
        raise RuntimeError(f"A sender thread failed: {failures[0]!r}") from failures[0]
    return wall


# -- measuring around a phase ----------------------------------------------------


class LogTail:
    """The text a log file gained since the last read."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def skip(self) -> None:
        self.offset = self.path.stat().st_size if self.path.exists() else 0

    def read(self) -> str:
        if not self.path.exists():
            return ""
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            text = log.read().decode("utf-8", "replace")
            self.offset = log.tell()
        return text


def cpu_snapshot(*, pids: dict[str, int], redis_client) -> dict[str, float]:
    """CPU seconds so far of our processes, Redis (whole server) and this process."""
    from run import cpu_seconds

    values = {name: cpu_seconds(pid) for name, pid in pids.items()}
    info = redis_client.info("cpu")
    values["redis"] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
    usage = resource.getrusage(resource.RUSAGE_SELF)
    values["load generator"] = usage.ru_utime + usage.ru_stime
    return values


@dataclass
class Bench:
    """Everything a phase needs from the running stack."""

    pids: dict[str, int]
    redis_client: object
    backend: object
    instance_log: LogTail
    phase_timeout: float
    drain_timeout: float
    issued: list[str] = field(default_factory=list)  # task ids of every accepted delivery
    refused: set[str] = field(default_factory=set)  # keys of fresh deliveries not accepted
    done: dict[str, dict] = field(default_factory=dict)  # task id -> result meta

    def run_phase(
        self, *, scheme: str, kind: str, senders: int, per_sender: int, make: MakeDelivery
    ) -> Phase:
        self.instance_log.skip()
        before = cpu_snapshot(pids=self.pids, redis_client=self.redis_client)
        sent, wall = send_phase(
            senders=senders,
            per_sender=per_sender,
            make=make,
            duplicate=kind == "duplicate",
            timeout=self.phase_timeout,
            refused_before=frozenset(self.refused),
        )
        after = cpu_snapshot(pids=self.pids, redis_client=self.redis_client)
        self.issued.extend(s.task for s in sent if s.task and s.status == 202)
        if kind == "fresh":
            self.refused.update(s.key for s in sent if s.error)
        log = self.instance_log.read()
        depths = [int(d) for d in QUEUE_DEPTH.findall(log)]
        return Phase(
            scheme=scheme,
            kind=kind,
            senders=senders,
            sent=sent,
            wall=wall,
            cpu={name: after[name] - before[name] for name in before},
            queue_depth=max(depths, default=0),
            conflicts=Counter(CONFLICT.findall(log)),
        )

    def drain(self) -> tuple[int, float]:
        """Wait until the worker has run every import issued so far; (still pending, seconds)."""
        began = time.monotonic()
        deadline = began + self.drain_timeout
        while True:
            pending = [t for t in self.issued if t not in self.done]
            for chunk in range(0, len(pending), 500):
                ids = pending[chunk : chunk + 500]
                metas = self.backend.mget([f"celery-task-meta-{t}" for t in ids])
                for task_id, raw in zip(ids, metas, strict=True):
                    meta = json.loads(raw) if raw else None
                    if meta and meta.get("status") in READY_STATES:
                        self.done[task_id] = meta
            left = sum(1 for t in self.issued if t not in self.done)
            if not left or time.monotonic() > deadline:
                return left, time.monotonic() - began
            time.sleep(0.5)


# -- the stack -----------------------------------------------------------------


def create_sources(*, admin, schemes: list[str], blog_url: str, plone_url: str, run_id: str):
    """The target folder and one Ghost-kind source per scheme, through the REST API."""
    from collective.plonecelery.devtools import demo_blog as blog

    response = admin.post("", json={"@type": "Folder", "id": TARGET, "title": "News"})
    if response.status_code != 201:
        raise RuntimeError(f"Could not create /{TARGET}: {response.status_code} {response.text}")
    sources = []
    for scheme in schemes:
        source_id = f"bench-{run_id}-{'std' if scheme == 'standard-webhooks' else 'ghost'}"
        secret = new_secret(scheme)
        settings = blog.source_settings(
            blog_url=blog_url, source_id=source_id, secret=secret, target=TARGET, scheme=scheme
        )
        response = admin.post("/@blog-sources", json=settings)
        if response.status_code != 201:
            raise RuntimeError(f"Could not create source {source_id}: {response.text}")
        url = f"{plone_url}/++api++/@blog-webhook/{source_id}"
        if scheme == "ghost":
            url += "?event=post.published.edited"
        sources.append(Source(scheme=scheme, source_id=source_id, secret=secret, url=url))
    return sources


def cleanup_redis(*, setup: Setup, task_ids: list[str]) -> dict[str, int]:
    """Delete the run's queue, routing tables and task results; returns what was deleted."""
    import redis

    broker = redis.Redis.from_url(setup.broker_url)
    deleted = Counter()
    deleted["queue"] = broker.delete(setup.queue)
    for prefix in ("_kombu.binding.", "_kombu.binding_permanent."):
        deleted["bindings"] += broker.delete(prefix + setup.queue)
    # The worker's remote-control queue (named after the worker) and its binding entries.
    worker_name = f"webhook-bench-{setup.run_id}@"
    for key in broker.scan_iter(match="_kombu.binding.*"):
        for member in broker.smembers(key):
            if worker_name.encode() in member or setup.queue.encode() in member:
                deleted["binding entries"] += broker.srem(key, member)
    for key in broker.scan_iter(match=f"*{worker_name}*"):
        deleted["pidbox"] += broker.delete(key)
    # kombu keeps a deadline per exchange (pidbox, events) whose tables expire; drop the
    # entries whose tables are gone now, as kombu's own sweep would later.
    deadlines = "_kombu.binding_deadlines"
    for member in broker.zrange(deadlines, 0, -1):
        exchange = member.decode()
        tables = (f"_kombu.binding.{exchange}", f"_kombu.binding_permanent.{exchange}")
        if not broker.exists(*tables):
            deleted["binding deadlines"] += broker.zrem(deadlines, member)
    backend = redis.Redis.from_url(setup.backend_url)
    for start in range(0, len(task_ids), 1000):
        keys = [f"celery-task-meta-{t}" for t in task_ids[start : start + 1000]]
        deleted["results"] += backend.delete(*keys)
    # Tasks the worker queued for itself (outbox relay, delivery-log trim) on our queue.
    for key in backend.scan_iter(match="celery-task-meta-*", count=1000):
        raw = backend.get(key)
        if raw and json.loads(raw).get("queue") == setup.queue:
            deleted["results"] += backend.delete(key)
    return dict(deleted)


# -- reporting -----------------------------------------------------------------


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}" if seconds >= 0.1 else f"{seconds * 1000:.1f}"


def phase_label(phase: Phase) -> str:
    what = "re-sent (200 duplicate)" if phase.kind == "duplicate" else "fresh (202)"
    return f"{phase.scheme}, {what}"


def results_table(phases: list[Phase]) -> str:
    from run import table

    rows = []
    for phase in phases:
        lat = phase.latencies()
        rows.append(
            [
                phase_label(phase),
                str(phase.senders),
                str(len(phase.sent)),
                str(len(phase.errors)),
                f"{phase.rate:.1f}",
                ms(statistics.median(lat)) if lat else "-",
                ms(percentile(lat, 90)) if lat else "-",
                ms(percentile(lat, 99)) if lat else "-",
                ms(max(lat)) if lat else "-",
                str(sum(1 for latency in lat if latency > SLOW)),
                str(phase.queue_depth or "-"),
                str(sum(phase.conflicts.values())),
                f"{phase.drained:.0f}" + (f" ({phase.pending} left)" if phase.pending else ""),
            ]
        )
    return table(
        [
            "deliveries",
            "senders",
            "requests",
            "errors",
            "req/s",
            "median ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            f"> {SLOW:g} s",
            "queue depth",
            "retries",
            "imports done +s",
        ],
        rows,
    )


def ratio_table(phases: list[Phase]) -> str:
    """Many senders against one sender, per scheme and kind of delivery."""
    from run import table

    rows = []
    for phase in phases:
        if phase.senders == 1:
            continue
        base = next(
            (
                p
                for p in phases
                if p.senders == 1 and p.scheme == phase.scheme and p.kind == phase.kind
            ),
            None,
        )
        if base is None or not base.ok or not phase.ok:
            continue
        lat, base_lat = phase.latencies(), base.latencies()
        rows.append(
            [
                phase_label(phase),
                f"{phase.rate / base.rate:.2f}x",
                f"{statistics.median(lat) / statistics.median(base_lat):.1f}x",
                f"{percentile(lat, 99) / percentile(base_lat, 99):.1f}x",
            ]
        )
    return table(["deliveries", "req/s", "median latency", "p99 latency"], rows)


def cpu_table(phases: list[Phase]) -> str:
    """CPU milliseconds per request, by process."""
    from run import table

    names = list(phases[0].cpu)
    rows = []
    for phase in phases:
        count = max(len(phase.sent), 1)
        per = [phase.cpu[name] / count * 1000 for name in names]
        busy = sum(phase.cpu.values()) / phase.wall if phase.wall else 0.0
        rows.append(
            [f"{phase_label(phase)}, {phase.senders}"]
            + [f"{value:.1f}" for value in per]
            + [f"{sum(per):.1f}", f"{busy:.2f}"]
        )
    return table(["deliveries, senders", *names, "total", "cores busy"], rows)


def worker_summary(bench: Bench, *, worker_log: Path) -> str:
    from run import LogReader

    states = Counter(meta.get("status") for meta in bench.done.values())
    outcomes = Counter(
        (meta.get("result") or {}).get("status")
        for meta in bench.done.values()
        if meta.get("status") == "SUCCESS" and isinstance(meta.get("result"), dict)
    )
    run_times = LogReader(worker_log).run_times(IMPORT_TASK)
    relayed = sum(int(n) for n in RELAY_SENT.findall(worker_log.read_text(errors="replace")))
    text = (
        f"Worker: {len(bench.issued)} imports queued, {len(bench.done)} finished "
        f"({dict(states)}; outcomes {dict(outcomes)}), "
        f"{len(bench.issued) - len(bench.done)} not finished at the end."
    )
    if run_times:
        text += (
            f" Import run time in the worker: median {statistics.median(run_times) * 1000:.0f} ms,"
            f" p90 {percentile(run_times, 90) * 1000:.0f} ms."
        )
    text += f" Outbox relay re-sent {relayed} task(s)."
    return text


def conflict_owners(harness, oids) -> dict[str, str]:
    """What each conflicting object (oid in hex, as Zope logs it) is: delivery log, outbox..."""
    from ZODB.utils import p64

    try:
        with harness.session(user="admin") as portal:
            names = structure_names(portal)
    except Exception as exc:  # the report stays useful without the names
        return {oid: f"oid {oid} ({type(exc).__name__} while looking it up)" for oid in oids}
    return {oid: names.get(p64(int(oid, 16)), f"other object {oid}") for oid in oids}


def structure_names(portal) -> dict[bytes, str]:
    """oid -> name of the delivery log's and the outbox's trees and buckets."""
    from zope.annotation.interfaces import IAnnotations

    from collective.plonecelery.blogs import deliveries
    from collective.plonecelery.outbox import records as outbox

    names: dict[bytes, str] = {}

    def add_tree(tree, label: str) -> None:
        names[tree._p_oid] = f"{label} (the tree)"
        bucket, first = tree._firstbucket, True
        while bucket is not None:
            if bucket._p_oid is not None:  # a one-bucket tree keeps it inline
                names[bucket._p_oid] = f"{label} ({'first' if first else 'other'} bucket)"
            bucket, first = bucket._next, False

    log = IAnnotations(portal).get(deliveries.ANNOTATION_KEY)
    if log is not None:
        add_tree(log["by_id"], "delivery log by_id")
        add_tree(log["by_time"], "delivery log by_time")
        names[log["length"]._p_oid] = "delivery log length"
    box = outbox.get_outbox(portal._p_jar, create=False)
    if box is not None:
        names[box._p_oid] = "outbox"
        add_tree(box.shards, "outbox shard index")
        for shard in box.shards.values():
            add_tree(shard, "outbox shard")
    return names


def error_summary(phases: list[Phase], *, harness) -> str:
    errors = Counter(s.error for p in phases for s in p.errors)
    by_oid = sum((p.conflicts for p in phases), Counter())
    owners = conflict_owners(harness, {oid for _kind, oid in by_oid}) if by_oid else {}
    conflicts = Counter()
    for (kind, oid), n in by_oid.items():
        conflicts[f"{owners[oid]}{', read' if kind == 'read conflict' else ''}"] += n
    text = (
        "Errors: none."
        if not errors
        else "Errors: " + "; ".join(f"{n} x {text}" for text, n in errors.most_common(5))
    )
    if conflicts:
        text += " Requests retried by Zope after a ZODB conflict, by object: " + ", ".join(
            f"{name} {n}" for name, n in conflicts.most_common()
        )
        text += "."
    return text


# -- main ----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    # Nothing may be written into the repository, not even run.py's __pycache__.
    sys.dont_write_bytecode = True
    sys.path.insert(0, str(HERE))
    import redis

    setup = Setup(redis=options.redis)
    try:
        redis_client = redis.Redis.from_url(setup.broker_url)
        redis_client.ping()
    except redis.RedisError as exc:
        print(f"Redis is not reachable at {setup.broker_url} ({exc}): start it first.")
        return 2

    base_dir = Path(tempfile.mkdtemp(prefix="plonecelery-webhook-bench-"))
    environment = setup.environment()
    os.environ.update(environment)
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    print(f"Webhook benchmark run {setup.run_id} in {base_dir}", flush=True)

    from collective.plonecelery.devtools import demo_blog as blog
    from collective.plonecelery.devtools.harness import WorkerHarness

    harness = WorkerHarness(
        base_dir=base_dir,
        environment=environment,
        site_id=SITE_ID,
        worker_args=setup.worker_args(),
    )
    blog_server = bench = None
    failed = True
    try:
        print("Starting ZEO, creating the Plone site, starting the worker...", flush=True)
        harness.start()
        with harness.session(user="admin") as portal:
            # Fails early if the site is missing; imports what the report needs later.
            structure_names(portal)
        blog_server = blog.serve(host="127.0.0.1", port=0)
        print(f"Starting the WSGI instance ({options.threads} waitress threads)...", flush=True)
        http = harness.start_http(threads=options.threads)
        bench = Bench(
            pids={
                "waitress": harness.http.pid,
                "ZEO": harness.zeo.process.pid,
                "worker": harness.worker.pid,
            },
            redis_client=redis_client,
            backend=redis.Redis.from_url(setup.backend_url),
            instance_log=LogTail(harness.log_dir / "instance.log"),
            phase_timeout=options.phase_timeout,
            drain_timeout=options.drain,
        )
        phases = run_phases(
            bench=bench, options=options, http=http, harness=harness, blog_server=blog_server
        )
        finished = datetime.now(UTC)
        from run import machine_description
        from run import versions

        print()
        print(f"Date: {started:%Y-%m-%d %H:%M} UTC ({(finished - started).seconds} s)")
        print(f"Machine: {machine_description()}")
        print(f"Load average (1 min): {load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
        print(f"Versions: {versions(redis_client)}")
        print(
            f"Command: .venv/bin/python benchmarks/webhook_load.py --senders {options.senders} "
            f"--requests {options.requests} --warmup {options.warmup} "
            f"--threads {options.threads} --schemes {','.join(options.schemes)}"
        )
        print(
            f"WSGI: runwsgi + waitress, {options.threads} threads; worker: prefork -c 1; "
            "broker and results: Redis db 13/14."
        )
        print()
        print(results_table(phases))
        print()
        print("Many senders vs 1 sender (same scheme and kind):")
        print(ratio_table(phases))
        print()
        print("CPU ms per request, by process ('cores busy': CPU seconds per wall second):")
        print(cpu_table(phases))
        print()
        print(error_summary(phases, harness=harness))
        print(worker_summary(bench, worker_log=harness.worker_log))
        failed = False
    finally:
        if blog_server is not None:
            blog_server.shutdown()
        harness.stop()
        deleted = cleanup_redis(setup=setup, task_ids=bench.issued if bench else [])
        print(f"Redis clean-up: {deleted}")
        if failed or options.keep:
            print(f"Logs and data kept in {base_dir}", file=sys.stderr)
        else:
            shutil.rmtree(base_dir, ignore_errors=True)
    return 0


def run_phases(*, bench: Bench, options, http: str, harness, blog_server) -> list[Phase]:
    """Every phase of every scheme; returns the recorded ones (not the warm-ups)."""
    import httpx

    with httpx.Client(
        base_url=f"{http}/{SITE_ID}/++api++",
        auth=("admin", harness.admin_password),
        headers={"Accept": "application/json"},
        timeout=REQUEST_TIMEOUT,
    ) as admin:
        sources = create_sources(
            admin=admin,
            schemes=options.schemes,
            blog_url=blog_server.url,
            plone_url=f"{http}/{SITE_ID}",
            run_id=uuid.uuid4().hex[:6],
        )
    post_ids = [p["id"] for p in blog_server.blog.list_all() if p["status"] == "published"]
    ghost_bodies = {pid: json.loads(blog_server.blog.webhook_body(pid)) for pid in post_ids}
    phases: list[Phase] = []
    for source in sources:

        def maker(phase: str, source=source) -> MakeDelivery:
            return delivery_maker(source, phase=phase, post_ids=post_ids, ghost_bodies=ghost_bodies)

        steps = [("warmup", "fresh", options.senders, options.warmup)] if options.warmup else []
        steps += [
            ("one", "fresh", 1, options.requests),
            ("many", "fresh", options.senders, options.requests),
        ]
        if source.scheme == "standard-webhooks":
            # The deliveries of "many" once more: same ids, so duplicates.
            steps += [
                ("many", "duplicate", 1, options.requests),
                ("many", "duplicate", options.senders, options.requests),
            ]
        for name, kind, senders, per_sender in steps:
            print(
                f"{source.scheme}: {name} {kind}, {senders} sender(s) x {per_sender}",
                flush=True,
            )
            phase = bench.run_phase(
                scheme=source.scheme,
                kind=kind,
                senders=senders,
                per_sender=per_sender,
                make=maker(name),
            )
            # The next phase starts with an idle worker.
            phase.pending, phase.drained = bench.drain()
            print(
                f"  {len(phase.sent)} requests, {len(phase.errors)} errors, "
                f"{phase.rate:.1f} req/s; the worker finished its imports {phase.drained:.0f} s "
                f"later ({phase.pending} not finished)",
                flush=True,
            )
            if name != "warmup":
                phases.append(phase)
    return phases


if __name__ == "__main__":
    sys.exit(main())
