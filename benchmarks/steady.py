"""Goal 3 of issue 12: the transactional outbox under a sustained, mixed load.

``run.py`` calls :func:`measure` with its running stack. A worker of its own (prefork
``-c 1``) replaces the benchmark's worker for this part, with short outbox timings
(``--steady-grace``, ``--steady-relay``, ``--steady-retention``), so that records go
through their whole life (pending, closed, swept) many times within the run. This
process queues ``--steady-tasks`` tasks at ``--steady-rate`` tasks/s, half read-only
(``read_title``: the worker aborts, the relay closes the record from the task's result)
and half writing (``write_counter``: the worker closes the record in the task's commit),
a few per transaction, and counts the outbox every ``SAMPLE_EVERY`` seconds. After the
load it keeps counting for grace + 2 relay intervals, until the last records are closed.

It reports the pending records over time, their maximum against the bound
``rate x (grace + relay interval)``, the records held against
``rate x (retention + grace + relay interval)`` (what closing and sweeping allow), the relay
runs (how many, p50, max, and the p50 of the last third against the first third: a run's
cost must not grow with the records written so far) and how many tasks the relay sent
again (none should be: the broker is up and the worker keeps up).
"""

from __future__ import annotations

import re
import statistics
import time

from run import LogReader
from run import goal
from run import ms
from run import table

SAMPLE_EVERY = 2.0
TICK = 0.2  # seconds between the load generator's transactions
RELAY_TASK = "collective.plonecelery.outbox.relay_outbox"
RELAY_LINE = re.compile(r"Outbox relay sent (\d+) pending task\(s\), swept (\d+) record")


def clear_outbox(portal) -> dict:
    """Close and sweep what earlier measurements left (the commit-cost sink's records stay
    pending on purpose), so that the steady state starts from an empty outbox."""
    import transaction

    from collective.plonecelery.outbox import records

    box = records.get_outbox(portal._p_jar)
    before = records.counts(portal._p_jar)
    for _, record in records.iter_records(box):
        if record.state == records.PENDING:
            record.state = records.FAILED
        record.finished = 0.0
    removed = records.sweep(box, now=time.time(), retention=0)
    if getattr(box, "watermarks", None) is not None:
        box.watermarks.clear()
    transaction.commit()
    return {"before": before, "removed": removed}


def measure(
    *,
    harness,
    options,
    read_uid: str,
    expected_title: str,
    write_id: str,
    issued: list[str],
    restart: bool = True,
) -> dict:
    """The sustained load; ``restart``: start the benchmark's own worker again at the end."""
    import bench_tasks
    import transaction
    from celery.result import ResultSet

    from collective.plonecelery.outbox import records

    grace, relay, retention = options.steady_grace, options.steady_relay, options.steady_retention
    rate, total = options.steady_rate, options.steady_tasks
    worker_args, worker_env = harness.worker_args, dict(harness.worker_env)
    harness.stop_worker()
    with harness.session(user="admin") as portal:
        cleared = clear_outbox(portal)
        start_counter = getattr(portal[write_id], "bench_counter", 0)
    harness.worker_env = {
        **worker_env,
        "PLONECELERY_OUTBOX_GRACE": str(grace),
        "PLONECELERY_OUTBOX_RELAY_INTERVAL": str(relay),
        "PLONECELERY_OUTBOX_RETENTION": str(retention),
    }
    harness.start_worker()
    log = LogReader(harness.worker_log)
    samples: list[tuple[float, dict]] = []
    results = []
    per_tick = rate * TICK
    print(
        f"Outbox steady state: {total} tasks at {rate:g}/s (grace {grace:g} s, relay every "
        f"{relay:g} s, retention {retention:g} s)",
        flush=True,
    )
    try:
        with harness.session(user="admin") as portal:
            began = time.monotonic()
            next_sample = began
            sent = 0
            owed = 0.0
            tick = 0
            while sent < total:
                tick += 1
                owed += per_tick
                n = min(int(owed), total - sent)
                owed -= n
                transaction.begin()
                for i in range(n):
                    if (sent + i) % 2:
                        results.append(bench_tasks.write_counter.delay(write_id))
                    else:
                        results.append(bench_tasks.read_title.delay(read_uid))
                transaction.commit()
                sent += n
                now = time.monotonic()
                if now >= next_sample:
                    transaction.begin()
                    samples.append((now - began, records.counts(portal._p_jar)))
                    transaction.abort()
                    next_sample += SAMPLE_EVERY
                pause = began + tick * TICK - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            load_s = time.monotonic() - began
            issued.extend(r.id for r in results)
            # Keep counting until the relay has closed what the last tasks left pending.
            tail_until = time.monotonic() + grace + 2 * relay + 1
            while time.monotonic() < tail_until:
                transaction.begin()
                samples.append((time.monotonic() - began, records.counts(portal._p_jar)))
                transaction.abort()
                time.sleep(SAMPLE_EVERY)
        values = ResultSet(results, app=bench_tasks.noop.app).get(timeout=300, propagate=True)
        time.sleep(0.5)
        with harness.session(user="admin") as portal:
            transaction.begin()
            final = records.counts(portal._p_jar)
            writes = getattr(portal[write_id], "bench_counter", 0) - start_counter
        text = harness.worker_log.read_text(errors="replace")
        relay_times = log.run_times(RELAY_TASK)
    finally:
        harness.stop_worker()
        harness.worker_args, harness.worker_env = worker_args, worker_env
        if restart:
            harness.start_worker()
    resent = sum(int(m[0]) for m in RELAY_LINE.findall(text))
    swept = sum(int(m[1]) for m in RELAY_LINE.findall(text))
    pending = [c["pending"] for _, c in samples]
    held = [sum(c.values()) for _, c in samples]
    achieved = total / load_s
    third = max(1, len(relay_times) // 3)
    first, last = relay_times[:third], relay_times[-third:]
    expected_writes = total // 2
    return {
        "tasks": total,
        "rate_asked": rate,
        "rate": round(achieved, 1),
        "load_s": round(load_s, 1),
        "grace_s": grace,
        "relay_interval_s": relay,
        "retention_s": retention,
        "cleared_before": cleared,
        "samples": [{"t": round(t, 1), **c} for t, c in samples],
        "max_pending": max(pending),
        "pending_bound": round(achieved * (grace + relay), 1),
        "max_held": max(held),
        "held_bound": round(achieved * (retention + grace + relay), 1),
        "final": final,
        "relay_runs": len(relay_times),
        "relay_p50_ms": ms(statistics.median(relay_times)) if relay_times else None,
        "relay_max_ms": ms(max(relay_times)) if relay_times else None,
        "relay_first_third_p50_ms": ms(statistics.median(first)) if relay_times else None,
        "relay_last_third_p50_ms": ms(statistics.median(last)) if relay_times else None,
        "relayed_again": resent,
        "swept": swept,
        "writes_counted": writes,
        "writes_expected": expected_writes,
        # Every read answered its title; every write task ran exactly once.
        "wrong_results": sum(1 for v in values[0::2] if v != expected_title)
        + abs(writes - expected_writes),
    }


def goals(data: dict) -> list[dict]:
    n = f"{data['tasks']:,} tasks at {data['rate']:.0f}/s"
    rows = [
        goal(
            f"3. outbox, {n}: max pending vs rate x (grace + relay)",
            value=data["max_pending"],
            baseline=data["pending_bound"],
            target=1.1,
            higher=False,
            unit="records",
        ),
        goal(
            "3. outbox: most records held vs rate x (retention + grace + relay)",
            value=data["max_held"],
            baseline=data["held_bound"],
            target=1.1,
            higher=False,
            unit="records",
        ),
    ]
    if data["relay_runs"]:
        rows.append(
            goal(
                "3. outbox: relay run p50, last third vs first third of runs",
                value=data["relay_last_third_p50_ms"],
                baseline=data["relay_first_third_p50_ms"],
                target=1.5,
                higher=False,
                unit="ms",
            )
        )
    rows.append(
        {
            "goal": "3. outbox: tasks relayed again while queued or running",
            "value": data["relayed_again"],
            "baseline": None,
            "unit": "tasks",
            "ratio": None,
            "target": "= 0",
            "met": data["relayed_again"] == 0 and data["wrong_results"] == 0,
        }
    )
    return rows


def report(data: dict) -> str:
    step = max(1, len(data["samples"]) // 12)
    rows = [
        [f"{s['t']:.0f}", str(s["pending"]), str(s["done"]), str(s["failed"])]
        for s in data["samples"][::step]
    ]
    last = data["samples"][-1]
    if data["samples"][::step][-1] is not last:
        rows.append(
            [f"{last['t']:.0f}", str(last["pending"]), str(last["done"]), str(last["failed"])]
        )
    return "\n".join(
        [
            f"Outbox steady state: {data['tasks']:,} tasks (half read_title, half write_counter) "
            f"queued at {data['rate']:.1f}/s for {data['load_s']:.0f} s, one worker "
            "(prefork -c 1); "
            f"grace {data['grace_s']:g} s, relay every {data['relay_interval_s']:g} s, retention "
            f"{data['retention_s']:g} s. Bound rate x (grace + relay) = "
            f"{data['pending_bound']:.0f} "
            f"pending; max pending {data['max_pending']}; most records held "
            f"{data['max_held']} (bound with retention {data['held_bound']:.0f}); "
            f"at the end {data['final']}. Relay runs: {data['relay_runs']}, p50 "
            f"{data['relay_p50_ms']} ms, max {data['relay_max_ms']} ms (first third p50 "
            f"{data['relay_first_third_p50_ms']} ms, last third {data['relay_last_third_p50_ms']} "
            f"ms); swept {data['swept']} records; relayed again {data['relayed_again']}; writes "
            f"counted {data['writes_counted']} of {data['writes_expected']}.",
            "",
            "Outbox records over time (seconds since the load started):",
            table(["t s", "pending", "done", "failed"], rows),
        ]
    )
