"""Package version (single source of truth, read by pyproject and the CLI)."""

__version__ = "0.1.0"
