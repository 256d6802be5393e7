"""Prometheus metrics from :func:`.status.collect`, in the text format, with
``prometheus_client`` (a registry per scrape: the numbers come from the ZODB and the
broker, which every instance shares, not from counters in this process).

Alert and scaling rules that use them are in docs/operations.rst.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client import Gauge
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "render"]


def render(status: dict) -> bytes:
    """The metrics text for one status snapshot."""
    registry = CollectorRegistry()

    def gauge(name, text, value, labels=None, **label_values):
        metric = Gauge(name, text, labelnames=labels or (), registry=registry)
        (metric.labels(**label_values) if labels else metric).set(value)
        return metric

    gauge(
        "plonecelery_workers_alive",
        "Worker processes with a fresh heartbeat",
        status["workers"]["alive"],
    )
    gauge(
        "plonecelery_tasks_running",
        "Tasks the live worker processes report running",
        status["workers"]["running_tasks"],
    )
    broker = status.get("broker") or {}
    gauge(
        "plonecelery_broker_up",
        "1 if the broker answered the queue lengths",
        int(bool(broker.get("reachable"))),
    )
    depth = Gauge(
        "plonecelery_queue_messages",
        "Messages waiting in the queue (not those workers hold)",
        labelnames=("queue",),
        registry=registry,
    )
    for queue in broker.get("queues") or ():
        depth.labels(queue=queue["name"]).set(queue["messages"])
    outbox = status["outbox"]
    records = Gauge(
        "plonecelery_outbox_records",
        "Outbox records by state",
        labelnames=("state",),
        registry=registry,
    )
    for state in ("pending", "done", "failed", "retried"):
        records.labels(state=state).set(outbox[state])
    gauge(
        "plonecelery_outbox_oldest_pending_seconds",
        "Age of the oldest pending outbox record (0 when none)",
        outbox["oldest_pending_age"] or 0,
    )
    gauge(
        "plonecelery_outbox_last_relay_run_timestamp_seconds",
        "When the outbox relay last ran (0: never)",
        outbox["last_relay_run"] or 0,
    )
    gauge(
        "plonecelery_dead_letters",
        "Tasks that failed for good and wait for a person",
        status["dead_letters"],
    )
    return generate_latest(registry)
