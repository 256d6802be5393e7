"""collective.plonecelery.tracing: off unless OpenTelemetry is installed *and* configured.

The trace itself (request -> send -> run across processes) is tested with real processes
in tests/integration/test_tracing.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from celery import signals

from collective.plonecelery import tracing
from collective.plonecelery.exceptions import ConfigurationError


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.setattr(tracing, "_enabled", False)
    for name in ("OTEL_TRACES_EXPORTER", "PLONECELERY_TRACING"):
        monkeypatch.delenv(name, raising=False)


def publish_receivers() -> int:
    return len(signals.before_task_publish.receivers)


def test_installed_but_not_configured_is_off():
    before = publish_receivers()
    assert tracing.available() is True  # the test extra installs it
    assert tracing.enable() is False
    assert publish_receivers() == before  # Celery not instrumented: no cost per send


def test_not_installed_is_off(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setattr(tracing.importlib.util, "find_spec", lambda name: None)
    assert tracing.available() is False and tracing.enable() is False


def test_plonecelery_tracing_false_turns_it_off(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("PLONECELERY_TRACING", "false")
    assert tracing.enable() is False


def test_an_exporter_it_cannot_set_up_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "zipkin")
    with pytest.raises(ConfigurationError, match="'otlp' or 'console'"):
        tracing.enable()


def test_requests_get_no_span_while_off():
    request = SimpleNamespace(other={}, get=lambda key, default=None: default)
    tracing.on_request_start(SimpleNamespace(request=request))
    assert request.other == {}
    tracing.on_request_end(SimpleNamespace(request=request))  # nothing to end: no error
