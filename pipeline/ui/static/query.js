// Query: the read-only SQL box, a table view, CSV / JSON export of the result.
"use strict";
iw.nav("Query");
const $ = id => document.getElementById(id);
let result = null;
const show = v => v === null ? "NULL" : typeof v === "object" ? JSON.stringify(v) : String(v);

async function run() {
  $("error").textContent = ""; $("summary").textContent = "running…";
  const t0 = performance.now();
  try {
    result = await iw.post("/api/query", {sql: $("sql").value});
  } catch (e) { $("error").textContent = e.message; $("summary").textContent = ""; result = null; return; }
  $("result").querySelector("thead").innerHTML = "<tr>" + result.columns.map((c, i) => `<th class="key" title="${iw.esc(result.types[i] || "")}">${iw.esc(c)}</th>`).join("") + "</tr>";
  $("result").querySelector("tbody").innerHTML = result.rows.map(r => "<tr>" + r.map(v => `<td class="key">${iw.esc(show(v))}</td>`).join("") + "</tr>").join("");
  $("summary").textContent = `${result.rows.length} rows${result.truncated ? " (first 10,000 shown)" : ""} · ${Math.round(performance.now() - t0)} ms`;
  $("csv").disabled = $("json").disabled = false;
  document.body.dataset.loaded = String(Date.now());
}

function download(name, type, text) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], {type}));
  a.download = name; a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}
const csvCell = v => { const s = show(v); return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; };
$("csv").onclick = () => download("result.csv", "text/csv", [result.columns, ...result.rows].map(r => r.map(csvCell).join(",")).join("\n") + "\n");
$("json").onclick = () => download("result.json", "application/json", JSON.stringify(result.rows.map(r => Object.fromEntries(result.columns.map((c, i) => [c, r[i]]))), null, 2));
$("run").onclick = run;
$("sql").onkeydown = e => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(); };
document.getElementById("live").textContent = "";
document.body.dataset.loaded = "ready";
