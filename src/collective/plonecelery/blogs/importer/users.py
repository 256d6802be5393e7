"""The user imports run as."""

from __future__ import annotations

import logging
import secrets

logger = logging.getLogger(__name__)

#: The user imports run as unless a source names another (created on install).
IMPORT_USER = "plonecelery-importer"


def create_import_user(portal) -> bool:
    """Create the user imports run as (``plonecelery-importer``) unless it exists.

    A real Plone user with only the Member role and a random password nobody knows: the roles
    it needs are granted locally on each source's target folder. Returns True if created.
    Meant for the profile's post_handler: ``create_import_user(context.getSite())``.
    """
    from Products.CMFCore.utils import getToolByName

    if portal.acl_users.getUserById(IMPORT_USER) is not None:
        return False
    registration = getToolByName(portal, "portal_registration")
    registration.addMember(
        IMPORT_USER,
        secrets.token_urlsafe(32),
        roles=("Member",),
        properties={
            "username": IMPORT_USER,
            "fullname": "Blog importer",
            "email": f"{IMPORT_USER}@localhost.invalid",
        },
    )
    logger.info("Created the import user %s", IMPORT_USER)
    return True
