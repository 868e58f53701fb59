// Claude Usage web dashboard: one WebSocket for the dashboard, REST reads one at a time.
// No build step: a plain ES module, plus uPlot's IIFE (the global `uPlot`).
import * as fmt from "./format.js";

const API = "/app/claude-usage/";
const TOKEN_KEY = "claude-usage.token";
const SETTINGS_KEY = "claude-usage.settings";

const POLL_MS = 30000; // REST dashboard reads while the WebSocket is down
const PING_MS = 25000; // keeps proxies from closing an idle WebSocket
const SILENCE_MS = 70000; // no frame at all for this long: the connection is dead
const CONNECT_TIMEOUT_MS = 10000;
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 15000;
const REFRESH_SPACING_MS = 2000; // at most one round of REST reads per this
const SETTINGS_DEBOUNCE_MS = 500;
const RETRY_AFTER_MAX_MS = 5000;
const WARN_RESET_SECONDS = 30 * 60;

// claude-monitor's figures per plan: messages and cost per five-hour window. The server has
// no message or cost limit; these are the defaults until the user sets a budget.
const PLAN_MESSAGES = { pro: 250, max5: 1000, max20: 2000 };
const PLAN_BUDGET_USD = { pro: 18, max5: 35, max20: 140, custom: 50 };
const PLAN_NAMES = { pro: "Pro", max5: "Max 5x", max20: "Max 20x", custom: "custom" };

const $ = (id) => document.getElementById(id);

// --- the token: from a bookmark's ?token= into localStorage, out of the address bar ------

function storageGet(key) {
  try {
    return window.localStorage.getItem(key);
  } catch {
    return null;
  }
}

function storageSet(key, value) {
  try {
    if (value === null) window.localStorage.removeItem(key);
    else window.localStorage.setItem(key, value);
  } catch {
    // storage refused (private mode): the page still works until it is closed
  }
}

function takeTokenFromAddress() {
  const params = new URLSearchParams(window.location.search);
  if (!params.has("token")) return;
  const token = (params.get("token") || "").trim();
  params.delete("token");
  const query = params.toString();
  const address = window.location.pathname + (query ? `?${query}` : "") + window.location.hash;
  window.history.replaceState(window.history.state, "", address);
  if (token) storageSet(TOKEN_KEY, token);
}

takeTokenFromAddress(); // first of all: the token leaves the address bar at once

// --- settings, remembered across reloads --------------------------------------------------

function loadSettings() {
  try {
    const stored = JSON.parse(storageGet(SETTINGS_KEY) || "{}");
    return stored && typeof stored === "object" ? stored : {};
  } catch {
    return {};
  }
}

const state = {
  token: null,
  settings: loadSettings(), // only what the user chose; the rest is the server's default
  socket: null,
  everOpened: false,
  attempts: 0,
  reconnectTimer: null,
  connectTimer: null,
  pingTimer: null,
  pollTimer: null,
  lastFrameAt: 0,
  position: null,
  dashboard: null,
  resetDeadline: null, // performance.now() at which the window resets
  refreshTimer: null,
  lastRefreshAt: 0,
  selectedProject: null,
  chart: null,
  chartData: null,
  sorts: {
    projects: { key: "total_cost", ascending: false },
    sessions: { key: "last_activity", ascending: false },
    hosts: { key: "total_cost_usd", ascending: false },
  },
  tables: { projects: [], sessions: [], hosts: [] },
};

function hours() {
  return Number(state.settings.hours) || 6;
}

function interval() {
  return state.settings.interval || "5min";
}

function plan() {
  return state.settings.plan || state.dashboard?.rate_limit?.plan || "pro";
}

function budget() {
  const chosen = Number(state.settings.budget);
  return chosen > 0 ? chosen : PLAN_BUDGET_USD[plan()] || PLAN_BUDGET_USD.pro;
}

function limitSettings() {
  const chosen = {};
  for (const name of ["plan", "token_limit", "window_align"]) {
    if (state.settings[name]) chosen[name] = state.settings[name];
  }
  if (chosen.token_limit) chosen.token_limit = Number(chosen.token_limit);
  return chosen;
}

// --- REST reads: one at a time (the server runs one read per token at once) --------------

const reads = { running: false, waiting: [] };

function read(path) {
  const queued = reads.waiting.find((item) => item.path === path);
  if (queued) return queued.promise;
  const item = { path };
  item.promise = new Promise((resolve, reject) => {
    item.resolve = resolve;
    item.reject = reject;
  });
  reads.waiting.push(item);
  pumpReads();
  return item.promise;
}

async function pumpReads() {
  if (reads.running) return;
  reads.running = true;
  try {
    while (reads.waiting.length) {
      const item = reads.waiting.shift();
      try {
        item.resolve(await fetchJson(item.path));
      } catch (error) {
        item.reject(error);
      }
    }
  } finally {
    reads.running = false;
  }
}

class ReadError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

async function fetchJson(path, retried = false) {
  const token = state.token;
  if (!token) throw new ReadError("Signed out", 0);
  let response;
  try {
    response = await fetch(API + path, {
      headers: { Authorization: `Token ${token}`, Accept: "application/json" },
      cache: "no-store",
    });
  } catch {
    throw new ReadError("The server cannot be reached", 0);
  }
  if (response.status === 429 && !retried) {
    const wait = Math.min(Number(response.headers.get("Retry-After")) * 1000 || 1000, RETRY_AFTER_MAX_MS);
    await new Promise((resolve) => setTimeout(resolve, wait));
    return fetchJson(path, true);
  }
  const body = await response.json().catch(() => null);
  if (response.status === 401 && token === state.token) {
    signOut("The server refused this token.");
  }
  if (!response.ok) {
    const message = body?.error?.message || `The server answered ${response.status}`;
    throw new ReadError(message, response.status);
  }
  return body;
}

function query(values) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(values)) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  return params.toString();
}

// --- the WebSocket: reconnects with exponential backoff; polls while it is down ----------

function connect() {
  clearTimeout(state.reconnectTimer);
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${window.location.host}/ws/claude-usage/?token=${encodeURIComponent(state.token)}`;
  const socket = new WebSocket(url);
  state.socket = socket;
  state.connectTimer = setTimeout(() => socket.close(), CONNECT_TIMEOUT_MS);
  socket.addEventListener("open", () => {
    clearTimeout(state.connectTimer);
    state.everOpened = true;
    state.attempts = 0;
    state.lastFrameAt = Date.now();
    stopPolling();
    setConnection("live", "Live");
    sendConfigure();
    state.pingTimer = setInterval(ping, PING_MS);
  });
  socket.addEventListener("message", (event) => {
    state.lastFrameAt = Date.now();
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (frame.type === "dashboard") onDashboard(frame, frame.position);
    else if (frame.type === "error") showNotice(frame.error?.message || "The server sent an error");
  });
  socket.addEventListener("close", (event) => {
    clearTimeout(state.connectTimer);
    clearInterval(state.pingTimer);
    if (state.socket !== socket) return; // an old socket, closed on purpose
    state.socket = null;
    if (event.code === 4401) {
      signOut("The server refused this token.");
      return;
    }
    if (state.token) scheduleReconnect();
  });
}

function ping() {
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  if (Date.now() - state.lastFrameAt > SILENCE_MS) {
    socket.close(); // a half-open connection: start again
    return;
  }
  socket.send(JSON.stringify({ action: "ping" }));
}

function scheduleReconnect() {
  state.attempts += 1;
  const exponential = Math.min(BACKOFF_FIRST_MS * 2 ** (state.attempts - 1), BACKOFF_MAX_MS);
  const delay = Math.round(exponential * (0.8 + Math.random() * 0.4));
  const seconds = Math.max(1, Math.round(delay / 1000));
  if (state.pollTimer === null || !state.polledOk) {
    setConnection("reconnecting", `Reconnecting… (next try in ${seconds} s)`);
  }
  startPolling();
  state.reconnectTimer = setTimeout(connect, delay);
}

function startPolling() {
  if (state.pollTimer !== null) return;
  // A page whose WebSocket never opened reads at once; one that lost it has fresh data.
  state.pollTimer = setInterval(poll, POLL_MS);
  if (!state.everOpened) poll();
}

function stopPolling() {
  clearInterval(state.pollTimer);
  state.pollTimer = null;
  state.polledOk = false;
}

async function poll() {
  try {
    const dashboard = await read(`dashboard/?${query({ hours: hours(), ...limitSettings() })}`);
    if (state.socket?.readyState === WebSocket.OPEN) return;
    state.polledOk = true;
    setConnection("polling", "Live updates unavailable: reading every 30 s");
    onDashboard(dashboard, null);
  } catch (error) {
    state.polledOk = false;
    if (error.status === 400) showNotice(error.message);
  }
}

function sendConfigure() {
  const socket = state.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  socket.send(JSON.stringify({ action: "configure", hours: hours(), ...limitSettings() }));
}

function setConnection(kind, text) {
  const element = $("connection");
  element.dataset.state = kind;
  element.textContent = text;
}

// --- signing in and out ----------------------------------------------------------------

function signIn(token) {
  state.token = token;
  storageSet(TOKEN_KEY, token);
  $("sign-in").hidden = true;
  $("dashboard").hidden = false;
  $("sign-out").hidden = false;
  $("sign-in-error").hidden = true;
  state.everOpened = false;
  state.attempts = 0;
  setConnection("connecting", "Connecting…");
  connect();
}

function signOut(message) {
  state.token = null;
  storageSet(TOKEN_KEY, null);
  const socket = state.socket;
  state.socket = null;
  if (socket) socket.close(1000);
  clearTimeout(state.reconnectTimer);
  clearTimeout(state.refreshTimer);
  stopPolling();
  reads.waiting.splice(0).forEach((item) => item.reject(new ReadError("Signed out", 0)));
  state.dashboard = null;
  state.position = null;
  state.resetDeadline = null;
  state.selectedProject = null;
  $("dashboard").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("token-input").value = "";
  const error = $("sign-in-error");
  error.textContent = message || "";
  error.hidden = !message;
  setConnection("idle", "Not signed in");
  $("token-input").focus();
}

// --- rendering the dashboard -------------------------------------------------------------

function show(element, formatted) {
  element.textContent = formatted.text;
  if (formatted.title) element.title = formatted.title;
  else element.removeAttribute("title");
}

function setBar(element, percentage, kind) {
  const shown = Math.max(0, Math.min(100, percentage));
  element.className = `bar level-${kind}`;
  element.setAttribute("aria-valuenow", String(Math.round(percentage * 10) / 10));
  element.querySelector(".fill").style.width = `${shown}%`; // CSSOM: allowed by the CSP
}

function onDashboard(dashboard, position) {
  state.dashboard = dashboard;
  hideNotice();
  renderSummary(dashboard);
  renderCost(dashboard);
  renderTokens(dashboard.rate_limit);
  renderMessages(dashboard.summary);
  renderReset(dashboard.rate_limit);
  renderRates(dashboard.burn_rate);
  renderPrediction(dashboard.rate_limit);
  renderModels(dashboard);
  syncSettingsForm();
  if (position === null || position !== state.position) {
    state.position = position;
    scheduleRefresh();
  }
}

function renderSummary(dashboard) {
  const summary = dashboard.summary;
  $("range-hours").textContent = fmt.decimal(summary.time_range_hours);
  show($("total-tokens"), fmt.count(summary.total_tokens));
  show($("total-input"), fmt.count(summary.input_tokens));
  show($("total-output"), fmt.count(summary.output_tokens));
  show($("total-cache-write"), fmt.count(summary.cache_creation_tokens));
  show($("total-cache-read"), fmt.count(summary.cache_read_tokens));
  show($("total-messages"), fmt.count(summary.total_messages));
  show($("total-cost"), fmt.money(summary.total_cost_usd));
}

function renderCost(dashboard) {
  const cost = Number(dashboard.summary.total_cost_usd) || 0;
  const limit = budget();
  const percentage = (100 * cost) / limit;
  show($("cost-value"), fmt.money(cost));
  setBar($("cost-bar"), percentage, percentage > 80 ? "bad" : percentage > 50 ? "warn" : "none");
  const chosen = Number(state.settings.budget) > 0;
  $("cost-bar-label").textContent =
    `${fmt.percent(percentage)} of a ${fmt.money(limit).text} budget` +
    (chosen ? "" : ` (${PLAN_NAMES[plan()] || plan()} default: set yours above)`);
  const unpriced = dashboard.summary.unpriced_models || [];
  const flag = $("cost-unpriced");
  flag.hidden = unpriced.length === 0;
  flag.textContent = unpriced.length
    ? `Without a price, left out of the cost: ${unpriced.join(", ")}`
    : "";
}

function renderTokens(rateLimit) {
  const used = Number(rateLimit.limit_tokens_used) || 0;
  const percentage = Number(rateLimit.used_percentage) || 0;
  show($("tokens-value"), fmt.count(used));
  setBar($("tokens-bar"), percentage, fmt.level(percentage));
  const limit = fmt.exactCount(rateLimit.token_limit);
  $("tokens-bar-label").textContent =
    `${fmt.percent(percentage)} of ${limit} (${PLAN_NAMES[rateLimit.plan] || rateLimit.plan} plan)` +
    ` · input and output; ${fmt.count(rateLimit.current_window_tokens).text} with cache`;
  $("limit-source").textContent =
    rateLimit.source === "official"
      ? "Source: Claude's own reading (statusline)"
      : "Source: our estimate from your messages";
}

function renderMessages(summary) {
  const messages = Number(summary.total_messages) || 0;
  show($("messages-value"), fmt.count(messages));
  const limit = PLAN_MESSAGES[plan()];
  if (!limit) {
    setBar($("messages-bar"), 0, "none");
    $("messages-bar-label").textContent = "no message limit known for a custom plan";
    return;
  }
  const percentage = (100 * messages) / limit;
  setBar($("messages-bar"), percentage, fmt.level(percentage));
  $("messages-bar-label").textContent =
    `${fmt.percent(percentage)} of ${fmt.exactCount(limit)} (${PLAN_NAMES[plan()]}, claude-monitor's figure)`;
}

function renderReset(rateLimit) {
  if (!rateLimit.is_within_active_window || rateLimit.time_until_reset_seconds == null) {
    state.resetDeadline = null;
    $("reset-detail").textContent = "No active window: the next message starts one.";
  } else {
    state.resetDeadline = performance.now() + 1000 * Number(rateLimit.time_until_reset_seconds);
    const at = new Date(rateLimit.next_reset_at);
    $("reset-detail").textContent = `resets at ${fmt.clock(at)}`;
    $("reset-detail").title = at.toString();
  }
  tickCountdown();
}

function tickCountdown() {
  const element = $("reset-value");
  if (state.resetDeadline === null) {
    element.textContent = "–";
    element.classList.remove("bad");
    return;
  }
  const seconds = Math.max(0, (state.resetDeadline - performance.now()) / 1000);
  element.textContent = fmt.duration(seconds);
  element.classList.toggle("bad", seconds < WARN_RESET_SECONDS);
}

function renderRates(burnRate) {
  const perMinute = Number(burnRate.tokens_per_minute) || 0;
  setFigure($("burn-value"), fmt.decimal(perMinute), " tokens/min", `${perMinute} tokens/min`);
  const cost = fmt.money(burnRate.cost_per_minute_usd);
  setFigure($("cost-rate-value"), cost.text, "/min", `${cost.title}/min`);
}

function setFigure(element, figure, unit, title) {
  const small = document.createElement("span");
  small.className = "unit";
  small.textContent = unit;
  element.replaceChildren(figure, small);
  element.title = title;
}

function renderPrediction(rateLimit) {
  const element = $("prediction");
  const prediction = rateLimit.predictions || {};
  element.hidden = false;
  if (prediction.tokens_will_run_out) {
    element.className = "prediction warning";
    element.setAttribute("role", "alert");
    const at = prediction.estimated_limit_at ? new Date(prediction.estimated_limit_at) : null;
    element.textContent =
      prediction.estimated_time_to_limit === "Limit reached"
        ? "⚠ Token limit reached for this window."
        : `⚠ Tokens will run out in ${prediction.estimated_time_to_limit}` +
          (at ? ` (about ${fmt.clock(at)}), before the window resets.` : ".");
  } else {
    element.className = "prediction";
    element.removeAttribute("role");
    element.textContent = `Prediction: ${prediction.estimated_time_to_limit || "Not reaching limit"}.`;
  }
}

function renderModels(dashboard) {
  const list = $("models");
  const unpriced = new Set(dashboard.summary.unpriced_models || []);
  const items = dashboard.model_distribution.map((model) => {
    const item = document.createElement("li");
    const line = document.createElement("div");
    line.className = "model-line";
    const name = document.createElement("span");
    name.className = "model-name";
    name.textContent = model.model;
    if (unpriced.has(model.model)) {
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = "unpriced";
      badge.title = "No price is known for this model: its cost is left out";
      name.append(badge);
    }
    const figures = document.createElement("span");
    figures.className = "model-figures";
    const tokens = fmt.count(model.tokens);
    const cost = fmt.money(model.cost_usd);
    figures.textContent =
      `${fmt.percent(model.percentage)} · ${tokens.text} tokens · ` +
      `${fmt.exactCount(model.messages)} messages · ${cost.text}`;
    figures.title = `${tokens.title} tokens, ${cost.title}`;
    line.append(name, figures);
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.className = "fill";
    bar.append(fill);
    fill.style.width = `${Math.max(0, Math.min(100, Number(model.percentage) || 0))}%`;
    item.append(line, bar);
    return item;
  });
  list.replaceChildren(...items);
  $("models-empty").hidden = items.length > 0;
}

// --- REST reads after a change: the chart and the tables --------------------------------

function scheduleRefresh() {
  if (state.refreshTimer !== null) return;
  const wait = Math.max(0, state.lastRefreshAt + REFRESH_SPACING_MS - Date.now());
  state.refreshTimer = setTimeout(() => {
    state.refreshTimer = null;
    state.lastRefreshAt = Date.now();
    refreshReads();
  }, wait);
}

function refreshReads() {
  loadTimeseries();
  loadProjects();
  loadStats();
  if (state.selectedProject) loadSessions(state.selectedProject);
}

function reportFailure(element, error) {
  if (error.status === 0 && !state.token) return; // signed out meanwhile
  element.textContent = `Could not load: ${error.message}`;
}

async function loadTimeseries() {
  const status = $("chart-status");
  try {
    const series = await read(`timeseries/?${query({ hours: hours(), interval: interval() })}`);
    status.textContent = `${series.data_points.length} points of ${series.interval}, ${fmt.when(series.start_time).text} to ${fmt.when(series.end_time).text}`;
    drawChart(series);
  } catch (error) {
    reportFailure(status, error);
  }
}

async function loadProjects() {
  try {
    const answer = await read("projects/");
    state.tables.projects = answer.projects;
    renderProjects();
  } catch (error) {
    reportFailure($("tables-unpriced"), error);
    $("tables-unpriced").hidden = false;
  }
}

async function loadStats() {
  try {
    const stats = await read("stats/");
    state.tables.hosts = stats.hosts || [];
    renderHosts();
    const unpriced = stats.unpriced_models || [];
    const flag = $("tables-unpriced");
    flag.hidden = unpriced.length === 0;
    flag.textContent = unpriced.length
      ? `Costs in these tables leave out models without a price: ${unpriced.join(", ")}`
      : "";
  } catch (error) {
    reportFailure($("tables-unpriced"), error);
    $("tables-unpriced").hidden = false;
  }
}

async function loadSessions(project) {
  try {
    const answer = await read(`projects/${encodeURIComponent(project.id)}/sessions/`);
    if (state.selectedProject?.id !== project.id) return;
    state.tables.sessions = answer.sessions;
    renderSessions();
  } catch (error) {
    if (error.status === 404) {
      state.selectedProject = null;
      $("sessions-panel").hidden = true;
    }
  }
}

// --- tables -------------------------------------------------------------------------------

const COLUMNS = {
  projects: [
    { key: "name", label: "Project", kind: "project" },
    { key: "total_sessions", label: "Sessions", kind: "count" },
    { key: "total_messages", label: "Messages", kind: "count" },
    { key: "total_tokens", label: "Tokens", kind: "count" },
    { key: "total_cost", label: "Cost", kind: "money" },
    { key: "updated_at", label: "Last activity", kind: "time" },
  ],
  sessions: [
    { key: "session_id", label: "Session", kind: "session" },
    { key: "first_activity", label: "Started", kind: "time" },
    { key: "last_activity", label: "Last activity", kind: "time" },
    { key: "total_messages", label: "Messages", kind: "count" },
    { key: "total_tokens", label: "Tokens", kind: "count" },
    { key: "total_cost", label: "Cost", kind: "money" },
  ],
  hosts: [
    { key: "host", label: "Machine", kind: "text" },
    { key: "total_messages", label: "Messages", kind: "count" },
    { key: "total_tokens", label: "Tokens", kind: "count" },
    { key: "total_cost_usd", label: "Cost", kind: "money" },
    { key: "last_seen", label: "Last seen", kind: "time" },
  ],
};

const NUMERIC = new Set(["count", "money"]);

function compareRows(key, ascending) {
  return (left, right) => {
    const a = left[key];
    const b = right[key];
    let order;
    if (typeof a === "number" && typeof b === "number") order = a - b;
    else order = String(a ?? "").localeCompare(String(b ?? ""));
    return ascending ? order : -order;
  };
}

function renderTable(name, onSelect) {
  const table = $(`${name}-table`);
  const columns = COLUMNS[name];
  const sort = state.sorts[name];
  const head = document.createElement("thead");
  const headRow = document.createElement("tr");
  for (const column of columns) {
    const th = document.createElement("th");
    th.scope = "col";
    if (NUMERIC.has(column.kind)) th.className = "number";
    if (sort.key === column.key) th.setAttribute("aria-sort", sort.ascending ? "ascending" : "descending");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = column.label;
    button.addEventListener("click", () => {
      state.sorts[name] = {
        key: column.key,
        ascending: sort.key === column.key ? !sort.ascending : !NUMERIC.has(column.kind) && column.kind !== "time",
      };
      renderTable(name, onSelect);
      table.querySelector(`th:nth-child(${columns.indexOf(column) + 1}) button`).focus();
    });
    th.append(button);
    headRow.append(th);
  }
  head.append(headRow);
  const body = document.createElement("tbody");
  const rows = [...state.tables[name]].sort(compareRows(sort.key, sort.ascending));
  for (const row of rows) body.append(tableRow(name, columns, row, onSelect));
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = columns.length;
    td.className = "empty";
    td.textContent = "Nothing yet.";
    tr.append(td);
    body.append(tr);
  }
  table.replaceChildren(head, body);
}

function tableRow(name, columns, row, onSelect) {
  const tr = document.createElement("tr");
  if (name === "projects" && state.selectedProject?.id === row.id) tr.className = "selected";
  for (const column of columns) {
    const td = document.createElement(column.kind === "project" || column.kind === "session" || column.key === "host" ? "th" : "td");
    if (td.tagName === "TH") td.scope = "row";
    const value = row[column.key];
    if (column.kind === "count") {
      td.className = "number";
      show(td, fmt.count(value));
    } else if (column.kind === "money") {
      td.className = "number";
      show(td, fmt.money(value));
    } else if (column.kind === "time") {
      show(td, fmt.when(value));
    } else if (column.kind === "project") {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "link";
      button.textContent = value;
      button.title = row.path || value;
      button.addEventListener("click", () => onSelect(row));
      td.append(button);
    } else if (column.kind === "session") {
      td.textContent = String(value).slice(0, 8);
      td.title = String(value);
    } else {
      td.textContent = String(value ?? "");
    }
    tr.append(td);
  }
  return tr;
}

function renderProjects() {
  renderTable("projects", selectProject);
}

function renderSessions() {
  renderTable("sessions");
}

function renderHosts() {
  renderTable("hosts");
}

function selectProject(project) {
  state.selectedProject = project;
  state.tables.sessions = [];
  $("sessions-title").textContent = `Sessions of ${project.name}`;
  $("sessions-panel").hidden = false;
  renderProjects();
  renderSessions();
  loadSessions(project);
}

// --- the chart (uPlot) ------------------------------------------------------------------

const SERIES = [
  { key: "input_tokens", label: "Input", color: "--series-input" },
  { key: "output_tokens", label: "Output", color: "--series-output" },
  { key: "cache_creation_tokens", label: "Cache write", color: "--series-cache-write" },
  { key: "cache_read_tokens", label: "Cache read", color: "--series-cache-read" },
];

function cssColor(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function chartOptions(width) {
  const text = cssColor("--muted");
  const grid = cssColor("--border");
  const axis = { stroke: text, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  const countValues = (_chart, ticks) => ticks.map((tick) => fmt.count(tick).text);
  return {
    width,
    height: 300,
    scales: { x: { time: true }, y: { range: (_chart, _min, max) => [0, max || 1] }, m: { range: (_chart, _min, max) => [0, max || 1] } },
    series: [
      { value: (_chart, seconds) => (seconds == null ? "–" : fmt.when(new Date(seconds * 1000).toISOString()).text) },
      ...SERIES.map((series) => ({
        label: series.label,
        stroke: cssColor(series.color),
        width: 2,
        points: { show: false },
        value: (_chart, value) => (value == null ? "–" : fmt.exactCount(value)),
      })),
      {
        label: "Messages",
        scale: "m",
        stroke: cssColor("--series-messages"),
        width: 1.5,
        dash: [6, 4],
        points: { show: false },
        value: (_chart, value) => (value == null ? "–" : fmt.exactCount(value)),
      },
    ],
    axes: [
      { ...axis },
      { ...axis, scale: "y", values: countValues, size: 60 },
      { ...axis, scale: "m", side: 1, grid: { show: false }, values: countValues, size: 50 },
    ],
  };
}

function drawChart(series) {
  const points = series.data_points;
  state.chartData = [
    points.map((point) => Date.parse(point.timestamp) / 1000),
    ...SERIES.map((kind) => points.map((point) => point[kind.key])),
    points.map((point) => point.message_count),
  ];
  if (!window.uPlot) return;
  if (state.chart) state.chart.setData(state.chartData);
  else buildChart();
}

function buildChart() {
  if (!state.chartData || !window.uPlot) return;
  const container = $("chart");
  if (state.chart) state.chart.destroy();
  container.replaceChildren();
  state.chart = new window.uPlot(chartOptions(Math.max(200, container.clientWidth)), state.chartData, container);
}

function resizeChart() {
  const container = $("chart");
  if (state.chart && container.clientWidth) {
    state.chart.setSize({ width: container.clientWidth, height: 300 });
  }
}

// --- settings controls --------------------------------------------------------------------

function syncSettingsForm() {
  $("plan").value = plan();
  $("window-align").value = state.settings.window_align || "hour";
  $("hours").value = String(hours());
  if ($("hours").value !== String(hours())) addHoursOption(hours());
  $("interval").value = interval();
  if (document.activeElement !== $("token-limit")) $("token-limit").value = state.settings.token_limit || "";
  if (document.activeElement !== $("budget")) $("budget").value = state.settings.budget || "";
}

function addHoursOption(value) {
  const option = document.createElement("option");
  option.value = String(value);
  option.textContent = `${value} hours`;
  $("hours").append(option);
  $("hours").value = String(value);
}

let settingsTimer = null;

function onSettingsChanged() {
  const form = $("settings");
  const next = {
    plan: form.plan.value,
    token_limit: form.token_limit.value && Number(form.token_limit.value) > 0 ? String(Math.round(Number(form.token_limit.value))) : "",
    hours: Number(form.hours.value),
    window_align: form.window_align.value,
    interval: form.interval.value,
    budget: form.budget.value && Number(form.budget.value) > 0 ? String(Number(form.budget.value)) : "",
  };
  const before = state.settings;
  state.settings = next;
  storageSet(SETTINGS_KEY, JSON.stringify(next));
  if (state.dashboard) renderCost(state.dashboard);
  if (state.dashboard) renderMessages(state.dashboard.summary);
  clearTimeout(settingsTimer);
  settingsTimer = setTimeout(() => {
    const limitsChanged = ["plan", "token_limit", "hours", "window_align"].some((name) => before[name] !== next[name]);
    if (limitsChanged) {
      if (state.socket?.readyState === WebSocket.OPEN) sendConfigure();
      else if (state.pollTimer !== null) poll();
    }
    if (before.hours !== next.hours || before.interval !== next.interval) loadTimeseries();
  }, SETTINGS_DEBOUNCE_MS);
}

// --- notices ------------------------------------------------------------------------------

function showNotice(message) {
  const notice = $("notice");
  notice.textContent = message;
  notice.hidden = false;
}

function hideNotice() {
  $("notice").hidden = true;
}

// --- start ------------------------------------------------------------------------------

function start() {
  $("time-zone").textContent = fmt.timeZone();
  $("sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    if (token) signIn(token);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("settings").addEventListener("change", onSettingsChanged);
  $("settings").addEventListener("submit", (event) => event.preventDefault());
  setInterval(tickCountdown, 1000);
  new ResizeObserver(resizeChart).observe($("chart"));
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", buildChart);
  syncSettingsForm();
  const token = storageGet(TOKEN_KEY);
  if (token) signIn(token);
  else signOut("");
}

start();
