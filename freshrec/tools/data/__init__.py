"""Synthetic event data (a simulated world with known preferences) and the DuckDB feature oracle."""
