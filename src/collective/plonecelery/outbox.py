"""Transactional outbox (being written)."""
