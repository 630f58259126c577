"""Dagster wiring: one `SourceContext` per source, one builder that gives it everything.

`context` builds the per-source context (partitions, names, clock) once; `source` turns it
into the source's assets, checks, jobs, schedule and sensors; `naming` spells every name
Dagster shows. The other modules each build one kind of definition. The work itself is done
by connectors, validation, landing and the sink, which are tested on their own.
"""
