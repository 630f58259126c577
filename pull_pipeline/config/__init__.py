"""sources.yaml: models, loading, and `${NAME}` resolution at run time."""

from pull_pipeline.config.env import resolve_env
from pull_pipeline.config.loader import Project, load_project, parse_config
from pull_pipeline.config.models import PipelineConfig, SourceConfig

__all__ = ["PipelineConfig", "Project", "SourceConfig", "load_project", "parse_config", "resolve_env"]
