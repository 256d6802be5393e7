"""Shared fixtures of the unit tests."""

from __future__ import annotations

import pytest


def _layer_order(layer, order):
    for base in layer.__bases__:
        _layer_order(base, order)
    if layer not in order:
        order.append(layer)
    return order


@pytest.fixture(scope="module")
def layers(request):
    """Set up the layers this module needs, sharing zope.pytestlayer's bookkeeping.

    Layers zope.pytestlayer has set up (for TestCase-style modules) are reused, and the
    ones set up here are registered with it, so no layer is ever set up twice.
    """
    from collective.plonecelery.testing import PLONECELERY_EAGER_FUNCTIONAL_TESTING

    state = getattr(request.session, "zopelayer_state", None)
    current = state.current if state is not None else set()
    order = _layer_order(PLONECELERY_EAGER_FUNCTIONAL_TESTING, [])
    done = []
    try:
        for layer in order:
            if layer in current:
                continue
            layer.setUp()
            current.add(layer)
            done.append(layer)
        yield order
    finally:
        for layer in reversed(done):
            layer.tearDown()
            current.discard(layer)


@pytest.fixture
def portal(layers):
    """The eager functional layer's Plone site, set up and torn down around one test
    (modules that need more, a folder or a workflow, define their own)."""
    for layer in layers:
        layer.testSetUp()
    portal = layers[-1]["portal"]
    try:
        yield portal
    finally:
        for layer in reversed(layers):
            layer.testTearDown()


@pytest.fixture
def db():
    """A real in-memory ZODB with the outbox and the worker registry in its root."""
    import ZODB
    from ZODB.MappingStorage import MappingStorage

    from collective.plonecelery.outbox import records
    from collective.plonecelery.worker import presence

    database = ZODB.DB(MappingStorage())
    records.ensure_outbox(database)
    presence.ensure_registry(database)
    yield database
    database.close()


#: The columns of the hostile-input summary (as tests/integration/hostile_support.py prints).
HOSTILE_COLUMNS = ("inputs", "5xx", "writes", "active payloads", "connections")


def pytest_terminal_summary(terminalreporter):
    """The hostile-input tallies (issue 9) of the tests that ran: each records
    ``record_property("hostile", (category, {column: count}))`` (test_hostile_ssrf.py)."""
    rows: dict[str, dict[str, int]] = {}
    for reports in terminalreporter.stats.values():
        for report in reports:
            if getattr(report, "when", None) != "call":
                continue
            for name, value in getattr(report, "user_properties", ()):
                if name == "hostile":
                    category, counts = value
                    row = rows.setdefault(category, {})
                    for column, count in counts.items():
                        row[column] = row.get(column, 0) + count
    if not rows:
        return
    terminalreporter.write_sep("-", "hostile input (inputs / 5xx / writes / payloads / conns)")
    terminalreporter.write_line(f"{'category':60} " + " ".join(f"{c:>15}" for c in HOSTILE_COLUMNS))
    for category, row in sorted(rows.items()):
        cells = (str(row[c]) if c in row else "-" for c in HOSTILE_COLUMNS)
        terminalreporter.write_line(f"{category:60} " + " ".join(f"{c:>15}" for c in cells))
