"""Running Blender until every requested frame is verified: launch, watch, verify, decide, restart.

`supervisor.Supervisor` drives one job; its collaborators (the launcher, the clock, the probes, the
incident and metric sinks) come in through the Protocols of `seams`, so the restart paths run
against a replayed Blender in tests. `policy.plan` is the pure decision, `ledger` the on-disk truth.
"""
