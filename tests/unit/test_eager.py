"""Eager mode (the test layer add-on developers use): tasks run at commit."""

import unittest

import transaction
from plone import api
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import TEST_USER_NAME
from plone.app.testing import login
from plone.app.testing import logout

from collective.plonecelery import task
from collective.plonecelery.testing import PLONECELERY_EAGER_FUNCTIONAL_TESTING


@task()
def make_document(container, doc_id):
    api.content.create(container=container, type="Document", id=doc_id, title=doc_id)
    return api.user.get_current().getId()


@task.as_admin()
def make_document_as_admin(container, doc_id):
    api.content.create(container=container, type="Document", id=doc_id, title=doc_id)
    return doc_id


class TestEagerTasks(unittest.TestCase):
    layer = PLONECELERY_EAGER_FUNCTIONAL_TESTING

    def setUp(self):
        self.portal = self.layer["portal"]
        login(self.layer["app"], SITE_OWNER_NAME)

    def test_runs_at_commit_as_the_queuing_user_and_stores_the_result(self):
        result = make_document.delay(self.portal, "eager-doc")
        self.assertEqual(result.state, "PENDING")  # nothing ran before commit
        transaction.commit()
        self.assertEqual(result.get(timeout=5), SITE_OWNER_NAME)
        self.portal._p_jar.sync()
        self.assertIn("eager-doc", self.portal)

    def test_aborted_transaction_runs_nothing(self):
        result = make_document.delay(self.portal, "never")
        transaction.abort()
        transaction.commit()
        self.assertEqual(result.state, "PENDING")
        self.assertNotIn("never", self.portal)

    def test_security_applies_in_eager_mode(self):
        logout()
        login(self.portal, TEST_USER_NAME)  # a Member: may not add at the root
        denied = make_document.delay(self.portal, "denied")
        allowed = make_document_as_admin.delay(self.portal, "allowed")
        transaction.commit()
        self.assertEqual(denied.state, "FAILURE")
        self.assertEqual(type(denied.result).__name__, "Unauthorized")
        self.assertEqual(allowed.get(timeout=5), "allowed")
        self.portal._p_jar.sync()
        self.assertNotIn("denied", self.portal)
        self.assertIn("allowed", self.portal)
