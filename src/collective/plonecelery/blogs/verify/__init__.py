"""Verifying webhooks: signatures and events, pure functions over the raw request."""
