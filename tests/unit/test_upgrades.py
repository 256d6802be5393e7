"""The 1000 -> 1001 upgrade step brings an older install up to date."""

import unittest

from plone import api
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import login

from collective.plonecelery.testing import PLONECELERY_EAGER_FUNCTIONAL_TESTING
from collective.plonecelery.upgrades import to_1001

PROFILE = "collective.plonecelery:default"


class TestUpgrades(unittest.TestCase):
    layer = PLONECELERY_EAGER_FUNCTIONAL_TESTING

    def test_profile_is_at_the_latest_version(self):
        setup = api.portal.get_tool("portal_setup")
        self.assertEqual(setup.getLastVersionForProfile(PROFILE), ("1003",))
        self.assertEqual(setup.listUpgrades(PROFILE), [])

    def test_to_1001_restores_index_and_import_user(self):
        login(self.layer["app"], SITE_OWNER_NAME)
        catalog = api.portal.get_tool("portal_catalog")
        catalog.delIndex("plonecelery_remote_key")
        api.user.delete(username="plonecelery-importer")
        to_1001(api.portal.get_tool("portal_setup"))
        self.assertIn("plonecelery_remote_key", catalog.indexes())
        self.assertIsNotNone(api.user.get(username="plonecelery-importer"))

    def test_to_1002_lets_safe_html_keep_the_iframe_sandbox(self):
        from collective.plonecelery.upgrades import to_1002

        html = (
            '<iframe src="https://www.youtube.com/embed/x" sandbox="allow-scripts"'
            ' referrerpolicy="no-referrer"></iframe>'
        )
        transforms = api.portal.get_tool("portal_transforms")

        def shown():
            return transforms.convertTo("text/x-html-safe", html, mimetype="text/html").getData()

        self.assertIn('sandbox="allow-scripts"', shown())
        self.assertIn('referrerpolicy="no-referrer"', shown())
        record = "plone.custom_attributes"
        kept = [
            a
            for a in api.portal.get_registry_record(record)
            if a not in ("sandbox", "referrerpolicy")
        ]
        api.portal.set_registry_record(record, kept)
        self.assertNotIn("sandbox=", shown())
        to_1002(api.portal.get_tool("portal_setup"))
        to_1002(api.portal.get_tool("portal_setup"))  # twice: nothing is added twice
        attributes = api.portal.get_registry_record(record)
        self.assertEqual(attributes.count("sandbox"), 1)
        self.assertIn('sandbox="allow-scripts"', shown())

    def test_to_1003_lists_the_task_queue_panel(self):
        from collective.plonecelery.upgrades import to_1003

        panel = api.portal.get_tool("portal_controlpanel")
        panel.unregisterConfiglet("plonecelery-taskqueue")
        to_1003(api.portal.get_tool("portal_setup"))
        to_1003(api.portal.get_tool("portal_setup"))
        ids = [a.getId() for a in panel.listActions()]
        self.assertEqual(ids.count("plonecelery-taskqueue"), 1)
        self.assertIn("plonecelery-sources", ids)
