"""The plone.restapi services and the webhook endpoint."""
