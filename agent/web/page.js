// renderwatch's page: the node view (#) and a job's view (#job=ID), served by the agent.
// Everything that comes from Blender, scenes or logs goes into the page as text (textContent), never
// as markup. Memory is bounded however long the page stays open: the grid is one cell per frame of
// the job shown, the log pane keeps at most LOG_MAX lines, tables are replaced, not appended to.

const STATES = ["waiting", "rendering", "done", "rerendered", "suspect", "failed"];
const STATE_LABEL = ["waiting", "rendering", "done", "rendered again", "suspect", "failed"];
const NODE_POLL_MS = 2000;
const LOG_MAX = 2000;

const $ = (id) => document.getElementById(id);
const api = (path) => fetch(path, { credentials: "same-origin", headers: { Accept: "application/json" } });

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function fmtBytes(b) {
  if (!b) return "–";   // 0: not known
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (b >= 1024 && i < u.length - 1) { b /= 1024; i++; }
  return `${b.toFixed(i ? 1 : 0)} ${u[i]}`;
}

function fmtSecs(s) {
  if (s === null || s === undefined || (s === 0)) return "–";
  if (s < 60) return `${s.toFixed(s < 10 ? 2 : 1)} s`;
  const m = Math.floor(s / 60), h = Math.floor(m / 60);
  return h ? `${h} h ${m % 60} min` : `${m} min ${Math.round(s % 60)} s`;
}

function fmtTime(ts) { return ts ? new Date(ts * 1000).toLocaleString() : "–"; }

// -- routing -----------------------------------------------------------------------------------------
let view = null;   // the current view's stop()

function route() {
  if (view) view.stop();
  view = null;
  const m = /^#job=(.+)$/.exec(location.hash);
  for (const id of ["node", "job", "signin"]) $(id).hidden = true;
  view = m ? jobView(decodeURIComponent(m[1])) : nodeView();
}

function needSignin() {
  if (view) view.stop();
  view = null;
  for (const id of ["node", "job"]) $(id).hidden = true;
  $("signin").hidden = false;
  $("signin-failed").hidden = !new URLSearchParams(location.search).has("signin");
}

function setConn(ok) { $("conn").className = "conn " + (ok ? "on" : "off"); }

// -- node view ----------------------------------------------------------------------------------------
function nodeView() {
  $("node").hidden = false;
  let timer = null, stopped = false;
  async function tick() {
    try {
      const r = await api("/api/v1/jobs?limit=200");
      if (r.status === 401) return needSignin();
      if (!r.ok) throw new Error(r.status);
      renderNode(await r.json());
      setConn(true);
    } catch (e) { setConn(false); }
    if (!stopped) timer = setTimeout(tick, NODE_POLL_MS);
  }
  tick();
  return { stop() { stopped = true; clearTimeout(timer); } };
}

function renderNode(doc) {
  $("host").textContent = doc.host || "";
  $("signout").hidden = false;
  const rows = doc.jobs.map((j) => {
    const tr = el("tr");
    const a = el("a", null, j.job);
    a.href = "#job=" + encodeURIComponent(j.job);
    const td = el("td"); td.append(a); tr.append(td);
    tr.append(el("td", "text", j.scene));
    tr.append(el("td", null, j.status));
    const bar = el("span", "bar"), fill = el("span");
    fill.style.width = `${(j.progress * 100).toFixed(1)}%`;
    bar.append(fill);
    const p = el("td"); p.append(bar, ` ${(j.progress * 100).toFixed(1)} %`); tr.append(p);
    tr.append(el("td", null, `${j.frames_done} / ${j.frames_total}`));
    tr.append(el("td", null, fmtSecs(j.eta_seconds)));
    tr.append(el("td", null, j.device_type || "–"));
    tr.append(el("td", null, j.blender_version || "–"));
    tr.append(el("td", null, j.attempts));
    const err = j.last_error;
    tr.append(el("td", "text", err ? `${err.error_type}${err.summary ? ": " + err.summary : ""}` : (j.error_type || "–")));
    return tr;
  });
  $("jobs").tBodies[0].replaceChildren(...rows);
  $("jobs-empty").hidden = rows.length > 0;
  const gpus = (doc.gpus || []).map((g) => {
    const tr = el("tr");
    tr.append(el("td", null, g.gpu), el("td", "text", g.name),
      el("td", null, g.utilization_ratio === null ? "–" : `${Math.round(g.utilization_ratio * 100)} %`),
      el("td", null, `${fmtBytes(g.memory_used_bytes)} / ${fmtBytes(g.memory_total_bytes)}`),
      el("td", null, g.temperature_celsius === null ? "–" : `${g.temperature_celsius} °C`),
      el("td", null, g.power_watts === null ? "–" : `${Math.round(g.power_watts)} W`),
      el("td", null, g.paused ? `paused: ${g.paused}` : (g.ok ? (g.throttle ? `throttled (${g.throttle})` : "ok") : "not answering")));
    return tr;
  });
  $("gpus").tBodies[0].replaceChildren(...gpus);
  $("gpus-none").hidden = gpus.length > 0;
  const h = doc.agent || {};
  kv($("health"), [
    ["version", h.version], ["up", fmtSecs(h.uptime_seconds)],
    ["spool backlog", `${fmtBytes(h.spool_pending_bytes)} in ${h.spool_segments ?? 0} segment(s)`],
    ["spans exported", h.spans_exported], ["span export failures", h.span_export_failures],
    ["journal write errors", h.journal_errors], ["events rejected", h.events_rejected],
  ]);
}

function kv(dl, pairs) {
  const out = [];
  for (const [k, v] of pairs) out.push(el("dt", null, k), el("dd", null, v ?? "–"));
  dl.replaceChildren(...out);
}

// -- job view -----------------------------------------------------------------------------------------
function jobView(jobId) {
  $("job").hidden = false;
  $("job-title").textContent = jobId;
  const st = { jobId, doc: null, index: new Map(), cells: [], es: null, stopped: false, retry: null,
               hidden: new Set(), drawPending: false, selected: null, cursor: null, counts: new Array(6).fill(0) };
  buildLegend(st);
  const grid = $("grid");
  grid.onmouseover = (e) => showTip(st, e);
  grid.onmouseout = () => { $("tip").hidden = true; };
  grid.onclick = (e) => { const i = e.target._i; if (i !== undefined) { setCursor(st, i, false); openLog(st, i); } };
  grid.onkeydown = (e) => gridKey(st, e);
  grid.onfocus = () => { if (st.cells.length && grid.matches(":focus-visible")) setCursor(st, st.cursor ?? step(st, -1, 1), true); };
  grid.onblur = () => { $("tip").hidden = true; };
  load(st);
  return {
    stop() {
      st.stopped = true;
      if (st.es) st.es.close();
      clearTimeout(st.retry);
      grid.replaceChildren();
      $("log").replaceChildren();
    },
  };
}

async function load(st) {
  try {
    const r = await api(`/api/v1/jobs/${encodeURIComponent(st.jobId)}/frames`);
    if (r.status === 401) return needSignin();
    if (r.status === 404) { $("grid-note").textContent = "No such job on this node (it may have expired)."; return; }
    if (!r.ok) throw new Error(r.status);
    const doc = await r.json();
    if (st.stopped) return;
    st.doc = doc;
    renderGrid(st);
    renderSummary(st, doc.summary);
    renderLinks(doc.links || {});
    renderAttempts(st, doc.attempts);
    scheduleCharts(st);
    follow(st);
  } catch (e) {
    setConn(false);
    if (!st.stopped) st.retry = setTimeout(() => load(st), 2000);
  }
}

function follow(st) {
  if (st.es) st.es.close();
  const es = new EventSource(`/api/v1/jobs/${encodeURIComponent(st.jobId)}/stream?version=${st.doc.version}&epoch=${encodeURIComponent(st.doc.epoch)}`);
  st.es = es;
  es.onopen = () => setConn(true);
  es.onerror = () => {
    setConn(false);
    // EventSource reconnects by itself; resume from what the page has (the server says reload if
    // the page fell too far behind)
    if (es.readyState === EventSource.CLOSED && !st.stopped) {
      st.retry = setTimeout(() => load(st), 2000);
    }
  };
  es.addEventListener("frames", (m) => {
    const d = JSON.parse(m.data);
    for (const row of d.rows) applyRow(st, row);
    st.doc.version = d.version;
    updateCounts(st);
    scheduleCharts(st);
  });
  es.addEventListener("job", (m) => renderSummary(st, JSON.parse(m.data)));
  es.addEventListener("attempts", (m) => renderAttempts(st, JSON.parse(m.data)));
  es.addEventListener("reload", () => { es.close(); load(st); });
  es.addEventListener("gone", () => { es.close(); $("grid-note").textContent = "This job has expired on this node."; });
}

function buildLegend(st) {
  const out = STATES.map((s, i) => {
    const lab = el("label");
    const cb = el("input");
    cb.type = "checkbox"; cb.checked = true; cb.value = String(i);
    cb.onchange = () => { $("grid").classList.toggle("h" + i, !cb.checked); };
    const sw = el("span", "c s" + i);
    sw.setAttribute("aria-hidden", "true");
    const n = el("span", "n", "0"); n.id = "n-" + i;
    lab.append(cb, sw, el("span", null, STATE_LABEL[i]), n);
    return lab;
  });
  $("legend").replaceChildren(...out);
}

function renderGrid(st) {
  const f = st.doc.frames, n = f.frame.length;
  st.index = new Map();
  st.cells = new Array(n);
  const frag = document.createDocumentFragment();
  const proto = el("div", "c");
  for (let i = 0; i < n; i++) {
    const c = proto.cloneNode(false);
    c.className = "c s" + f.state[i];
    c._i = i;
    st.cells[i] = c;
    st.index.set(f.frame[i], i);
    frag.append(c);
  }
  $("grid").replaceChildren(frag);
  if (st.cursor !== null) st.cursor = n ? Math.min(st.cursor, n - 1) : null;
  if (st.cursor !== null) st.cells[st.cursor].classList.add("kb");
  performance.mark("renderwatch:grid");   // what bench/bench_page.py times
  $("grid-note").textContent = st.doc.dropped ? `${st.doc.dropped} frame event(s) beyond the shown window.` : "";
  updateCounts(st);
}

function applyRow(st, row) {
  const [frame, state, seconds, blender, rss, vram, device, attempt, warnings, errors] = row;
  const f = st.doc.frames;
  let i = st.index.get(frame);
  if (i === undefined) { load(st); return; }   // a frame the page did not have: take the table anew
  const s = STATES.indexOf(state);
  f.state[i] = s; f.seconds[i] = seconds || 0; f.peak_blender_bytes[i] = blender || 0; f.rss_bytes[i] = rss || 0;
  f.vram_bytes[i] = vram || 0; f.attempt[i] = attempt || 0; f.warnings[i] = warnings; f.errors[i] = errors;
  let d = st.doc.devices.indexOf(device);
  if (device && d < 0) { st.doc.devices.push(device); d = st.doc.devices.length - 1; }
  f.device[i] = device ? d + 1 : 0;
  st.cells[i].className = "c s" + s + (st.selected === i ? " sel" : "") + (st.cursor === i ? " kb" : "");
}

function updateCounts(st) {
  const counts = new Array(6).fill(0);
  for (const s of st.doc.frames.state) counts[s]++;
  counts.forEach((c, i) => { const n = $("n-" + i); if (n) n.textContent = String(c); });
}

function frameText(st, i) {
  const f = st.doc.frames, dev = f.device[i] ? st.doc.devices[f.device[i] - 1] : "–";
  return [`frame ${f.frame[i]} · ${STATE_LABEL[f.state[i]]}`,
    `render time  ${fmtSecs(f.seconds[i])}`,
    `Blender peak ${fmtBytes(f.peak_blender_bytes[i])}`,
    `RSS          ${fmtBytes(f.rss_bytes[i])}`,
    `VRAM         ${fmtBytes(f.vram_bytes[i])}`,
    `device       ${dev}`,
    `attempt      ${f.attempt[i] || "–"}`,
    `log          ${f.warnings[i]} warning(s), ${f.errors[i]} error(s)`].join("\n");
}

function showTip(st, e) {
  if (e.target._i === undefined) { $("tip").hidden = true; return; }
  tipFor(st, e.target);
}

function tipFor(st, cell) {
  const tip = $("tip");
  tip.textContent = frameText(st, cell._i);
  tip.hidden = false;
  const r = cell.getBoundingClientRect();
  tip.style.left = `${Math.min(r.right + 8, window.innerWidth - 260)}px`;
  tip.style.top = `${r.bottom + 8}px`;
}

// Keyboard: the grid is one tab stop. The arrow keys move a cursor over the shown cells (up and down by
// what fits across a row), Home and End go to the first and last, Enter or Space opens the frame's
// log. The cursor's frame is shown in the tooltip and said to screen readers (a polite live region).
function shown(st, i) { return !$("grid").classList.contains("h" + st.doc.frames.state[i]); }

function step(st, from, delta, times = 1) {
  const n = st.cells.length;
  let i = from, last = from;
  for (let k = 0; k < times; k++) {
    do { i += delta; } while (i >= 0 && i < n && !shown(st, i));
    if (i < 0 || i >= n) break;
    last = i;
  }
  return last < 0 ? null : last;
}

function perRow(st) {
  const cell = st.cells[st.cursor ?? 0], grid = $("grid");
  if (!cell || !cell.offsetWidth) return 1;
  const gap = parseFloat(getComputedStyle(grid).columnGap) || 0;
  return Math.max(1, Math.floor((grid.clientWidth + gap) / (cell.offsetWidth + gap)));
}

function setCursor(st, i, say) {
  if (i === null || i === undefined || !st.cells[i]) return;
  if (st.cursor !== null && st.cells[st.cursor]) st.cells[st.cursor].classList.remove("kb");
  st.cursor = i;
  const cell = st.cells[i];
  cell.classList.add("kb");
  if (!say) return;
  cell.scrollIntoView({ block: "nearest" });
  tipFor(st, cell);
  $("grid-cursor").textContent = frameText(st, i).split("\n").join(", ");
}

function gridKey(st, e) {
  if (!st.cells.length || e.altKey || e.ctrlKey || e.metaKey) return;
  const at = st.cursor ?? step(st, -1, 1);
  const moves = {
    ArrowRight: () => step(st, at, 1), ArrowLeft: () => step(st, at, -1),
    ArrowDown: () => step(st, at, 1, perRow(st)), ArrowUp: () => step(st, at, -1, perRow(st)),
    Home: () => step(st, -1, 1), End: () => step(st, st.cells.length, -1),
  };
  if (moves[e.key]) {
    e.preventDefault();
    setCursor(st, moves[e.key](), true);
  } else if ((e.key === "Enter" || e.key === " ") && at !== null) {
    e.preventDefault();
    setCursor(st, at, true);
    openLog(st, at);
  }
}

function renderSummary(st, j) {
  if (!j) return;
  $("job-status").textContent = j.status;
  kv($("job-summary"), [
    ["scene", j.scene], ["status", j.status], ["frames", `${j.frames_done} / ${j.frames_total}`],
    ["progress", `${(j.progress * 100).toFixed(1)} %`], ["ETA", fmtSecs(j.eta_seconds)],
    ["last frame", fmtSecs(j.last_frame_seconds)], ["device", j.device_type], ["engine", j.engine],
    ["Blender", j.blender_version], ["attempts", j.attempts], ["host", j.host], ["file", j.blend_file],
    ["started", fmtTime(j.started_at)], ["ended", fmtTime(j.ended_at)], ["error", j.error_type],
    ["frame now", j.current_frame],
  ]);
}

function renderLinks(links) {
  const out = [];
  for (const [name, label] of [["trace", "Trace (Tempo)"], ["logs", "Logs (Loki)"], ["dashboard", "Dashboard (Grafana)"]]) {
    const url = links[name];
    if (!url || !/^https?:\/\//i.test(url)) continue;
    const a = el("a", null, label);
    a.href = url; a.rel = "noopener noreferrer"; a.target = "_blank";
    out.push(a);
  }
  $("job-links").replaceChildren(...out);
}

function renderAttempts(st, list) {
  const now = Date.now() / 1000;
  const t0 = Math.min(...list.map((a) => a.started_at || now), now);
  const t1 = Math.max(...list.map((a) => a.ended_at || now), t0 + 1);
  const items = list.map((a) => {
    const bad = a.error_type && a.error_type !== "ok";
    const li = el("li", bad ? "err" : null);
    const end = a.ended_at ? (a.error_type || "ended") : "running";
    li.append(el("strong", null, `Attempt ${a.attempt}`), ` · ${end}`,
      el("span", "muted", ` · ${fmtTime(a.started_at)} – ${a.ended_at ? fmtTime(a.ended_at) : "now"}`));
    if (a.frame !== null && a.frame !== undefined) li.append(el("span", "muted", ` · frame ${a.frame}`));
    const span = el("div", "span"), fill = el("span");
    fill.style.left = `${((a.started_at - t0) / (t1 - t0)) * 100}%`;
    fill.style.width = `${Math.max(0.5, (((a.ended_at || now) - a.started_at) / (t1 - t0)) * 100)}%`;
    span.append(fill);
    li.append(span);
    if (a.summary) li.append(el("div", "summary", a.summary));
    if (a.evidence) li.append(el("div", "evidence", a.evidence));
    if (a.advice) li.append(el("div", "advice", a.advice));
    return li;
  });
  $("attempts").replaceChildren(...items);
}

// -- charts: one bar per frame (the tallest of the frames sharing a pixel column) ---------------------
function scheduleCharts(st) {
  if (st.drawPending) return;
  st.drawPending = true;
  setTimeout(() => requestAnimationFrame(() => { st.drawPending = false; if (!st.stopped) drawCharts(st); }), 250);
}

function drawCharts(st) {
  const f = st.doc.frames;
  const colour = getComputedStyle(document.documentElement);
  for (const [id, key, css] of [["ch-seconds", "seconds", "--rendering"], ["ch-blender", "peak_blender_bytes", "--rerendered"],
    ["ch-rss", "rss_bytes", "--done"], ["ch-vram", "vram_bytes", "--suspect"]]) {
    const cv = $(id), w = cv.clientWidth || 300, h = cv.height;
    cv.width = w;
    const ctx = cv.getContext("2d");
    ctx.clearRect(0, 0, w, h);
    const vals = f[key], n = vals.length;
    let max = 0;
    for (const v of vals) if (v > max) max = v;
    if (!max || !n) continue;
    ctx.fillStyle = colour.getPropertyValue(css).trim() || "#56b4e9";
    const cols = Math.min(w, n), per = n / cols, bw = w / cols;
    for (let c = 0; c < cols; c++) {
      let m = 0;
      for (let i = Math.floor(c * per); i < Math.floor((c + 1) * per); i++) if (vals[i] > m) m = vals[i];
      const bh = (m / max) * (h - 2);
      if (bh > 0) ctx.fillRect(c * bw, h - bh, Math.max(1, bw - (bw > 3 ? 1 : 0)), bh);
    }
  }
}

// -- a frame's log ------------------------------------------------------------------------------------
async function openLog(st, i) {
  const frame = st.doc.frames.frame[i];
  if (st.selected !== null && st.cells[st.selected]) st.cells[st.selected].classList.remove("sel");
  st.selected = i;
  st.cells[i].classList.add("sel");
  $("log-title").textContent = `Log of frame ${frame}`;
  $("log-hint").textContent = frameText(st, i).split("\n").slice(1).join(" · ");
  const box = $("log");
  box.replaceChildren(el("div", "l muted", "loading…"));
  let records = [];
  try {
    const r = await api(`/api/v1/jobs/${encodeURIComponent(st.jobId)}/log?frame=${frame}&limit=${LOG_MAX}`);
    if (r.status === 401) return needSignin();
    if (r.status === 404) { box.replaceChildren(el("div", "l muted", "No log kept for this job on this node.")); return; }
    if (!r.ok) throw new Error(r.status);
    records = (await r.json()).records || [];
  } catch (e) {
    box.replaceChildren(el("div", "l error", `The log could not be read (${e.message}).`));
    return;
  }
  if (st.selected !== i) return;
  const lines = records.slice(-LOG_MAX).map((rec) => {
    const d = el("div", "l " + (rec.level || "info"));
    d.append(el("span", "meta", `${rec.attempt ? "#" + rec.attempt + " " : ""}${rec.phase ? rec.phase + " " : ""}`),
      document.createTextNode(rec.text + (rec.folded ? ` (+${rec.folded} progress lines folded)` : "")));
    return d;
  });
  box.replaceChildren(...(lines.length ? lines : [el("div", "l muted", "No line for this frame.")]));
  const first = box.querySelector(".l.error, .l.warning");
  if (first) first.scrollIntoView({ block: "nearest" });
}

window.addEventListener("hashchange", route);
window.addEventListener("resize", () => { if (view && view.redraw) view.redraw(); });
route();
