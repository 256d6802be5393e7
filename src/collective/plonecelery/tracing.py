"""OpenTelemetry: the request that queues a task and the task's run share one trace.

Off, and costing nothing, unless ``opentelemetry-instrumentation-celery`` is installed
(``pip install 'collective.plonecelery[tracing]'``) *and* OpenTelemetry is configured in
the process: ``OTEL_TRACES_EXPORTER`` is set, or the process has a tracer provider (given
by ``opentelemetry-instrument`` or code of your own). ``PLONECELERY_TRACING=false`` turns
it off even then. When on:

* every Plone instance (at ``IProcessStarting``) and every worker pool process (after
  the fork, as the instrumentation's documentation asks) instruments Celery with
  ``CeleryInstrumentor``: sending a task makes an ``apply_async/<task>`` span and puts
  its context into the message headers (``traceparent``), the worker's ``run/<task>``
  span continues that trace;
* each Zope request gets a span of its own (``<METHOD> <path>``, from ``IPubStart`` to
  ``IPubSuccess``/``IPubFailure``), current while the transaction commits, which is
  when the add-on sends the tasks the request queued: so the send span is its child.

Where the spans go is OpenTelemetry's own configuration. With ``OTEL_TRACES_EXPORTER``
set (``otlp`` or ``console``), this module sets up the SDK from the standard
``OTEL_*`` variables (service name, resource, OTLP endpoint and protocol, batch delays)
in each process that does not have a tracer provider yet. Without it, spans go to the
provider the process was given otherwise (``opentelemetry-instrument``, or code of
your own), or nowhere.
"""

from __future__ import annotations

import importlib.util
import logging
import os

from .config import addon_settings

logger = logging.getLogger(__name__)

#: The request attribute holding the request's span and the context token.
_REQUEST_KEY = "_plonecelery_span"
_enabled = False


def available() -> bool:
    """Whether OpenTelemetry's Celery instrumentation is installed."""
    return importlib.util.find_spec("opentelemetry.instrumentation.celery") is not None


def enable() -> bool:
    """Instrument Celery in this process (once); True when tracing is on."""
    global _enabled
    if _enabled:
        return True
    if not addon_settings().tracing or not available():
        return False
    from opentelemetry.instrumentation.celery import CeleryInstrumentor

    configured = _configure_sdk()
    if configured is None and not _has_provider():
        logger.debug("OpenTelemetry is installed and not configured here: no tracing")
        return False
    instrumentor = CeleryInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()
    _enabled = True
    logger.info(
        "OpenTelemetry tracing on (process %s): Celery instrumented, %s",
        os.getpid(),
        f"exporting with {configured}" if configured else "spans go to the process's provider",
    )
    return True


def _configure_sdk() -> str | None:
    """A tracer provider from the ``OTEL_*`` variables, unless the process has one."""
    exporter_name = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter_name in ("", "none"):
        return None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    if isinstance(trace.get_tracer_provider(), TracerProvider):
        return None
    if exporter_name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporter = ConsoleSpanExporter()
    elif exporter_name == "otlp":
        exporter = _otlp_exporter()
    else:
        from .exceptions import ConfigurationError

        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={exporter_name!r}: collective.plonecelery sets up 'otlp' "
            "or 'console'; for others configure OpenTelemetry yourself (opentelemetry-"
            "instrument) and leave OTEL_TRACES_EXPORTER unset here."
        )
    provider = TracerProvider(resource=Resource.create())
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter_name


def _has_provider() -> bool:
    """Whether the process was given a tracer provider (not OpenTelemetry's default)."""
    from opentelemetry import trace

    return not isinstance(
        trace.get_tracer_provider(), trace.ProxyTracerProvider | trace.NoOpTracerProvider
    )


def _otlp_exporter():
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        from .exceptions import ConfigurationError

        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER=otlp over {protocol} needs its exporter: pip install "
            f"opentelemetry-exporter-otlp-proto-{'grpc' if protocol == 'grpc' else 'http'}"
        ) from exc
    return OTLPSpanExporter()


def on_process_starting(event) -> None:
    """Subscriber for Zope's IProcessStarting: Plone instances (workers: after the fork)."""
    enable()


def on_request_start(event) -> None:
    """IPubStart: the request's span, current until the request has committed."""
    if not _enabled:
        return
    from opentelemetry import context
    from opentelemetry import trace

    request = event.request
    method = request.get("REQUEST_METHOD", "GET")
    path = request.get("PATH_INFO", "/")
    parent = trace.get_current_span().get_span_context()
    span = trace.get_tracer(__name__).start_span(
        f"{method} {path}",
        kind=trace.SpanKind.INTERNAL if parent.is_valid else trace.SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": path},
    )
    token = context.attach(trace.set_span_in_context(span))
    request.other[_REQUEST_KEY] = (span, token)


def on_request_end(event) -> None:
    """IPubSuccess / IPubFailure: end the request's span (each retry of a request has one)."""
    spanned = event.request.other.pop(_REQUEST_KEY, None)
    if spanned is None:
        return
    from opentelemetry import context
    from opentelemetry import trace

    span, token = spanned
    status = getattr(event.request.response, "getStatus", lambda: None)()
    if status is not None:
        span.set_attribute("http.response.status_code", status)
    if getattr(event, "exc_info", None):
        span.set_status(trace.Status(trace.StatusCode.ERROR, repr(event.exc_info[1])[:200]))
    span.end()
    context.detach(token)
