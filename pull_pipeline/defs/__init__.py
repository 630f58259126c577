"""Dagster wiring: assets, checks, partitions, schedules, sensors and jobs per source.

Everything here is thin: the work is done by connectors, validation, landing and the sink,
which know nothing about Dagster and are tested on their own.
"""
