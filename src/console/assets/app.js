// Baton console: a small vanilla page over the console's JSON API and its
// server-sent events. Everything shown comes from the broker (via the
// console's /api/ endpoints); nothing is kept here but the page's own view.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const badge = (s, extra = "") => `<span class="badge s-${esc(s)}" ${extra}>${esc(s)}</span>`;

async function api(path, method = "GET", body) {
  const opts = { method, headers: {} };
  // an action always carries JSON: the console refuses any other (no forgery from other sites)
  if (method !== "GET" && body === undefined) body = {};
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  let json = null;
  try { json = await res.json(); } catch (_) { /* not JSON */ }
  if (!res.ok) {
    const e = json && json.error;
    throw new Error(e ? `${e.message} (${e.code})` : `HTTP ${res.status}`);
  }
  return json;
}

// --- time -------------------------------------------------------------------
function ago(ms) {
  if (ms == null) return "–";
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
function when(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}
function span(from, to) {
  if (!from) return "–";
  return ago((to || Date.now()) - from);
}

// --- shell: navigation, live events, banner, toasts --------------------------
let page = null;          // the page on show: { render(), onEvent(ev), stop() }
let refreshTimer = null;  // a debounced refresh of the page

function refreshSoon(delay = 150) {
  if (refreshTimer) return;
  refreshTimer = setTimeout(() => { refreshTimer = null; if (page) page.render(); }, delay);
}

function toast(text, error = false) {
  const t = document.createElement("div");
  t.className = "toast" + (error ? " error" : "");
  t.textContent = text;
  $("#toasts").appendChild(t);
  setTimeout(() => t.remove(), 5000);
}

function connectEvents() {
  const live = $("#live");
  const source = new EventSource("/api/events");
  source.addEventListener("hello", () => { live.className = "live on"; live.textContent = "live"; if (page) page.render(); });
  source.addEventListener("lagged", () => { if (page) page.render(); });
  source.addEventListener("message", (m) => {
    let ev; try { ev = JSON.parse(m.data); } catch (_) { return; }
    if (page && page.onEvent) page.onEvent(ev);
  });
  source.onerror = () => { live.className = "live off"; live.textContent = "reconnecting…"; };
}

function route() {
  const hash = location.hash || "#/cluster";
  const [path, query] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean);
  const params = new URLSearchParams(query || "");
  if (page && page.stop) page.stop();
  $("#banner").innerHTML = "";
  let name = parts[0] || "cluster";
  if (name === "orders" && parts[1]) { page = orderPage(decodeURIComponent(parts[1])); name = "orders"; }
  else if (name === "orders") page = ordersPage(params);
  else if (name === "jobs") page = jobsPage();
  else { page = clusterPage(); name = "cluster"; }
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.nav === name));
  $("#main").innerHTML = `<p class="muted">Loading…</p>`;
  delete $("#main").dataset.shape;
  page.render();
}

function showError(e) {
  delete $("#main").dataset.shape;
  $("#main").innerHTML = `<div class="bannerbox bad" data-error>${esc(e.message)}</div>`;
}

// --- confirmation dialog ------------------------------------------------------
// Asks before an action, runs it on Confirm, and shows its reply or error.
function confirmAction({ title, body = "", run, done }) {
  const dialog = $("#dialog");
  $("#dialog-title").textContent = title;
  $("#dialog-body").innerHTML = body;
  const result = $("#dialog-result");
  result.textContent = ""; result.className = "";
  const confirm = $("#dialog-confirm"), back = $("#dialog-back");
  confirm.style.display = ""; confirm.disabled = false; back.textContent = "Back";
  confirm.onclick = async () => {
    confirm.disabled = true;
    try {
      const reply = await run($("#dialog-form"));
      result.innerHTML = done ? done(reply) : `<pre class="mono">${esc(JSON.stringify(reply, null, 2))}</pre>`;
      result.dataset.outcome = "ok";
      confirm.style.display = "none"; back.textContent = "Close";
      refreshSoon(50);
    } catch (e) {
      result.className = "error"; result.dataset.outcome = "error";
      result.textContent = e.message; confirm.disabled = false;
    }
  };
  back.onclick = () => dialog.close();
  dialog.showModal();
}

// --- cluster ------------------------------------------------------------------
// Draws `html` into #main unless #main already shows it but for its
// `data-live` cells (ages, loads), which are then updated in place.
// Returns whether #main was drawn anew.
function paintLive(html) {
  const main = $("#main");
  const live = /(<td data-live>)([\s\S]*?)(<\/td>)/g;
  const shape = html.replace(live, "$1$3");
  if (main.dataset.shape === shape) {
    const values = [...html.matchAll(live)].map((m) => m[2]);
    main.querySelectorAll("td[data-live]").forEach((td, i) => {
      if (i < values.length && td.innerHTML !== values[i]) td.innerHTML = values[i];
    });
    return false;
  }
  main.innerHTML = html;
  main.dataset.shape = shape;
  return true;
}

function clusterPage() {
  // ages and loads move without events: polled, but only changes are drawn
  let timer = setInterval(() => refreshSoon(0), 2000);
  async function render() {
    let s;
    try { s = await api("/api/status"); } catch (e) { return showError(e); }
    const lost = s.subagents.filter((a) => a.state === "lost");
    const banner = [];
    if (lost.length) banner.push(`<div class="bannerbox bad" data-lost>${lost.length} subagent${lost.length > 1 ? "s" : ""} LOST: ${lost.map((a) => esc(a.id)).join(", ")} (no heartbeat for ${ago(Math.min(...lost.map((a) => a.heartbeat_age_ms)))})</div>`);
    if (s.not_firing) banner.push(`<div class="bannerbox warn">Triggers are NOT firing: ${esc(s.not_firing)}</div>`);
    const bannerHtml = banner.join("");
    if ($("#banner").innerHTML !== bannerHtml) $("#banner").innerHTML = bannerHtml;
    const brokers = (s.brokers || []).map((b) => `<tr data-broker="${esc(b.id)}">
      <td class="mono">${esc(b.id)}</td><td>${badge(b.role)}</td><td>${b.epoch || "–"}</td>
      <td>${b.precedence}</td><td data-live>${b.lease_age_ms == null ? "–" : ago(b.lease_age_ms)}</td><td data-live>${ago(b.heartbeat_age_ms)}</td></tr>`).join("");
    const agents = (s.agents || []).map((a) => {
      const off = a.excluded || (a.switched && a.switched.off);
      return `<tr data-agent="${esc(a.id)}">
      <td class="mono">${esc(a.id)}</td><td>${badge(a.role)}</td><td>${esc(String(a.health_level).replace(/_/g, " "))}</td>
      <td>${a.switch_condition_met ? '<span class="badge s-failed">met</span>' : "no"}</td>
      <td>${off ? `<span class="badge s-disabled">off</span> <span class="muted">${a.switched ? "by " + esc(a.switched.by) : ""}</span>` : "no"}</td>
      <td data-live>${a.lease_left_ms == null ? "–" : ago(a.lease_left_ms)}</td><td data-live>${ago(a.heartbeat_age_ms)}</td>
      <td class="actions">${a.role === "scheduler" ? `<button data-action="scheduler-off">Scheduler off</button>` : `<button data-action="scheduler-on">Make Scheduler</button>`}</td></tr>`;
    }).join("");
    const subagents = s.subagents.map((a) => {
      const labels = Object.entries(a.labels || {}).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(", ");
      const load = a.load ? `cpu ${a.load.cpu_percent.toFixed(0)}%, mem ${a.load.memory_percent.toFixed(0)}%` : "–";
      const action = a.state === "disabled" ? `<button data-action="enable">Enable</button>`
        : a.state === "available" ? `<button data-action="disable">Disable</button>` : "";
      return `<tr data-subagent="${esc(a.id)}" data-state="${esc(a.state)}" class="${a.state === "lost" ? "lost" : ""}">
      <td class="mono">${esc(a.id)}</td><td>${badge(a.state)}${a.switched && a.switched.off ? ` <span class="muted">by ${esc(a.switched.by)}</span>` : ""}</td><td class="wrap">${labels || "–"}</td><td data-live>${load}</td>
      <td>${a.running} / ${a.capacity}</td><td>${a.tasks_finished}</td><td data-live>${ago(a.heartbeat_age_ms)}</td>
      <td class="actions">${action}</td></tr>`;
    }).join("");
    const clusters = (s.clusters || []).map((c) => `<tr data-cluster="${esc(c.name)}"><td class="mono">${esc(c.name)}</td><td>${esc(c.mode)}</td>
      <td class="wrap">${c.members.map((m) => `${esc(m.subagent_id)} <span class="muted">(${m.priority})</span> ${badge(m.state)}`).join(" &nbsp; ") || '<span class="muted">no member known</span>'}</td></tr>`).join("");
    const o = s.orders || {};
    const html = `
      <h2>Brokers</h2><div class="card"><table><tr><th>id</th><th>role</th><th>epoch</th><th>precedence</th><th>lease age</th><th>heartbeat</th></tr>${brokers || `<tr><td colspan="6" class="muted">active: ${esc(s.broker_id)}</td></tr>`}</table></div>
      <h2>Agents</h2><div class="card"><table><tr><th>id</th><th>role</th><th>health</th><th>switch condition</th><th>turned off</th><th>lease left</th><th>heartbeat</th><th></th></tr>${agents || '<tr><td colspan="8" class="muted">no agent connected</td></tr>'}</table></div>
      <h2>Subagents</h2><div class="card"><table id="subagents"><tr><th>id</th><th>state</th><th>labels</th><th>load</th><th>running / capacity</th><th>finished</th><th>last heartbeat</th><th></th></tr>${subagents || '<tr><td colspan="8" class="muted">no subagent registered</td></tr>'}</table></div>
      <h2>Clusters</h2><div class="card"><table><tr><th>name</th><th>mode</th><th>members</th></tr>${clusters || '<tr><td colspan="3" class="muted">none deployed</td></tr>'}</table></div>
      <p class="muted">Orders: ${Object.entries(o).map(([k, v]) => `${esc(k)} ${esc(v)}`).join(" · ")} · broker ${esc(s.broker_id)}</p>`;
    // Only what changed is drawn: the same tables with new ages and loads
    // update those cells in place (no flicker, hover and focus kept).
    if (!paintLive(html)) return;
    document.querySelectorAll("tr[data-subagent] button").forEach((b) => b.onclick = () => {
      const id = b.closest("tr").dataset.subagent, action = b.dataset.action;
      confirmAction({
        title: `${action === "disable" ? "Disable" : "Enable"} subagent ${id}?`,
        body: action === "disable" ? "It takes no new tasks; running ones finish." : "It takes tasks again.",
        run: () => api(`/api/subagents/${encodeURIComponent(id)}/${action}`, "POST"),
        done: (r) => `subagent ${esc(r.subagent_id)} is ${esc(r.state)}`,
      });
    });
    document.querySelectorAll("tr[data-agent] button").forEach((b) => b.onclick = () => {
      const id = b.closest("tr").dataset.agent, on = b.dataset.action === "scheduler-on";
      confirmAction({
        title: on ? `Make ${id} the Scheduler?` : `Turn ${id} off as Scheduler?`,
        body: on ? "The current Scheduler is turned off first." : "It stays out of elections until turned on; another agent is elected.",
        run: () => api(`/api/scheduler/${encodeURIComponent(id)}/${on ? "on" : "off"}`, "POST"),
        done: (r) => `asked: agent ${esc(r.agent_id)} ${esc(r.action)} (now ${esc(r.role)})`,
      });
    });
  }
  return {
    render,
    onEvent: (ev) => { if (ev.type !== "order" || ev.kind !== "changed") refreshSoon(); },
    stop: () => clearInterval(timer),
  };
}

// --- jobs ---------------------------------------------------------------------
function trigger(t) {
  const tz = t.time_zone ? ` (${esc(t.time_zone)})` : "";
  if (t.expr) return `cron <span class="mono">${esc(t.expr)}</span>${tz}`;
  if (t.every) return `every ${esc(t.every)}${t.start ? ` from ${esc(t.start)}` : ""}`;
  if (t.at) return `at ${esc(t.at)}${tz}`;
  return esc(JSON.stringify(t));
}

async function submitDialog(name) {
  let info;
  try { info = await api(`/api/jobs/${encodeURIComponent(name)}`); } catch (e) { return toast(e.message, true); }
  const params = (info.job || info.workflow || {}).params || {};
  const fields = Object.entries(params).map(([p, spec]) => `<div class="field"><label>${esc(p)}${spec.required ? " *" : ""}${spec.description ? ` <span class="muted">${esc(spec.description)}</span>` : ""}
    <input name="${esc(p)}" data-param="${esc(p)}" value="${esc(spec.default ?? "")}"></label></div>`).join("");
  confirmAction({
    title: `Run ${name} now?`,
    body: fields || '<p class="muted">No parameters.</p>',
    run: (form) => {
      const values = {};
      form.querySelectorAll("[data-param]").forEach((i) => { if (i.value !== "" || params[i.dataset.param].required) values[i.dataset.param] = i.value; });
      return api("/api/submit", "POST", { job: name, params: values });
    },
    done: (r) => `order <a href="#/orders/${encodeURIComponent(r.order_id)}" data-order-link="${esc(r.order_id)}" onclick="document.getElementById('dialog').close()">${esc(r.order_id)}</a> ${esc(r.state)}`,
  });
}

function jobsPage() {
  async function render() {
    let list;
    try { list = await api("/api/jobs"); } catch (e) { return showError(e); }
    const rows = list.jobs.map((j) => {
      const last = j.last_order;
      return `<tr data-job="${esc(j.name)}"><td class="mono">${esc(j.name)}</td><td>${esc(j.kind)}</td>
      <td class="wrap">${(j.triggers || []).map(trigger).join("<br>") || '<span class="muted">none</span>'}</td>
      <td>${j.next_fire ? when(j.next_fire.at_ms) : "–"}</td>
      <td>${j.paused ? `${badge("paused")} <span class="muted">by ${esc(j.paused.by)}${j.paused.all ? ", submits too" : ""}</span>` : "no"}</td>
      <td>${last ? `<a href="#/orders/${encodeURIComponent(last.order_id)}">${badge(last.state)}</a> <span class="muted">${when(last.finished_at_ms || last.accepted_at_ms)}</span>` : "–"}</td>
      <td class="actions"><button data-action="run">Run now…</button>${j.paused ? `<button data-action="resume">Resume</button>` : `<button data-action="pause">Pause</button>`}
      <a href="#/orders?${j.kind === "workflow" ? "workflow" : "job"}=${encodeURIComponent(j.name)}">orders</a></td></tr>`;
    }).join("");
    $("#main").innerHTML = `<h2>Jobs and workflows</h2><div class="card"><table><tr><th>name</th><th>kind</th><th>triggers</th><th>next fire</th><th>paused</th><th>last outcome</th><th></th></tr>${rows || '<tr><td colspan="7" class="muted">nothing deployed</td></tr>'}</table></div>`;
    document.querySelectorAll("tr[data-job] button").forEach((b) => b.onclick = () => {
      const name = b.closest("tr").dataset.job, action = b.dataset.action;
      if (action === "run") return submitDialog(name);
      confirmAction({
        title: `${action === "pause" ? "Pause" : "Resume"} ${name}?`,
        body: action === "pause" ? `Its triggers stop firing until resumed.<br><label class="inline"><input type="checkbox" id="pause-all"> refuse manual submits too</label>` : "Its triggers fire again; its misfire policy decides about the slots missed.",
        run: () => api(`/api/jobs/${encodeURIComponent(name)}/${action}`, "POST", { all: !!($("#pause-all") || {}).checked }),
        done: (r) => `${esc(r.name)}: ${r.switched.off ? "paused" : "resumed"}${r.changed ? "" : " (it already was)"}`,
      });
    });
  }
  return { render, onEvent: (ev) => { if (ev.type === "order" && ev.kind !== "changed") refreshSoon(500); } };
}

// --- orders -------------------------------------------------------------------
const STATES = ["", "accepted", "running", "succeeded", "failed", "cancelled", "suspending", "suspended", "cancelling"];

function ordersPage(params) {
  const pages = [];  // cursors of the pages before this one
  let after = params.get("after") || "";
  let stale = false;
  function query() {
    const q = new URLSearchParams();
    for (const k of ["job", "workflow", "state"]) if (params.get(k)) q.set(k, params.get(k));
    if (params.get("steps") === "true") q.set("steps", "true");
    q.set("limit", params.get("limit") || "50");
    if (after) q.set("after", after);
    return q.toString();
  }
  async function render() {
    let list;
    const started = performance.now();
    try { list = await api(`/api/orders?${query()}`); } catch (e) { return showError(e); }
    const took = performance.now() - started;
    stale = false;
    const rows = list.orders.map((o) => {
      const what = o.parent ? `${esc(o.job)} <span class="muted">step ${esc(o.parent.step)} of ${esc(o.parent.workflow)}</span>` : o.workflow ? `${esc(o.job)} <span class="muted">workflow</span>` : esc(o.job);
      return `<tr class="clickable" data-order="${esc(o.order_id)}" data-state="${esc(o.state)}"><td class="mono">${esc(o.order_id.slice(0, 13))}…</td><td>${what}</td><td>${badge(o.state)}</td>
      <td class="wrap">${esc(o.reason || (o.current_steps || []).join(", ") || "")}</td><td>${esc(o.subagent_id || "–")}</td>
      <td>${when(o.accepted_at_ms)}</td><td>${span(o.accepted_at_ms, o.finished_at_ms)}</td></tr>`;
    }).join("");
    const sel = STATES.map((s) => `<option value="${s}" ${params.get("state") === s ? "selected" : ""}>${s || "any"}</option>`).join("");
    $("#main").innerHTML = `<h2>Orders</h2>
      <form class="filters" id="filters">
        <label>job <input name="job" value="${esc(params.get("job") || "")}" size="14"></label>
        <label>workflow <input name="workflow" value="${esc(params.get("workflow") || "")}" size="14"></label>
        <label>state <select name="state">${sel}</select></label>
        <label class="inline"><input type="checkbox" name="steps" ${params.get("steps") === "true" ? "checked" : ""}> workflow steps</label>
        <button class="primary">Filter</button>
      </form>
      <div class="card"><table id="orders"><tr><th>order</th><th>job / workflow</th><th>state</th><th>reason / steps</th><th>subagent</th><th>accepted</th><th>duration</th></tr>${rows || '<tr><td colspan="7" class="muted">no orders</td></tr>'}</table></div>
      <div class="pager"><button id="newest" ${after ? "" : "disabled"}>« Newest</button><button id="newer" ${pages.length ? "" : "disabled"}>‹ Newer</button>
      <button id="older" ${list.next ? "" : "disabled"}>Older ›</button><span class="muted" id="took">${list.orders.length} shown, ${took.toFixed(0)} ms${after ? "" : " · live"}</span></div>`;
    $("#filters").onsubmit = (e) => {
      e.preventDefault();
      const f = new FormData(e.target), q = new URLSearchParams();
      for (const k of ["job", "workflow", "state"]) if (f.get(k)) q.set(k, f.get(k));
      if (f.get("steps")) q.set("steps", "true");
      location.hash = `#/orders?${q}`;
    };
    $("#older").onclick = () => { pages.push(after); after = list.next; render(); };
    $("#newer").onclick = () => { after = pages.pop() || ""; render(); };
    $("#newest").onclick = () => { pages.length = 0; after = ""; render(); };
    document.querySelectorAll("tr[data-order]").forEach((tr) => tr.onclick = () => { location.hash = `#/orders/${encodeURIComponent(tr.dataset.order)}`; });
  }
  return {
    render,
    onEvent: (ev) => {
      if (ev.type !== "order") return;
      if (!after) refreshSoon(300);
      else if (!stale) { stale = true; const t = $("#took"); if (t) t.textContent += " · newer orders arrived"; }
    },
  };
}

// --- one order ------------------------------------------------------------------
const STEP_COLORS = { pending: "#c9ced8", running: "#1565c0", succeeded: "#1f8f4e", failed: "#c62828", skipped: "#9aa1ae", cancelled: "#6b7385",
  accepted: "#6ea8ff", suspended: "#b26a00" };

// The workflow's steps as a graph: a step's column is one more than its
// deepest dependency's.
function dag(o) {
  const steps = o.steps;
  const depth = [];
  const depthOf = (i, seen = 0) => {
    if (depth[i] != null) return depth[i];
    if (seen > steps.length) return 0;
    const d = steps[i].deps.length ? 1 + Math.max(...steps[i].deps.map((j) => depthOf(j, seen + 1))) : 0;
    return (depth[i] = d);
  };
  steps.forEach((_, i) => depthOf(i));
  const rows = {}, pos = [];
  steps.forEach((s, i) => { const c = depth[i]; rows[c] = (rows[c] || 0) + 1; pos[i] = { c, r: rows[c] - 1 }; });
  const W = 170, H = 48, GX = 60, GY = 18;
  const cols = Math.max(...depth) + 1, maxRows = Math.max(...Object.values(rows));
  const width = cols * (W + GX), height = maxRows * (H + GY) + 10;
  const where = {};
  (o.history || []).forEach((h) => { where[h.step] = h.subagent_id; });
  const x = (i) => 10 + pos[i].c * (W + GX), y = (i) => 5 + pos[i].r * (H + GY);
  let svg = `<svg width="${width}" height="${height}" data-dag>`;
  svg += `<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#9aa1ae"/></marker></defs>`;
  steps.forEach((s, i) => s.deps.forEach((j) => {
    const x1 = x(j) + W, y1 = y(j) + H / 2, x2 = x(i), y2 = y(i) + H / 2;
    svg += `<path d="M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2 - 2},${y2}" fill="none" stroke="#9aa1ae" marker-end="url(#arrow)"/>`;
  }));
  steps.forEach((s, i) => {
    const color = STEP_COLORS[s.state] || "#9aa1ae";
    svg += `<g data-step="${esc(s.name)}" data-state="${esc(s.state)}"><rect x="${x(i)}" y="${y(i)}" width="${W}" height="${H}" rx="6" fill="#fff" stroke="${color}" stroke-width="2"/>
      <rect x="${x(i)}" y="${y(i)}" width="6" height="${H}" rx="3" fill="${color}"/>
      <text x="${x(i) + 14}" y="${y(i) + 19}" font-weight="600">${esc(s.name)}</text>
      <text x="${x(i) + 14}" y="${y(i) + 36}" fill="#6b7385">${esc(s.state)}${where[s.name] ? " · " + esc(where[s.name]) : ""}${s.attempt > 1 ? " · try " + s.attempt : ""}</text></g>`;
  });
  return svg + "</svg>";
}

// Every step attempt (or task) as a bar on one time axis, with its subagent.
function gantt(rows) {
  if (!rows.length) return '<p class="muted">Nothing ran yet.</p>';
  const now = Date.now();
  const start = Math.min(...rows.map((r) => r.from || now));
  const end = Math.max(...rows.map((r) => r.to || now), start + 1);
  const pct = (t) => ((t - start) / (end - start)) * 100;
  const body = rows.map((r) => {
    const left = pct(r.from || now), width = Math.max(pct(r.to || now) - left, 0.6);
    return `<tr data-attempt="${esc(r.label)}" data-subagent="${esc(r.subagent || "")}"><td>${esc(r.label)}</td><td class="mono">${esc(r.where || "–")}</td><td>${badge(r.state)}</td>
      <td style="width:55%"><div style="position:relative;height:16px;background:#f0f2f6;border-radius:3px">
      <div title="${esc(when(r.from))} – ${esc(when(r.to))}" style="position:absolute;left:${left}%;width:${width}%;top:0;bottom:0;border-radius:3px;background:${STEP_COLORS[r.state] || "#6b7385"}"></div></div></td>
      <td>${span(r.from, r.to)}</td><td class="wrap muted">${esc(r.note || "")}</td></tr>`;
  }).join("");
  return `<table data-timeline><tr><th>attempt</th><th>subagent</th><th>state</th><th>${esc(when(start))} → ${esc(when(end))}</th><th>took</th><th></th></tr>${body}</table>`;
}

function timelineRows(o) {
  if (o.members && o.members.length) {
    // a spread order: one row per member, each its own order
    return o.members.map((m) => ({
      label: `member ${m.subagent_id}`, subagent: m.subagent_id, where: m.subagent_id, state: m.state,
      from: m.started_at_ms, to: m.finished_at_ms,
      note: [m.attempt > 1 ? `${m.attempt} tasks` : "", m.reason || "", m.exit_code != null ? `exit ${m.exit_code}` : "", `order ${m.order_id.slice(0, 8)}`].filter(Boolean).join("; "),
    }));
  }
  if (o.history && o.history.length) {
    return o.history.map((h) => ({
      label: `${h.step} #${h.attempt}`, subagent: h.subagent_id, state: h.state,
      where: (h.placed_on && h.placed_on.length > 1) ? h.placed_on.join(" → ") : h.subagent_id,
      from: h.started_at_ms, to: h.finished_at_ms,
      note: [h.tasks > 1 ? `${h.tasks} tasks: re-run after a lost subagent` : "", h.reason || "", h.exit_code != null ? `exit ${h.exit_code}` : ""].filter(Boolean).join("; "),
    }));
  }
  return (o.attempts || []).map((a) => ({
    label: `task #${a.attempt}`, subagent: a.subagent_id, where: a.subagent_id,
    state: a.outcome ? (a.outcome === "succeeded" ? "succeeded" : "failed") : "running",
    from: a.started_at_ms, to: a.finished_at_ms,
    note: [a.outcome || "", a.exit_code != null ? `exit ${a.exit_code}` : "", a.reason || "", a.rerun ? `ran again: ${a.rerun}` : ""].filter(Boolean).join("; "),
  }));
}

function orderPage(id) {
  let logSource = null;
  function followLog() {
    const pre = $("#log");
    if (!pre || logSource) return;
    pre.textContent = "";
    logSource = new EventSource(`/api/orders/${encodeURIComponent(id)}/log?follow=true`);
    logSource.addEventListener("line", (m) => {
      const l = JSON.parse(m.data), p = $("#log");
      if (!p) return;
      const atEnd = p.scrollTop + p.clientHeight >= p.scrollHeight - 4;
      const div = document.createElement("div");
      div.className = l.stream === "stderr" ? "stderr" : "";
      div.dataset.seq = l.seq;
      div.innerHTML = `${l.step ? `<span class="step">[${esc(l.step)}]</span> ` : ""}<span class="sub">${esc(l.subagent_id)}</span> ${esc(l.line)}`;
      p.appendChild(div);
      if (atEnd) p.scrollTop = p.scrollHeight;
    });
    logSource.addEventListener("finished", (m) => {
      const f = JSON.parse(m.data), p = $("#log");
      if (p) { const div = document.createElement("div"); div.className = "sub"; div.dataset.finished = f.state; div.textContent = `— ${f.state}${f.exit_code != null ? ", exit " + f.exit_code : ""}`; p.appendChild(div); }
      logSource.close();
    });
  }
  async function render() {
    let o;
    try { o = await api(`/api/orders/${encodeURIComponent(id)}`); } catch (e) { return showError(e); }
    const workflow = !!o.workflow;
    const actions = [];
    if (!["succeeded", "cancelled", "failed"].includes(o.state) || (workflow && o.state === "failed" && !o.expired_at_ms)) actions.push(`<button data-action="cancel" class="danger">Cancel…</button>`);
    if (workflow && ["accepted", "running"].includes(o.state)) actions.push(`<button data-action="suspend">Suspend…</button>`);
    if (workflow && ["suspended", "suspending", "failed"].includes(o.state) && !o.expired_at_ms) actions.push(`<button data-action="resume">Resume…</button>`);
    const outputs = Object.entries(o.outputs || {}).map(([k, v]) => `<div class="mono">${esc(k)}</div><div class="mono">${esc(v)}</div>`).join("");
    const params = Object.entries(o.params || {}).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(", ");
    const parent = (o.parent ? `<div>step of</div><div><a href="#/orders/${encodeURIComponent(o.parent.order_id)}">${esc(o.parent.workflow)} · ${esc(o.parent.step)}</a></div>` : "")
      + (o.member_of ? `<div>member of</div><div><a href="#/orders/${encodeURIComponent(o.member_of)}">spread order ${esc(o.member_of)}</a> <span class="muted">on ${esc(o.pin || "")} only</span></div>` : "")
      + (o.spread ? `<div>spread</div><div data-spread>${o.spread.count ? `up to ${o.spread.count} members` : "every member up"}; ${o.spread.min_succeeded ? `at least ${o.spread.min_succeeded} must succeed` : "all must succeed"}${o.members && o.members.length ? ` · ${o.members.map((m) => `<a href="#/orders/${encodeURIComponent(m.order_id)}">${esc(m.subagent_id)}</a>`).join(", ")}` : ""}</div>` : "");
    const stepOutputs = workflow ? o.steps.filter((s) => Object.keys(s.outputs || {}).length).map((s) =>
      Object.entries(s.outputs).map(([k, v]) => `<div class="mono">${esc(s.name)}.${esc(k)}</div><div class="mono">${esc(v)}</div>`).join("")).join("") : "";
    const keepLog = $("#log") && logSource ? $("#log") : null;
    $("#main").innerHTML = `<h2>${workflow ? "Workflow" : "Job"} order <span class="mono">${esc(o.order_id)}</span></h2>
      <div class="card"><div class="kv">
        <div>${workflow ? "workflow" : "job"}</div><div><a href="#/orders?${workflow ? "workflow" : "job"}=${encodeURIComponent(o.job)}">${esc(o.job)}</a></div>
        <div>state</div><div id="order-state" data-state="${esc(o.state)}">${badge(o.state)} ${o.cancel_requested ? '<span class="muted">cancel requested</span>' : ""}</div>
        ${o.reason ? `<div>reason</div><div>${esc(o.reason)}</div>` : ""}
        ${parent}
        <div>parameters</div><div class="mono">${params || "–"}</div>
        <div>accepted</div><div>${when(o.accepted_at_ms)}${o.submitted_by ? ` <span class="muted">by ${esc(o.submitted_by)}</span>` : ""}${o.slot_ms ? ` <span class="muted">slot ${when(o.slot_ms)}</span>` : ""}</div>
        <div>started</div><div>${when(o.started_at_ms)}</div>
        <div>finished</div><div>${when(o.finished_at_ms)}${o.finished_at_ms ? ` <span class="muted">(${span(o.started_at_ms || o.accepted_at_ms, o.finished_at_ms)})</span>` : ""}</div>
        ${!workflow ? `<div>subagent</div><div>${esc(o.subagent_id || "–")}${o.exit_code != null ? ` · exit ${o.exit_code}` : ""}</div>` : ""}
      </div>${actions.length ? `<div class="actions" style="margin-top:10px">${actions.join("")}</div>` : ""}</div>
      ${workflow ? `<h2>Steps</h2><div class="card">${dag(o)}</div>` : ""}
      <h2>Timeline</h2><div class="card" id="timeline">${gantt(timelineRows(o))}</div>
      <h2>Results</h2><div class="card"><div class="kv" id="results">${outputs + stepOutputs || '<span class="muted">none</span>'}</div></div>
      <h2>Log</h2><div id="log-slot"></div>`;
    if (keepLog) $("#log-slot").replaceWith(keepLog);
    else { $("#log-slot").outerHTML = `<pre class="log" id="log"></pre>`; followLog(); }
    document.querySelectorAll("main button[data-action]").forEach((b) => b.onclick = () => {
      const action = b.dataset.action;
      const kill = action === "resume" ? "" : `<label class="inline"><input type="checkbox" id="act-kill"> kill the running ${workflow ? "steps" : "task"} now</label>`;
      const from = action === "resume" ? `<div class="field"><label>from step (optional)<input id="act-from"></label></div><label class="inline"><input type="checkbox" id="act-force"> failed steps count as succeeded</label>` : "";
      confirmAction({
        title: `${action[0].toUpperCase() + action.slice(1)} order ${o.order_id.slice(0, 13)}…?`,
        body: kill + from,
        run: () => api(`/api/orders/${encodeURIComponent(id)}/${action}`, "POST", {
          kill: !!($("#act-kill") || {}).checked, from: ($("#act-from") || {}).value || null, force_succeeded: !!($("#act-force") || {}).checked,
        }),
        done: (r) => `order is ${esc(r.state)}`,
      });
    });
  }
  return {
    render,
    onEvent: (ev) => { if (ev.type === "order" && ev.order === id) refreshSoon(100); else if (ev.type === "order" && ev.data && ev.data.parent && ev.data.parent.order_id === id) refreshSoon(100); },
    stop: () => { if (logSource) logSource.close(); logSource = null; },
  };
}

window.addEventListener("hashchange", route);
route();
connectEvents();
