"""The add-on's control panels in plone.restapi's ``@controlpanels`` (what Volto lists).

They are Classic UI pages with their own forms, not registry schemas, so each is a link:
``GET @controlpanels`` lists them under their Site Setup group, and
``GET @controlpanels/<name>`` answers the page's address (``url``) and the REST services
that do the same from Volto, with an empty schema.
"""

from __future__ import annotations

from plone.restapi.controlpanels import RegistryConfigletPanel
from plone.restapi.controlpanels.interfaces import IControlpanel
from plone.restapi.interfaces import ISerializeToJson
from zope.component import adapter
from zope.interface import implementer


class ILinkControlpanel(IControlpanel):
    """A control panel that is a Classic UI page: listed, and read as a link."""


@implementer(ILinkControlpanel)
class _LinkPanel(RegistryConfigletPanel):
    configlet_category_id = "Products"
    #: The Classic UI view and the REST services of the same panel.
    view = ""
    services: tuple[str, ...] = ()


class TaskQueuePanel(_LinkPanel):
    configlet_id = "plonecelery-taskqueue"
    view = "@@plonecelery-taskqueue"
    services = ("@celery-status", "@celery-tasks", "@celery-deadletters", "@celery-backfills")


class SourcesPanel(_LinkPanel):
    configlet_id = "plonecelery-sources"
    view = "@@plonecelery-sources"
    services = ("@blog-sources", "@blog-deliveries")


@implementer(ISerializeToJson)
@adapter(ILinkControlpanel)
class LinkPanelSerializer:
    """``GET @controlpanels/<name>`` of a link panel."""

    def __init__(self, panel):
        self.panel = panel

    def __call__(self):
        panel = self.panel
        portal_url = panel.context.absolute_url()
        return {
            "@id": f"{portal_url}/@controlpanels/{panel.__name__}",
            "title": panel.title,
            "group": panel.group,
            "url": f"{portal_url}/{panel.view}",
            "services": [f"{portal_url}/++api++/{name}" for name in panel.services],
            "data": {},
            "schema": {"type": "object", "properties": {}, "required": [], "fieldsets": []},
        }
