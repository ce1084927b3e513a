"""The package's version, in the engine that sends it (the HTTP ``User-Agent``); the package exports
it as ``pullmode_dagster.__version__`` and pyproject.toml reads it from here, so it is written once."""

__version__ = "0.1.0"
