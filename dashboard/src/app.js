// metricagg dashboard: reads the API it is served by (/periods, /servers,
// /insights, /series, /fleet) and draws with uPlot. No other network access.
// State for tests and links: body[data-state] is loading | ready | empty | error;
// the URL keeps ?period=<start>&server=<id>.
"use strict";

(() => {
  const METRIC_ORDER = ["cpu", "memory", "disk_io", "network"];
  const SEVERITY_RANK = { critical: 3, warning: 2, minor: 1, ok: 0 };
  // What a health status asks of the operator (docs/api.md, "Health").
  const STATUS_MEANING = { critical: "act now", warning: "look today", ok: "nothing to do" };
  const MAX_HOURS = 168; // the longest window drawn; longer periods show their last week
  const COLORS = {
    avg: "#1d4ed8", band: "rgba(29, 78, 216, 0.16)", minmax: "rgba(29, 78, 216, 0.28)",
    p80: "#7c3aed", fc: "#0d9488", fcBand: "rgba(13, 148, 136, 0.18)",
    median: "#111827", others: "rgba(100, 116, 139, 0.35)", sel: "#1d4ed8", standout: "#ea580c",
  };

  const $ = (sel, root = document) => root.querySelector(sel);
  const el = (tag, attrs = {}, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("data-") || k.startsWith("aria-") || k === "href" || k === "role" || k === "title" || k === "type" || k === "id" || k === "value")
        e.setAttribute(k, v);
      else e[k] = v;
    }
    for (const kid of kids) if (kid !== null && kid !== undefined) e.append(kid);
    return e;
  };

  const state = {
    periods: [], period: null, range: null, servers: [], insights: null,
    server: null, series: new Map(), fleet: new Map(), charts: [], fleetCharts: [],
    load: 0,
  };

  // --- API ---------------------------------------------------------------
  // With API_TOKEN set, open the page once as /#token=<API_TOKEN>: the token
  // is kept for this tab only and removed from the address bar.
  const TOKEN = (() => {
    const m = location.hash.match(/^#token=([^&]+)$/);
    if (m) {
      sessionStorage.setItem("metricagg.token", decodeURIComponent(m[1]));
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem("metricagg.token");
  })();
  const HEADERS = TOKEN ? { accept: "application/json", authorization: `Bearer ${TOKEN}` } : { accept: "application/json" };
  // A token typed into the address bar of an open page: start again with it.
  window.addEventListener("hashchange", () => { if (/^#token=/.test(location.hash)) location.reload(); });

  async function api(path) {
    let r;
    try {
      r = await fetch(path, { headers: HEADERS });
    } catch (e) {
      throw new Error(`${path.split("?")[0]}: the API does not answer (${e.message})`);
    }
    let body = null;
    try { body = await r.json(); } catch { /* reported below */ }
    if (!r.ok) {
      const msg = body && body.error && body.error.message ? body.error.message : `HTTP ${r.status}`;
      throw new Error(`${path.split("?")[0]}: ${msg}`);
    }
    if (body === null) throw new Error(`${path.split("?")[0]}: the answer is not JSON`);
    return body;
  }
  const q = (o) => new URLSearchParams(o).toString();

  // --- formatting ----------------------------------------------------------
  const epoch = (iso) => Date.parse(iso) / 1000;
  const isoUtc = (t) => new Date(t * 1000).toISOString().replace(".000Z", "Z");
  const fmtTime = (t) => new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ");
  const fmtNum = (v) => (v === null || v === undefined || Number.isNaN(v) ? "–"
    : Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toFixed(2));
  const metricSort = (a, b) => {
    const ia = METRIC_ORDER.indexOf(a), ib = METRIC_ORDER.indexOf(b);
    return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
  };
  const natural = (a, b) => a.localeCompare(b, "en", { numeric: true });
  const slug = (s) => s.replace(/[^A-Za-z0-9_-]/g, "_");

  function setStatus(text) { $("#status").textContent = text; }
  function banner(kind, text) {
    const b = $("#banner");
    b.hidden = !text;
    b.className = `banner ${kind}`;
    b.textContent = text || "";
    if (kind === "error") b.setAttribute("role", "alert"); else b.removeAttribute("role");
  }
  const errorBox = (msg) => el("p", { class: "error", role: "alert", text: msg });
  const emptyBox = (msg) => el("p", { class: "empty", text: msg });

  function setUrl() {
    const u = new URL(location.href);
    if (state.period) u.searchParams.set("period", state.period.start);
    if (state.server) u.searchParams.set("server", state.server);
    history.replaceState(null, "", u.pathname + "?" + u.searchParams.toString() + u.hash);
  }

  // --- periods ---------------------------------------------------------------
  async function init() {
    $("#period").addEventListener("change", (e) => {
      state.server = null;
      loadPeriod(Number(e.target.value)).catch(fatal);
    });
    window.addEventListener("resize", debounce(resizeAll, 150));
    let periods, servers;
    try {
      [periods, servers] = await Promise.all([api("/periods"), api("/servers")]);
    } catch (e) {
      return fatal(e);
    }
    state.periods = periods.periods || [];
    state.servers = servers.servers || [];
    const sel = $("#period");
    sel.replaceChildren();
    if (state.periods.length === 0) {
      sel.append(el("option", { text: "no periods" }));
      banner("info", periods.message || "No data yet: run the seeder and metricagg_run_once().");
      setStatus("no data");
      $("#narrative .summary").textContent = "Nothing to narrate: no bins are stored yet.";
      document.body.dataset.state = "empty";
      return;
    }
    state.periods.forEach((p, i) => {
      const hours = (epoch(p.end) - epoch(p.start)) / 3600;
      sel.append(el("option", {
        value: String(i),
        text: `${fmtTime(epoch(p.start))} → ${fmtTime(epoch(p.end))} UTC · ${hours.toFixed(hours < 10 ? 1 : 0)} h · ${p.servers.length} servers`,
      }));
    });
    sel.disabled = false;
    const params = new URLSearchParams(location.search);
    let idx = state.periods.findIndex((p) => p.start === params.get("period"));
    if (idx < 0) idx = state.periods.length - 1;
    state.server = params.get("server");
    sel.value = String(idx);
    await loadPeriod(idx);
  }

  function fatal(e) {
    banner("error", e.message || String(e));
    setStatus("error");
    document.body.dataset.state = "error";
  }

  async function loadPeriod(idx) {
    const load = ++state.load;
    document.body.dataset.state = "loading";
    banner("", "");
    const p = state.periods[idx];
    state.period = p;
    let start = epoch(p.start);
    const end = epoch(p.end);
    if (end - start > MAX_HOURS * 3600) {
      start = end - MAX_HOURS * 3600;
      banner("info", `This period is ${Math.round((end - epoch(p.start)) / 3600)} h long; the last ${MAX_HOURS} h are shown.`);
    }
    state.range = { start, end, width: end - start <= 48 * 3600 ? "1m" : "1h" };
    state.series.clear();
    state.fleet.clear();
    setStatus("analysing…");
    const t0 = performance.now();
    let ins;
    try {
      ins = await api(`/insights?${q({ start: isoUtc(start), end: isoUtc(end) })}`);
    } catch (e) {
      if (load !== state.load) return;
      $("#servers").replaceChildren();
      renderServerList(null);
      $("#narrative .findings").replaceChildren();
      $("#narrative .summary").replaceChildren(errorBox(e.message));
      state.insights = null;
      // charts can still be drawn without the analysis
      return finishLoad(load, t0, [e.message]);
    }
    if (load !== state.load) return;
    state.insights = ins;
    renderServerList(ins);
    renderNarrative(ins);
    return finishLoad(load, t0, []);
  }

  async function finishLoad(load, t0, errors) {
    const known = serversOfPeriod();
    if (!state.server || !known.includes(state.server)) state.server = worstServer(known);
    setUrl();
    markSelected();
    const results = await Promise.allSettled([renderServer(load), renderFleet(load)]);
    if (load !== state.load) return;
    for (const r of results) if (r.status === "rejected") errors.push(r.reason.message || String(r.reason));
    const ms = performance.now() - t0;
    document.body.dataset.renderMs = String(Math.round(ms));
    if (errors.length) {
      banner("error", errors.join(" · "));
      setStatus("error");
      document.body.dataset.state = "error";
    } else {
      const ins = state.insights;
      setStatus(`${ins.servers.length} servers · ${ins.anomalies.length} anomalies · ${ins.period.width} bins · ${(ms / 1000).toFixed(1)} s`);
      document.body.dataset.state = "ready";
    }
  }

  function serversOfPeriod() {
    const names = new Set(state.period ? state.period.servers : []);
    if (state.insights) for (const h of state.insights.health) names.add(h.server);
    return [...names].sort(natural);
  }

  function healthOf(server) {
    return state.insights ? state.insights.health.find((h) => h.server === server) : undefined;
  }

  function worstServer(names) {
    let best = names[0] || null, rank = -1;
    for (const n of names) {
      const h = healthOf(n);
      const r = h ? (SEVERITY_RANK[h.status] ?? 0) * 1000 + (100 - h.score) : -1;
      if (r > rank) { rank = r; best = n; }
    }
    return best;
  }

  // --- server list -------------------------------------------------------------
  function renderServerList() {
    const ul = $("#servers");
    ul.replaceChildren();
    for (const name of serversOfPeriod()) {
      const h = healthOf(name);
      const status = h ? h.status : "nodata";
      const title = h
        ? `${h.status} (${STATUS_MEANING[h.status] || h.status}): ${h.reason}. ${h.incidents} incidents (${h.critical} critical, ${h.warnings} warning) from ${h.anomalies} anomalies; health score ${fmtNum(h.score)}${h.notes && h.notes.length ? "; " + h.notes.join("; ") : ""}`
        : "no analysis for this server in the period";
      const b = el("button", { type: "button", "data-server": name, title },
        el("span", { class: "name", text: name }),
        el("span", { class: `badge ${status}`, "data-status": status, text: status === "nodata" ? "n/a" : status }));
      b.addEventListener("click", () => selectServer(name));
      ul.append(el("li", { id: `server-${slug(name)}` }, b));
    }
  }

  function markSelected() {
    for (const b of document.querySelectorAll("#servers button")) {
      b.setAttribute("aria-current", String(b.dataset.server === state.server));
    }
    $("#server-h").textContent = state.server ? `Server ${state.server}` : "Server";
  }

  async function selectServer(name) {
    if (name === state.server && document.body.dataset.state !== "error") return;
    state.server = name;
    setUrl();
    markSelected();
    const load = state.load;
    document.body.dataset.state = "loading";
    const results = await Promise.allSettled([renderServer(load), renderFleet(load)]);
    if (load !== state.load) return;
    const errors = results.filter((r) => r.status === "rejected").map((r) => r.reason.message);
    if (errors.length) { banner("error", errors.join(" · ")); document.body.dataset.state = "error"; }
    else document.body.dataset.state = "ready";
  }

  // --- narrative -----------------------------------------------------------------
  function factTarget(f) {
    if (!f) return null;
    if (f.kind === "anomaly") return { server: f.server, hash: `anomaly-${f.id}`, label: `${f.server} ${f.metric}` };
    if (f.kind === "incident") {
      // the window of the anomaly that led
      const inc = state.insights && state.insights.incidents.find((i) => i.id === f.id);
      if (inc && inc.anomalies.length)
        return { server: f.server, hash: `anomaly-${inc.anomalies[0]}`, label: `${f.server} ${inc.metrics.join(", ")}, led by ${inc.led_by}` };
    }
    if ((f.kind === "trend" || f.kind === "forecast") && f.server && f.metric)
      return { server: f.server, hash: `chart-${slug(f.metric)}`, label: `${f.server} ${f.metric} chart` };
    if (f.kind === "comparison" && f.metric) return { server: null, hash: `fleet-${slug(f.metric)}`, label: `fleet ${f.metric}` };
    if (f.kind === "health" && f.server) return { server: f.server, hash: `server-${slug(f.server)}`, label: f.server };
    return null;
  }

  function renderNarrative(ins) {
    const facts = new Map(ins.facts.map((f) => [f.id, f]));
    $("#narrative .summary").textContent = ins.narrative.summary;
    const ol = $("#narrative .findings");
    ol.replaceChildren();
    if (ins.empty) ol.append(el("li", {}, emptyBox(ins.message || "No data in this period.")));
    for (const finding of ins.narrative.findings) {
      const li = el("li", { class: "finding" }, el("span", { class: "text", text: finding.text }));
      for (const id of finding.evidence) {
        const f = facts.get(id);
        const t = factTarget(f);
        if (!t) {
          li.append(el("span", { class: "cite plain", "data-fact": id, title: f ? f.statement : id, text: id }));
          continue;
        }
        const server = t.server || state.server;
        const a = el("a", {
          class: "cite", "data-fact": id, "data-target": t.hash, "data-server": t.server || "",
          href: `?${q({ period: state.period.start, server: server || "" })}#${t.hash}`,
          title: `${f.statement} (${t.label})`, text: id,
        });
        a.addEventListener("click", (e) => { e.preventDefault(); goTo(t); });
        li.append(a);
      }
      ol.append(li);
    }
    const llm = ins.llm;
    $("#narrative .llm").textContent = `Narrator: ${llm.mode}${llm.model ? " (" + llm.model + ")" : ""}` +
      `${llm.validated ? ", every number checked against the facts it cites" : ""}` +
      `${llm.fallback_reason ? "; fell back to the local narrator: " + llm.fallback_reason : ""}.`;
  }

  async function goTo(t) {
    if (t.server && t.server !== state.server) await selectServer(t.server);
    const target = document.getElementById(t.hash);
    if (!target) return;
    history.replaceState(null, "", `?${q({ period: state.period.start, server: state.server || "" })}#${t.hash}`);
    target.scrollIntoView({ block: "center" });
    for (const f of document.querySelectorAll(".flash")) f.classList.remove("flash");
    target.classList.add("flash");
  }

  // --- per-server charts ------------------------------------------------------------
  function metricsOf(server) {
    const s = state.servers.find((x) => x.server_id === server);
    let ms = s ? s.metrics : [];
    if (ms.length === 0 && state.insights) ms = state.insights.comparisons.map((c) => c.metric);
    return [...ms].sort(metricSort);
  }

  function destroy(list) { for (const c of list.splice(0)) c.u.destroy(); }

  async function renderServer(load) {
    const box = $("#charts");
    destroy(state.charts);
    box.replaceChildren();
    renderAnomalyTable();
    const server = state.server;
    if (!server) { box.append(emptyBox("No server has data in this period.")); return; }
    const { start, end, width } = state.range;
    const metrics = metricsOf(server);
    const answers = await Promise.allSettled(metrics.map((m) => cached(state.series, `${server}/${m}`,
      `/series?${q({ server, metric: m, start: isoUtc(start), end: isoUtc(end), width })}`)));
    if (load !== state.load || server !== state.server) return;
    fillFigures(box, metrics, answers,
      (m) => ({ class: "chart", id: `chart-${slug(m)}`, "data-metric": m, "data-server": server }),
      (fig, m, v) => drawServerChart(fig, server, m, v));
  }

  // One fetch per key and period; a failed one is tried again next time.
  function cached(map, key, path) {
    if (!map.has(key)) {
      const p = api(path);
      map.set(key, p);
      p.catch(() => map.delete(key));
    }
    return map.get(key);
  }

  // A figure per metric (all first, so each chart is sized in its final grid
  // cell), then its chart, or the error in its place; throws the errors.
  function fillFigures(box, metrics, answers, attrs, draw) {
    const figs = metrics.map((m) => el("figure", attrs(m)));
    box.append(...figs);
    const errors = [];
    metrics.forEach((m, i) => {
      const r = answers[i];
      if (r.status === "fulfilled") return draw(figs[i], m, r.value);
      figs[i].append(el("figcaption", { text: m }), errorBox(r.reason.message));
      errors.push(r.reason.message);
    });
    if (errors.length) throw new Error(errors.join(" · "));
  }

  function renderAnomalyTable() {
    const table = $("#anomalies");
    const rows = state.insights ? state.insights.anomalies.filter((a) => a.server === state.server) : [];
    table.hidden = rows.length === 0;
    $("tbody", table).replaceChildren(...rows.map((a) => el("tr", { id: `row-${a.id}` },
      el("td", {}, el("a", { href: `#anomaly-${a.id}`, text: a.id, onclick: (e) => { e.preventDefault(); goTo({ hash: `anomaly-${a.id}` }); } })),
      el("td", { text: a.incident || "" }),
      el("td", { text: a.metric }), el("td", { text: a.kind.replace("_", " ") }),
      el("td", { text: `${fmtTime(epoch(a.start))} → ${fmtTime(epoch(a.end)).slice(11)} (${fmtNum(a.duration_minutes)} min)` }),
      el("td", { text: fmtNum(a.peak) }), el("td", { text: fmtNum(a.typical) }),
      el("td", {}, el("span", { class: `badge ${a.severity}`, text: a.severity })),
      el("td", { class: "why", text: a.unusual || "", title: a.baseline ? `compared with ${a.baseline}` : "" }))));
  }

  function chartWidth(fig) {
    return Math.max(280, Math.floor(fig.getBoundingClientRect().width || fig.parentElement.clientWidth || 600));
  }

  function drawServerChart(fig, server, metric, s) {
    const ins = state.insights;
    const fc = ins ? ins.forecasts.find((f) => f.server === server && f.metric === metric) : null;
    const anomalies = ins ? ins.anomalies.filter((a) => a.server === server && a.metric === metric) : [];
    fig.append(el("figcaption", {},
      el("span", { text: metric }),
      el("span", { class: "sub", text: `${s.width} bins · ${s.count} points${anomalies.length ? ` · ${anomalies.length} anomal${anomalies.length === 1 ? "y" : "ies"}` : ""}${fc && fc.points.length ? ` · ${fc.points.length}-point forecast` : ""}` })));
    const plot = el("div", { class: "plot" });
    fig.append(plot);
    if (s.empty) { plot.append(emptyBox(s.message || `No ${metric} data for ${server} in this period.`)); return; }

    // A dense grid at the series' width (missing bins are gaps), then the forecast.
    const w = s.width_seconds;
    const byTs = new Map(s.points.map((p) => [epoch(p.ts), p]));
    const x = [], mn = [], mx = [], avg = [], p80 = [], lo = [], hi = [], fv = [];
    for (let t = epoch(s.start); t < epoch(s.end); t += w) {
      const p = byTs.get(t);
      x.push(t); mn.push(p ? p.min : null); mx.push(p ? p.max : null); avg.push(p ? p.avg : null);
      p80.push(p ? p.p80 : null); lo.push(null); hi.push(null); fv.push(null);
    }
    const fpts = fc ? fc.points.map((p) => ({ ...p, t: epoch(p.ts) })).filter((p) => p.t > x[x.length - 1]) : [];
    for (const p of fpts) {
      x.push(p.t); mn.push(null); mx.push(null); avg.push(null); p80.push(null);
      lo.push(p.lo); hi.push(p.hi); fv.push(p.value);
    }
    const hasP80 = p80.some((v) => v !== null);
    const series = [
      { label: "UTC", value: (u, v) => (v === null ? "–" : fmtTime(v)) },
      { label: "min", stroke: COLORS.minmax, width: 1, value: (u, v) => fmtNum(v) },
      { label: "max", stroke: COLORS.minmax, width: 1, value: (u, v) => fmtNum(v) },
      { label: "avg", stroke: COLORS.avg, width: 1.5, value: (u, v) => fmtNum(v) },
      { label: "p80", stroke: COLORS.p80, width: 1, show: hasP80, value: (u, v) => fmtNum(v) },
      { label: "fc lo", stroke: COLORS.fcBand, width: 1, value: (u, v) => fmtNum(v) },
      { label: "fc hi", stroke: COLORS.fcBand, width: 1, value: (u, v) => fmtNum(v) },
      { label: "forecast", stroke: COLORS.fc, width: 1.5, dash: [6, 4], value: (u, v) => fmtNum(v) },
    ];
    const data = [x, mn, mx, avg, p80, lo, hi, fv];
    const chart = makeChart(plot, chartWidth(fig), {
      series,
      bands: [{ series: [2, 1], fill: COLORS.band }, { series: [6, 5], fill: COLORS.fcBand }],
      cursor: { sync: { key: "server" } },
    }, data, fig);
    fig.dataset.forecastPoints = String(fpts.length);
    fig.dataset.points = String(s.count);
    chart.anomalies = anomalies.map((a) => {
      const d = el("div", {
        class: `anomaly sev-${a.severity}`, id: `anomaly-${a.id}`,
        "data-anomaly-id": a.id, "data-start": a.start, "data-end": a.end, "data-severity": a.severity,
        "data-kind": a.kind, "data-metric": metric,
        title: `${a.id} ${a.kind.replace("_", " ")} ${a.severity} (score ${fmtNum(a.score)}): ${fmtTime(epoch(a.start))} → ${fmtTime(epoch(a.end))} UTC, peak ${fmtNum(a.peak)} vs typical ${fmtNum(a.typical)}`,
      });
      chart.u.over.append(d);
      return { d, t0: epoch(a.start), t1: epoch(a.end) };
    });
    placeAnomalies(chart);
    state.charts.push(chart);
  }

  function placeAnomalies(chart) {
    if (!chart.anomalies) return;
    const u = chart.u;
    const wpx = u.over.clientWidth || u.bbox.width / devicePixelRatio;
    for (const a of chart.anomalies) {
      const l = Math.max(0, u.valToPos(a.t0, "x"));
      const r = Math.min(wpx, u.valToPos(a.t1, "x"));
      const visible = r > 0 && l < wpx && r >= l;
      a.d.style.display = visible ? "" : "none";
      a.d.style.left = `${l}px`;
      a.d.style.width = `${Math.max(3, r - l)}px`;
    }
  }

  // 24-hour UTC ticks; the date under midnight and under the first tick.
  function timeTicks(u, splits, axis, space, incr) {
    return splits.map((t, i) => {
      const iso = new Date(t * 1000).toISOString();
      const hm = iso.slice(11, 16), md = iso.slice(5, 10);
      if (incr >= 86400) return md;
      return hm === "00:00" || i === 0 ? `${hm}\n${md}` : hm;
    });
  }

  function makeChart(plot, width, opts, data, fig) {
    const holder = {};
    const u = new uPlot({
      width, height: 220,
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"),
      scales: { x: { time: true } },
      axes: [{ stroke: "#5b6473", grid: { stroke: "#eef0f3" }, values: timeTicks },
        { stroke: "#5b6473", grid: { stroke: "#eef0f3" }, size: 48 }],
      legend: { live: true },
      ...opts,
      hooks: {
        draw: [(u) => {
          fig.dataset.xMin = String(u.scales.x.min);
          fig.dataset.xMax = String(u.scales.x.max);
          placeAnomalies(holder);
        }],
        ...(opts.hooks || {}),
      },
    }, data, plot);
    holder.u = u;
    holder.fig = fig;
    return holder;
  }

  // --- fleet ---------------------------------------------------------------------------
  async function renderFleet(load) {
    const box = $("#fleet-charts");
    destroy(state.fleetCharts);
    box.replaceChildren();
    const metrics = [...new Set(state.servers.flatMap((s) => s.metrics))].sort(metricSort);
    if (metrics.length === 0) { box.append(emptyBox("No metrics stored.")); return; }
    const { start, end } = state.range;
    const answers = await Promise.allSettled(metrics.map((m) => cached(state.fleet, m,
      `/fleet?${q({ metric: m, start: isoUtc(start), end: isoUtc(end) })}`)));
    if (load !== state.load) return;
    fillFigures(box, metrics, answers,
      (m) => ({ class: "chart fleet-chart", id: `fleet-${slug(m)}`, "data-metric": m }),
      drawFleetChart);
  }

  function drawFleetChart(fig, metric, f) {
    const cmp = state.insights ? state.insights.comparisons.find((c) => c.metric === metric) : null;
    const standouts = new Set(cmp ? cmp.standouts.map((s) => s.server) : []);
    fig.append(el("figcaption", {}, el("span", { text: metric }),
      el("span", { class: "sub", text: `${f.servers.length} servers · ${f.width} bins` })));
    const plot = el("div", { class: "plot" });
    fig.append(plot);
    fig.dataset.servers = String(f.servers.length);
    if (f.empty) { plot.append(emptyBox(f.message || `No ${metric} data in this period.`)); return; }
    const x = f.ts.map(epoch);
    const median = x.map((_, i) => {
      const v = f.servers.map((s) => s.avg[i]).filter((a) => a !== null).sort((a, b) => a - b);
      if (v.length === 0) return null;
      const h = v.length >> 1;
      return v.length % 2 ? v[h] : (v[h - 1] + v[h]) / 2;
    });
    // Others first, standouts above them, the selected server and the median on top.
    const order = [...f.servers].sort((a, b) => rankOf(a.server, standouts) - rankOf(b.server, standouts));
    const series = [{}, ...order.map((s) => ({
      label: s.server,
      stroke: s.server === state.server ? COLORS.sel : standouts.has(s.server) ? COLORS.standout : COLORS.others,
      width: s.server === state.server ? 2.5 : standouts.has(s.server) ? 1.5 : 1,
      value: (u, v) => fmtNum(v),
    })), { label: "fleet median", stroke: COLORS.median, width: 2.5, value: (u, v) => fmtNum(v) }];
    const info = el("p", { class: "fleet-info" });
    const hover = el("span", { class: "hover" });
    const chart = makeChart(plot, chartWidth(fig), {
      series,
      legend: { show: false },
      focus: { alpha: 0.25 },
      cursor: { focus: { prox: 12 }, sync: { key: "fleet" } },
      hooks: {
        setSeries: [(u, i) => {
          hover.textContent = i !== null && i !== undefined && series[i] && series[i].label ? `· ${series[i].label}` : "";
        }],
      },
    }, [x, ...order.map((s) => s.avg), median], fig);
    state.fleetCharts.push(chart);
    const serverButton = (name) => {
      const b = el("button", { type: "button", text: name, "data-server": name });
      b.addEventListener("click", () => selectServer(name));
      return b;
    };
    if (cmp) {
      const ranked = cmp.ranking;
      info.append(`fleet median ${fmtNum(cmp.fleet_median)}; highest median `);
      ranked.slice(0, 3).forEach((r, i) => info.append(i ? ", " : "", serverButton(r.server), ` ${fmtNum(r.median)}`));
      if (cmp.standouts.length) {
        info.append("; standouts ");
        cmp.standouts.forEach((s, i) => info.append(i ? ", " : "", serverButton(s.server), ` (${s.direction}, z ${fmtNum(s.robust_z)})`));
      }
    }
    info.append(" ", hover);
    fig.append(info);
  }

  function rankOf(server, standouts) {
    return server === state.server ? 2 : standouts.has(server) ? 1 : 0;
  }

  // --- resizing ------------------------------------------------------------------------
  function resizeAll() {
    for (const c of [...state.charts, ...state.fleetCharts]) {
      c.u.setSize({ width: chartWidth(c.fig), height: 220 });
    }
  }
  function debounce(fn, ms) {
    let t;
    return (...a) => { clearTimeout(t); t = setTimeout(() => fn(...a), ms); };
  }

  if (typeof uPlot === "undefined") {
    fatal(new Error("uPlot did not load (/assets/uPlot.iife.min.js)"));
  } else {
    init().catch(fatal);
  }
})();
