// leitstand control room: plain JS, no build step, no library, talks only to its own origin.
"use strict";

const TOKEN_KEY = "leitstand.token";
const POLL_MS = 3000;          // domains (chart and table); rejections every 3rd tick
const HISTORY = 90;            // chart points kept per domain
const TAIL_KEEP = 300;         // entries kept in the live tail
const COLORS = ["#4fb3ff", "#3ecf8e", "#f5b942", "#ff6b6b", "#c77dff", "#5eead4",
  "#fb923c", "#a3e635"];

const $ = (id) => document.getElementById(id);
const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  timer: null,
  ticks: 0,
  last: new Map(),      // domain -> {events, t}
  rates: new Map(),     // domain -> [rate, ...]
  colors: new Map(),
  selected: null,
  stream: null,         // AbortController of the running tail stream
  lastId: null,
  paused: false,
  pending: [],
  filter: "",
  backoffUntil: 0,
};

class HttpError extends Error {
  constructor(status, detail) { super(detail); this.status = status; }
}

async function api(path) {
  const response = await fetch(path, { headers: { "X-Auth": state.token }, cache: "no-store" });
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    if (response.status === 429) {
      state.backoffUntil = Date.now() + 1000 * Number(response.headers.get("Retry-After") || 5);
    }
    throw new HttpError(response.status, detail);
  }
  return response;
}

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = "status " + (kind || "");
}

// -- login ---------------------------------------------------------------------------------------
function showLogin(message) {
  stopAll();
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("who").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setStatus("");
  $("token").focus();
}

async function login(token) {
  state.token = token;
  let me;
  try {
    me = await (await api("/v1/whoami")).json();
  } catch (err) {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    showLogin(err.status === 401 ? "The token was not accepted."
      : err.status === 403 ? `This token may not read any domain: ${err.message}`
        : `Cannot connect: ${err.message}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  showIdentity(me);
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  startPolling();
}

// Say whose view this is: a token sees only the domains (and rejections) it may read.
function showIdentity(me) {
  const all = me.read.includes("*");
  $("who").textContent = `${me.name} · reads ${all ? "every domain" : me.read.join(", ")}`;
  $("who").title = all ? "" : "Only the domains this token may read are shown.";
  $("who").hidden = false;
  $("scope-note").textContent = all ? ""
    : `Showing only what token ${me.name} may read: ${me.read.join(", ")}.`;
}

function stopAll() {
  clearTimeout(state.timer);
  state.timer = null;
  if (state.stream) state.stream.abort();
  state.stream = null;
}

// -- domains and chart ---------------------------------------------------------------------------
function colorOf(domain) {
  if (!state.colors.has(domain)) state.colors.set(domain, COLORS[state.colors.size % COLORS.length]);
  return state.colors.get(domain);
}

function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return (i ? n.toFixed(1) : String(n)) + " " + units[i];
}

function formatTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// The free-space guard refuses writes (507) that would leave less than min_free_bytes free:
// warn once less than twice that is left, so there is time to act.
function updateSpace(storage) {
  const warning = $("space-warning");
  const { free_bytes: free, min_free_bytes: min } = storage || {};
  if (free == null || !min || free >= 2 * min) {
    warning.hidden = true;
    return;
  }
  warning.textContent = free < min
    ? `Disk full for leitstand: ${formatBytes(free)} free, less than LEITSTAND_MIN_FREE_BYTES ` +
      `(${formatBytes(min)}); writes are refused with 507.`
    : `Disk space is running low: ${formatBytes(free)} free; writes are refused below ` +
      `${formatBytes(min)} (LEITSTAND_MIN_FREE_BYTES).`;
  warning.hidden = false;
}

function updateDomains(domains) {
  const now = performance.now() / 1000;
  for (const d of domains) {
    // A domain that appears after the first poll was empty before: count its events as new.
    const prev = state.last.get(d.domain) || (state.ticks > 0 ? { events: 0, t: state.prevPoll } : null);
    const rate = prev ? Math.max(0, (d.events - prev.events) / Math.max(0.001, now - prev.t)) : 0;
    state.last.set(d.domain, { events: d.events, t: now });
    const series = state.rates.get(d.domain) || [];
    series.push(rate);
    while (series.length > HISTORY) series.shift();
    state.rates.set(d.domain, series);
  }
  state.prevPoll = now;
  const body = $("domains").tBodies[0];
  body.replaceChildren(...domains.map((d) => {
    const tr = document.createElement("tr");
    tr.dataset.domain = d.domain;
    if (d.domain === state.selected) tr.className = "selected";
    const name = cell(d.domain);
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colorOf(d.domain);
    name.prepend(swatch);
    const series = state.rates.get(d.domain);
    tr.append(name, cell(d.events.toLocaleString(), "num"), cell(formatBytes(d.bytes), "num"),
      cell(formatTime(d.last_event_at)), cell(series[series.length - 1].toFixed(1), "num"),
      schemaCell(d.schema), cell(formatBytes(d.disk_bytes), "num"),
      cell(d.segments.toLocaleString(), "num"));
    tr.addEventListener("click", () => selectDomain(d.domain));
    return tr;
  }));
  $("domains-empty").hidden = domains.length > 0;

  const select = $("tail-domain");
  const names = domains.map((d) => d.domain);
  if ([...select.options].map((o) => o.value).join("\n") !== names.join("\n")) {
    select.replaceChildren(...names.map((n) => new Option(n, n)));
  }
  if (state.selected) select.value = state.selected;
  if (!state.selected && names.length) selectDomain(names[0]);
  drawChart(names);
}

// Whether the domain's events are checked against a JSON Schema (LEITSTAND_SCHEMA_DIR).
function schemaCell(file) {
  const td = cell(file || "none", file ? "schema" : "schema muted");
  td.title = file ? `events must match ${file}` : "events are not checked";
  return td;
}

function drawChart(names) {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth, height = canvas.clientHeight;
  if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
  if (canvas.height !== Math.round(height * ratio)) canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  const left = 44, right = 8, top = 8, bottom = 22;
  const plotW = width - left - right, plotH = height - top - bottom;
  let max = 1;
  for (const n of names) for (const r of state.rates.get(n) || []) max = Math.max(max, r);
  max = niceCeil(max);

  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#8a99a8";
  ctx.strokeStyle = "#2a3642";
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let i = 0; i <= 4; i += 1) {
    const y = top + plotH - (plotH * i) / 4;
    ctx.beginPath(); ctx.moveTo(left, y + 0.5); ctx.lineTo(left + plotW, y + 0.5); ctx.stroke();
    ctx.fillText(formatRate((max * i) / 4), left - 6, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const span = Math.round((HISTORY - 1) * POLL_MS / 1000);
  ctx.fillText(`−${span}s`, left + 12, top + plotH + 6);
  ctx.fillText("now", left + plotW - 12, top + plotH + 6);

  const legend = $("legend");
  legend.replaceChildren();
  for (const n of names) {
    const series = state.rates.get(n) || [];
    if (!series.length) continue;
    ctx.strokeStyle = colorOf(n);
    ctx.lineWidth = 2;
    ctx.beginPath();
    series.forEach((r, i) => {
      const x = left + plotW - ((series.length - 1 - i) * plotW) / (HISTORY - 1);
      const y = top + plotH - (r / max) * plotH;
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
    const li = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = colorOf(n);
    li.append(swatch, document.createTextNode(`${n} ${series[series.length - 1].toFixed(1)}/s`));
    legend.append(li);
  }
}

function niceCeil(v) {
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

function formatRate(v) { return v >= 10 ? String(Math.round(v)) : String(Number(v.toFixed(2))); }

// -- rejections ----------------------------------------------------------------------------------
function updateRejections(items) {
  const body = $("rejections").tBodies[0];
  body.replaceChildren(...items.slice(0, 50).map((r) => {
    const tr = document.createElement("tr");
    const status = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "badge " + (r.status >= 500 ? "s5xx" : "s" + r.status);
    badge.textContent = r.status;
    status.append(badge);
    const reason = cell(r.reason, "reason");
    if (r.errors && r.errors.length) reason.append(schemaErrors(r.errors));
    tr.append(cell(formatTime(r.time)), status, cell(r.client), cell(r.token || "–"),
      cell(r.route), cell(r.domain || "–"), reason);
    return tr;
  }));
  $("rejections-empty").hidden = items.length > 0;
}

// A schema rejection's first errors: which event, where in it, and what is wrong.
function schemaErrors(errors) {
  const list = document.createElement("ul");
  list.className = "schema-errors";
  for (const e of errors) {
    const li = document.createElement("li");
    const where = document.createElement("code");
    where.textContent = `event ${e.index} ${e.path || "(whole event)"}`;
    li.append(where, document.createTextNode(` ${e.message}`));
    list.append(li);
  }
  return list;
}

// -- polling -------------------------------------------------------------------------------------
async function tick() {
  if (state.ticking) return;
  state.ticking = true;
  state.timer = null;
  if (Date.now() >= state.backoffUntil) {
    try {
      const answer = await (await api("/v1/domains")).json();
      updateDomains(answer.domains);
      updateSpace(answer.storage);
      if (state.ticks % 3 === 0) {
        updateRejections((await (await api("/v1/rejections?limit=50")).json()).rejections);
      }
      state.ticks += 1;
      if (!state.stream || state.streamLive) setStatus("live", "live");
    } catch (err) {
      if (err.status === 401) {
        sessionStorage.removeItem(TOKEN_KEY);
        state.token = null;
        showLogin("The token is no longer accepted.");
        return;
      }
      setStatus(err.status === 429 ? "rate limited, waiting" : `offline: ${err.message}`, "down");
    } finally {
      state.ticking = false;
    }
  }
  state.ticking = false;
  // A hidden tab does not poll (the requests count against the per-IP rate limit).
  if (state.token && !document.hidden && !state.timer) state.timer = setTimeout(tick, POLL_MS);
}

function startPolling() {
  clearTimeout(state.timer);
  state.timer = null;
  state.ticks = 0;
  tick();
}

// -- live tail -----------------------------------------------------------------------------------
function selectDomain(domain) {
  if (domain === state.selected && state.stream) return;
  state.selected = domain;
  $("tail-domain").value = domain;
  for (const tr of $("domains").tBodies[0].rows) {
    tr.classList.toggle("selected", tr.dataset.domain === domain);
  }
  $("tail").replaceChildren();
  state.pending = [];
  state.lastId = null;
  openStream();
}

async function openStream(retry = 0) {
  if (state.stream) state.stream.abort();
  const controller = new AbortController();
  state.stream = controller;
  state.streamLive = false;
  const domain = state.selected;
  const headers = { "X-Auth": state.token };
  let url = `/v1/stream?domain=${encodeURIComponent(domain)}`;
  if (state.lastId) headers["Last-Event-ID"] = state.lastId; else url += "&tail=50";
  $("tail-status").textContent = "connecting…";
  try {
    const response = await fetch(url, { headers, signal: controller.signal, cache: "no-store" });
    if (!response.ok) throw new HttpError(response.status, response.statusText);
    state.streamLive = true;
    retry = 0;
    $("tail-status").textContent = `following ${domain}`;
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        handleFrame(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (err) {
    if (controller.signal.aborted) return;
    if (err.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.token = null;
      showLogin("The token is no longer accepted.");
      return;
    }
    $("tail-status").textContent = `stream error: ${err.message}`;
  }
  if (controller.signal.aborted || state.stream !== controller) return;
  state.streamLive = false;
  const wait = Math.min(10000, 1000 * 2 ** retry);
  $("tail-status").textContent = `reconnecting in ${Math.round(wait / 1000)}s…`;
  setTimeout(() => { if (state.stream === controller) openStream(retry + 1); }, wait);
}

function handleFrame(frame) {
  let id = null, event = "message";
  const data = [];
  for (const line of frame.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "id") id = value;
    else if (field === "data") data.push(value);
    else if (field === "event") event = value;
  }
  if (event === "disconnect") {
    $("tail-status").textContent = "disconnected by the server: " + data.join("\n");
    return;
  }
  if (!data.length) return;
  if (id !== null) state.lastId = id;
  const entry = { text: data.join("\n"), at: new Date() };
  if (state.paused) {
    state.pending.push(entry);
    if (state.pending.length > TAIL_KEEP) state.pending.shift();
    $("pause").textContent = `Resume (${state.pending.length} new)`;
  } else {
    appendEntry(entry);
  }
}

function appendEntry(entry) {
  const box = $("tail");
  const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
  const div = document.createElement("div");
  div.className = "entry";
  const ts = document.createElement("span");
  ts.className = "ts";
  ts.textContent = entry.at.toLocaleTimeString();
  const pre = document.createElement("pre");
  pre.textContent = pretty(entry.text);
  div.dataset.text = entry.text.toLowerCase();
  div.append(ts, pre);
  if (state.filter && !div.dataset.text.includes(state.filter)) div.classList.add("hidden");
  box.append(div);
  while (box.childElementCount > TAIL_KEEP) box.firstElementChild.remove();
  if (stick) box.scrollTop = box.scrollHeight;
}

function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch (_) { return text; }
}

function applyFilter() {
  state.filter = $("filter").value.trim().toLowerCase();
  for (const div of $("tail").children) {
    div.classList.toggle("hidden", Boolean(state.filter) && !div.dataset.text.includes(state.filter));
  }
}

function togglePause() {
  state.paused = !state.paused;
  const button = $("pause");
  button.setAttribute("aria-pressed", String(state.paused));
  if (!state.paused) {
    for (const entry of state.pending) appendEntry(entry);
    state.pending = [];
    button.textContent = "Pause";
  } else {
    button.textContent = "Resume";
  }
}

// -- wiring --------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    $("token").value = "";
    if (token) login(token);
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    showLogin("");
  });
  $("tail-domain").addEventListener("change", (event) => selectDomain(event.target.value));
  $("pause").addEventListener("click", togglePause);
  $("filter").addEventListener("input", applyFilter);
  window.addEventListener("resize", () => drawChart([...state.rates.keys()].sort()));
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && state.token && !state.timer && !$("dashboard").hidden) tick();
  });
  if (state.token) login(state.token); else showLogin("");
});
