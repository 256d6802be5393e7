"""Install and uninstall steps."""

import logging

from Products.CMFPlone.interfaces import INonInstallable
from zope.interface import implementer

logger = logging.getLogger(__name__)


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


def uninstall(setup_tool):
    """After the uninstall profile (which removes the catalog index and the control panel):
    take the ``remote_post`` behavior off every type it was put on.

    Left in place, on purpose: imported content and its data (the next import after a
    re-install puts the behavior back and indexes those items again), the blog sources
    (site annotations: a re-install finds them), the import user and its local roles on
    the import folders, the two ``safe_html`` attributes (removing them would show
    imported iframes unsandboxed), and the outbox, dead letters and worker presence in
    the ZODB root (shared by every site of the database).
    """
    from Acquisition import aq_inner
    from Acquisition import aq_parent
    from plone.dexterity.interfaces import IDexterityFTI
    from zope.component import getUtilitiesFor

    from .blogs.importer.users import IMPORT_USER
    from .content.remote_post import BEHAVIOR

    portal = aq_parent(aq_inner(setup_tool))
    for name, fti in getUtilitiesFor(IDexterityFTI, context=portal):
        behaviors = tuple(fti.behaviors)
        if BEHAVIOR in behaviors:
            fti.manage_changeProperties(behaviors=tuple(b for b in behaviors if b != BEHAVIOR))
            logger.info("Removed the %s behavior from %s", BEHAVIOR, name)
    logger.info(
        "collective.plonecelery uninstalled. Left in place: imported content, blog sources, "
        "the user %s and its local roles on import folders (remove them in Users and "
        "Groups if you no longer import), and the safe_html attributes sandbox and "
        "referrerpolicy that keep imported iframes sandboxed.",
        IMPORT_USER,
    )
