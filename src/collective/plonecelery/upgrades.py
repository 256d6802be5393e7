"""Upgrade steps of the collective.plonecelery:default profile."""

PROFILE = "profile-collective.plonecelery:default"


def to_1001(setup_tool):
    """Blog imports: catalog index, control panel, import user (1.0.0a1)."""
    from Acquisition import aq_inner
    from Acquisition import aq_parent

    from .blogs.importer.users import create_import_user
    from .content.indexers import reindex_remote_keys

    portal = aq_parent(aq_inner(setup_tool))
    setup_tool.runImportStepFromProfile(PROFILE, "catalog")
    setup_tool.runImportStepFromProfile(PROFILE, "controlpanel")
    reindex_remote_keys(portal)
    create_import_user(portal)


def to_1002(setup_tool):
    """Imported iframes stay sandboxed when shown: safe_html keeps sandbox, referrerpolicy."""
    setup_tool.runImportStepFromProfile(PROFILE, "plone.app.registry", run_dependencies=False)


def to_1003(setup_tool):
    """The Task queue control panel in Site Setup (1.0.0a2)."""
    setup_tool.runImportStepFromProfile(PROFILE, "controlpanel", run_dependencies=False)
