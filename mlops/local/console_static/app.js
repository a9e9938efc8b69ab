// The console: vanilla JS, no build step. It polls the daemon's console routes and draws the page.
// Text from the platform (descriptions, reasons, request bodies) only ever goes in through textContent.
"use strict";

const CSRF = document.querySelector('meta[name="console-csrf"]').content;
const COLORS = ["#2f6fdd", "#1a7f37", "#bf3989", "#9a6700", "#6e40c9", "#0e7490", "#c2281d"];
const color = (version) => COLORS[(Number(version) - 1) % COLORS.length];
const pct = (x) => `${Math.round(x * 100)}%`;
const when = (s) => (s || "-").slice(0, 19).replace("T", " ");
// `<repo>#<commit>:<path>` (where the local build read the data) as `<path>@<commit>`; whole in the tooltip.
const shortData = (s) => {
  const match = /#([0-9a-f]+):(.+)$/.exec(s || "");
  return match ? `${match[2]}@${match[1].slice(0, 8)}` : s || "-";
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    // Through the CSSOM: the page's CSP (style-src 'self') refuses inline style attributes.
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const badge = (text, kind) => el("span", { class: `badge ${kind || text}` }, text);

async function getJson(path) {
  const response = await fetch(path, { headers: { accept: "application/json" } });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

async function postJson(path, payload) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-console-csrf": CSRF },
    body: JSON.stringify(payload),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function notice(text, isError) {
  const box = document.getElementById("notice");
  box.textContent = text;
  box.className = isError ? "error" : "";
  box.hidden = false;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

// --- traffic --------------------------------------------------------------------------------------

function drawSplit(overview) {
  const bar = document.getElementById("split-bar");
  const variants = overview.endpoint.variants.filter((v) => v.weight > 0);
  bar.replaceChildren(
    ...variants.map((v) =>
      el("div", { class: "segment", "data-version": v.model_version, style: { width: `${v.weight * 100}%`, background: color(v.model_version) } },
        `v${v.model_version} ${pct(v.weight)}`)),
  );
  if (!variants.length) bar.replaceChildren(el("div", { class: "segment dim" }, "nothing serves"));
  const dep = overview.current_deployment;
  document.getElementById("deployment-message").textContent = dep
    ? `deployment ${dep.id}: ${dep.from_version ? `v${dep.from_version} → ` : ""}v${dep.to_version} ${dep.status} — ${dep.message}`
    : "no deployment yet";
  const weights = Object.fromEntries(overview.endpoint.variants.map((v) => [String(v.model_version), v.weight]));
  const versions = new Set([...Object.keys(weights), ...Object.keys(overview.traffic)]);
  fill(document.querySelector("#traffic tbody"), [...versions].sort().map((version) => {
    const t = overview.traffic[version] || {};
    return el("tr", { "data-version": version },
      el("td", {}, badge(`v${version}`, "")),
      el("td", { class: "num share" }, weights[version] !== undefined ? pct(weights[version]) : "0%"),
      el("td", { class: "num requests" }, t.requests ?? 0),
      el("td", { class: "num" }, t.errors ?? 0),
      el("td", { class: "num" }, t.requests ? `${(t.error_rate * 100).toFixed(1)}%` : "-"),
      el("td", { class: "num" }, t.latency_ms_mean !== undefined ? `${t.latency_ms_mean.toFixed(1)} ms` : "-"),
      el("td", { class: "num" }, t.latency_ms_p95 !== undefined ? `${t.latency_ms_p95.toFixed(1)} ms` : "-"));
  }));
  document.getElementById("traffic-since").textContent = `requests since ${when(overview.traffic_since)} UTC (the last deployment's start)`;
  drawSplitChart(overview.samples);
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function axes(chart, yLabel) {
  chart.append(svg("line", { x1: 30, y1: 140, x2: 595, y2: 140, stroke: "#ccc" }));
  chart.append(svg("line", { x1: 30, y1: 10, x2: 30, y2: 140, stroke: "#ccc" }));
  chart.append(svg("text", { x: 2, y: 14 }, yLabel));
}

// The share of each version over time: one line per version, 0..100%.
function drawSplitChart(samples) {
  const chart = document.getElementById("split-chart");
  chart.replaceChildren();
  axes(chart, "100%");
  chart.append(svg("text", { x: 2, y: 140 }, "0%"));
  if (samples.length < 2) return;
  const t0 = Date.parse(samples[0].t), t1 = Date.parse(samples[samples.length - 1].t) || t0 + 1;
  const x = (t) => 30 + ((Date.parse(t) - t0) / Math.max(1, t1 - t0)) * 565;
  const versions = [...new Set(samples.flatMap((s) => s.variants.map((v) => v.version)))];
  for (const version of versions) {
    const points = samples.map((s) => {
      const v = s.variants.find((item) => item.version === version);
      return `${x(s.t).toFixed(1)},${(140 - (v ? v.weight : 0) * 130).toFixed(1)}`;
    });
    chart.append(svg("polyline", { points: points.join(" "), fill: "none", stroke: color(version), "stroke-width": 2, "data-version": version }));
    chart.append(svg("text", { x: 560, y: 20 + 12 * versions.indexOf(version), fill: color(version) }, `v${version}`));
  }
  chart.append(svg("text", { x: 30, y: 155 }, when(samples[0].t).slice(11)));
  chart.append(svg("text", { x: 545, y: 155 }, when(samples[samples.length - 1].t).slice(11)));
}

function drawLatency(requests) {
  const chart = document.getElementById("latency-chart");
  chart.replaceChildren();
  const ok = requests.filter((r) => r.model_version).reverse();
  const top = Math.max(1, ...ok.map((r) => r.latency_ms));
  axes(chart, `${top.toFixed(0)} ms`);
  if (!ok.length) return;
  const t0 = Date.parse(ok[0].created_at), t1 = Date.parse(ok[ok.length - 1].created_at);
  for (const r of ok) {
    const cx = 30 + ((Date.parse(r.created_at) - t0) / Math.max(1, t1 - t0)) * 565;
    const cy = 140 - (r.latency_ms / top) * 130;
    chart.append(svg("circle", { cx: cx.toFixed(1), cy: cy.toFixed(1), r: 2, fill: r.status_code >= 500 ? "#c2281d" : color(r.model_version) }));
  }
}

// --- versions -------------------------------------------------------------------------------------

function metricNames(versions) {
  const names = new Set();
  for (const v of versions) for (const [k, value] of Object.entries(v.metrics)) if (typeof value === "number") names.add(k);
  return [...names].sort();
}

function drawVersions(overview) {
  const table = document.getElementById("versions");
  const names = metricNames(overview.versions);
  table.tHead.replaceChildren(el("tr", {},
    ["version", "status", ...names, "commit", "data", "features", "approver", "note", ""].map((h) => el("th", {}, h))));
  // Keep what a person is typing: only rebuild rows whose content changed.
  const body = table.tBodies[0];
  const typing = Object.fromEntries([...body.querySelectorAll("input.note")].map((i) => [i.dataset.version, i.value]));
  const allowed = new Set([...body.querySelectorAll("input.allow")].filter((i) => i.checked).map((i) => i.dataset.version));
  const focused = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.version : null;
  fill(body, overview.versions.map((v) => {
    const marks = [badge(v.status)];
    if (v.serving) marks.push(" ", badge("serving", "serving"));
    if (v.rolled_back) marks.push(" ", badge("rolled back", "rolled-back"));
    const metrics = names.map((name) => {
      const value = v.metrics[name];
      const diff = v.diff_vs_serving[name];
      return el("td", { class: "num" }, typeof value === "number" ? value.toFixed(4) : "-",
        diff !== undefined ? el("span", { class: diff > 0 ? "up" : diff < 0 ? "down" : "dim" }, ` (${diff > 0 ? "+" : ""}${diff.toFixed(4)})`) : null);
    });
    let actions = null;
    if (v.status === "PendingManualApproval") {
      const input = el("input", { class: "note", "data-version": v.version, placeholder: "why (a rejection needs it)" });
      input.value = typing[v.version] || "";
      // A breaking input signature is refused unless the person allows it, as `mlops approve
      // --allow-signature-change` does; the box only appears where approving needs it (also during a
      // shift, when the outlook says "queue" but the approval itself is refused without it).
      const needsAllowance = v.needs_allowance === true;
      const allow = needsAllowance ? el("input", { type: "checkbox", class: "allow", "data-version": v.version, id: `allow-${v.version}`, checked: allowed.has(String(v.version)) }) : null;
      actions = el("td", {},
        input, " ",
        el("button", { class: "approve", "data-version": v.version, onclick: () => decide(v.version, "approve", input.value, allow !== null && allow.checked) }, `approve v${v.version}`), " ",
        el("button", { class: "reject", "data-version": v.version, onclick: () => decide(v.version, "reject", input.value) }, "reject"),
        needsAllowance ? el("div", { class: "outlook" }, allow, " ", el("label", { for: `allow-${v.version}` }, "allow the signature change (callers may break)")) : null,
        v.approval_outlook ? el("div", { class: "outlook" }, `if approved: ${v.approval_outlook.reason}`) : null);
      if (focused === String(v.version)) setTimeout(() => input.focus(), 0);
    } else {
      actions = el("td", {});
    }
    return el("tr", { "data-version": v.version, class: v.serving ? "serving" : "" },
      el("td", {}, el("strong", {}, `v${v.version}`)),
      el("td", {}, marks),
      metrics,
      el("td", {}, (v.source_commit || "-").slice(0, 8)),
      el("td", { title: v.data_location || "" }, shortData(v.data_location)),
      el("td", {}, (v.features || []).join(", ") || "-"),
      el("td", {}, v.approver || "-"),
      el("td", {}, v.description || "",
        v.changes_vs_serving.length ? el("div", { class: "outlook changes" }, `vs serving: ${v.changes_vs_serving.join("; ")}`) : null),
      actions);
  }));
}

async function decide(version, action, text, allowSignatureChange = false) {
  try {
    const payload = action === "approve" ? { description: text } : { reason: text };
    if (allowSignatureChange) payload.allow_signature_change = true;
    const answer = await postJson(`/console/api/versions/${version}/${action}`, payload);
    if (action === "approve") {
      const d = answer.deployment;
      const what = d.action === "deploy" ? "the deployer starts a LINEAR blue/green shift to it"
        : d.action === "queue" ? `queued: ${d.reason}. Then ${d.then}` : `nothing will be deployed: ${d.reason}`;
      notice(`approved v${version} as ${answer.model.approver}; ${what}`);
    } else {
      notice(`rejected v${version}: ${answer.model.description}`);
    }
    await refresh();
  } catch (error) {
    notice(`${action} v${version} refused: ${error.message}`, true);
  }
}

// --- history --------------------------------------------------------------------------------------

function drawDeployments(overview) {
  fill(document.querySelector("#deployments tbody"), overview.deployments.map((d) =>
    el("tr", { "data-id": d.id },
      el("td", {}, d.id),
      el("td", {}, d.from_version ? `v${d.from_version}` : "-"),
      el("td", {}, `v${d.to_version}`),
      el("td", {}, badge(d.status)),
      el("td", { class: "num" }, pct(d.reached_share)),
      el("td", { class: "num" }, d.planned_steps ?? "-"),
      el("td", { class: "num" }, d.duration_seconds !== null ? `${d.duration_seconds.toFixed(1)} s` : "-"),
      el("td", {}, when(d.started_at)),
      el("td", {}, d.message))));
}

async function showLog(id) {
  const pre = document.getElementById("build-log");
  try {
    const answer = await getJson(`/console/api/builds/${id}/log`);
    pre.textContent = answer.lines.join("\n") || "(empty log)";
  } catch (error) {
    pre.textContent = error.message;
  }
  pre.hidden = false;
  pre.dataset.build = id;
}

async function refreshBuilds() {
  const builds = await getJson("/console/api/builds");
  fill(document.querySelector("#builds tbody"), builds.reverse().map((b) =>
    el("tr", { "data-build": b.id },
      el("td", {}, b.id),
      el("td", {}, badge(b.status)),
      el("td", {}, (b.commit || "-").slice(0, 8)),
      el("td", {}, b.model_version ? `v${b.model_version}` : "-"),
      el("td", {}, when(b.created_at)),
      el("td", {}, b.reason || ""),
      el("td", {}, el("button", { class: "log", onclick: () => showLog(b.id) }, "log")))));
}

async function showRequest(id) {
  const pre = document.getElementById("request-detail");
  try {
    pre.textContent = JSON.stringify(await getJson(`/console/api/requests/${id}`), null, 2);
  } catch (error) {
    pre.textContent = error.message;
  }
  pre.hidden = false;
}

async function refreshRequests() {
  const form = document.getElementById("request-filter");
  const query = new URLSearchParams({ limit: "300" });
  for (const name of ["version", "status"]) if (form.elements[name].value) query.set(name, form.elements[name].value);
  const requests = await getJson(`/console/api/requests?${query}`);
  fill(document.querySelector("#requests tbody"), requests.slice(0, 50).map((r) =>
    el("tr", { "data-request": r.request_id },
      el("td", {}, el("a", { class: "rid", onclick: () => showRequest(r.request_id) }, r.request_id.slice(0, 8))),
      el("td", {}, when(r.created_at)),
      el("td", {}, badge(String(r.status_code), r.status_code >= 500 ? "Failed" : r.status_code >= 400 ? "PendingManualApproval" : "Succeeded")),
      el("td", {}, r.model_version ? `v${r.model_version}` : "-"),
      el("td", { class: "num" }, r.latency_ms.toFixed(1)),
      el("td", {}, r.input.length > 80 ? `${r.input.slice(0, 80)}…` : r.input))));
  drawLatency(requests);
}

// --- the loop -------------------------------------------------------------------------------------

async function refresh() {
  const overview = await getJson("/console/api/overview");
  document.getElementById("endpoint-name").textContent = overview.endpoint.name;
  const status = document.getElementById("endpoint-status");
  status.textContent = overview.endpoint.status;
  status.className = `badge ${overview.endpoint.status}`;
  document.getElementById("serving-version").textContent =
    overview.endpoint.serving_version ? `v${overview.endpoint.serving_version}` : "nothing";
  // What is wrong right now (a model server restarting, a database not taking writes, a queued
  // approval): the daemon's own notes, as `mlops status` prints them.
  const notes = overview.endpoint.notes || [];
  const box = document.getElementById("health-notes");
  box.hidden = notes.length === 0;
  box.replaceChildren(...notes.map((note) => Object.assign(document.createElement("div"), { textContent: note })));
  drawSplit(overview);
  drawVersions(overview);
  drawDeployments(overview);
  document.body.dataset.loaded = "true";
}

function every(ms, task) {
  const run = async () => {
    try {
      await task();
    } catch (error) {
      notice(`the platform did not answer: ${error.message}`, true);
    }
    setTimeout(run, document.body.dataset.fast === "true" ? Math.min(ms, 500) : ms);
  };
  run();
}

document.getElementById("train").addEventListener("click", async () => {
  try {
    const answer = await postJson("/console/api/train", {});
    const b = answer.build;
    notice(`build ${b.id} queued for commit ${b.commit.slice(0, 8)}; its version appears under Versions when it passes the gate${answer.note ? ` (${answer.note})` : ""}`);
    await refreshBuilds();
  } catch (error) {
    notice(`train refused: ${error.message}`, true);
  }
});

document.getElementById("request-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  refreshRequests().catch((error) => notice(error.message, true));
});
every(1000, refresh);
every(3000, refreshBuilds);
every(2000, refreshRequests);
