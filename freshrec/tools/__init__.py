"""Tools apart from the pipeline stages: benchmarks, synthetic data, the traffic simulator."""
