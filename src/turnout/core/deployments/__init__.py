"""Deployed versions: each one's runtime, batcher and breaker bundled, and the registry of them."""
