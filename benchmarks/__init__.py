"""Throughput and memory benchmark of pull_pipeline: `python -m benchmarks.run` (see run.py)."""
