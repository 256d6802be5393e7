"""Fetch-and-import tasks for blog sources (being written)."""
