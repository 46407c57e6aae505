// The Dashboard: polls GET /v1/stats every second and charts it with uPlot (vendored from npm
// in /vendor/uplot). The server reports counters (published, delivered, dropped, …); rates
// are their differences between two polls.

import uPlot from "/vendor/uplot/uPlot.esm.js";
import { $, el, bytes, errorText, num } from "./ui.js";

const POLL_MS = 1000;
const TOPICS_EVERY = 5; // polls
const KEEP = 300; // points: five minutes

const TILES = [
  ["in", "messages in /s", (s, r) => r.published],
  ["out", "messages out /s", (s, r) => r.delivered],
  ["connections", "connections", (s) => s.connections],
  ["sessions", "sessions", (s) => s.sessions],
  ["subscriptions", "subscriptions", (s) => s.subscriptions],
  ["topics", "topics", (s) => s.topics],
  ["dropped", "dropped /s", (s, r) => r.dropped],
  ["held", "buffered messages", (s) => s.buffer?.messages],
  ["bytes", "buffered bytes", (s) => s.buffer?.bytes, bytes],
  ["requests", "pending requests", (s) => s.pending_requests],
  ["p99", "p99 latency (ms)", (s) => s.latency_ms?.p99, (v) => ms(v)],
  ["uptime", "uptime", (s) => s.uptime_ms, (ms) => uptime(ms)],
];

function uptime(ms) {
  if (ms === undefined) return "–";
  const s = Math.floor(ms / 1000);
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

const ms = (v) => (v < 10 ? v.toFixed(2) : num(v));

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim() || "#888";
}

export function mountDashboard(root) {
  const keyInput = $("dash-key");
  keyInput.value = sessionStorage.getItem("herald.adminKey") || "";
  keyInput.addEventListener("change", () => sessionStorage.setItem("herald.adminKey", keyInput.value.trim()));

  const tiles = new Map();
  $("dash-tiles").replaceChildren(
    ...TILES.map(([id, label]) => {
      const value = el("div", { class: "value", text: "–" });
      tiles.set(id, value);
      return el("div", { class: "tile", id: `tile-${id}` }, el("div", { class: "label", text: label }), value);
    }),
  );

  const data = {
    t: [],
    in: [],
    out: [],
    connections: [],
    sessions: [],
    subscriptions: [],
    topics: [],
    groups: [],
    dropped: [],
    slow: [],
    redelivered: [],
    dead: [],
    p50: [],
    p90: [],
    p99: [],
    held: [],
    unsent: [],
  };
  let charts = null;
  let prev = null;
  let timer = null;
  let polls = 0;

  function makeCharts() {
    const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--line"), width: 1 }, ticks: { stroke: cssVar("--line") } };
    const line = (label, color, fmt = (v) => num(v)) => ({
      label,
      stroke: cssVar(color),
      width: 2,
      points: { show: false },
      value: (u, v) => (v === null || v === undefined ? "–" : fmt(v)),
    });
    const make = (id, series, rate) => {
      const box = $(id);
      const opts = {
        width: Math.max(280, box.clientWidth),
        height: 200,
        series: [{}, ...series],
        axes: [axis, { ...axis, size: 52, values: (u, vals) => vals.map((v) => num(v)) }],
        scales: {
          // At least a minute wide, so the first points do not stretch over an odd range.
          x: { time: true, range: (u, min, max) => (max === null ? [Date.now() / 1000 - 60, Date.now() / 1000] : [Math.min(min, max - 60), max]) },
          y: { range: (u, min, max) => [0, Math.max(rate ? 1 : 2, (max || 0) * 1.1)] },
        },
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      };
      return new uPlot(opts, [[], ...series.map(() => [])], box);
    };
    charts = {
      rates: make("chart-rates", [line("in /s", "--c1"), line("out /s", "--c3")], true),
      conns: make("chart-conns", [line("connections", "--c1"), line("sessions", "--c3"), line("subscriptions", "--c5")]),
      topics: make("chart-topics", [line("topics", "--c1"), line("queue groups", "--c4")]),
      drops: make("chart-drops", [line("dropped /s", "--c2"), line("slow consumers /s", "--c4"), line("redelivered /s", "--c5"), line("dead-lettered /s", "--c1")], true),
      buffers: make("chart-buffers", [line("held", "--c1"), line("unsent", "--c2")]),
      latency: make("chart-latency", [line("p50", "--c3", ms), line("p90", "--c4", ms), line("p99", "--c2", ms)], true),
    };
    const ro = new ResizeObserver(() => {
      for (const [name, chart] of Object.entries(charts)) {
        const box = $(`chart-${name}`);
        if (box.clientWidth > 0) chart.setSize({ width: box.clientWidth, height: 200 });
      }
    });
    for (const name of Object.keys(charts)) ro.observe($(`chart-${name}`));
  }

  function push(key, v) {
    data[key].push(v);
    if (data[key].length > KEEP) data[key].shift();
  }

  const SERIES = {
    rates: ["in", "out"],
    conns: ["connections", "sessions", "subscriptions"],
    topics: ["topics", "groups"],
    drops: ["dropped", "slow", "redelivered", "dead"],
    buffers: ["held", "unsent"],
    latency: ["p50", "p90", "p99"],
  };

  function draw() {
    if (!charts) return;
    for (const [name, keys] of Object.entries(SERIES)) {
      charts[name].setData([data.t, ...keys.map((k) => data[k])]);
      // The latest point of each line, for whoever reads the page without looking (tests,
      // screen readers): `data-last="12,0"`.
      const box = $(`chart-${name}`);
      box.dataset.last = keys.map((k) => data[k].at(-1) ?? "").join(",");
      box.dataset.points = String(data.t.length);
    }
  }

  function headers() {
    const key = keyInput.value.trim();
    return key ? { authorization: `Bearer ${key}` } : {};
  }

  async function poll() {
    const status = $("dash-status");
    let s;
    try {
      const res = await fetch("/v1/stats", { headers: headers(), cache: "no-store" });
      const body = await res.json();
      if (!res.ok) throw Object.assign(new Error(body.error?.message || res.statusText), { code: body.error?.code || res.status });
      s = body;
    } catch (err) {
      status.textContent = `cannot read /v1/stats: ${errorText(err)}`;
      return;
    }
    const now = Date.now();
    const rate = { published: null, delivered: null, dropped: null, slow: null, redelivered: null, dead: null };
    if (prev) {
      const dt = (now - prev.at) / 1000;
      // Counters only grow; a restarted server starts again from zero (so no negative rates).
      const per = (key) => (typeof s[key] === "number" && typeof prev.stats[key] === "number" ? Math.max(0, (s[key] - prev.stats[key]) / dt) : null);
      if (dt > 0) {
        rate.published = per("published");
        rate.delivered = per("delivered");
        rate.dropped = per("dropped");
        rate.slow = per("slow_consumers");
        rate.redelivered = per("redelivered");
        rate.dead = per("dead_lettered");
      }
    }
    prev = { at: now, stats: s };
    status.textContent = `live · updated ${new Date(now).toLocaleTimeString()}`;

    for (const [id, , get, fmt] of TILES) {
      const v = get(s, rate);
      const node = tiles.get(id);
      node.textContent = v === null || v === undefined ? "–" : (fmt || num)(v);
      node.dataset.value = v === null || v === undefined ? "" : String(v);
    }
    if (rate.published !== null) {
      push("t", now / 1000);
      push("in", rate.published);
      push("out", rate.delivered);
      push("connections", s.connections);
      push("sessions", s.sessions);
      push("subscriptions", s.subscriptions);
      push("topics", s.topics ?? null);
      push("groups", s.groups ?? null);
      push("dropped", rate.dropped);
      push("slow", rate.slow);
      push("redelivered", rate.redelivered);
      push("dead", rate.dead);
      push("held", s.buffer?.messages ?? null);
      push("unsent", s.buffer?.unsent ?? null);
      push("p50", s.latency_ms?.p50 ?? null);
      push("p90", s.latency_ms?.p90 ?? null);
      push("p99", s.latency_ms?.p99 ?? null);
      draw();
    }
    if (polls++ % TOPICS_EVERY === 0) loadTopics();
  }

  async function loadTopics() {
    try {
      const res = await fetch("/v1/topics", { headers: headers(), cache: "no-store" });
      if (!res.ok) return;
      const rows = (await res.json()).sort((a, b) => b.offset - a.offset || b.subscribers - a.subscribers).slice(0, 15);
      $("dash-topics").replaceChildren(
        ...(rows.length
          ? rows.map((r) => el("tr", {}, el("td", {}, el("code", { text: r.topic })), el("td", { text: String(r.subscribers) }), el("td", { text: String(r.offset) })))
          : [el("tr", {}, el("td", { colspan: "3", class: "muted", text: "no topics yet" }))]),
      );
    } catch {
      /* the stats line already says when the server is unreachable */
    }
  }

  function start() {
    if (timer) return;
    poll();
    timer = setInterval(() => {
      if (document.visibilityState === "visible") poll();
    }, POLL_MS);
  }

  return {
    visible(shown) {
      if (!shown) return;
      // uPlot measures its box, so charts are made the first time the tab is on screen.
      if (!charts) makeCharts();
      draw();
      start();
    },
  };
}
