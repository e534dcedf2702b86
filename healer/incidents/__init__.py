"""Telling people: typed errors and job events as incidents, to Sentry and to signed webhooks.

`model` is what an incident is (it imports no exporter); `dispatch.Incidents` fans incidents out off
the hot path; `notify` (webhooks, on-disk outbox) and `sentry` are the exporters; `scrub` keeps
secrets, environment variables and home paths on the host.
"""
