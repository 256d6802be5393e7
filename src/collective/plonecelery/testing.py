"""Test layers for add-ons that use collective.plonecelery.

``PLONECELERY_EAGER_FUNCTIONAL_TESTING``
    plone.app.testing functional layer; tasks run eagerly, in the test
    process, when the transaction that queued them commits (in a thread of
    their own, with their own transaction, exactly as a worker would)::

        from collective.plonecelery.testing import PLONECELERY_EAGER_FUNCTIONAL_TESTING

        class TestMyTask(unittest.TestCase):
            layer = PLONECELERY_EAGER_FUNCTIONAL_TESTING

            def test_it(self):
                result = my_task.delay(self.layer["portal"])
                transaction.commit()       # the task runs now
                self.assertEqual(result.get(timeout=5), "done")

``PLONECELERY_WORKER_LAYER``
    Real processes (see :mod:`collective.plonecelery.devtools.harness`): a ZEO server,
    a Plone site and a ``plonecelery worker``; ``self.layer["harness"]``
    opens sessions as any user. Settings come from ``CELERY_*`` and
    ``PLONECELERY_*`` environment variables (set ``CELERY_BROKER_URL`` and
    ``CELERY_IMPORTS``). Run it in a test process of its own, without
    plone.app.testing layers: it boots a real Zope from ``zope.conf``.
"""

from __future__ import annotations

import os
import tempfile

from plone.app.testing import PLONE_FIXTURE
from plone.app.testing import FunctionalTesting
from plone.app.testing import PloneSandboxLayer
from plone.testing import Layer

from .app import app
from .config import own_variables


class EagerLayer(PloneSandboxLayer):
    """Plone with collective.plonecelery installed; tasks run at commit."""

    defaultBases = (PLONE_FIXTURE,)

    def setUpZope(self, app_, configurationContext):
        import plone.restapi

        import collective.plonecelery

        self.loadZCML(package=plone.restapi)
        self.loadZCML(package=collective.plonecelery)

    def setUpPloneSite(self, portal):
        self.applyProfile(portal, "collective.plonecelery:default")

    def testSetUp(self):
        self._saved = {
            key: app.conf.get(key)
            for key in ("task_always_eager", "result_backend", "task_eager_propagates")
        }
        app.conf.update(
            task_always_eager=True,
            task_eager_propagates=False,
            result_backend="cache+memory://",
        )

    def testTearDown(self):
        app.conf.update(self._saved)


PLONECELERY_EAGER_FIXTURE = EagerLayer()
PLONECELERY_EAGER_FUNCTIONAL_TESTING = FunctionalTesting(
    bases=(PLONECELERY_EAGER_FIXTURE,), name="PloneCelery:EagerFunctional"
)


class WorkerLayer(Layer):
    """plone.testing layer around :class:`WorkerHarness`.

    Settings come from ``CELERY_*`` variables of the environment (set
    ``CELERY_BROKER_URL`` and ``CELERY_IMPORTS`` for your tasks). Exposes
    ``self['harness']``.
    """

    def setUp(self):
        # The one runtime module that reaches into devtools: this layer starts processes.
        from .devtools.harness import WorkerHarness

        self._tmp = tempfile.TemporaryDirectory(prefix="plonecelery-")
        environment = own_variables(os.environ)
        self["harness"] = WorkerHarness(base_dir=self._tmp.name, environment=environment).start()

    def tearDown(self):
        self["harness"].stop()
        del self["harness"]
        self._tmp.cleanup()


PLONECELERY_WORKER_LAYER = WorkerLayer(name="PloneCelery:Worker")
