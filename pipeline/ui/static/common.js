// Shared helpers of the dashboard pages: formatting, JSON calls, navigation, live updates.
"use strict";
const iw = {
  // Numbers as the tables show them: 0 decimals from 100, 2 from 1, else 4.
  fmt(v) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    const a = Math.abs(v);
    return a >= 100 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toFixed(4);
  },
  pct(v) { return v === null || v === undefined ? "–" : (v * 100).toFixed(2) + "%"; },
  time(t) { return new Date(t * 1000).toISOString().replace("T", " ").slice(0, 19); },
  esc(s) { return String(s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c])); },
  async get(url) {
    const r = await fetch(url, {headers: {Accept: "application/json"}});
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  },
  async post(url, data) {
    const r = await fetch(url, {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data)});
    const body = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(body.error || r.statusText);
    return body;
  },
  nav(current) {
    const links = [["/", "Overview"], ["/series", "Series"], ["/alerts", "Alerts"], ["/query", "Query"]];
    document.querySelector("header").innerHTML = '<span class="brand">InferWatch</span>' +
      links.map(([h, t]) => `<a href="${h}" class="${t === current ? "on" : ""}">${t}</a>`).join("") +
      '<span class="live" id="live">live: connecting…</span>';
  },
  param(name, fallback) { return new URLSearchParams(location.search).get(name) ?? fallback; },
  setParams(values) {
    const p = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(values)) p.set(k, v);
    history.replaceState(null, "", location.pathname + "?" + p);
  },
  // Server-sent events from /api/live; handlers by kind (metrics, scores, alert, resources).
  live(handlers, series) {
    const es = new EventSource("/api/live" + (series ? "?series=" + encodeURIComponent(series) : ""));
    const status = document.getElementById("live");
    es.addEventListener("hello", () => { status.textContent = "live: connected"; });
    for (const [kind, fn] of Object.entries(handlers)) {
      es.addEventListener(kind, ev => {
        status.textContent = "live: " + kind + " at " + new Date().toLocaleTimeString();
        fn(JSON.parse(ev.data));
      });
    }
    es.onerror = () => { status.textContent = "live: reconnecting…"; };
    return es;
  },
  rangeSelect(el, value) {
    el.innerHTML = ["15m", "1h", "6h", "24h", "7d", "30d"].map(r => `<option ${r === value ? "selected" : ""}>${r}</option>`).join("");
  },
  spark(values) {
    const v = values.filter(x => x !== null);
    if (v.length < 2) return "";
    const lo = Math.min(...v), hi = Math.max(...v), w = 90, h = 20;
    const pts = values.map((x, i) => x === null ? null : `${(i / (values.length - 1) * w).toFixed(1)},${(h - (hi > lo ? (x - lo) / (hi - lo) : .5) * h).toFixed(1)}`).filter(Boolean);
    return `<svg width="${w}" height="${h}"><polyline fill="none" stroke="#2563eb" stroke-width="1.2" points="${pts.join(" ")}"/></svg>`;
  },
};
