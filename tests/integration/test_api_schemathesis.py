"""schemathesis against a real instance, with the OpenAPI document the instance serves.

A real Plone WSGI server (waitress) on ZEO, with the session's worker, answers. The document
is loaded from ``{site}/++api++/@plonecelery-openapi`` (and must be the package's file); for
every operation schemathesis generates requests (positive and negative data) and each answer
must pass ``not_a_server_error``, ``status_code_conformance``, ``content_type_conformance``
and ``response_schema_conformance``. Manager operations are sent as the test Manager, the
anonymous ones without credentials; the webhook goes mostly to sources of this module (signed
schemes: generated requests carry no valid signature, so every answer is a refusal, and a
refusal must write nothing).

Other tests' state is kept:

* path parameters come from this module's own sources and dead letters (or are generated);
* request bodies that add or change a source are pointed at a port on loopback that nothing
  may fetch (``allow_private`` off, no CDN hosts, no schedule), so no worker ever connects
  anywhere because of them; the sources generated are removed at the end;
* ``POST @celery-deadletters/purge`` removes every dead letter of the database: the ones
  present before are put back at the end.

``PLONECELERY_SCHEMATHESIS_EXAMPLES`` sets the examples per operation and generation mode
(default 30: about 1,200 cases, 35 s on 2 cores). Broker-independent: the SQLite run covers it.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest
import requests
import schemathesis
import transaction
from conftest import BROKER
from hostile_support import NOTES
from hostile_support import admin_client
from hostile_support import assert_nothing_written
from hostile_support import create_sources
from hostile_support import new_run
from hostile_support import snapshot
from hostile_support import tally
from hostile_support import wait_until_idle
from hypothesis import HealthCheck
from hypothesis import Phase
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import content_type_conformance
from schemathesis.specs.openapi.checks import response_schema_conformance
from schemathesis.specs.openapi.checks import status_code_conformance

from collective.plonecelery import deadletters
from collective.plonecelery.restapi import openapi

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        BROKER != "sqlite",
        reason="what the endpoints answer does not depend on the broker: the SQLite run covers it",
    ),
]

RUN = new_run()
EXAMPLES = int(os.environ.get("PLONECELERY_SCHEMATHESIS_EXAMPLES", "30"))
#: Examples of the operations that queue a task: each one is work for the worker.
QUEUING = 8
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Where generated sources point: loopback, port 9 (discard), refused without allow_private.
NOWHERE = "http://127.0.0.1:9/"
CATEGORY = "api: schemathesis (writes: of anonymous requests)"


@pytest.fixture(scope="module")
def api(harness, plone_http):
    """This module's sources and dead letters; afterwards the site's sources and the
    database's dead letters are as they were (but for this module's own)."""
    with admin_client(harness, plone_http) as admin:
        before = {item["id"] for item in admin.get("/@blog-sources").json()["items"]}
        ids = create_sources(harness, admin, run=RUN, target=f"api-{RUN}")
        letters = {
            "retry": f"dl-{RUN}-retry",  # a registered task: retried
            "unknown": f"dl-{RUN}-unknown",  # no such task here: 409
            "purge": f"dl-{RUN}-purge",
        }
        with harness.session(user="admin") as portal:
            kept = [dict(vars(letter)) for letter in deadletters.list_dead_letters(portal._p_jar)]
            for name, task_id in letters.items():
                deadletters.add(
                    portal._p_jar,
                    deadletters.DeadLetter(
                        task_id=task_id,
                        task_name="nowhere.task" if name == "unknown" else "sample_tasks.count_run",
                        args=[f"schemathesis-{RUN}"],
                        site=harness.site_path,
                        user="admin",
                        error="RuntimeError: seeded by test_api_schemathesis",
                        traceback="Traceback: seeded",
                    ),
                )
            transaction.commit()
        yield {"url": plone_http, "sources": ids, "letters": letters, "harness": harness}
        for item in admin.get("/@blog-sources").json()["items"]:
            if item["id"] not in before:
                assert admin.delete(f"/@blog-sources/{item['id']}").status_code == 204
    with harness.session(user="admin") as portal:
        connection = portal._p_jar
        present = {letter.task_id for letter in deadletters.list_dead_letters(connection)}
        for fields in kept:
            if fields["task_id"] not in present:
                fields = {k: v for k, v in fields.items() if not k.startswith("_")}
                deadletters.add(connection, deadletters.DeadLetter(**fields))
        transaction.commit()


def harmless(case) -> None:
    """A source body may not make any worker fetch anything (see the module docstring)."""
    if case.method in ("POST", "PATCH") and isinstance(case.body, dict):
        path = case.operation.path
        if path in ("/@blog-sources", "/@blog-sources/{source_id}"):
            case.body.update(
                api_url=NOWHERE, allow_private=False, cdn_hosts=[], sync_hours=0, poll_minutes=0
            )


def strategy(operation, api):
    """Positive and negative cases; path parameters often this module's own."""
    params = {p.name for p in operation.path_parameters}
    fixed = []
    if "source_id" in params:
        # The webhook to signed sources (generated requests are refused); the rest to 'std'.
        names = ("ghost", "wp") if operation.path.startswith("/@blog-webhook") else ("std",)
        fixed += [{"source_id": api["sources"][name]} for name in names]
    if "task_id" in params:
        if operation.path.startswith("/@celery-deadletters"):
            fixed = [{"task_id": task_id} for task_id in api["letters"].values()]
        else:
            fixed = [{**f, "task_id": f"t-{RUN}"} for f in fixed or [{}]]
    strategies = []
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        strategies.append(operation.as_strategy(generation_mode=mode))
        strategies += [
            operation.as_strategy(generation_mode=mode, path_parameters=f) for f in fixed
        ]
    return st.one_of(strategies)


def anonymous(operation) -> bool:
    return operation.definition.raw.get("security") == []


def order(operation) -> tuple:
    """Anonymous operations first: the Manager's (a backfill) make the worker write to the
    delivery log, which the anonymous ones must leave alone. Removals last: the removal of a
    source or a dead letter ends the operations that need it."""
    destructive = operation.method.upper() == "DELETE" or operation.path.endswith("/purge")
    return (not anonymous(operation), destructive, operation.path, operation.method)


def fuzz(operation, api, *, session, base_url: str, counts: dict) -> None:
    """Send the generated cases of one operation; raise at the first failing check."""
    public = anonymous(operation)
    auth = None if public else ("admin", api["harness"].admin_password)

    # Without parameters or a body (the Authorization header aside) there is little to vary.
    inputs = any(
        len(list(getattr(operation, name))) for name in ("path_parameters", "query", "body")
    )

    @settings(
        max_examples=QUEUING if queues(operation) else EXAMPLES * 2 if inputs else 6,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the failing case is reported
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy(operation, api))
    def run(case):
        harmless(case)
        before = snapshot(api["harness"]) if public else None
        response = case.call(
            base_url=base_url, session=session, auth=auth, timeout=60, allow_redirects=False
        )
        counts["cases"] += 1
        counts["5xx"] += response.status_code >= 500
        statuses = counts["statuses"]
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        if response.status_code < 300 and queues(operation):
            answer = response.json()
            counts["tasks"].append(answer.get("task") or answer.get("task_id"))
        if public and response.status_code >= 400:
            assert_nothing_written(
                api["harness"], before, what=case.as_curl_command(), category=CATEGORY
            )
        case.validate_response(response, checks=CHECKS)

    run()


def queues(operation) -> bool:
    """Does a success queue a task (a test, a backfill, a dead letter's retry)?"""
    return operation.method.upper() == "POST" and operation.path.endswith(
        ("/test", "/backfill", "/retry")
    )


def finish(harness, task_ids: list[str], *, timeout: float = 240) -> None:
    """Wait until the worker has run the tasks queued (and the tasks those queued)."""
    from collective.plonecelery.app import app

    deadline = time.monotonic() + timeout
    pending = [task_id for task_id in task_ids if task_id]
    while pending and time.monotonic() < deadline:
        pending = [task_id for task_id in pending if not app.AsyncResult(task_id).ready()]
        time.sleep(0.5)
    assert not pending, f"{len(pending)} queued task(s) still not done after {timeout} s"
    wait_until_idle(harness)


def describe(operation, exc: BaseException) -> str:
    """The failure, the failing case (hypothesis's note) and how to send it again (curl)."""
    parts = [f"{operation.label}: {exc}"]
    parts += [str(failure) for failure in getattr(exc, "exceptions", ())]
    parts += getattr(exc, "__notes__", [])
    return "\n".join(parts)[:4000]


def test_schemathesis_finds_nothing(api):
    url = f"{api['url']}/plone/++api++/@plonecelery-openapi"
    served = httpx.get(url, timeout=60)
    assert served.status_code == 200
    assert served.content == openapi.DOCUMENT.read_bytes()
    schema = schemathesis.openapi.from_url(url)
    operations = sorted((result.ok() for result in schema.get_all_operations()), key=order)
    base_url = f"{api['url']}/plone/++api++"
    counts = {"cases": 0, "5xx": 0, "statuses": {}, "tasks": []}
    failures = []
    timings: dict[str, float] = {}
    wait_until_idle(api["harness"])  # nothing queued before still writes
    started = time.monotonic()
    try:
        with requests.Session() as session:
            for operation in operations:
                begun = time.monotonic()
                try:
                    fuzz(operation, api, session=session, base_url=base_url, counts=counts)
                except (Exception, FailureGroup) as exc:  # one failure per operation, go on
                    failures.append(describe(operation, exc))
                timings[operation.label] = time.monotonic() - begun
        seconds = time.monotonic() - started
    finally:
        # The next tests count the worker's tasks and the delivery log: let it finish ours.
        finish(api["harness"], counts["tasks"])
    tally(CATEGORY, inputs=counts["cases"], **{"5xx": counts["5xx"]})
    line = (
        f"schemathesis: {len(operations)} operations, {counts['cases']} cases tried, "
        f"{len(failures)} failures, {counts['5xx']} 5xx, {seconds:.0f} s; answers "
        + ", ".join(f"{n}x{status}" for status, n in sorted(counts["statuses"].items()))
    )
    slowest = sorted(timings.items(), key=lambda item: -item[1])[:3]
    line += "; slowest " + ", ".join(f"{label} {t:.1f} s" for label, t in slowest)
    NOTES.append(line)
    print(line)
    assert not failures, "\n\n".join(failures)
    assert len(operations) >= 20
    assert counts["cases"] >= len(operations) * 10
