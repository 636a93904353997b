"""Benchmarks: each module exposes ``run(settings, ...) -> Path`` writing JSON + PNG under reports/bench."""
