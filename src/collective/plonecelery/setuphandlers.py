"""Install and uninstall steps."""

from Products.CMFPlone.interfaces import INonInstallable
from zope.interface import implementer


@implementer(INonInstallable)
class HiddenProfiles:
    def getNonInstallableProfiles(self):
        """Hide the uninstall profile from the add-ons control panel."""
        return ["collective.plonecelery:uninstall"]


def post_install(setup_tool):
    """After the default profile: the user blog imports run as."""
    from Acquisition import aq_inner
    from Acquisition import aq_parent

    from .blogs.importer.users import create_import_user

    create_import_user(aq_parent(aq_inner(setup_tool)))
