// The fleet dashboard (served at /dashboard.js; see src/page.rs). It reads the status API
// (`GET /v1/channels`, `GET /v1/nodes`, `GET /v1/leases`, `GET /v1/audit`) every 10 s and draws
// what it reads. Every text from
// the server goes through textContent or an SVG text node: nothing is parsed as HTML.
// The operator's token (admin or operate role) is kept in sessionStorage and sent only as a bearer token to the
// pause/resume, lease release and node key (approve, reject, revoke) API of this origin.
"use strict";

const REFRESH_MS = 10000;
const TOKEN_KEY = "tandem-admin-token";
const OUTCOMES = ["installed", "committed", "rolled-back", "failed"];
const COLORS = { installed: "#2f6fdf", committed: "#1b9e4b", "rolled-back": "#e08a00", failed: "#d62839" };
const SVG_NS = "http://www.w3.org/2000/svg";
const FAILURES_SHOWN = 20;

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

/** An SVG element with attributes and an optional text. */
function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function adminToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function setText(id, text, isError) {
  const node = document.getElementById(id);
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

/** An API URL on this origin. Built from location.origin, never relative: a page opened as
 * http://user:token@host/ has a base URL with credentials, which fetch refuses to use; the
 * browser still sends the credentials it keeps for this origin. */
function apiUrl(path) {
  return new URL(path, location.origin).href;
}

async function getJson(path) {
  const resp = await fetch(apiUrl(path), { cache: "no-store", credentials: "same-origin" });
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(`${path}: ${resp.status} ${body.error || ""}`);
  return body;
}

function releaseText(s) {
  const r = s.release || {};
  return [r.product, r.version].filter((x) => x !== undefined && x !== null).join(" ");
}

function rolloutText(s) {
  const p = s.rollout && s.rollout.percent;
  return p === undefined || p === null ? "–" : `${p} %`;
}

function outcomesText(counts) {
  return OUTCOMES.map((o) => `${o}: ${(counts && counts[o]) || 0}`).join(", ");
}

/** A byte count for people: decimal units, one decimal below 100 ("512 B", "12.3 MB",
 * "240 MB"); size_text in src/page.rs writes the same. */
function sizeText(bytes) {
  let unit = 1, name = "B";
  for (const next of ["kB", "MB", "GB", "TB", "PB"]) {
    if (Math.round(bytes / unit) < 1000) break;
    unit *= 1000;
    name = next;
  }
  const tenths = Math.round((bytes * 10) / unit);
  return unit > 1 && tenths < 1000
    ? `${Math.floor(tenths / 10)}.${tenths % 10} ${name}`
    : `${Math.round(bytes / unit)} ${name}`;
}

/** The current release's transfer sums ("fetched 12.3 MB, reused 240 MB over 17 installs
 * (95 % reused)"), or that there are none yet; transfer_text in src/page.rs writes the same. */
function transferText(r) {
  const n = r.transfer_reports || 0;
  if (!n) return "no transfer figures yet";
  const text = `fetched ${sizeText(r.bytes_fetched)}, reused ${sizeText(r.bytes_reused)} ` +
    `over ${n} ${n === 1 ? "install" : "installs"}`;
  const moved = r.bytes_fetched + r.bytes_reused;
  return moved > 0 ? `${text} (${Math.floor((r.bytes_reused * 100) / moved)} % reused)` : text;
}

/** What a node's latest install fetched and reused; "" when its report did not say. */
function installText(t) {
  return t ? `fetched ${sizeText(t.bytes_fetched)}, reused ${sizeText(t.bytes_reused)} ` +
    `(bundle ${sizeText(t.bundle_bytes)})` : "";
}

function pauseButton(s) {
  const action = s.paused ? "resume" : "pause";
  const button = el("button", { type: "button", class: action, "data-action": action,
                                 "data-channel": s.channel }, s.paused ? "Resume" : "Pause");
  button.disabled = !adminToken();
  button.title = button.disabled ? "enter the admin token above first" : `${action} ${s.channel}`;
  button.addEventListener("click", () => pauseOrResume(s.channel, action));
  return button;
}

function channelRow(s) {
  const state = s.paused
    ? el("span", { class: "paused" }, "paused")
    : el("span", { class: "active" }, "active");
  const reason = s.paused && s.pause && s.pause.reason;
  const stateCell = el("td", { class: "state" }, state);
  if (s.paused && s.pause && s.pause.automatic) {
    stateCell.append(el("span", { class: "automatic" }, "by the failure budget"));
  }
  if (reason) stateCell.append(el("span", { class: "pause-reason" }, reason));
  const first = s.current_release.failures[0];
  // Wrapped in a box of bounded width: a long reason wraps instead of pushing the action
  // column out of view.
  const failure = el("div", { class: "clip" },
    first ? `${first.node_id} ${first.outcome}: ${first.reason || ""}` : "");
  const row = el("tr", { "data-channel": s.channel },
    el("td", {}, s.channel), el("td", { class: "release" }, releaseText(s)),
    el("td", { class: "num" }, s.metadata_version ?? "–"),
    el("td", { class: "rollout num" }, rolloutText(s)), stateCell,
    el("td", { class: "action" }, pauseButton(s)),
    el("td", { class: "nodes num" }, s.nodes.total),
    el("td", { class: "outcomes" }, outcomesText(s.current_release.outcomes)),
    el("td", { class: "transfer" }, transferText(s.current_release)),
    el("td", { class: "failure" }, failure));
  return row;
}

/** Replaces the table's body; each cell is labelled with its column's heading, which the
 * phone layout shows in front of it when rows become cards. */
function replaceBody(table, body) {
  const heads = [...table.tHead.rows[0].cells].map((th) => th.textContent);
  for (const row of body.rows) {
    [...row.cells].forEach((td, i) => td.setAttribute("data-label", heads[i] || ""));
  }
  table.tBodies[0].replaceWith(body);
}

function renderChannels(fleet) {
  const table = document.getElementById("channel-table");
  const head = table.tHead.rows[0];
  // The action sits beside the state it changes, ahead of the columns whose width depends
  // on what nodes report.
  if (!head.querySelector(".action")) head.cells[4].after(el("th", { class: "action" }, "action"));
  const body = el("tbody");
  for (const s of fleet.channels) body.append(channelRow(s));
  for (const e of fleet.errors) {
    body.append(el("tr", { "data-channel": e.channel }, el("td", {}, e.channel),
      el("td", { colspan: "9", class: "error" }, e.error)));
  }
  replaceBody(table, body);
}

/** Horizontal bars: one row per version, the current release marked. */
function versionChart(s) {
  const entries = Object.entries(s.nodes.by_version).sort((a, b) => b[1] - a[1]);
  const max = Math.max(1, ...entries.map((e) => e[1]));
  const rowH = 26, labelW = 120, barW = 220, width = labelW + barW + 60;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${Math.max(1, entries.length) * rowH + 4}`,
                             role: "img", "aria-label": `nodes per version in ${s.channel}` });
  entries.forEach(([version, count], i) => {
    const y = i * rowH + 2;
    const current = version === s.current_release.version;
    const g = svg("g", { class: "version", "data-version": version, "data-count": count });
    g.append(svg("text", { x: 0, y: y + 17, "font-size": 13, "font-weight": current ? "bold" : "normal" },
                 version + (current ? " ★" : "")));
    g.append(svg("rect", { x: labelW, y: y + 4, height: rowH - 8,
                           width: Math.max(2, (count / max) * barW), fill: current ? "#1b9e4b" : "#7d8da3" }));
    g.append(svg("text", { x: labelW + (count / max) * barW + 6, y: y + 17, "font-size": 13 }, count));
    chart.append(g);
  });
  if (!entries.length) chart.append(svg("text", { x: 0, y: 18, "font-size": 13 }, "no reports yet"));
  return el("div", { class: "panel", "data-channel": s.channel }, el("h3", {}, s.channel), chart);
}

/** Stacked bars of reports per hour over the last 24 h, oldest left, and a legend of the
 * same reports' totals. */
function outcomeChart(s, now) {
  const hourMs = 3600 * 1000;
  const lastHour = Math.floor(now / hourMs) * hourMs;
  const slots = Array.from({ length: 24 }, (_, i) => ({ start: lastHour - (23 - i) * hourMs, counts: {} }));
  for (const h of s.current_release.hourly) {
    const slot = slots.find((x) => x.start === Date.parse(h.hour));
    if (slot) slot.counts = h.outcomes;
  }
  const total = (c) => OUTCOMES.reduce((n, o) => n + (c[o] || 0), 0);
  const max = Math.max(1, ...slots.map((x) => total(x.counts)));
  const barW = 14, gap = 2, height = 120, top = 10, bottom = 18, width = 24 * (barW + gap) + 30;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + top + bottom}`, role: "img",
                             "aria-label": `reports per hour about ${s.current_release.version} in ${s.channel}` });
  slots.forEach((slot, i) => {
    let y = top + height;
    const x = 30 + i * (barW + gap);
    for (const o of OUTCOMES) {
      const n = slot.counts[o] || 0;
      if (!n) continue;
      const h = (n / max) * height;
      y -= h;
      const bar = svg("rect", { x, y, width: barW, height: h, fill: COLORS[o] });
      bar.append(svg("title", {}, `${new Date(slot.start).toISOString().slice(11, 16)} UTC: ${n} ${o}`));
      chart.append(bar);
    }
    if (i % 6 === 0) {
      chart.append(svg("text", { x, y: top + height + 14, "font-size": 10 },
                       new Date(slot.start).toISOString().slice(11, 16)));
    }
  });
  chart.append(svg("text", { x: 0, y: top + 9, "font-size": 10 }, max));
  chart.append(svg("line", { x1: 28, x2: width, y1: top + height, y2: top + height, stroke: "#999" }));
  // The legend counts what the bars count: reports in the 24 hours drawn (the channel table
  // counts nodes by their latest outcome).
  const legend = el("p", { class: "legend" }, el("span", { class: "legend-what" }, "reports, last 24 h:"));
  for (const o of OUTCOMES) {
    const n = slots.reduce((sum, slot) => sum + (slot.counts[o] || 0), 0);
    legend.append(el("span", { class: `o-${o}`, "data-outcome": o }, `${o}: ${n}`));
  }
  const title = `${s.channel} → ${s.current_release.version ?? "no release"}`;
  return el("div", { class: "panel", "data-channel": s.channel }, el("h3", {}, title), legend, chart);
}

function renderCharts(fleet) {
  const now = Date.parse(fleet.generated_at) || Date.now();
  document.getElementById("version-charts").replaceChildren(...fleet.channels.map(versionChart));
  document.getElementById("outcome-charts").replaceChildren(...fleet.channels.map((s) => outcomeChart(s, now)));
}

function renderFailures(fleet) {
  const all = fleet.channels.flatMap((s) => s.current_release.failures.map((f) => ({ ...f, channel: s.channel })));
  all.sort((a, b) => (a.received_at < b.received_at ? 1 : a.received_at > b.received_at ? -1 : 0));
  const body = el("tbody");
  for (const f of all.slice(0, FAILURES_SHOWN)) {
    body.append(el("tr", { "data-node": f.node_id }, el("td", { class: "time" }, f.received_at), el("td", {}, f.channel),
      el("td", { class: "node" }, f.node_id), el("td", {}, f.outcome), el("td", {}, f.from_version),
      el("td", { class: "reason" }, f.reason || "")));
  }
  if (!all.length) body.append(el("tr", {}, el("td", { colspan: "6" }, "no failures of a current release")));
  replaceBody(document.getElementById("failure-table"), body);
}

function renderNodes(page) {
  const body = el("tbody");
  for (const n of page.nodes) {
    body.append(el("tr", { "data-node": n.node_id }, el("td", { class: "node" }, n.node_id),
      el("td", {}, n.channel), el("td", { class: "version" }, n.version),
      el("td", { class: "outcome" }, n.outcome), el("td", {}, n.to_version),
      el("td", { class: "time" }, n.last_seen),
      el("td", { class: "transfer" }, installText(n.last_install_transfer)),
      el("td", { class: "reason" }, n.reason || "")));
  }
  document.getElementById("node-table").tBodies[0].replaceWith(body);
  const shown = page.nodes.length;
  setText("node-count", shown < page.total ? `${shown} of ${page.total} nodes (newest first)` : `${page.total} nodes`);
}

/** "3 min 20 s" for a number of seconds. */
function durationText(secs) {
  const s = Math.max(0, Math.round(secs));
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function leaseRow(l, now) {
  const expiry = l.expired
    ? el("span", { class: "expired" }, `expired ${durationText(now - l.expires_at)} ago, never released: ` +
         "reclaimed at the group's next request")
    : `expires in ${durationText(l.expires_at - now)}`;
  const free = el("button", { type: "button", class: "release", "data-action": "release",
                              "data-group": l.group, "data-node": l.node_id }, "Release");
  free.disabled = !adminToken();
  free.addEventListener("click", () => releaseLease(l.group, l.node_id));
  return el("tr", { "data-group": l.group, "data-node": l.node_id },
    el("td", {}, l.group), el("td", { class: "node" }, l.node_id),
    el("td", { class: "age" }, durationText(l.age_secs)), el("td", { class: "expiry" }, expiry),
    el("td", { class: "num" }, l.slots), el("td", { class: "action" }, free));
}

function renderLeases(status) {
  const body = el("tbody");
  for (const l of status.leases) body.append(leaseRow(l, status.now));
  if (!status.leases.length) body.append(el("tr", {}, el("td", { colspan: "6" }, "no node holds a reboot lease")));
  replaceBody(document.getElementById("lease-table"), body);
  const named = Object.entries(status.groups).map(([g, n]) => `${g}: ${n}`).join(", ");
  setText("lease-summary", `${status.leases.length} held, ${status.waiting.length} waiting; ` +
    `${status.default_slots} reboot slot(s) per group` +
    `${named ? ` (${named})` : ""}; a lease not released expires after ${durationText(status.ttl_secs)}`);
  const waiting = el("tbody");
  for (const w of status.waiting) {
    waiting.append(el("tr", { "data-group": w.group, "data-node": w.node_id }, el("td", {}, w.group),
      el("td", { class: "node" }, w.node_id), el("td", { class: "age" }, durationText(status.now - w.since)),
      el("td", { class: "time" }, `${durationText(status.now - w.last_asked)} ago`)));
  }
  if (!status.waiting.length) waiting.append(el("tr", {}, el("td", { colspan: "4" }, "no node waits for a lease")));
  document.getElementById("lease-waiting").tBodies[0].replaceWith(waiting);
  const log = el("tbody");
  for (const e of status.log.slice().reverse()) {
    log.append(el("tr", { "data-event": e.event }, el("td", { class: "time" }, new Date(e.at * 1000).toISOString()),
      el("td", {}, e.group), el("td", { class: "node" }, e.node_id), el("td", { class: "event" }, e.event)));
  }
  document.getElementById("lease-log").tBodies[0].replaceWith(log);
}

function renderAudit(audit) {
  const body = el("tbody");
  for (const e of audit.entries) {
    body.append(el("tr", { "data-action": e.action }, el("td", { class: "time" }, new Date(e.at * 1000).toISOString()),
      el("td", { class: "actor" }, e.actor), el("td", {}, e.role), el("td", { class: "action-name" }, e.action),
      el("td", { class: "target" }, e.target), el("td", { class: "reason" }, e.reason || "")));
  }
  if (!audit.entries.length) body.append(el("tr", {}, el("td", { colspan: "6" }, "no operator action yet")));
  replaceBody(document.getElementById("audit-table"), body);
}

/** A key id shortened for a table cell (the whole id in its title). */
function keyCell(keyId) {
  return el("td", { class: "key", title: keyId }, `${keyId.slice(0, 16)}…`);
}

function keyButton(action, label, node, keyId) {
  const b = el("button", { type: "button", "data-action": action, "data-node": node }, label);
  b.disabled = !adminToken();
  b.addEventListener("click", () => nodeKeyAction(action, node, keyId));
  return b;
}

function renderKeys(keys, now) {
  const pending = el("tbody");
  for (const k of keys.pending) {
    pending.append(el("tr", { "data-node": k.node_id }, el("td", { class: "node" }, k.node_id), keyCell(k.key_id),
      el("td", { class: "age" }, `${durationText(now - k.requested_at)} ago`),
      el("td", { class: "action" }, keyButton("approve", "Approve", k.node_id, k.key_id),
        keyButton("reject", "Reject", k.node_id, k.key_id))));
  }
  if (!keys.pending.length) pending.append(el("tr", {}, el("td", { colspan: "4" }, "no enrollment waits")));
  replaceBody(document.getElementById("enrollment-table"), pending);
  const enrolled = el("tbody");
  for (const k of keys.enrolled) {
    enrolled.append(el("tr", { "data-node": k.node_id }, el("td", { class: "node" }, k.node_id), keyCell(k.key_id),
      el("td", { class: "time" }, new Date((k.decided_at ?? k.requested_at) * 1000).toISOString()),
      el("td", { class: "actor" }, k.decided_by || ""),
      el("td", { class: "action" }, keyButton("revoke", "Revoke", k.node_id, k.key_id))));
  }
  if (!keys.enrolled.length) enrolled.append(el("tr", {}, el("td", { colspan: "5" }, "no node key enrolled")));
  replaceBody(document.getElementById("key-table"), enrolled);
  setText("key-summary", `${keys.enrolled.length} enrolled, ${keys.pending.length} waiting for approval`);
}

/** Approve or reject a node's pending key (the one shown), or revoke its enrolled key. */
async function nodeKeyAction(action, node, keyId) {
  const path = action === "revoke" ? `/v1/nodes/${encodeURIComponent(node)}/revoke`
    : `/v1/enrollments/${encodeURIComponent(node)}/${action}`;
  const body = action === "revoke" ? {} : { key_id: keyId };
  try {
    const resp = await fetch(apiUrl(path), { method: "POST", body: JSON.stringify(body),
      headers: { Authorization: `Bearer ${adminToken()}`, "Content-Type": "application/json" } });
    const answer = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(`${resp.status} ${answer.error || ""}`);
    setText("admin-state", `${node}: key ${action === "revoke" ? "revoked" : `${action}d`}`);
  } catch (e) {
    setText("admin-state", `${action} ${node}'s key failed: ${e.message}`, true);
  }
  await refresh();
}

async function releaseLease(group, node) {
  const url = apiUrl(`/v1/leases/${encodeURIComponent(group)}/${encodeURIComponent(node)}/release`);
  try {
    const resp = await fetch(url, { method: "POST", headers: { Authorization: `Bearer ${adminToken()}` } });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(`${resp.status} ${body.error || ""}`);
    setText("admin-state", `${node}: lease in ${group} released`);
  } catch (e) {
    setText("admin-state", `releasing ${node}'s lease failed: ${e.message}`, true);
  }
  await refresh();
}

/*
 * Requests of one kind may answer out of order (a periodic refresh sent before a pause or a
 * search can arrive after it): only the answer to the newest request of its kind is shown.
 */
const newest = { fleet: 0, nodes: 0, leases: 0, audit: 0, keys: 0 };

async function getNewest(kind, path) {
  const ticket = ++newest[kind];
  const data = await getJson(path);
  return ticket === newest[kind] ? data : null;
}

async function refreshNodes() {
  const q = document.getElementById("node-query").value.trim();
  const params = new URLSearchParams({ q, limit: "100" });
  const page = await getNewest("nodes", `/v1/nodes?${params}`);
  if (page) renderNodes(page);
}

async function refresh() {
  try {
    const [fleet, leases, audit, keys] = await Promise.all([getNewest("fleet", "/v1/channels"),
      getNewest("leases", "/v1/leases"), getNewest("audit", "/v1/audit?limit=50"),
      getNewest("keys", "/v1/enrollments"), refreshNodes()]);
    if (leases) renderLeases(leases);
    if (keys) renderKeys(keys, Date.now() / 1000);
    if (audit) renderAudit(audit);
    if (!fleet) return;
    renderChannels(fleet);
    renderCharts(fleet);
    renderFailures(fleet);
    setText("updated", `updated ${fleet.generated_at}`);
  } catch (e) {
    setText("updated", `refresh failed: ${e.message}`, true);
  }
}

async function pauseOrResume(channel, action) {
  const url = apiUrl(`/v1/channels/${encodeURIComponent(channel)}/${action}`);
  try {
    const resp = await fetch(url, { method: "POST", headers: { Authorization: `Bearer ${adminToken()}` } });
    const body = await resp.json().catch(() => ({}));
    if (!resp.ok) throw new Error(`${resp.status} ${body.error || ""}`);
    setText("admin-state", `${channel}: ${action}d`);
  } catch (e) {
    setText("admin-state", `${action} ${channel} failed: ${e.message}`, true);
  }
  await refresh();
}

function showTokenState() {
  setText("admin-state", adminToken() ? "admin token kept for this session" : "no admin token: read only");
  for (const b of document.querySelectorAll("button[data-action]")) b.disabled = !adminToken();
}

function setup() {
  document.getElementById("admin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = document.getElementById("admin-token");
    if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
    input.value = "";
    showTokenState();
  });
  document.getElementById("admin-forget").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    showTokenState();
  });
  let pending;
  const search = () => refreshNodes().catch((e) => setText("node-count", e.message, true));
  document.getElementById("node-search").addEventListener("submit", (ev) => { ev.preventDefault(); search(); });
  document.getElementById("node-query").addEventListener("input", () => {
    clearTimeout(pending);
    pending = setTimeout(search, 300);
  });
  showTokenState();
  refresh();
  setInterval(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", setup);
