"""The configuration: settings declared once in model.py, parsed by values.py, loaded and
checked by load.py (one line per problem, naming the file and the key)."""

from ingestor.config.load import expand_env, load_config, parse_config
from ingestor.config.model import (
    DEFAULT_TRACKING_PARAMS,
    DEFAULT_USER_AGENT,
    BasicAuth,
    Config,
    DedupConfig,
    ExtractionConfig,
    FeedConfig,
    HTTPConfig,
    LanguageConfig,
    MetricsConfig,
    OutputConfig,
    PipelineConfig,
    RequestOptions,
    ScheduleConfig,
    StateConfig,
)
from ingestor.config.values import parse_duration, parse_size

__all__ = [
    "DEFAULT_TRACKING_PARAMS",
    "DEFAULT_USER_AGENT",
    "BasicAuth",
    "Config",
    "DedupConfig",
    "ExtractionConfig",
    "FeedConfig",
    "HTTPConfig",
    "LanguageConfig",
    "MetricsConfig",
    "OutputConfig",
    "PipelineConfig",
    "RequestOptions",
    "ScheduleConfig",
    "StateConfig",
    "expand_env",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
]
