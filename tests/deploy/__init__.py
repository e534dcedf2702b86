"""Tests of the deployment files: collector/, dashboards/, deploy/, compose.yaml, the Prometheus rules."""
