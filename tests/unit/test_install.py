"""Install into a site with content, uninstall cleanly, install again."""

import unittest

from plone import api
from plone.app.testing import SITE_OWNER_NAME
from plone.app.testing import login
from plone.dexterity.interfaces import IDexterityFTI
from zope.component import getUtilitiesFor

from collective.plonecelery.content.remote_post import BEHAVIOR
from collective.plonecelery.content.remote_post import enable_behavior
from collective.plonecelery.testing import PLONECELERY_EAGER_FUNCTIONAL_TESTING

PRODUCT = "collective.plonecelery"
INDEX = "plonecelery_remote_key"


class TestInstallUninstall(unittest.TestCase):
    layer = PLONECELERY_EAGER_FUNCTIONAL_TESTING

    def setUp(self):
        self.portal = self.layer["portal"]
        login(self.layer["app"], SITE_OWNER_NAME)
        self.installer = api.content.get_view("installer", self.portal, self.layer["request"])

    def types_with_behavior(self):
        return sorted(
            name for name, fti in getUtilitiesFor(IDexterityFTI) if BEHAVIOR in fti.behaviors
        )

    def configlets(self):
        return [a.getId() for a in api.portal.get_tool("portal_controlpanel").listActions()]

    def test_uninstall_removes_what_install_added_and_keeps_the_content(self):
        enable_behavior("News Item")
        item = api.content.create(
            container=self.portal, type="News Item", id="post", title="A post"
        )
        item.remote_source, item.remote_id = "blog", "42"
        item.reindexObject()
        catalog = api.portal.get_tool("portal_catalog")
        self.assertEqual(len(catalog(plonecelery_remote_key="blog:42")), 1)
        self.assertEqual(self.types_with_behavior(), ["News Item"])
        self.assertIn("plonecelery-sources", self.configlets())

        self.installer.uninstall_product(PRODUCT)

        self.assertFalse(self.installer.is_product_installed(PRODUCT))
        self.assertNotIn(INDEX, catalog.indexes())
        self.assertEqual(self.types_with_behavior(), [])
        self.assertNotIn("plonecelery-sources", self.configlets())
        # Content stays, readable; the import user stays (its local roles may be in use).
        self.assertEqual(self.portal["post"].Title(), "A post")
        self.assertIsNotNone(api.user.get(username="plonecelery-importer"))

        # Installed again into a site with content. The next import puts the behavior back
        # on its type, and finds post 42's item instead of making a second one.
        self.installer.install_product(PRODUCT)
        self.assertTrue(self.installer.is_product_installed(PRODUCT))
        self.assertIn(INDEX, catalog.indexes())
        self.assertTrue(enable_behavior("News Item"))
        self.assertEqual([b.getId for b in catalog(plonecelery_remote_key="blog:42")], ["post"])
        self.assertIn("plonecelery-sources", self.configlets())
        setup = api.portal.get_tool("portal_setup")
        self.assertEqual(setup.listUpgrades(f"{PRODUCT}:default"), [])
