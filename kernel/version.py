"""renderwatch's version: what `renderwatch --version`, the OpenAPI documents, the agent's page, Sentry's
release and the webhooks' user agent say (pyproject.toml's `version` is the same number)."""

__version__ = "0.1.0"
