"""Queue the tasks of ship_tasks.py in a real site and wait for a worker to run them.

Run with the Python of an installation (a venv's python, buildout's bin/zopepy)::

    python queue_tasks.py ZOPE_CONF SITE_PATH

Prints one JSON line with the results.
"""

import json
import sys
import uuid

import transaction

from collective.plonecelery.worker import process
from collective.plonecelery.worker.environment import zope_environment


def main(zope_conf: str, site_path: str) -> None:
    process.boot_zope(zope_conf)
    import ship_tasks

    import collective.plonecelery

    doc_id = f"doc-{uuid.uuid4().hex[:8]}"
    with (
        process.use_database(process.open_db()),
        zope_environment(site_path=site_path, userid="admin") as site,
    ):
        created = ship_tasks.create_document.delay(site, doc_id)
        transaction.commit()
    first = created.get(timeout=120)
    with (
        process.use_database(process.open_db()),
        zope_environment(site_path=site_path, userid="admin") as site,
    ):
        retitled = ship_tasks.retitle_as_admin.delay(site, doc_id, "Retitled by a worker")
        transaction.commit()
    second = retitled.get(timeout=120)
    process.close_db()
    print(
        json.dumps(
            {
                "created": first,
                "retitled": second,
                "package": collective.plonecelery.__file__,
                "tasks_module": ship_tasks.__file__,
            }
        )
    )


if __name__ == "__main__":
    main(*sys.argv[1:3])
