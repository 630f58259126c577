"""The TimescaleDB sink and its embedded PostgreSQL default."""

from pull_pipeline.sink.timescale import LoadResult, TimescaleSink, WindowLoad
from pull_pipeline.windows import Window

__all__ = ["LoadResult", "TimescaleSink", "Window", "WindowLoad"]
