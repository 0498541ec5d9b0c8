"""leitstand: a small, durable HTTP ingest service for JSON events."""

__version__ = "0.1.0"
