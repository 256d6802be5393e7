"""Classic UI control panel for blog sources (``@@plonecelery-sources``)."""

from zope.i18nmessageid import MessageFactory

_ = MessageFactory("collective.plonecelery")
