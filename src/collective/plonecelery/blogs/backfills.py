"""How the backfills ("Import all") are getting on, read from the delivery log.

A backfill records one delivery per listed page (``backfill:<source>:<run>:<page>``) and
one per post it queued (``backfill:<source>:<run>:<page>:<remote id>``), each updated by
the import task when it ends (:mod:`.importer.tasks`). Grouping them by run gives done /
total without keeping anything more.

>>> summarize(portal=portal)[0]  # doctest: +SKIP
{'source_id': 'blog', 'run': '1a2b3c4d', 'pages': 2, 'total': 20, 'done': 12, 'failed': 0,
 'running': True, 'started': '2026-...', 'updated': '2026-...'}
"""

from __future__ import annotations

from typing import Any

from . import deliveries

PREFIX = "backfill:"
#: How many log entries one summary reads at most (the log is trimmed to its bounds anyway).
MAX_ENTRIES = 20_000


def summarize(
    *, source_id: str | None = None, portal=None, limit: int = MAX_ENTRIES
) -> list[dict[str, Any]]:
    """One dict per backfill run, the newest first."""
    runs: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in deliveries.list_deliveries(source_id=source_id, limit=limit, portal=portal):
        delivery_id = entry.get("delivery_id") or ""
        if not delivery_id.startswith(PREFIX):
            continue
        parts = delivery_id.split(":", 4)
        if len(parts) < 4:
            continue
        key = (parts[1], parts[2])
        run = runs.setdefault(
            key,
            {
                "source_id": parts[1],
                "run": parts[2],
                "pages": 0,
                "total": 0,
                "done": 0,
                "failed": 0,
                "started": entry["received"],
                "updated": entry.get("updated") or entry["received"],
            },
        )
        # Newest first: the first entry seen is the latest, each later one may be older.
        run["started"] = min(run["started"], entry["received"])
        run["updated"] = max(run["updated"], entry.get("updated") or entry["received"])
        if len(parts) == 4:
            run["pages"] += 1
            continue
        run["total"] += 1
        if entry["status"] == "failed":
            run["failed"] += 1
        elif entry["status"] != "queued":
            run["done"] += 1
    found = list(runs.values())
    for run in found:
        run["running"] = run["done"] + run["failed"] < run["total"]
    return found
