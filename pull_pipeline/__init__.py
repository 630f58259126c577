"""pull_pipeline: config-driven batch pulls of sensor readings into TimescaleDB."""
