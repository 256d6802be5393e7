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
        self.assertIn("plonecelery-taskqueue", self.configlets())

        self.installer.uninstall_product(PRODUCT)

        self.assertFalse(self.installer.is_product_installed(PRODUCT))
        self.assertNotIn(INDEX, catalog.indexes())
        self.assertEqual(self.types_with_behavior(), [])
        self.assertNotIn("plonecelery-sources", self.configlets())
        self.assertNotIn("plonecelery-taskqueue", self.configlets())
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
        self.assertIn("plonecelery-taskqueue", self.configlets())
        setup = api.portal.get_tool("portal_setup")
        self.assertEqual(setup.listUpgrades(f"{PRODUCT}:default"), [])


class TestUpgradeFromTheFirstProfile(unittest.TestCase):
    """A site installed with profile version 1000 (the first release's profile: metadata
    and the plone.restapi dependency, nothing else) is brought up to date by the upgrade
    steps, run as the Add-ons control panel runs them."""

    layer = PLONECELERY_EAGER_FUNCTIONAL_TESTING

    def state(self) -> dict:
        catalog = api.portal.get_tool("portal_catalog")
        panel = api.portal.get_tool("portal_controlpanel")
        attributes = api.portal.get_registry_record("plone.custom_attributes")
        return {
            "index": INDEX in catalog.indexes(),
            "configlet": {"plonecelery-sources", "plonecelery-taskqueue"}
            <= {a.getId() for a in panel.listActions()},
            "user": api.user.get(username="plonecelery-importer") is not None,
            "attributes": sorted(a for a in attributes if a in ("sandbox", "referrerpolicy")),
        }

    def test_upgrade_steps_from_1000_give_what_a_fresh_install_gives(self):
        portal = self.layer["portal"]
        login(self.layer["app"], SITE_OWNER_NAME)
        setup = api.portal.get_tool("portal_setup")
        catalog = api.portal.get_tool("portal_catalog")
        panel = api.portal.get_tool("portal_controlpanel")
        record = "plone.custom_attributes"
        fresh = self.state()
        self.assertEqual(
            fresh,
            {
                "index": True,
                "configlet": True,
                "user": True,
                "attributes": ["referrerpolicy", "sandbox"],
            },
        )
        # The state profile 1000 left.
        catalog.delIndex(INDEX)
        panel.unregisterConfiglet("plonecelery-sources")
        panel.unregisterConfiglet("plonecelery-taskqueue")
        api.user.delete(username="plonecelery-importer")
        api.portal.set_registry_record(
            record,
            [
                a
                for a in api.portal.get_registry_record(record)
                if a not in ("sandbox", "referrerpolicy")
            ],
        )
        setup.setLastVersionForProfile(f"{PRODUCT}:default", "1000")
        self.assertEqual(
            [step["ssource"] for step in setup.listUpgrades(f"{PRODUCT}:default")],
            ["1000", "1001", "1002"],
        )

        setup.upgradeProfile(f"{PRODUCT}:default")

        self.assertEqual(setup.getLastVersionForProfile(f"{PRODUCT}:default"), ("1003",))
        self.assertEqual(setup.listUpgrades(f"{PRODUCT}:default"), [])
        upgraded = self.state()
        self.assertEqual(upgraded, fresh)
        self.assertIs(portal, api.portal.get())
