"""Shared fixtures. The end-to-end ones (``demo_stack``: a demo exporter
scraped by a real Prometheus) live in tests/e2e/conftest.py."""
