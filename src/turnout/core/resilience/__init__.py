"""Staying up when a version fails: circuit breakers, fallbacks, health verdicts."""
