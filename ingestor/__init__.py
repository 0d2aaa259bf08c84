"""ingestor: an asynchronous RSS/Atom/JSON Feed ingestion daemon."""

__version__ = "0.1.0"
