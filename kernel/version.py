"""renderwatch's version: what `renderwatch --version`, the OpenAPI documents, the agent's page, Sentry's
release, the webhooks' user agent and the package's metadata (pyproject.toml reads it from here) say."""

__version__ = "0.1.0"
