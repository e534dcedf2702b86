"""The healer as a per-host service: the aiohttp app (`app.create_app`), its OpenAPI document, its
Prometheus metrics, and Alertmanager's webhook in (`alerts`)."""
