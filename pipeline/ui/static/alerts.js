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

async function loadAlerts() {
  iw.setParams(state);
  try {
    const data = await iw.get(`/api/alerts?range=${state.range}&filter=${encodeURIComponent(state.filter)}`);
    $("error").textContent = "";
    $("summary").textContent = `${data.rows.length} transitions`;
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
