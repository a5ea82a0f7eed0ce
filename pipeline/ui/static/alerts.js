// Alerts: the timeline of transitions from the store; silences listed, created, expired.
"use strict";
iw.nav("Alerts");
const $ = id => document.getElementById(id);
const state = {range: iw.param("range", "24h"), filter: iw.param("filter", "")};
iw.rangeSelect($("range"), state.range);
$("filter").value = state.filter;

function runbook(a) {
  const url = a.annotations.runbook_url || a.annotations.runbook;
  return url && /^https?:\/\//.test(url) ? `<a href="${iw.esc(url)}" target="_blank" rel="noopener">runbook</a>` : "";
}

// One lane per alert (fingerprint): a bar from each firing to its resolve (or now),
// coloured by severity, over the picked range; hover for the rule and series.
function drawLanes(rows) {
  const el = $("lanes");
  const now = Date.now() / 1000, spans = new Map();
  for (const a of [...rows].reverse()) {  // oldest first
    const lane = spans.get(a.fingerprint) || {a, bars: []};
    if (a.state === "firing") lane.bars.push([a.t, null]);
    else if (lane.bars.length && lane.bars[lane.bars.length - 1][1] === null) lane.bars[lane.bars.length - 1][1] = a.t;
    spans.set(a.fingerprint, lane);
  }
  const lanes = [...spans.values()].filter(l => l.bars.length).slice(0, 40);
  if (!lanes.length) { el.innerHTML = '<p class="muted" style="margin:.5em">no alert fired in the range</p>'; return; }
  const t0 = Math.min(...lanes.flatMap(l => l.bars.map(b => b[0]))), t1 = now;
  const w = Math.max(600, el.clientWidth - 20), left = 260, h = 16;
  const x = t => left + (t - t0) / Math.max(1, t1 - t0) * (w - left - 10);
  const colour = {critical: "#dc2626", warning: "#d97706", info: "#0891b2"};
  el.innerHTML = `<svg width="${w}" height="${lanes.length * h + 22}" font-size="11">` + lanes.map((l, i) =>
    `<text x="4" y="${i * h + 12}">${iw.esc((l.a.rule + " " + l.a.series_key).slice(0, 44))}</text>` +
    l.bars.map(([s, e]) => `<rect x="${x(s)}" y="${i * h + 3}" width="${Math.max(3, x(e ?? now) - x(s))}" height="${h - 6}" fill="${colour[l.a.severity] || "#6b7280"}" opacity="${l.a.silenced ? 0.35 : 0.9}"><title>${iw.esc(l.a.rule)} ${iw.esc(l.a.series_key)}
${iw.time(s)} → ${e ? iw.time(e) : "firing"}</title></rect>`).join("")).join("") +
    `<text x="${left}" y="${lanes.length * h + 16}" fill="#6b7280">${iw.time(t0)}</text><text x="${w - 10}" y="${lanes.length * h + 16}" fill="#6b7280" text-anchor="end">now</text></svg>`;
}

async function loadAlerts() {
  iw.setParams(state);
  try {
    const data = await iw.get(`/api/alerts?range=${state.range}&filter=${encodeURIComponent(state.filter)}`);
    $("error").textContent = "";
    $("summary").textContent = `${data.rows.length} transitions`;
    drawLanes(data.rows);
    $("timeline").querySelector("tbody").innerHTML = data.rows.map(a => `<tr data-fingerprint="${a.fingerprint}" data-state="${a.state}">` +
      `<td class="key">${iw.time(a.t)}</td><td class="key"><span class="badge b-${a.state}">${a.state}</span></td>` +
      `<td class="key"><span class="badge b-${a.severity}">${a.severity}</span></td><td class="key">${iw.esc(a.rule)}</td>` +
      `<td class="key" title="${iw.esc(Object.entries(a.labels).map(([k, v]) => k + "=" + v).join("\n"))}">${iw.esc(a.series_key)}</td>` +
      `<td>${iw.fmt(a.value)}</td><td>${iw.fmt(a.threshold)}</td>` +
      `<td class="text" title="${iw.esc(Object.entries(a.annotations).map(([k, v]) => k + ": " + v).join("\n"))}">${iw.esc(a.annotations.summary || "")}</td>` +
      `<td class="key">${runbook(a)}</td>` +
      `<td class="key">${a.silenced ? `<span class="badge b-silenced" title="${iw.esc(a.silenced_by.join(", "))}">silenced</span>` : ""}${a.inhibited ? '<span class="badge b-silenced">inhibited</span>' : ""}</td>` +
      `<td><button class="plain silence-this" data-m="${iw.esc(["alertname", "model", "model_version", "operation"].filter(k => a.labels[k]).map(k => k + "=" + a.labels[k]).join(", "))}">silence…</button></td></tr>`).join("");
    document.querySelectorAll(".silence-this").forEach(b => b.onclick = () => { $("matchers").value = b.dataset.m; $("matchers").focus(); });
    document.body.dataset.loaded = String(Date.now());
  } catch (e) { $("error").textContent = e.message; }
}

async function loadSilences() {
  try {
    const data = await iw.get("/api/silences");
    $("silences").querySelector("tbody").innerHTML = data.silences.map(s => `<tr data-id="${iw.esc(s.id)}">` +
      `<td class="key">${iw.esc(s.id.slice(0, 12))}</td><td class="key">${iw.esc(s.matchers.map(m => m.name + (m.op || "=") + m.value).join(", "))}</td>` +
      `<td class="key">${iw.time(s.starts_at)}</td><td class="key">${iw.time(s.ends_at)}</td><td class="key">${iw.esc(s.created_by || "")}</td>` +
      `<td class="key">${iw.esc(s.comment || "")}</td><td class="key">${s.active ? "active" : "expired"}</td>` +
      `<td>${s.active ? '<button class="plain expire">expire</button>' : ""}</td></tr>`).join("");
    document.querySelectorAll("#silences .expire").forEach(b => b.onclick = async () => {
      try { await iw.post(`/api/silences/${encodeURIComponent(b.closest("tr").dataset.id)}/expire`, {}); loadSilences(); }
      catch (e) { $("silence-error").textContent = e.message; }
    });
  } catch (e) { $("silence-error").textContent = e.message; }
}

$("silence-form").onsubmit = async ev => {
  ev.preventDefault();
  $("silence-error").textContent = "";
  try {
    const made = await iw.post("/api/silences", {matchers: $("matchers").value.split(",").map(s => s.trim()).filter(Boolean),
      duration: $("duration").value, comment: $("comment").value, created_by: $("by").value});
    $("silence-form").dataset.created = made.id;
    loadSilences();
  } catch (e) { $("silence-error").textContent = e.message; }
};
$("range").onchange = e => { state.range = e.target.value; loadAlerts(); };
let typing;
$("filter").oninput = e => { clearTimeout(typing); typing = setTimeout(() => { state.filter = e.target.value; loadAlerts(); }, 300); };
let pending = null;
iw.live({alert: () => { if (!pending) pending = setTimeout(() => { pending = null; loadAlerts(); }, 1500); }});
loadAlerts(); loadSilences();
