"""OpenTelemetry across the queue: the request that queues a task and the worker's run of
it are one trace (issue 10, item 6), with real processes and a real OTLP/HTTP receiver.

A second WSGI instance and the worker are started with the standard ``OTEL_*`` variables
pointing at a small OTLP receiver in this process (protobuf over HTTP, as a collector
takes it). A Manager retries a dead letter over HTTP: that request queues the task, the
worker runs it. The spans must form one trace: request span -> ``apply_async/<task>``
(Plone) -> ``run/<task>`` (worker). The session's worker is restarted with its own
environment afterwards. Redis run only: nothing in it depends on the broker.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer

import httpx
import pytest
import sample_tasks
import transaction
from conftest import BROKER

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(BROKER != "redis", reason="broker-independent: runs in the Redis run"),
]


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: keeps every span it is sent, with its service name."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.spans: list[dict] = []
        self.lock = threading.Lock()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1/traces"


class ReceiverHandler(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 - http.server's naming
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceResponse,
        )

        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        export = ExportTraceServiceRequest.FromString(body)
        found = []
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        {
                            "service": attributes.get("service.name"),
                            "name": span.name,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_id": span.parent_span_id.hex(),
                        }
                    )
        with self.server.lock:
            self.server.spans.extend(found)
        answer = ExportTraceServiceResponse().SerializeToString()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def otel_environment(receiver, service: str) -> dict[str, str]:
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: spans reach the receiver quickly
    }


@pytest.fixture
def traced(harness, receiver, tmp_path):
    """A traced WSGI instance (its base URL) and a traced worker, for one test."""
    from collective.plonecelery.devtools import instance

    port = instance.free_port()
    ini = instance.write_zope_ini(
        path=tmp_path / "zope.ini", zope_conf=harness.zope_conf, host="127.0.0.1", port=port
    )
    http = instance.start_wsgi(
        zope_ini=ini,
        host="127.0.0.1",
        port=port,
        log_file=tmp_path / "instance.log",
        env={**os.environ, **harness.environment, **otel_environment(receiver, "plone")},
    )
    saved = dict(harness.worker_env)
    harness.stop_worker()
    harness.worker_env.update(otel_environment(receiver, "plone-worker"))
    try:
        harness.start_worker()
        yield f"http://127.0.0.1:{port}"
    finally:
        instance.stop_process(http)
        harness.stop_worker()
        harness.worker_env.clear()
        harness.worker_env.update(saved)
        harness.start_worker()


def test_the_queuing_request_and_the_tasks_run_are_one_trace(harness, receiver, traced):
    from collective.plonecelery import deadletters

    key = f"traced-{uuid.uuid4().hex[:6]}"
    letter_id = f"letter-{key}"
    with harness.session() as site:
        deadletters.add(
            site._p_jar,
            deadletters.DeadLetter(
                task_id=letter_id,
                task_name=sample_tasks.count_run.name,
                args=[key],
                site=harness.site_path,
                user="admin",
                headers={"site": harness.site_path, "user": "admin", "unrestricted": False},
                error="RuntimeError: failed before the test",
            ),
        )
        transaction.commit()
    path = f"{harness.site_path}/++api++/@celery-deadletters/{letter_id}/retry"
    with httpx.Client(auth=("admin", harness.admin_password), timeout=30) as client:
        response = client.post(f"{traced}{path}", headers={"Accept": "application/json"})
    assert response.status_code == 200, response.text
    task_id = response.json()["task_id"]
    assert sample_tasks.count_run.AsyncResult(task_id).get(timeout=120) == key

    run_name = f"run/{sample_tasks.count_run.name}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with receiver.lock:
            spans = list(receiver.spans)
        if any(span["name"] == run_name for span in spans) and any(
            span["name"] == f"POST {path}" for span in spans
        ):
            break
        time.sleep(0.2)
    [request] = [span for span in spans if span["name"] == f"POST {path}"]
    [send] = [span for span in spans if span["name"] == f"apply_async/{run_name[4:]}"]
    [run] = [span for span in spans if span["name"] == run_name]
    assert (request["service"], send["service"], run["service"]) == (
        "plone",
        "plone",
        "plone-worker",
    )
    assert request["trace_id"] == send["trace_id"] == run["trace_id"]
    assert send["parent_id"] == request["span_id"] and run["parent_id"] == send["span_id"]
    print(
        f"\ntracing: one trace {run['trace_id']}: {request['name']} -> {send['name']} -> "
        f"{run['name']} ({len(spans)} spans received)"
    )
