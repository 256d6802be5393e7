"""Seeing the queue: workers, queue lengths, outbox and dead letters, for the REST
status endpoint and the Prometheus metrics (:mod:`.status`, :mod:`.metrics`)."""
