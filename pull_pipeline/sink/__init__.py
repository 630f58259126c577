"""The TimescaleDB sink and its embedded PostgreSQL default."""

from pull_pipeline.sink.timescale import LoadResult, TimescaleSink, Window, WindowLoad

__all__ = ["LoadResult", "TimescaleSink", "Window", "WindowLoad"]
