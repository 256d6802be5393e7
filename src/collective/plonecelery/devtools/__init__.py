"""Tooling, not runtime: the dev server, instance helpers, the test harness, the demo blog."""
