"""End to end, nothing faked: real Blender (every row of the version matrix) with the hooks loaded ->
a real `renderwatch agent` process -> Prometheus text on /metrics and OTLP/HTTP spans at a receiver in
the test (decoded with opentelemetry-proto). Also: the agent killed with SIGKILL and restarted in the
middle of a real render still counts and traces every frame exactly once."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.support.agent import AgentProcess, OtlpReceiver, attrs, wait_until

REPO = Path(__file__).resolve().parents[2]
HOOKS = REPO / "blender_hooks" / "startup.py"
LABELS = {"scene": "Scene", "engine": "CYCLES", "device_type": "CPU"}


EXIT_BOUND_S = 3.0   # from Blender's last line to its exit: the hooks' flush bound plus Blender's own teardown


@pytest.fixture
def stack(tmp_path: Path):
    with OtlpReceiver() as receiver:
        agent = AgentProcess(tmp_path / "home", {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_BSP_SCHEDULE_DELAY": "100", "RENDERWATCH_SAMPLE_INTERVAL_SECONDS": "0.2"})
        agent.start()
        try:
            yield agent, receiver
        finally:
            agent.stop()


def _render(exe: list[str] | str, scene: Path, frames: int, agent: AgentProcess, job: str) -> subprocess.Popen:
    env = dict(agent.env, RENDERWATCH_AGENT=agent.url, RENDERWATCH_JOB_ID=job)
    for k in ("OTEL_EXPORTER_OTLP_ENDPOINT",):
        env.pop(k, None)
    prefix = [exe] if isinstance(exe, str) else list(exe)
    return subprocess.Popen([*prefix, "-b", str(scene), "--python", str(HOOKS), "-s", "1", "-e", str(frames), "-a"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _frame_spans(receiver: OtlpReceiver, job: str) -> list:
    return [s for s in receiver.spans() if s.name == "render.frame"]


def _run_to_exit(proc: subprocess.Popen, timeout: float = 180) -> tuple[str, float]:
    """Read a render to its end: (output, seconds from its last line to its exit)."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    lines, last = [], time.monotonic()
    for raw in proc.stdout:
        lines.append(raw.decode(errors="replace"))
        last = time.monotonic()
        if last > deadline:
            proc.kill()
            break
    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    return "".join(lines), time.monotonic() - last


@pytest.mark.blender
@pytest.mark.matrix("render")
def test_real_render_becomes_metrics_and_one_trace(matrix_blender, stack, scene_copy) -> None:
    """A render with the hooks on each Blender of the matrix exits by itself, within a bound, and
    every frame is counted in /metrics and traced as a span."""
    agent, receiver = stack
    scene = scene_copy(frames=4)
    job = f"e2e-{matrix_blender.row.line}"
    proc = _render(matrix_blender, scene, 4, agent, job)
    try:
        out, exit_delay = _run_to_exit(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert out.rstrip().endswith("Blender quit"), out[-2000:]
    assert exit_delay < EXIT_BOUND_S, f"Blender {matrix_blender.row.label} took {exit_delay:.2f} s to exit"

    assert wait_until(lambda: agent.metric("renderwatch_frames_rendered_total", **LABELS) == 4, timeout=20), \
        agent.metric("renderwatch_frames_rendered_total", **LABELS)
    assert agent.metric("renderwatch_frame_render_seconds_count", **LABELS) == 4
    assert agent.metric("renderwatch_frame_render_seconds_sum", **LABELS) > 0
    for kind in ("blender", "rss"):
        assert agent.metric("renderwatch_frame_peak_memory_bytes_count", kind=kind, **LABELS) == 4, kind
        assert agent.metric("renderwatch_frame_peak_memory_bytes_sum", kind=kind, **LABELS) > 0, kind
    assert agent.metric("renderwatch_job_progress_ratio", job=job) == 1.0
    rejected = agent.metric("renderwatch_events_rejected_total")
    assert not rejected, f"{rejected} events rejected"

    spans = receiver.wait_for(lambda ss: any(s.name == "render.job" for s in ss)
                              and len([s for s in ss if s.name == "render.frame"]) >= 4, timeout=20)
    roots = [s for s in spans if s.name == "render.job"]
    frames = [s for s in spans if s.name == "render.frame"]
    assert len(roots) == 1, [s.name for s in spans]
    assert {s.trace_id for s in spans} == {roots[0].trace_id}           # one trace per job
    assert sorted(attrs(s)["render.frame"] for s in frames) == [1, 2, 3, 4]
    assert all(s.parent_span_id == roots[0].span_id for s in frames)
    for s in frames:
        a = attrs(s)
        assert a["render.frame.seconds"] > 0 and a["render.engine"] == "CYCLES"
        assert Path(a["render.output_path"]).is_file()
        assert a["render.memory.peak.blender"] > 0
    if matrix_blender.stats_to_handler:
        # The wheels hand the stats string to the handler: render phases become spans under each frame.
        phases = [s for s in spans if s.name.startswith("render.phase.")]
        frame_ids = {s.span_id for s in frames}
        assert phases and all(p.parent_span_id in frame_ids for p in phases), [p.name for p in phases]
        assert "render.phase.sampling" in {p.name for p in phases}


@pytest.mark.blender
def test_agent_killed_mid_render_counts_every_frame_once(stack, scene_copy, blender34: str) -> None:
    agent, receiver = stack
    frames = 8
    scene = scene_copy(frames=frames, samples=64, width=160, height=90)   # slow enough to kill the agent mid-render
    job = "e2e-agent-restart"
    proc = _render(blender34, scene, frames, agent, job)
    try:
        assert wait_until(lambda: (agent.metric("renderwatch_frames_rendered_total", **LABELS) or 0) >= 2,
                          timeout=60, interval=0.02)
        assert proc.poll() is None, "the render finished before the agent could be killed mid-render"
        agent.kill()                                   # SIGKILL: no flush, no goodbye
        time.sleep(1.0)                                # Blender goes on; its events wait in the spool
        agent.start()
        out = proc.communicate(timeout=180)[0].decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert wait_until(lambda: agent.metric("renderwatch_job_progress_ratio", job=job) == 1.0, timeout=20)
    assert agent.metric("renderwatch_frames_rendered_total", **LABELS) == frames
    assert agent.metric("renderwatch_frame_render_seconds_count", **LABELS) == frames
    spans = receiver.wait_for(lambda ss: len({attrs(s)["render.frame"] for s in ss if s.name == "render.frame"})
                              >= frames and any(s.name == "render.job" for s in ss), timeout=20)
    time.sleep(0.5)                                    # anything duplicated would arrive by now
    frame_spans = [s for s in receiver.spans() if s.name == "render.frame"]
    # Every frame has exactly one span identity. A span can arrive twice only if the kill landed in
    # the few milliseconds between the receiver taking a batch and the agent recording that it did:
    # the restarted agent then sends the same span again, with the same ids, which backends
    # (Tempo, the Collector) treat as one span.
    ids = {f: {(s.trace_id, s.span_id) for s in frame_spans if attrs(s)["render.frame"] == f}
           for f in range(1, frames + 1)}
    assert all(len(v) == 1 for v in ids.values()), ids
    counts = Counter(attrs(s)["render.frame"] for s in frame_spans)
    assert set(counts) == set(range(1, frames + 1)), counts
    resent = sum(counts.values()) - frames
    assert resent <= 4, f"{resent} frame spans sent twice: more than one export batch around the kill ({counts})"
    assert len({s.trace_id for s in spans}) == 1
