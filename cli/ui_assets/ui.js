// headwater ui: renders /api/overview and /api/apps, follows /api/events (server-sent
// events, read through fetch so that a bearer token can be sent), browses records.
"use strict";

const state = { token: null, points: [], overview: null, apps: [], tablesKey: null };
const COLORS = ["#0b6bcb", "#b45309", "#15803d", "#7c3aed", "#be123c", "#0e7490", "#4d7c0f", "#a16207"];
const MAX_POINTS = 300;

const $ = (selector) => document.querySelector(selector);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child ?? ""));
  return node;
}

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
}

function number(value) {
  return value === null || value === undefined ? "-" : Math.round(value).toLocaleString("en");
}

function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

class ApiError extends Error {}

async function api(path) {
  const response = await fetch(path, { headers: headers() });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (response.status === 401) askToken();
  if (!response.ok) throw new ApiError(body.error || `HTTP ${response.status}`);
  return body;
}

function askToken() {
  $("#token-form").hidden = false;
  setStatus("error", "token needed");
}

function setStatus(name, text) {
  const status = $("#status");
  status.dataset.state = name;
  status.textContent = text;
}

function showError(message) {
  const error = $("#error");
  error.hidden = !message;
  error.textContent = message || "";
}

// --- tables -----------------------------------------------------------------

function renderOverview(view) {
  state.overview = view;
  $("#title").textContent = view.title || "";
  showError(view.error ? `the log cannot be read now: ${view.error}` : "");
  renderAppRates(view.apps || []);
  // Tables are redrawn only when what they show changed, so that a link is not pulled
  // from under a pointer at every look.
  const key = JSON.stringify([view.topics, view.groups]);
  if (key === state.tablesKey) return;
  state.tablesKey = key;
  const topics = $("#topics tbody");
  topics.replaceChildren();
  const names = $("#topic-names");
  names.replaceChildren();
  for (const topic of view.topics) {
    if (topic.internal) continue;
    names.append(el("option", { value: topic.name }));
    topic.partitions.forEach((p, i) => {
      topics.append(el("tr", { class: i ? "sub" : "", dataset: { topic: topic.name, partition: p.partition } },
        el("td", { class: "name" }, topic.name),
        el("td", { class: "num" }, p.partition),
        el("td", { class: "num start" }, number(p.log_start_offset)),
        el("td", { class: "num end" }, number(p.high_watermark)),
        el("td", { class: "num records" }, i ? "" : number(topic.records)),
        el("td", { class: "num" }, i ? "" : number(topic.rate_in)),
        el("td", { class: "num" }, i ? "" : number(topic.rate_out)),
        el("td", {}, el("a", { class: "browse", onclick: () => browse(topic.name, p.partition, "") }, "browse"))));
    });
  }
  const groups = $("#groups tbody");
  groups.replaceChildren();
  for (const group of view.groups) {
    const rows = group.partitions.length ? group.partitions : [null];
    rows.forEach((p, i) => {
      const trend = !p || p.lag === null || p.lag_before === null ? ""
        : p.lag < p.lag_before ? "▼" : p.lag > p.lag_before ? "▲" : "=";
      groups.append(el("tr", { class: i ? "sub" : "", dataset: p ? { group: group.group, topic: p.topic, partition: p.partition } : { group: group.group } },
        el("td", { class: "name" }, group.group),
        el("td", {}, i ? "" : group.state),
        el("td", { class: "num" }, i ? "" : group.members),
        el("td", {}, p ? `${p.topic}/${p.partition}` : "-"),
        el("td", { class: "num committed" }, p ? number(p.committed) : ""),
        el("td", { class: "num end" }, p ? number(p.log_end_offset) : ""),
        el("td", { class: "num lag" }, p ? number(p.lag) : ""),
        el("td", { class: trend === "▼" ? "trend-down" : trend === "▲" ? "trend-up" : "" }, trend)));
    });
  }
}

// --- charts -----------------------------------------------------------------

function drawChart(target, series) {
  const width = 600, height = 180, left = 48, right = 110, top = 10, bottom = 22;
  const names = Object.keys(series).sort();
  const all = names.flatMap((name) => series[name].map((p) => p[1]));
  const times = names.flatMap((name) => series[name].map((p) => p[0]));
  target.replaceChildren();
  if (!all.length) {
    target.append(svg("text", { x: left, y: height / 2 }, "waiting for two looks at the log"));
    return;
  }
  const high = Math.max(1, ...all);
  const t0 = Math.min(...times), t1 = Math.max(t0 + 1, ...times);
  const x = (t) => left + ((t - t0) / (t1 - t0)) * (width - left - right);
  const y = (v) => top + (1 - v / high) * (height - top - bottom);
  target.append(
    svg("line", { class: "axis", x1: left, y1: y(0), x2: width - right, y2: y(0) }),
    svg("line", { class: "axis", x1: left, y1: top, x2: left, y2: y(0) }),
    svg("text", { x: 4, y: top + 8 }, number(high)),
    svg("text", { x: 4, y: y(0) }, "0"),
    svg("text", { x: left, y: height - 4 }, new Date(t0).toLocaleTimeString()),
    svg("text", { x: width - right - 60, y: height - 4 }, new Date(t1).toLocaleTimeString()));
  names.forEach((name, i) => {
    const color = COLORS[i % COLORS.length];
    const points = series[name].map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    target.append(svg("polyline", { class: "series", stroke: color, points, "data-name": name }));
    const last = series[name][series[name].length - 1];
    target.append(svg("text", { x: width - right + 6, y: 14 + i * 14, fill: color }, `${name} ${number(last[1])}`));
  });
}

function drawCharts() {
  const rate = {}, lag = {};
  for (const point of state.points) {
    for (const [name, value] of Object.entries(point.rate_in)) (rate[name] ||= []).push([point.at, value]);
    for (const [name, value] of Object.entries(point.lag)) (lag[name] ||= []).push([point.at, value]);
  }
  drawChart($("#chart-rate"), rate);
  drawChart($("#chart-lag"), lag);
}

// --- apps: the topology as a layered graph -----------------------------------

function renderApps(apps) {
  state.apps = apps;
  const box = $("#apps");
  if (!apps.length) return;
  box.replaceChildren();
  for (const app of apps) {
    const nodeWidth = 220, nodeHeight = 40, gapX = 30, gapY = 36;
    const width = Math.max(1, app.width) * (nodeWidth + gapX) + gapX;
    const height = app.layers * (nodeHeight + gapY) + gapY;
    const place = {};
    const graph = svg("svg", { class: "topology", width, height, viewBox: `0 0 ${width} ${height}`, "data-app": app.name });
    graph.append(svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" },
      svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#6a737d" }))));
    for (const node of app.nodes) {
      place[node.id] = { x: gapX + node.slot * (nodeWidth + gapX), y: gapY / 2 + node.layer * (nodeHeight + gapY) };
    }
    for (const [from, to] of app.edges) {
      const a = place[from], b = place[to];
      const x1 = a.x + nodeWidth / 2, y1 = a.y + nodeHeight, x2 = b.x + nodeWidth / 2, y2 = b.y;
      const middle = (y1 + y2) / 2;
      graph.append(svg("path", { d: `M${x1},${y1} C${x1},${middle} ${x2},${middle} ${x2},${y2}` }));
    }
    for (const node of app.nodes) {
      const { x, y } = place[node.id];
      const label = node.label.length > 34 ? `${node.label.slice(0, 33)}…` : node.label;
      graph.append(svg("g", { class: `${node.role}${node.live ? "" : " unused"}`, "data-node": node.id, "data-label": node.label },
        svg("title", {}, `${node.label} ${node.detail}`.trim()),
        svg("rect", { x, y, width: nodeWidth, height: nodeHeight }),
        svg("text", { x: x + 8, y: y + 16 }, label),
        svg("text", { class: "rate", x: x + 8, y: y + 32 }, "")));
    }
    box.append(el("h3", {}, `app ${app.name}`), graph,
      el("details", { class: "describe" }, el("summary", {}, "as headwater describe prints it"), el("pre", {}, app.description)));
  }
  if (state.overview) renderAppRates(state.overview.apps || []);
}

function renderAppRates(apps) {
  for (const app of apps) {
    const graph = document.querySelector(`svg.topology[data-app="${CSS.escape(app.name)}"]`);
    if (!graph) continue;
    for (const op of app.operators) {
      const node = graph.querySelector(`g[data-label="${CSS.escape(op.operator)}"] text.rate`);
      if (node) node.textContent = `in ${number(op.rate_in)}/s  out ${number(op.rate_out)}/s  skipped ${number(op.skipped)}`;
    }
  }
}

// --- the record browser -------------------------------------------------------

function shown(data) {
  if (data === null || data === undefined) return el("span", { class: "note" }, "(none)");
  if ("json" in data) return el("pre", { class: "json" }, data.shown ?? JSON.stringify(data.json, null, 2));
  if ("text" in data) return el("pre", {}, data.text);
  return el("pre", { class: "note" }, `base64 ${data.base64}`);
}

function sourceLink(source) {
  if (!source) return el("span", { class: "note" }, "-");
  const where = `${source.topic}/${source.partition}/${source.offset}`;
  return el("a", { class: "source", onclick: () => browse(source.topic, source.partition, String(source.offset), source.offset) }, where);
}

function recordRow(record, picked) {
  const headerList = el("ul", { class: "headers" });
  for (const h of record.headers) headerList.append(el("li", {}, `${h.name}: `, h.value === null ? "(none)" : h.value.text ?? `base64 ${h.value.base64}`));
  return el("tr", { class: record.offset === picked ? "picked" : "", dataset: { topic: record.topic, partition: record.partition, offset: record.offset } },
    el("td", { class: "num" }, el("a", { class: "trace", title: "lineage", onclick: () => trace(record.topic, record.partition, record.offset) }, record.offset)),
    el("td", {}, new Date(record.timestamp).toISOString()),
    el("td", { class: "key" }, shown(record.key)),
    el("td", { class: "value" }, shown(record.value)),
    el("td", {}, headerList),
    el("td", {}, sourceLink(record.source)));
}

async function browse(topic, partition, from, picked) {
  $("#browse-topic").value = topic;
  $("#browse-partition").value = partition;
  $("#browse-mode").value = "offset";
  $("#browse-from").value = from;
  await loadRecords(picked);
  if (picked !== undefined) await trace(topic, partition, picked);
  $("#browser").scrollIntoView();
}

async function loadRecords(picked) {
  const params = new URLSearchParams({
    topic: $("#browse-topic").value,
    partition: $("#browse-partition").value || "0",
    limit: $("#browse-limit").value || "50",
  });
  const from = $("#browse-from").value.trim();
  if (from) params.set($("#browse-mode").value, from);
  const body = $("#records tbody");
  const error = $("#browse-error");
  try {
    const page = await api(`/api/records?${params}`);
    error.hidden = true;
    body.replaceChildren(...page.records.map((r) => recordRow(r, picked)));
    if (!page.records.length) body.append(el("tr", {}, el("td", { colspan: 6, class: "note" }, "no records there yet")));
  } catch (exc) {
    error.hidden = false;
    error.textContent = exc.message;
    body.replaceChildren();
  }
}

async function trace(topic, partition, offset) {
  const list = $("#lineage-steps");
  $("#lineage").hidden = false;
  try {
    const found = await api(`/api/lineage?${new URLSearchParams({ topic, partition, offset })}`);
    list.replaceChildren(...found.steps.map((step) => {
      const p = step.position;
      const where = `${p.topic}/${p.partition}/${p.offset}`;
      if (!step.record) return el("li", { class: "error" }, `${where}: ${step.missing}`);
      const last = !step.record.source;
      return el("li", { dataset: { position: where } },
        el("a", { onclick: () => browse(p.topic, p.partition, String(p.offset), p.offset) }, where), " ",
        shown(step.record.value), last ? el("span", { class: "note" }, "a source event: it carries no lineage header") : "");
    }));
  } catch (exc) {
    list.replaceChildren(el("li", { class: "error" }, exc.message));
  }
}

// --- the live feed: server-sent events through fetch ---------------------------

function handleEvent(name, data) {
  if (name === "history") {
    state.points = data.slice(-MAX_POINTS);
    drawCharts();
  } else if (name === "overview") {
    renderOverview(data);
    if (data.point) {
      state.points.push(data.point);
      if (state.points.length > MAX_POINTS) state.points.shift();
      drawCharts();
    }
    setStatus(data.error ? "error" : "live", data.error ? "log unreadable" : "live");
  }
}

async function follow() {
  while (true) {
    let retry = 2000;
    try {
      const response = await fetch("/api/events", { headers: headers() });
      if (response.status === 401) { askToken(); return; }
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
            else if (line.startsWith("retry:")) retry = Number(line.slice(6)) || retry;
          }
          if (data) handleEvent(name, JSON.parse(data));
        }
      }
    } catch (exc) {
      setStatus("disconnected", "disconnected");
    }
    await new Promise((resolve) => setTimeout(resolve, retry));
  }
}

async function start() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem("headwater-token", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("headwater-token");
  try {
    renderOverview(await api("/api/overview"));
    renderApps(await api("/api/apps"));
  } catch (exc) {
    if (!(exc instanceof ApiError)) setStatus("disconnected", "disconnected");
    showError(exc.message);
    if (!$("#token-form").hidden) return;
  }
  follow();
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem("headwater-token", $("#token").value);
  $("#token-form").hidden = true;
  start();
});
$("#browse-form").addEventListener("submit", (event) => {
  event.preventDefault();
  loadRecords();
});
start();
