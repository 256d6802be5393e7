"""Write ``legacy-1.0.0a1.dev0.zexp``: the add-on's ZODB objects as the code before the
package layout change (commit 2eff643, version 1.0.0a1.dev0) wrote them.

Run with THAT code installed (not today's), from this folder::

    git worktree add /tmp/old 2eff643 && (cd /tmp/old && make install)
    /tmp/old/.venv/bin/python make_legacy_export.py

It starts ZEO and a Plone site (no worker), queues two ``count_run`` tasks whose messages
go to a broker nobody reads (so their outbox records stay pending), records one dead letter
of ``fail_unless_flag``, and exports the outbox and the dead letters (ZODB export format:
the pickles as written, old class paths included).
"""

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))  # sample_tasks

OUTPUT = HERE / "legacy-1.0.0a1.dev0.zexp"


def main():
    base = Path(tempfile.mkdtemp(prefix="legacy-"))
    environment = {
        "CELERY_BROKER_URL": f"sqla+sqlite:///{base}/broker.sqlite",
        "CELERY_RESULT_BACKEND": f"db+sqlite:///{base}/results.sqlite",
        "CELERY_IMPORTS": "sample_tasks",
        "PYTHONPATH": str(HERE.parent),
    }
    os.environ.update(environment)
    import transaction
    from BTrees.OOBTree import OOBTree

    from collective.plonecelery import deadletters
    from collective.plonecelery.devtools.harness import WorkerHarness

    class WithoutWorker(WorkerHarness):
        def start_worker(self, **kwargs):
            pass

    harness = WithoutWorker(base_dir=base, environment=environment).start()
    try:
        import sample_tasks

        with harness.session(user="admin"):
            sample_tasks.count_run.apply_async(args=("legacy-1",), task_id="legacy-task-1")
            sample_tasks.count_run.apply_async(args=("legacy-2",), task_id="legacy-task-2")
            transaction.commit()
        deadletters.record_failure(
            db=harness.db,
            task_name=sample_tasks.fail_unless_flag.name,
            task_id="legacy-dead-1",
            args=["legacy-dead"],
            kwargs={},
            envelope={"site": harness.site_path, "user": "admin", "unrestricted": True},
            exc=RuntimeError("no flag set for legacy-dead"),
            traceback="Traceback (most recent call last): ...",
            attempts=1,
        )
        connection = harness.db.open()
        root = connection.root()
        bundle = root["legacy-export"] = OOBTree()
        bundle["outbox"] = root["collective.plonecelery.outbox"]
        bundle["deadletters"] = root[deadletters.ROOT_KEY]
        transaction.commit()
        with open(OUTPUT, "wb") as output:
            connection.exportFile(bundle._p_oid, output)
        connection.close()
        print(f"wrote {OUTPUT} ({OUTPUT.stat().st_size} bytes)")
    finally:
        harness.stop()


if __name__ == "__main__":
    main()
