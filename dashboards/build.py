"""Grafana dashboards as code: builds renderwatch's dashboards with grafana-foundation-sdk and
writes their JSON beside this file, where Grafana's file provisioning loads them
(collector/grafana/provisioning/dashboards/renderwatch.yaml).

The committed JSON must equal what this script writes: edit this file, never the JSON.

Usage::

    python -m dashboards.build            # rewrite dashboards/*.json
    python -m dashboards.build --check    # exit 1 and name the files that differ

Conventions: datasources by fixed uid ("prometheus", "tempo", "loki", provisioned by
collector/grafana/provisioning/datasources); template variables `host` (the `instance` label:
the host without port), `scene`, `job` (the render job's id, the `job` label of per-job series),
each multi-valued with All = `.*`; heavy queries read the recording rules of
collector/prometheus/rules/renderwatch-recording.yml.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from grafana_foundation_sdk.builders import (
    bargauge,
    common,
    dashboard,
    heatmap,
    logs,
    loki,
    prometheus,
    stat,
    statetimeline,
    table,
    tempo,
    timeseries,
)
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    GraphDrawStyle,
    LegendDisplayMode,
    LegendPlacement,
    LogsSortOrder,
    VisibilityMode,
)
from grafana_foundation_sdk.models.dashboard import (
    DashboardCursorSync,
    DashboardLinkType,
    DataSourceRef,
    Threshold,
    ThresholdsMode,
    ValueMap,
    ValueMappingResult,
    VariableRefresh,
    VariableSort,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat
from grafana_foundation_sdk.models.tempo import SearchTableType

OUT_DIR = Path(__file__).resolve().parent
PROM = DataSourceRef(type_val="prometheus", uid="prometheus")
TEMPO = DataSourceRef(type_val="tempo", uid="tempo")
LOKI = DataSourceRef(type_val="loki", uid="loki")
TAGS = ["renderwatch"]
UIDS = {"farm": "renderwatch-farm", "job": "renderwatch-job", "gpus": "renderwatch-gpus",
        "healer": "renderwatch-healer"}

# Label selectors every panel applies (All = ".*", which also matches an absent label).
HOST = 'instance=~"$host"'
SCENE = 'scene=~"$scene"'
JOB = 'job=~"$job"'


# --- building blocks --------------------------------------------------------------------------

def q(expr: str, legend: str = "__auto", ref: str = "A", *, instant: bool = False,
      fmt: PromQueryFormat | None = None, exemplar: bool = False) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(PROM)
    if instant:
        query = query.instant()
    if fmt is not None:
        query = query.format(fmt)
    if exemplar:
        query = query.exemplar(True)
    return query


def born_at_one(counter: str, selector: str, window: str) -> str:
    """How much a counter grew over `window`, counting series born during it in full.

    prometheus_client creates a labelled counter's series at its first increment, so a series
    that appears within the window starts at 1 (or more) and increase() alone reports 0 for it.
    """
    return (f"(({counter}{{{selector}}} unless {counter}{{{selector}}} offset {window})"
            f" or increase({counter}{{{selector}}}[{window}]))")


def per_job(metric: str, extra: str = "") -> str:
    """A per-job series on the selected hosts and jobs, restricted to the selected scenes through
    renderwatch_job_info (per-job series carry `job`, not `scene`), with `scene` joined on."""
    sel = ", ".join(s for s in (HOST, JOB, extra) if s)
    return (f"{metric}{{{sel}}} * on (instance, job) group_left (scene) "
            f"max by (instance, job, scene) (renderwatch_job_info{{{HOST}, {JOB}, {SCENE}}})")


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    return (dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE)
            .steps([Threshold(value=v, color=c) for v, c in steps]))


def legend_table() -> common.VizLegendOptions:
    return (common.VizLegendOptions().display_mode(LegendDisplayMode.TABLE).placement(LegendPlacement.BOTTOM)
            .show_legend(True).calcs(["lastNotNull", "max"]))


def ts(title: str, *queries: prometheus.Dataquery, unit: str = "short", desc: str = "",
       w: int = 12, h: int = 8, points: bool = False) -> timeseries.Panel:
    p = (timeseries.Panel().title(title).description(desc).datasource(PROM).unit(unit).span(w).height(h)
         .legend(legend_table()).fill_opacity(10).line_width(1))
    if points:
        p = p.draw_style(GraphDrawStyle.POINTS).point_size(6).show_points(VisibilityMode.ALWAYS)
    for query in queries:
        p = p.with_target(query)
    return p


def st(title: str, query: prometheus.Dataquery, unit: str = "short", desc: str = "", w: int = 4, h: int = 4,
       steps: tuple[tuple[float | None, str], ...] = ((None, "green"),)) -> stat.Panel:
    return (stat.Panel().title(title).description(desc).datasource(PROM).unit(unit).span(w).height(h)
            .with_target(query).color_mode(BigValueColorMode.VALUE).graph_mode(BigValueGraphMode.AREA)
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .thresholds(thresholds(*steps)))


def bars(title: str, query: prometheus.Dataquery, unit: str = "short", desc: str = "", w: int = 8,
         h: int = 8) -> bargauge.Panel:
    return (bargauge.Panel().title(title).description(desc).datasource(PROM).unit(unit).span(w).height(h)
            .with_target(query).reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .thresholds(thresholds((None, "blue"))))


def link(title: str, url: str) -> dashboard.DashboardLink:
    return dashboard.DashboardLink(title).type(DashboardLinkType.LINK).url(url).target_blank(False)


def tempo_explore_url(traceql: str) -> str:
    """A Grafana Explore URL running `traceql` on the Tempo datasource over the dashboard's range.
    Grafana fills ${...} variables in it; everything else is percent-encoded here."""
    pane = {"tempo": {"datasource": "tempo", "queries": [
        {"refId": "A", "datasource": {"type": "tempo", "uid": "tempo"}, "queryType": "traceql",
         "query": traceql, "limit": 50, "tableType": "spans"}],
        "range": {"from": "${__from}", "to": "${__to}"}}}
    encoded = quote(json.dumps(pane, separators=(",", ":")), safe="")
    # Keep Grafana's variables readable to its interpolation (it substitutes before navigating).
    for var in ("${__from}", "${__to}", "${__field.labels.job}"):
        encoded = encoded.replace(quote(var, safe=""), var)
    return f"/explore?schemaVersion=1&orgId=1&panes={encoded}"


# Blender's warning and error lines of the selected jobs. Loki indexes only service_name and
# host_name (collector/loki/loki.yaml): the job and the level are structured metadata, filtered
# after the stream selector. A custom All value (".*") reaches the query unescaped.
JOB_PROBLEM_LINES = ('{service_name=~"renderwatch.+"} | render_job_id=~"${job:regex}"'
                     ' | render_log_level=~"warning|error"')


FRAME_SPANS_OF_JOB = tempo_explore_url(
    '{ name = "render.frame" && span.render.job.id = "${__field.labels.job}" }'
    " | select(span.render.frame, span.render.frame.seconds, span.render.attempt)")


def variables(*names: str) -> list[dashboard.QueryVariable]:
    """The standard template variables, each narrowed by the ones before it."""
    queries = {
        "host": ("Host", 'label_values(up{job=~"renderwatch-agent|renderwatch-healer"}, instance)'),
        "scene": ("Scene", f"label_values(renderwatch_frames_rendered_total{{{HOST}}}, scene)"),
        "job": ("Job", f"label_values(renderwatch_job_info{{{HOST}, {SCENE}}}, job)"),
    }
    out = []
    for name in names:
        label, query = queries[name]
        out.append(dashboard.QueryVariable(name).label(label).datasource(PROM).query(query)
                   .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED).sort(VariableSort.ALPHABETICAL_ASC)
                   .multi(True).include_all(True).all_value(".*"))
    return out


def base(key: str, title: str, desc: str, *var_names: str) -> dashboard.Dashboard:
    d = (dashboard.Dashboard(title).uid(UIDS[key]).description(desc).tags(TAGS).timezone("browser")
         .time("now-3h", "now").refresh("30s").tooltip(DashboardCursorSync.CROSSHAIR).readonly()
         .link(dashboard.DashboardLink("renderwatch").type(DashboardLinkType.DASHBOARDS).tags(TAGS)
               .as_dropdown(True).include_vars(True).keep_time(True)))
    for v in variables(*var_names):
        d = d.with_variable(v)
    return d


# --- dashboards -------------------------------------------------------------------------------

def farm_overview() -> dashboard.Dashboard:
    restarts_range = born_at_one("renderwatch_healer_restarts_total", HOST, "$__range")
    gave_up_range = born_at_one("renderwatch_healer_gave_up_total", HOST, "$__range")
    errors_range = born_at_one("renderwatch_healer_attempts_total", f'{HOST}, error_type!="ok"', "$__range")
    fph = f"instance_scene:renderwatch_frames_rendered:per_hour_rate5m{{{HOST}, {SCENE}}}"
    return (
        base("farm", "renderwatch / Farm overview",
             "Every render node at a glance: hosts, jobs, throughput, frame times against their "
             "baseline, typed errors and restarts.", "host", "scene")
        .with_row(dashboard.Row("Now"))
        .with_panel(st("Hosts up", q(f'count(up{{job="renderwatch-agent", {HOST}}} == 1) or vector(0)',
                                     instant=True),
                       desc="Agents answering Prometheus' scrapes."))
        .with_panel(st("Hosts down", q(f'count(up{{job="renderwatch-agent", {HOST}}} == 0) or vector(0)',
                                       instant=True),
                       desc="Agents Prometheus cannot scrape (AgentDown fires after 1 minute).",
                       steps=((None, "green"), (1, "red"))))
        .with_panel(st("Active jobs", q(f"sum(renderwatch_jobs_active{{{HOST}}})", instant=True)))
        .with_panel(st("Frames per hour", q(f"sum({fph})", instant=True), desc="Over the last 5 minutes."))
        .with_panel(st("Restarts", q(f"sum({restarts_range}) or vector(0)", instant=True),
                       desc="Blender restarts by the healers over the dashboard's time range.",
                       steps=((None, "green"), (1, "orange"))))
        .with_panel(st("Gave up", q(f"sum({gave_up_range}) or vector(0)", instant=True),
                       desc="Jobs the healers stopped retrying over the dashboard's time range.",
                       steps=((None, "green"), (1, "red"))))
        .with_row(dashboard.Row("Throughput and frame times"))
        .with_panel(ts("Frames per hour by host", q(f"sum by (instance) ({fph})", "{{instance}}"))
                    .data_links([link("Jobs on ${__field.labels.instance}",
                                      f"/d/{UIDS['job']}/?var-host=${{__field.labels.instance}}&${{__url_time_range}}")]))
        .with_panel(ts("Frames per hour by scene", q(f"sum by (scene) ({fph})", "{{scene}}")))
        .with_panel(ts("p90 frame time vs baseline",
                       q(f"scene:renderwatch_frame_render_seconds:p90_30m{{{SCENE}}}", "{{scene}} p90 (30m)"),
                       q(f"scene:renderwatch_frame_render_seconds:p90_baseline_1d{{{SCENE}}}",
                         "{{scene}} baseline (day before)", "B"),
                       unit="s", w=12,
                       desc="FrameTimeRegression fires when the 30-minute p90 stays above twice the baseline."))
        .with_panel(ts("p90 frame time by host", q(
            f"instance_scene:renderwatch_frame_render_seconds:p90_30m{{{HOST}, {SCENE}}}", "{{instance}} {{scene}}"),
            unit="s"))
        .with_row(dashboard.Row("Errors and restarts"))
        .with_panel(bars("Errors by type", q(f"sum by (error_type) ({errors_range})", "{{error_type}}",
                                              instant=True),
                         desc="Blender runs that ended in a typed error, over the dashboard's time range."))
        .with_panel(ts("Errors per hour by type",
                       q("error_type:renderwatch_healer_attempts_failed:increase1h", "{{error_type}}"), w=8))
        .with_panel(bars("Suspect frames by reason", q(
            f"sum by (reason) (increase(renderwatch_frames_suspect_total{{{HOST}}}[$__range]))", "{{reason}}",
            instant=True), w=8,
            desc="Saved frames that look wrong (blank, transparent, resolution, channels, too fast) or were "
                 "rendered on the CPU when the scene asked for a GPU, over the dashboard's time range. "
                 "RenderFramesSuspect fires on the first."))
        .with_panel(ts("Restarts per hour by host",
                       q(f"instance:renderwatch_healer_restarts:increase1h{{{HOST}}}", "{{instance}}"), w=8))
        .with_panel(ts("Hook events ingested per second", q(
            f"sum by (instance) (rate(renderwatch_events_ingested_total{{{HOST}}}[$__rate_interval]))",
            "{{instance}}"), unit="ops", w=12))
        .with_panel(ts("Hook events rejected", q(
            f"sum by (reason) (increase(renderwatch_events_rejected_total{{{HOST}}}[$__rate_interval]))",
            "{{reason}}"), w=12))
    )


def job_drilldown() -> dashboard.Dashboard:
    jobsel = f"{HOST}, {JOB}"
    return (
        base("job", "renderwatch / Job drill-down",
             "One render job (or several): progress, frame times, memory peaks, attempts, its "
             "frames' spans in Tempo and Blender's warnings and errors in Loki.", "host", "scene", "job")
        .with_row(dashboard.Row("Progress"))
        .with_panel(st("Progress", q(per_job("renderwatch_job_progress_ratio"), "{{job}}", instant=True),
                       unit="percentunit", w=6))
        .with_panel(st("Frames done", q(per_job("renderwatch_job_frames_done"), "{{job}}", instant=True), w=4))
        .with_panel(st("Frames in job", q(per_job("renderwatch_job_frames_expected"), "{{job}}", instant=True), w=4))
        .with_panel(st("ETA", q(per_job("renderwatch_job_eta_seconds"), "{{job}}", instant=True), unit="s", w=4))
        .with_panel(st("Attempts", q(per_job("renderwatch_job_attempts"), "{{job}}", instant=True), w=3,
                       desc="Blender runs of the job: 1 + restarts.",
                       steps=((None, "green"), (2, "orange"), (4, "red"))))
        .with_panel(st("Last frame", q(per_job("renderwatch_job_last_frame_seconds"), "{{job}}", instant=True),
                       unit="s", w=3))
        .with_row(dashboard.Row("Frames"))
        .with_panel(ts("Frame time per frame",
                       q(per_job("renderwatch_job_last_frame_seconds"), "{{job}}"),
                       unit="s", w=12, points=True,
                       desc="The wall time of each job's latest frame, sampled at every scrape: one "
                            "step per finished frame. Click a point for the job's frame spans in Tempo.")
                    .data_links([link("Frame spans of ${__field.labels.job} in Tempo", FRAME_SPANS_OF_JOB)]))
        .with_panel(heatmap.Panel().title("Frame time distribution (scene)").datasource(PROM).span(12).height(8)
                    .description("Histogram of renderwatch_frame_render_seconds for the selected hosts and "
                                 "scenes; exemplars link to traces where the agent attaches them.")
                    .with_target(q(f"sum by (le) (increase(renderwatch_frame_render_seconds_bucket"
                                   f"{{{HOST}, {SCENE}}}[$__rate_interval]))", "{{le}}",
                                   fmt=PromQueryFormat.HEATMAP, exemplar=True))
                    .calculate(False).unit("s"))
        .with_panel(table.Panel().title("Frames of the job (Tempo)").datasource(TEMPO).span(24).height(9)
                    .description("The job's render.frame spans; each row opens the frame in its trace.")
                    .with_target(tempo.TempoQuery().ref_id("A").datasource(TEMPO).query_type("traceql")
                                 .query('{ name = "render.frame" && span.render.job.id =~ "${job:regex}" }'
                                        " | select(span.render.frame, span.render.frame.seconds,"
                                        " span.render.attempt, span.render.memory.peak.blender)")
                                 .limit(200).spss(1000).table_type(SearchTableType.SPANS)))
        .with_panel(logs.Panel().title("Warnings and errors (Loki)").datasource(LOKI).span(24).height(10)
                    .description("What Blender printed at warning or error level in the selected jobs, newest "
                                 "first (renderwatch's classifier sets the level). Each line's details "
                                 "carry its frame, attempt and phase, and link to the frame's trace in Tempo.")
                    .show_time(True).wrap_log_message(True).enable_log_details(True)
                    .sort_order(LogsSortOrder.DESCENDING)
                    .with_target(loki.Dataquery().ref_id("A").datasource(LOKI).expr(JOB_PROBLEM_LINES)
                                 .query_type("range").max_lines(1000)))
        .with_row(dashboard.Row("Memory and CPU"))
        .with_panel(ts("Memory peak per kind", q(per_job("renderwatch_job_peak_memory_bytes"),
                                                 "{{job}} {{kind}}"), unit="bytes", w=8,
                       desc="Highest memory seen in the job: blender (Blender's own), rss (process tree), vram."))
        .with_panel(ts("Memory now", q(per_job("renderwatch_job_rss_bytes"), "{{job}} rss"),
                       q(per_job("renderwatch_job_vram_bytes"), "{{job}} vram", "B"), unit="bytes", w=8))
        .with_panel(ts("CPU (cores)", q(per_job("renderwatch_job_cpu_ratio"), "{{job}}"), w=8))
        .with_panel(ts("Frame peak memory p90 per kind (scene)", q(
            f"scene_kind:renderwatch_frame_peak_memory_bytes:p90_30m{{{SCENE}}}", "{{scene}} {{kind}}"),
            unit="bytes", w=12))
        .with_row(dashboard.Row("Attempts"))
        .with_panel(ts("Restarts by error type", q(
            f"sum by (job, error_type) (renderwatch_healer_restarts_total{{{jobsel}}})", "{{job}} {{error_type}}"),
            w=8, desc="Cumulative restarts of the job by the healer, by the typed error that caused them."))
        .with_panel(ts("Frames rendered again", q(
            f"sum by (job) (renderwatch_healer_frames_rerendered_total{{{jobsel}}})", "{{job}}"), w=8,
            desc="Frame renders started for a frame started before: the frame in flight at each crash."))
        .with_panel(table.Panel().title("Jobs").datasource(PROM).span(8).height(8)
                    .with_target(q(f"renderwatch_job_info{{{HOST}, {JOB}, {SCENE}}}", instant=True,
                                   fmt=PromQueryFormat.TABLE)))
    )


def gpus() -> dashboard.Dashboard:
    gl = "{{instance}} GPU {{gpu}} ({{name}})"
    return (
        base("gpus", "renderwatch / GPUs",
             "Every GPU the agents see through NVML: utilization, VRAM, temperature, power and clock "
             "throttling.", "host")
        .with_panel(st("GPUs", q(f"count(renderwatch_gpu_memory_total_bytes{{{HOST}}}) or vector(0)",
                                 instant=True)))
        .with_panel(st("Hosts without NVML", q(f"count(renderwatch_gpu_available{{{HOST}}} == 0) or vector(0)",
                                               instant=True),
                       desc="Agents that report renderwatch_gpu_available 0 (no driver or no GPU).",
                       steps=((None, "green"), (1, "orange"))))
        .with_panel(st("Hottest GPU", q(f"max(renderwatch_gpu_temperature_celsius{{{HOST}}})", instant=True),
                       unit="celsius", steps=((None, "green"), (75, "orange"), (85, "red"))))
        .with_panel(st("Fullest VRAM", q(f"max(instance_gpu:renderwatch_gpu_memory_used:ratio{{{HOST}}})",
                                         instant=True),
                       unit="percentunit", steps=((None, "green"), (0.85, "orange"), (0.95, "red"))))
        .with_panel(ts("Utilization", q(f"renderwatch_gpu_utilization_ratio{{{HOST}}}", gl), unit="percentunit"))
        .with_panel(ts("VRAM used", q(f"renderwatch_gpu_memory_used_bytes{{{HOST}}}", gl),
                       q(f"renderwatch_gpu_memory_total_bytes{{{HOST}}}", gl + " total", "B"), unit="bytes"))
        .with_panel(ts("VRAM used (ratio)", q(f"instance_gpu:renderwatch_gpu_memory_used:ratio{{{HOST}}}", gl),
                       unit="percentunit", desc="GPUMemoryNearFull fires above 95% for 2 minutes.")
                    .thresholds(thresholds((None, "green"), (0.95, "red"))))
        .with_panel(ts("Temperature", q(f"renderwatch_gpu_temperature_celsius{{{HOST}}}", gl), unit="celsius",
                       desc="GPUOverheating fires above 85 °C for 2 minutes.")
                    .thresholds(thresholds((None, "green"), (85, "red"))))
        .with_panel(ts("Power", q(f"renderwatch_gpu_power_watts{{{HOST}}}", gl), unit="watt"))
        .with_panel(ts("VRAM per job", q(f"renderwatch_job_vram_bytes{{{HOST}}}", "{{instance}} {{job}}"),
                       unit="bytes"))
        .with_panel(statetimeline.Panel().title("Clock throttling").datasource(PROM).span(24).height(10)
                    .description("NVML clock event reasons per GPU (1 = active). Idle and "
                                 "application-clock reasons are left out: they are not slowdowns.")
                    .with_target(q(f"max by (instance, gpu, reason) (renderwatch_gpu_throttle_reason{{{HOST}, "
                                   f'reason!~"gpu_idle|applications_clocks_setting|display_clock_setting"}})',
                                   "{{instance}} GPU {{gpu}} {{reason}}"))
                    .mappings([ValueMap(options={"0": ValueMappingResult(text="no", color="green", index=0),
                                                 "1": ValueMappingResult(text="throttled", color="red", index=1)})])
                    .show_value(VisibilityMode.NEVER))
    )


def healer() -> dashboard.Dashboard:
    incidents_range = born_at_one("renderwatch_healer_incidents_total", HOST, "$__range")
    restarts_range = born_at_one("renderwatch_healer_restarts_total", HOST, "$__range")
    gave_up_range = born_at_one("renderwatch_healer_gave_up_total", HOST, "$__range")
    return (
        base("healer", "renderwatch / Healer",
             "What the healers see and do: probe states of running jobs, restarts and their typed "
             "causes, incidents sent, alerts received, jobs given up.", "host", "job")
        .with_panel(bars("Jobs by status", q(f"sum by (status) (renderwatch_healer_jobs{{{HOST}}})", "{{status}}",
                                             instant=True), w=6))
        .with_panel(bars("Restarts by error type", q(f"sum by (error_type) ({restarts_range})", "{{error_type}}",
                                                     instant=True), w=6,
                         desc="Over the dashboard's time range."))
        .with_panel(bars("Gave up by error type", q(f"sum by (error_type) ({gave_up_range})", "{{error_type}}",
                                                    instant=True), w=6,
                         desc="Jobs the healers stopped retrying over the dashboard's time range."))
        .with_panel(bars("Incidents", q(f"sum by (kind, outcome) ({incidents_range})", "{{kind}} {{outcome}}",
                                        instant=True), w=6,
                         desc="Incidents handed to Sentry and webhooks over the time range, by outcome."))
        .with_panel(statetimeline.Panel().title("Probe states").datasource(PROM).span(24).height(10)
                    .description("Each probe of each supervised job: alive, progress, heartbeat, stall, "
                                 "memory, gpu.")
                    .with_target(q(f"renderwatch_healer_probe_healthy{{{HOST}, {JOB}}}",
                                   "{{instance}} {{job}} {{probe}}"))
                    .mappings([ValueMap(options={"1": ValueMappingResult(text="healthy", color="green", index=0),
                                                 "0": ValueMappingResult(text="failing", color="red", index=1)})])
                    .show_value(VisibilityMode.NEVER))
        .with_panel(ts("Restarts per hour by host",
                       q(f"instance:renderwatch_healer_restarts:increase1h{{{HOST}}}", "{{instance}}"), w=8))
        .with_panel(ts("Errors per hour by type",
                       q("error_type:renderwatch_healer_attempts_failed:increase1h", "{{error_type}}"), w=8))
        .with_panel(ts("Frames verified per job", q(f"renderwatch_healer_frames_completed{{{HOST}, {JOB}}}",
                                                    "{{job}} verified"),
                       q(f"renderwatch_healer_frames_requested{{{HOST}, {JOB}}}", "{{job}} requested", "B"), w=8))
        .with_panel(ts("Alerts received from Alertmanager", q(
            f"sum by (action, status, outcome) (renderwatch_healer_alerts_total{{{HOST}}})",
            "{{action}} {{status}} {{outcome}}"), w=12,
            desc="Cumulative: alerts the healers acted on (restart_job, pause_gpu), by outcome."))
        .with_panel(ts("Frames rendered again", q(
            f"sum by (instance, job) (renderwatch_healer_frames_rerendered_total{{{HOST}, {JOB}}})",
            "{{instance}} {{job}}"), w=12))
    )


DASHBOARDS: dict[str, Callable[[], dashboard.Dashboard]] = {
    "farm-overview.json": farm_overview,
    "job-drilldown.json": job_drilldown,
    "gpus.json": gpus,
    "healer.json": healer,
}


def _number_panels(model: dict) -> dict:
    """Give every panel (rows included) a stable id, in order: links and alerts refer to them."""
    next_id = 1
    for panel in model.get("panels", []):
        panel["id"] = next_id
        next_id += 1
        for inner in panel.get("panels", []):
            inner["id"] = next_id
            next_id += 1
    return model


def render() -> dict[str, str]:
    """{file name: JSON text} of every dashboard."""
    out = {}
    for name, build in DASHBOARDS.items():
        model = json.loads(JSONEncoder(sort_keys=True).encode(build().build()))
        out[name] = json.dumps(_number_panels(model), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the committed JSON, write nothing")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="directory to write to (default: dashboards/)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        print("dashboards out of date (run python -m dashboards.build): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
