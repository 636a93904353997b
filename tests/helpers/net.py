"""Network helpers shared by tests that start servers (the benchmarks' own, one implementation)."""

from freshrec.tools.bench.processes import free_port

__all__ = ["free_port"]
