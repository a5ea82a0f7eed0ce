// Series: charts over the picked range (windows up to 6 h, roll-ups beyond), live windows.
"use strict";
iw.nav("Series");
const $ = id => document.getElementById(id);
const state = {key: iw.param("key", ""), range: iw.param("range", "1h")};
iw.rangeSelect($("range"), state.range);
$("key").value = state.key;
window.iwCharts = {};
let rows = [], anomaly = [], resources = [], changePoints = [];

const COLORS = ["#2563eb", "#d97706", "#dc2626", "#16a34a", "#7c3aed", "#0891b2", "#db2777"];
const sync = uPlot.sync("series");

// Vertical markers where a change-point detector fired (drawn on the latency chart).
function markers(u) {
  const ctx = u.ctx;
  ctx.save(); ctx.strokeStyle = "#0891b2"; ctx.setLineDash([4, 3]);
  for (const t of changePoints) {
    const x = u.valToPos(t, "x", true);
    if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) continue;
    ctx.beginPath(); ctx.moveTo(x, u.bbox.top); ctx.lineTo(x, u.bbox.top + u.bbox.height); ctx.stroke();
  }
  ctx.restore();
}

function chart(id, names, data, extra = {}) {
  const el = $(id);
  const width = Math.max(300, el.clientWidth || 520);
  const series = [{}, ...names.map((n, i) => ({label: n, stroke: COLORS[i % COLORS.length], width: 1.5,
    scale: (extra.scales || {})[n] || "y", dash: (extra.dashed || []).includes(n) ? [5, 4] : undefined,
    spanGaps: false}))];
  const axes = [{}, {scale: "y", size: 64}];
  if (extra.scales) axes.push({scale: "r", side: 1, size: 64, grid: {show: false}});
  const opts = {width, height: 200, series, axes, cursor: {sync: {key: sync.key}},
    scales: {x: {time: true}}, hooks: extra.hooks || {}};
  if (window.iwCharts[id]) window.iwCharts[id].destroy();
  el.innerHTML = "";
  window.iwCharts[id] = new uPlot(opts, data, el);
  sync.sub(window.iwCharts[id]);
}

const col = (list, name) => list.map(r => r[name] ?? null);

// A break in the line where windows are missing (the series stopped sending): a point
// with no values between two windows more than 1.5 windows apart.
function withGaps(list, step) {
  const out = [];
  for (const r of list) {
    const prev = out[out.length - 1];
    if (prev && r.t - prev.t > 1.5 * (r.seconds || step || 10)) out.push({t: (prev.t + r.t) / 2, gap: true});
    out.push(r);
  }
  return out;
}

function drawMetrics() {
  const all = rows;
  rows = withGaps(all);
  try { drawMetricsRows(); } finally { rows = all; }
}

function drawMetricsRows() {
  const t = col(rows, "t");
  chart("c-latency", ["p50", "p90", "p99"], [t, col(rows, "latency_p50_ms"), col(rows, "latency_p90_ms"), col(rows, "latency_p99_ms")], {hooks: {draw: [markers]}});
  chart("c-ttft", ["p50", "p99"], [t, col(rows, "ttft_p50_ms"), col(rows, "ttft_p99_ms")]);
  chart("c-traffic", ["req/s", "error rate"], [t, col(rows, "requests_per_s"), col(rows, "error_rate")], {scales: {"error rate": "r"}});
  const types = [...new Set(rows.flatMap(r => Object.keys(r.errors_by_type || {})))].sort();
  chart("c-errors", types.length ? types : ["(none)"], [t, ...(types.length ? types.map(k => rows.map(r => r.gap ? null : (r.errors_by_type || {})[k] ?? 0)) : [rows.map(() => 0)])]);
  chart("c-usage", ["tokens/s", "cost $/h"], [t, col(rows, "tokens_per_s"), col(rows, "cost_per_hour")], {scales: {"cost $/h": "r"}});
  chart("c-cache", ["cache hit", "SLO"], [t, col(rows, "cache_hit_rate"), col(rows, "slo_compliance")]);
}

// The per-metric contributions (robust z-scores) of one window's anomaly score.
function showContributions(a, which) {
  $("contrib").textContent = a && a.anomaly_score !== null && a.anomaly_score !== undefined
    ? `${which} window ${iw.time(a.t)}, score ${iw.fmt(a.anomaly_score)}: ` + (Object.entries(a.anomaly_contributions || {})
      .sort((x, y) => Math.abs(y[1]) - Math.abs(x[1])).slice(0, 6).map(([k, v]) => `${k} ${v.toFixed(2)}`).join(", ") || "no contributions")
    : "anomaly scorer warming up (no score yet)";
}

// Hovering the anomaly chart shows the contributions of the window under the cursor.
function contributionsAtCursor(u) {
  const i = u.cursor.idx;
  if (i === null || i === undefined) return;
  const t = u.data[0][i];
  showContributions(anomaly.find(a => a.t === t), "hovered");
}

function drawScores() {
  const step = rows.length ? rows[rows.length - 1].seconds : 10;
  const an = withGaps(anomaly, step), res = withGaps(resources, step);
  chart("c-anomaly", ["score", "threshold"], [col(an, "t"), col(an, "anomaly_score"), col(an, "anomaly_threshold")], {dashed: ["threshold"], hooks: {setCursor: [contributionsAtCursor]}});
  const last = [...anomaly].reverse().find(a => a.anomaly_score !== null);
  showContributions(last, "newest");
  chart("c-resources", ["cpu", "memory", "gpu", "kv cache"], [col(res, "t"), col(res, "cpu_util"), col(res, "memory_util"), col(res, "gpu_util"), col(res, "kv_cache_util")]);
}

function drawHeat(drift) {
  const windows = [...new Set(drift.map(d => d.t))].sort((a, b) => a - b).slice(-120);
  const keep = new Set(windows);
  const names = [...new Set(drift.map(d => d.name + " · " + d.statistic))].sort();
  const cell = new Map(drift.filter(d => keep.has(d.t)).map(d => [d.name + " · " + d.statistic + "@" + d.t, d]));
  const el = $("heat");
  if (!names.length) { el.innerHTML = '<span class="muted">no drift scores in range</span>'; return; }
  el.style.gridTemplateColumns = `max-content repeat(${windows.length}, minmax(6px, 1fr))`;
  const html = [];
  for (const n of names) {
    html.push(`<div class="name">${iw.esc(n)}</div>`);
    for (const t of windows) {
      const d = cell.get(n + "@" + t);
      let color = "#eef1f5", title = `${iw.time(t)} no score`;
      if (d && d.value !== null && d.threshold) {
        const lowerIsDrift = d.statistic === "chi2_p";
        const ratio = lowerIsDrift ? (d.value > 0 ? d.threshold / d.value : 2) : d.value / d.threshold;
        const x = Math.min(1, ratio / 2);
        color = d.drifted ? `rgb(220,${Math.round(120 - 80 * x)},40)` : `rgb(${Math.round(200 * x + 40)},${Math.round(200 - 40 * x)},120)`;
        title = `${iw.time(t)} ${d.statistic}=${d.value.toFixed(4)} threshold ${d.threshold} ${d.drifted ? "DRIFTED" : ""}\nreference: ${d.reference} v${d.reference_version} (${d.reference_count} vs ${d.current_count})`;
      }
      html.push(`<div style="background:${color}" title="${iw.esc(title)}"></div>`);
    }
  }
  el.innerHTML = html.join("");
}

function showLatest(m) {
  const fields = [["window", iw.time(m.window_start ?? m.t) + " – " + iw.time(m.window_end ?? (m.t + m.seconds))],
    ["requests", m.requests], ["p50 ms", iw.fmt(m.latency_p50_ms)], ["p99 ms", iw.fmt(m.latency_p99_ms)],
    ["TTFT p99 ms", iw.fmt(m.ttft_p99_ms)], ["error rate", iw.pct(m.error_rate)], ["tokens/s", iw.fmt(m.output_tokens_per_s ?? m.tokens_per_s)]];
  $("latest").innerHTML = fields.map(([k, v]) => `<span class="muted">${k}</span><span data-field="${k}">${v}</span>`).join("");
  $("latest").dataset.windowStart = String(m.window_start ?? m.t);
}

async function load() {
  iw.setParams(state);
  if (!state.key) { $("error").textContent = "pick a series on the Overview, or type its key"; return; }
  try {
    const data = await iw.get(`/api/series?key=${encodeURIComponent(state.key)}&range=${state.range}`);
    $("error").textContent = "";
    $("source").textContent = "from " + data.source;
    rows = data.metrics; anomaly = data.anomaly; resources = data.resources;
    changePoints = anomaly.filter(a => (a.change_points || []).length).map(a => a.t);
    drawMetrics(); drawScores(); drawHeat(data.drift);
    if (rows.length) showLatest(rows[rows.length - 1]);
    document.body.dataset.loaded = String(Date.now());
  } catch (e) { $("error").textContent = e.message; }
}

// Live: a closed window of this series arrives as an event and is drawn at once.
function onMetrics(ev) {
  const m = ev.data;
  if (state.range !== "15m" && state.range !== "1h" && state.range !== "6h") return;
  const seconds = m.window_end - m.window_start;
  const row = {t: m.window_start, seconds, requests: m.requests, requests_per_s: m.request_rate_per_s,
    latency_p50_ms: m.latency_p50_ms, latency_p90_ms: m.latency_p90_ms, latency_p99_ms: m.latency_p99_ms,
    ttft_p50_ms: m.ttft_p50_ms, ttft_p99_ms: m.ttft_p99_ms, error_rate: m.error_rate,
    errors_by_type: m.errors_by_type || {}, tokens_per_s: m.output_tokens_per_s,
    cost_per_hour: (m.cost_usd_sum || 0) / seconds * 3600, cache_hit_rate: m.cache_hit_rate, slo_compliance: m.slo_compliance};
  rows = rows.filter(r => r.t !== row.t).concat([row]).sort((a, b) => a.t - b.t);
  drawMetrics();
  showLatest(m);
}
function onScores(ev) {
  const s = ev.data;
  anomaly = anomaly.filter(a => a.t !== s.window_start).concat([{t: s.window_start, anomaly_score: s.anomaly_score ?? null,
    anomaly_threshold: s.anomaly_threshold, anomaly_contributions: s.anomaly_contributions || {}, change_points: s.change_points || []}]);
  if ((s.change_points || []).length) changePoints.push(s.window_start);
  drawScores();
}

$("range").onchange = e => { state.range = e.target.value; load(); };
$("key").onchange = e => { state.key = e.target.value.trim(); load(); };
if (state.key) iw.live({metrics: onMetrics, scores: onScores}, state.key);
load();
