// Overview: one row per series, sorted, filtered and paged by the server (SQL).
"use strict";
iw.nav("Overview");
const state = {range: iw.param("range", "15m"), sort: iw.param("sort", "requests_per_s"),
               desc: iw.param("desc", "1"), filter: iw.param("filter", ""), page: +iw.param("page", "0"),
               size: +iw.param("size", "50")};
const $ = id => document.getElementById(id);
iw.rangeSelect($("range"), state.range);
$("filter").value = state.filter;
$("size").value = String(state.size);

function cell(value, text, cls = "") {
  return `<td class="${cls}" data-value="${value === null || value === undefined ? "" : value}">${text}</td>`;
}

function badges(r) {
  const out = [];
  for (const d of r.drifted || []) out.push(`<span class="badge b-drift" title="drifted in a window of the range">drift ${iw.esc(d)}</span>`);
  if (r.anomalous) out.push(`<span class="badge b-anomaly" title="highest anomaly score in the range">anomaly ${iw.fmt(r.anomaly)}</span>`);
  for (const c of r.change_points || []) out.push(`<span class="badge b-cp" title="change point in range">cp ${iw.esc(c)}</span>`);
  return out.join("");
}

async function load() {
  iw.setParams(state);
  const q = new URLSearchParams(state);
  try {
    const t0 = performance.now();
    const data = await iw.get("/api/overview?" + q);
    $("error").textContent = "";
    $("series").querySelector("tbody").innerHTML = data.rows.map(r => `<tr data-key="${iw.esc(r.series_key)}" data-window-end="${iw.esc(r.window_end)}">` +
      `<td class="key"><a href="/series?key=${encodeURIComponent(r.series_key)}&range=${state.range}">${iw.esc(r.series_key)}</a></td>` +
      cell(r.requests_per_s, iw.fmt(r.requests_per_s)) + cell(r.p50_ms, iw.fmt(r.p50_ms)) +
      cell(r.p99_ms, iw.fmt(r.p99_ms)) + cell(r.ttft_p99_ms, iw.fmt(r.ttft_p99_ms)) +
      cell(r.error_rate, iw.pct(r.error_rate)) + cell(r.tokens_per_s, iw.fmt(r.tokens_per_s)) +
      cell(r.cost_per_hour_usd, iw.fmt(r.cost_per_hour_usd)) + cell(r.slo_compliance, iw.pct(r.slo_compliance)) +
      `<td>${iw.spark(r.spark)}</td><td class="text">${badges(r)}</td>` +
      `<td class="text">${(r.firing || []).map(a => `<span class="badge b-firing">${iw.esc(a)}</span>`).join("")}</td></tr>`).join("");
    const pages = Math.max(1, Math.ceil(data.total / state.size));
    $("asof").textContent = data.rows.length ? "figures of each series' latest window (newest ends " + iw.time(Math.max(...data.rows.map(r => Date.parse(r.window_end + (/Z|[+-]\d\d:?\d\d$/.test(r.window_end) ? "" : "Z")) / 1000))) + " UTC); rates and shares of that window; flags over the range" : "";
    $("page").textContent = `page ${state.page + 1} of ${pages}`;
    $("summary").textContent = `${data.total} series · ${Math.round(performance.now() - t0)} ms`;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page + 1 >= pages;
    document.querySelectorAll("th[data-sort]").forEach(th => {
      th.classList.toggle("sorted", th.dataset.sort === state.sort);
      th.dataset.dir = state.desc === "1" ? " ▼" : " ▲";
    });
    document.body.dataset.loaded = String(Date.now());
  } catch (e) { $("error").textContent = e.message; }
}

document.querySelectorAll("th[data-sort]").forEach(th => th.addEventListener("click", () => {
  if (state.sort === th.dataset.sort) state.desc = state.desc === "1" ? "0" : "1";
  else { state.sort = th.dataset.sort; state.desc = "1"; }
  state.page = 0; load();
}));
$("range").onchange = e => { state.range = e.target.value; state.page = 0; load(); };
$("size").onchange = e => { state.size = +e.target.value; state.page = 0; load(); };
let typing;
$("filter").oninput = e => { clearTimeout(typing); typing = setTimeout(() => { state.filter = e.target.value; state.page = 0; load(); }, 300); };
$("prev").onclick = () => { state.page--; load(); };
$("next").onclick = () => { state.page++; load(); };

// A closed window changes the range's aggregates: re-read the page, at most every 2 s.
let pending = null;
function refreshSoon() { if (!pending) pending = setTimeout(() => { pending = null; load(); }, 2000); }
iw.live({metrics: refreshSoon, alert: refreshSoon, scores: refreshSoon});
load();
