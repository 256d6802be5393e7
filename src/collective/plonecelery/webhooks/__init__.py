"""Incoming blog webhooks: signature verification and payload normalisation."""
