"""FreshRec shared core: settings, errors, schemas, lake layout, registry, CLI."""

__version__ = "0.1.0"
