"""Benchmarks for turnout; run them as modules, e.g. ``python -m benchmarks.core``."""
