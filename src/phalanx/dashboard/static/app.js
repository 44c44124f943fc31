/* Phalanx dashboard: the network, its curves, its grids and its ledger.
 *
 * Two data sources, one drawing code: the dashboard's JSON API (served by phalanx dashboard), or
 * a JSON block embedded in report.html (opened from disk, no server). Every string from the data
 * (run names, node names, software versions, rejection reasons) enters the document through
 * textContent or an attribute set with setAttribute: never as markup. No eval, no inline handlers.
 */
"use strict";
(function () {
  var root = document.getElementById("phalanx-dashboard");
  if (!root) return;
  var embedded = document.getElementById("phalanx-data");
  var STATIC = !!embedded;
  var DATA = STATIC ? JSON.parse(embedded.textContent) : null;
  var stats = {updates: 0, lastUpdateMs: null, lastRenderMs: null, lastFetchMs: null, lastFetchBytes: 0};
  window.phalanxStats = stats;

  // ------------------------------------------------------------------ DOM helpers
  function el(tag, attrs, children) {
    var e = document.createElement(tag);
    if (attrs) Object.keys(attrs).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "class") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (children || []).forEach(function (c) { if (c != null) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  var SVGNS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function clear(e) { while (e.firstChild) e.removeChild(e.firstChild); return e; }
  function fmt(v, d) { return v == null ? "–" : typeof v === "number" ? (Math.abs(v) >= 1000 || Number.isInteger(v) ? String(v) : v.toFixed(d == null ? 3 : d)) : String(v); }
  function setStatus(text) { status.textContent = text; }

  // ------------------------------------------------------------------ data access
  async function api(path) {
    var t0 = performance.now();
    var res = await fetch(path, {headers: {"Accept": "application/json"}});
    var text = await res.text();
    stats.lastFetchBytes += text.length;
    var body = JSON.parse(text);
    stats.lastFetchMs = (stats.lastFetchMs || 0) + performance.now() - t0;
    if (!res.ok) throw new Error(body && body.error ? body.error : "HTTP " + res.status);
    return body;
  }
  var source = STATIC ? {
    overview: function () { return Promise.resolve(DATA.overview); },
    metrics: function (run, start) { var rows = (DATA.metrics[run] || []).slice(start); return Promise.resolve({rows: rows, next: start + rows.length}); },
    network: function (run) { return Promise.resolve(DATA.networks[run]); },
    node: function (run, n) { return Promise.resolve(staticNode(run, n)); },
    grid: function () { return Promise.resolve(DATA.grid); },
    version: function () { return Promise.resolve({version: "static"}); }
  } : {
    overview: function () { return api("/api/overview"); },
    metrics: function (run, start) { return api("/api/runs/" + run + "/metrics?start=" + start); },
    network: function (run) { return api("/api/runs/" + run + "/network"); },
    node: function (run, n) { return api("/api/runs/" + run + "/nodes/" + n); },
    grid: function () { return api("/api/grid"); },
    version: function () { return api("/api/version"); }
  };
  function staticNode(run, n) {
    var net = DATA.networks[run], node = net.nodes[n];
    return {node: node, decisions: (net.decisions || {})[String(n)] || [], events: [], partition: null, ledger: null};
  }

  // ------------------------------------------------------------------ layout of the page
  var status = el("p", {id: "status", role: "status", "aria-live": "polite"});
  var title = el("h1", {id: "title", text: "Phalanx"});
  var desc = el("p", {id: "description"});
  var header = el("header", null, [title, desc, status]);
  var nav = el("nav", {"aria-label": "Sections"}, [
    el("a", {href: "#network", text: "Network"}), el("a", {href: "#curves", text: "Curves"}),
    el("a", {href: "#grid", text: "Grid", id: "nav-grid", hidden: ""}), STATIC ? null : el("a", {href: "#ledger", text: "Ledger"}),
    STATIC ? null : el("a", {href: "verifier.html", text: "Verifier"})]);

  var netRun = el("select", {id: "net-run"});
  var canvas = el("canvas", {id: "net-canvas", width: "760", height: "560", role: "img", tabindex: "0",
    "aria-label": "The network: each node drawn by role and coloured by reputation; click a node for its history"});
  var nodePick = el("input", {id: "node-pick", type: "number", min: "0", step: "1"});
  var nodeInfo = el("div", {id: "node-info"});
  var netStats = el("p", {id: "net-stats"});
  var legend = el("ul", {class: "legend", id: "net-legend"});
  var netSection = el("section", {id: "network", "aria-labelledby": "h-network"}, [
    el("h2", {id: "h-network", text: "Network"}),
    el("label", null, ["Run ", netRun]),
    el("div", {class: "net-wrap"}, [canvas, el("aside", {id: "node-panel", "aria-live": "polite"}, [
      el("h3", {text: "Node"}), el("label", null, ["Show node ", nodePick]), nodeInfo])]),
    legend, netStats]);
  var curvesGrid = el("div", {id: "curves-grid", class: "curves"});
  var curvesLegend = el("ul", {class: "legend", id: "curves-legend"});
  var curvesSection = el("section", {id: "curves", "aria-labelledby": "h-curves"}, [
    el("h2", {id: "h-curves", text: "Curves"}), curvesLegend, curvesGrid]);
  var heatmaps = el("div", {id: "heatmaps"});
  var gridSection = el("section", {id: "grid", "aria-labelledby": "h-grid"}, [
    el("h2", {id: "h-grid", text: "Attack × defense"}), heatmaps]);
  gridSection.hidden = true;
  // report.html has its own title and navigation: there, only the status line
  (STATIC ? [status, netSection, curvesSection, gridSection] : [header, nav, netSection, curvesSection, gridSection])
    .forEach(function (s) { root.appendChild(s); });

  // ------------------------------------------------------------------ state
  var state = {overview: null, metrics: {}, next: {}, network: null, netRun: 0, selected: null, version: null, positions: null};
  var COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#1b7c83", "#e16f24", "#6e7781", "#d63384", "#4e9a06"];
  var CURVES = [
    ["accuracy", "Accuracy"], ["attack_success", "Attack success rate"], ["epsilon", "Epsilon spent"],
    ["detect_f1", "Detection F1"], ["availability", "Availability"]];

  // ------------------------------------------------------------------ network view (canvas)
  var ROLE_LABEL = {honest: "honest", malicious: "malicious (range truth)", quarantined: "quarantined",
    validator: "validator", server: "server"};
  function repColor(r) {
    if (r == null) return "#9aa4ae";
    var x = Math.max(0, Math.min(1, r)), h = Math.round(120 * x);
    return "hsl(" + h + ",70%,45%)";
  }
  function layout(net) {
    var w = canvas.width, h = canvas.height, cx = w / 2, cy = h / 2, R = Math.min(w, h) / 2 - 24;
    var trainers = net.nodes.filter(function (n) { return n.role !== "validator" && n.role !== "server"; });
    var infra = net.nodes.filter(function (n) { return n.role === "validator"; });
    var pos = new Float64Array(net.nodes.length * 2);
    trainers.forEach(function (n, i) {
      var a = 2 * Math.PI * i / Math.max(1, trainers.length) - Math.PI / 2;
      pos[2 * n.id] = cx + R * Math.cos(a); pos[2 * n.id + 1] = cy + R * Math.sin(a);
    });
    infra.forEach(function (n, i) {
      var a = 2 * Math.PI * i / Math.max(1, infra.length) + Math.PI / 4;
      pos[2 * n.id] = cx + R * 0.3 * Math.cos(a); pos[2 * n.id + 1] = cy + R * 0.3 * Math.sin(a);
    });
    net.nodes.forEach(function (n) { if (n.role === "server") { pos[2 * n.id] = cx; pos[2 * n.id + 1] = cy; } });
    return pos;
  }
  function drawNetwork() {
    var net = state.network, ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    if (!net || !net.nodes.length) { netStats.textContent = "No nodes in this run yet."; return; }
    var pos = state.positions, n = net.nodes.length, r = n > 400 ? 3 : n > 100 ? 5 : 8;
    ctx.lineWidth = n > 400 ? 0.3 : 0.8;
    ctx.strokeStyle = n > 400 ? "rgba(80,90,100,0.15)" : "rgba(80,90,100,0.35)";
    ctx.beginPath();
    for (var i = 0; i < net.edges.length; i++) {
      var a = net.edges[i][0], b = net.edges[i][1];
      ctx.moveTo(pos[2 * a], pos[2 * a + 1]); ctx.lineTo(pos[2 * b], pos[2 * b + 1]);
    }
    ctx.stroke();
    for (var j = 0; j < n; j++) {
      var node = net.nodes[j], x = pos[2 * j], y = pos[2 * j + 1], s = node.role === "server" ? r * 2 : r;
      ctx.fillStyle = node.role === "validator" ? "#8250df" : node.role === "server" ? "#57606a" : repColor(node.reputation);
      ctx.beginPath();
      if (node.role === "malicious") { ctx.moveTo(x, y - s * 1.3); ctx.lineTo(x + s * 1.2, y + s); ctx.lineTo(x - s * 1.2, y + s); ctx.closePath(); }
      else if (node.role === "quarantined") { ctx.rect(x - s, y - s, 2 * s, 2 * s); }
      else if (node.role === "validator") { ctx.moveTo(x, y - s * 1.3); ctx.lineTo(x + s * 1.3, y); ctx.lineTo(x, y + s * 1.3); ctx.lineTo(x - s * 1.3, y); ctx.closePath(); }
      else ctx.arc(x, y, s, 0, 2 * Math.PI);
      ctx.fill();
      if (node.role === "malicious" || node.role === "quarantined" || node.crashed) {
        ctx.lineWidth = 1.5; ctx.strokeStyle = node.crashed ? "#000" : "#cf222e"; ctx.stroke();
      }
      if (state.selected === j) { ctx.lineWidth = 3; ctx.strokeStyle = "#0969da"; ctx.beginPath(); ctx.arc(x, y, s + 4, 0, 2 * Math.PI); ctx.stroke(); }
    }
    var counts = {};
    net.nodes.forEach(function (x) { counts[x.role] = (counts[x.role] || 0) + 1; });
    netStats.textContent = n + " nodes, " + net.edges.length + " edges (" + net.topology + "): " +
      Object.keys(counts).sort().map(function (k) { return counts[k] + " " + k; }).join(", ") + ".";
    canvas.setAttribute("data-nodes", String(n));
  }
  function drawLegend() {
    clear(legend);
    [["honest", "● honest (colour: reputation, red 0 to green 1, grey unknown)"], ["malicious", "▲ malicious (the range's truth)"],
     ["quarantined", "■ quarantined by the validators"], ["validator", "◆ validator (cosigns the ledger)"], ["server", "● server (star)"],
     ["crashed", "black outline: crashed"]].forEach(function (x) { legend.appendChild(el("li", {class: "lg-" + x[0], text: x[1]})); });
  }
  function nodeAt(x, y) {
    var net = state.network; if (!net) return null;
    var best = null, bd = 15 * 15;
    for (var i = 0; i < net.nodes.length; i++) {
      var dx = state.positions[2 * i] - x, dy = state.positions[2 * i + 1] - y, d = dx * dx + dy * dy;
      if (d < bd) { bd = d; best = i; }
    }
    return best;
  }
  canvas.addEventListener("click", function (ev) {
    var rect = canvas.getBoundingClientRect();
    var x = (ev.clientX - rect.left) * canvas.width / rect.width, y = (ev.clientY - rect.top) * canvas.height / rect.height;
    var i = nodeAt(x, y);
    if (i != null) selectNode(i);
  });
  nodePick.addEventListener("change", function () {
    var i = parseInt(nodePick.value, 10);
    if (state.network && i >= 0 && i < state.network.nodes.length) selectNode(i);
  });
  function row(k, v) { return el("tr", null, [el("th", {scope: "row", text: k}), el("td", {text: v == null ? "–" : String(v)})]); }
  async function selectNode(i) {
    state.selected = i; drawNetwork();
    nodePick.value = String(i);
    clear(nodeInfo).appendChild(el("p", {text: "Loading…"}));
    var info;
    try { info = await source.node(state.netRun, i); } catch (e) { clear(nodeInfo).appendChild(el("p", {class: "error", text: e.message})); return; }
    var n = info.node, led = info.ledger || {};
    clear(nodeInfo);
    nodeInfo.appendChild(el("h4", {class: "node-name", text: n.name}));
    var t = el("table", {class: "kv"});
    t.appendChild(row("role", ROLE_LABEL[n.role] || n.role));
    if (n.version) t.appendChild(row("version", n.version));
    t.appendChild(row("reputation", n.reputation == null ? "not scored" : fmt(n.reputation)));
    t.appendChild(row("rows rejected", n.evidence));
    if (n.samples != null) t.appendChild(row("samples", n.samples));
    if (led.registration) {
      t.appendChild(row("admission", led.registration.admission + " (entry " + led.registration.index + ")"));
      t.appendChild(row("software", led.registration.software));
    }
    if (led.updates) t.appendChild(row("updates logged", led.updates.length + (led.updates.length ? " (rounds " + led.updates[0].round + "–" + led.updates[led.updates.length - 1].round + ")" : "")));
    nodeInfo.appendChild(t);
    var items = [];
    (info.decisions || []).forEach(function (d) { items.push("round " + d.round + ": " + d.action + " (" + d.reason + ")"); });
    (led.quarantine || []).forEach(function (q) { items.push("ledger entry " + q.index + ": " + q.action + " from round " + q.round + ": " + q.reason); });
    (led.rejections || []).forEach(function (q) { items.push("round " + q.round + ": update rejected by " + q.by + ": " + q.reason); });
    (led.equivocations || []).forEach(function (q) { items.push("round " + q.round + ": equivocation evidence by " + q.by); });
    (led.reputation || []).forEach(function (q) { items.push("round " + q.round + ": reputation " + fmt(q.score) + " " + (q.reason || "")); });
    (info.events || []).forEach(function (ev) { items.push("round " + ev.round + ": " + ev.kind + (ev.text ? ": " + ev.text : "")); });
    nodeInfo.appendChild(el("h5", {text: "History and evidence"}));
    var ul = el("ul", {class: "history"});
    if (!items.length) items.push("nothing recorded against this node");
    items.slice(0, 200).forEach(function (s) { ul.appendChild(el("li", {text: s})); });
    nodeInfo.appendChild(ul);
    nodeInfo.setAttribute("data-node", String(i));
  }

  // ------------------------------------------------------------------ curves (SVG)
  function lineChart(key, label, runs) {
    var W = 360, H = 200, L = 44, B = 26, T = 10, R = 8;
    var series = runs.map(function (r) { return (state.metrics[r.id] || []).filter(function (m) { return typeof m[key] === "number"; }).map(function (m) { return [m.round, m[key]]; }); });
    var pts = [].concat.apply([], series);
    var fig = el("figure", {class: "chart", "data-metric": key});
    fig.appendChild(el("figcaption", {text: label}));
    if (!pts.length) { fig.appendChild(el("p", {class: "empty", text: "not measured in these runs"})); return fig; }
    var x0 = Math.min.apply(null, pts.map(function (p) { return p[0]; })), x1 = Math.max.apply(null, pts.map(function (p) { return p[0]; }));
    var y0 = Math.min(0, Math.min.apply(null, pts.map(function (p) { return p[1]; }))), y1 = Math.max.apply(null, pts.map(function (p) { return p[1]; }));
    if (y1 <= y0) y1 = y0 + 1; if (x1 <= x0) x1 = x0 + 1;
    var sx = function (x) { return L + (x - x0) / (x1 - x0) * (W - L - R); }, sy = function (y) { return H - B - (y - y0) / (y1 - y0) * (H - B - T); };
    var s = svg("svg", {viewBox: "0 0 " + W + " " + H, width: String(W), height: String(H), role: "img", "aria-label": label + " per round, one line per run"});
    s.appendChild(svg("line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis"}));
    s.appendChild(svg("line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"}));
    [y0, (y0 + y1) / 2, y1].forEach(function (v) {
      var t = svg("text", {x: L - 4, y: sy(v) + 4, "text-anchor": "end", class: "tick"}); t.textContent = fmt(v, 2); s.appendChild(t);
    });
    [x0, x1].forEach(function (v) { var t = svg("text", {x: sx(v), y: H - 8, "text-anchor": "middle", class: "tick"}); t.textContent = "round " + v; s.appendChild(t); });
    series.forEach(function (ser, i) {
      if (!ser.length) return;
      var d = ser.map(function (p, j) { return (j ? "L" : "M") + sx(p[0]).toFixed(1) + " " + sy(p[1]).toFixed(1); }).join("");
      var path = svg("path", {d: d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": "1.8", class: "series"});
      var tip = svg("title", {}); tip.textContent = runs[i].name; path.appendChild(tip);
      s.appendChild(path);
    });
    fig.appendChild(s);
    return fig;
  }
  function drawCurves() {
    var runs = state.overview ? state.overview.runs : [];
    clear(curvesLegend);
    runs.forEach(function (r, i) {
      var sw = el("span", {class: "swatch"}); sw.style.background = COLORS[i % COLORS.length];
      curvesLegend.appendChild(el("li", null, [sw, r.name + (r.defense ? " — " + r.defense : "")]));
    });
    clear(curvesGrid);
    CURVES.forEach(function (c) { curvesGrid.appendChild(lineChart(c[0], c[1], runs)); });
  }

  // ------------------------------------------------------------------ grid heat maps (tables)
  function heat(v) { if (v == null) return "#eaeef2"; var h = Math.round(120 * Math.max(0, Math.min(1, v))); return "hsl(" + h + ",65%,78%)"; }
  function drawGrid(g) {
    clear(heatmaps);
    if (!g || !g.maps) return;
    gridSection.hidden = false;
    nav.querySelector("#nav-grid").hidden = false;
    if (g.description) heatmaps.appendChild(el("p", {text: g.description}));
    g.maps.forEach(function (m) {
      var t = el("table", {class: "heatmap", "data-topology": m.topology});
      t.appendChild(el("caption", {text: m.topology + ": final accuracy, defense (rows) × attack (columns)"}));
      var head = el("tr", null, [el("th", {scope: "col", text: "defense"})]);
      m.attacks.forEach(function (a) { head.appendChild(el("th", {scope: "col", text: a})); });
      head.appendChild(el("th", {scope: "col", text: "worst case"}));
      t.appendChild(el("thead", null, [head]));
      var body = el("tbody");
      m.rows.forEach(function (r) {
        var tr = el("tr", null, [el("th", {scope: "row", text: r.defense})]);
        m.attacks.concat(["__worst"]).forEach(function (a) {
          var v = a === "__worst" ? r.worst : r.cells[a], td = el("td", {text: fmt(v, 2)});
          td.style.background = heat(v);
          if (a === "__worst" && r.worst_attack) td.setAttribute("title", "under " + r.worst_attack);
          tr.appendChild(td);
        });
        body.appendChild(tr);
      });
      t.appendChild(body);
      heatmaps.appendChild(t);
    });
  }

  // ------------------------------------------------------------------ the update loop
  function fillRuns(select, runs) {
    var keep = select.value;
    clear(select);
    runs.forEach(function (r) { select.appendChild(el("option", {value: String(r.id), text: r.name})); });
    if (keep && runs.some(function (r) { return String(r.id) === keep; })) select.value = keep;
  }
  async function loadNetwork() {
    state.network = await source.network(state.netRun);
    state.positions = layout(state.network);
    drawNetwork();
  }
  async function update() {
    var t0 = performance.now();
    stats.lastFetchMs = 0; stats.lastFetchBytes = 0;
    var ov = await source.overview();
    state.overview = ov;
    title.textContent = "Phalanx: " + (ov.study || "");
    desc.textContent = ov.description || "";
    fillRuns(netRun, ov.runs);
    if (!STATIC) fillRuns(ledRun, ov.runs.filter(function (r) { return r.ledger; }));
    await Promise.all(ov.runs.map(async function (r) {
      var start = state.next[r.id] || 0, tail = await source.metrics(r.id, start);
      state.metrics[r.id] = (state.metrics[r.id] || []).concat(tail.rows);
      state.next[r.id] = tail.next;
    }));
    var t1 = performance.now();
    if (ov.runs.length) await loadNetwork();
    drawCurves();
    if (ov.grid) drawGrid(await source.grid());
    if (state.selected != null && state.network && state.selected < state.network.nodes.length) await selectNode(state.selected);
    stats.updates += 1;
    stats.lastRenderMs = performance.now() - t1;
    stats.lastUpdateMs = performance.now() - t0;
    root.setAttribute("data-updates", String(stats.updates));
    var rounds = ov.runs.map(function (r) { return (state.metrics[r.id] || []).length; });
    setStatus((ov.live ? "Live: " : "") + ov.runs.length + " run(s), " + Math.max.apply(null, [0].concat(rounds)) +
      " round(s) shown; updated in " + Math.round(stats.lastUpdateMs) + " ms.");
  }
  window.phalanxNodePoint = function (i) {
    var rect = canvas.getBoundingClientRect();
    return [rect.left + state.positions[2 * i] * rect.width / canvas.width, rect.top + state.positions[2 * i + 1] * rect.height / canvas.height];
  };
  window.phalanxRefresh = function (full) {
    if (full) { state.metrics = {}; state.next = {}; }
    return update();
  };
  netRun.addEventListener("change", function () { state.netRun = parseInt(netRun.value, 10) || 0; state.selected = null; clear(nodeInfo); loadNetwork(); });
  async function poll() {
    try {
      var v = await source.version();
      if (v.version !== state.version) { state.version = v.version; await update(); }
    } catch (e) { setStatus("Error: " + e.message); }
    if (!STATIC) setTimeout(poll, 1000);
  }

  // ------------------------------------------------------------------ the ledger explorer (served dashboard only)
  var ledRun = el("select", {id: "led-run"});
  var ledType = el("select", {id: "led-type"});
  var ledTable = el("table", {id: "led-entries", class: "entries"});
  var ledPrev = el("button", {type: "button", text: "Previous"}), ledNext = el("button", {type: "button", text: "Next"});
  var ledPage = el("span", {id: "led-page"});
  var ledDetail = el("pre", {id: "led-detail", "aria-live": "polite"});
  var cpList = el("ol", {id: "led-checkpoints"});
  var modelPick = el("select", {id: "led-model"});
  var traceOut = el("div", {id: "led-trace"});
  var led = {start: 0, limit: 50, type: ""};
  if (!STATIC) {
    root.appendChild(el("section", {id: "ledger", "aria-labelledby": "h-ledger"}, [
      el("h2", {id: "h-ledger", text: "Ledger"}),
      el("p", {class: "note"}, ["What the server shows here is not proof. To check an entry without trusting this server, take its proof bundle to the ",
        el("a", {href: "verifier.html", text: "static verifier"}), " (compare its SHA-256 with the README) with keys you got elsewhere."]),
      el("div", {class: "controls"}, [el("label", null, ["Run ", ledRun]), el("label", null, ["Type ", ledType]), ledPrev, ledPage, ledNext]),
      ledTable, el("h3", {text: "Entry"}), ledDetail,
      el("h3", {text: "Checkpoints and cosignatures"}), cpList,
      el("h3", {text: "Provenance of a model"}), el("label", null, ["Model ", modelPick]), traceOut]));
    ledRun.addEventListener("change", function () { led.start = 0; led.type = ""; loadLedger(); });
    ledType.addEventListener("change", function () { led.start = 0; led.type = ledType.value; loadEntries(); });
    ledPrev.addEventListener("click", function () { led.start = Math.max(0, led.start - led.limit); loadEntries(); });
    ledNext.addEventListener("click", function () { led.start += led.limit; loadEntries(); });
    modelPick.addEventListener("change", function () { loadTrace(modelPick.value); });
  }
  function ledgerRun() { return ledRun.value; }
  async function loadLedger() {
    if (!ledgerRun()) return;
    await Promise.all([loadEntries(), loadCheckpoints(), loadModels()]);
  }
  async function loadEntries() {
    var run = ledgerRun(); if (!run) return;
    var q = "/api/runs/" + run + "/ledger?start=" + led.start + "&limit=" + led.limit + (led.type ? "&type=" + encodeURIComponent(led.type) : "");
    var page;
    try { page = await api(q); } catch (e) { clear(ledTable).appendChild(el("caption", {text: e.message})); return; }
    var keep = ledType.value; clear(ledType); ledType.appendChild(el("option", {value: "", text: "all (" + page.size + ")"}));
    Object.keys(page.types).forEach(function (t) { ledType.appendChild(el("option", {value: t, text: t + " (" + page.types[t] + ")"})); });
    ledType.value = keep;
    clear(ledTable);
    ledTable.appendChild(el("caption", {text: "Entries " + (page.total ? page.start + 1 : 0) + "–" + Math.min(page.total, page.start + page.entries.length) + " of " + page.total}));
    ledTable.appendChild(el("thead", null, [el("tr", null, ["#", "type", "node", "round", "what it says", "proof"].map(function (h) { return el("th", {scope: "col", text: h}); }))]));
    var body = el("tbody");
    page.entries.forEach(function (e) {
      var show = el("button", {type: "button", class: "link", text: String(e.index)});
      show.addEventListener("click", function () { loadEntry(e.index); });
      var link = el("a", {href: "/api/runs/" + run + "/ledger/bundle/" + e.index, download: "entry-" + e.index + ".bundle.json", text: "proof bundle"});
      body.appendChild(el("tr", {"data-index": String(e.index), "data-type": e.type}, [el("td", null, [show]), el("td", {text: e.type}),
        el("td", {class: "node-name", text: e.node == null ? "–" : e.node}), el("td", {text: e.round == null ? "" : String(e.round)}),
        el("td", {class: "summary", text: e.summary}), el("td", null, [link])]));
    });
    ledTable.appendChild(body);
    ledPage.textContent = " " + (page.start + 1) + " ";
    ledPrev.disabled = page.start === 0; ledNext.disabled = page.start + page.entries.length >= page.total;
  }
  async function loadEntry(i) {
    try { ledDetail.textContent = JSON.stringify(await api("/api/runs/" + ledgerRun() + "/ledger/entries/" + i), null, 1); }
    catch (e) { ledDetail.textContent = e.message; }
  }
  async function loadCheckpoints() {
    var c = await api("/api/runs/" + ledgerRun() + "/ledger/checkpoints");
    clear(cpList);
    c.checkpoints.forEach(function (cp) {
      var sigs = el("ul");
      cp.signatures.forEach(function (s) {
        sigs.appendChild(el("li", {text: (s.kind === "log" ? "log signature: " : "cosignature: ") + s.name + " (key " + s.key_id + (s.timestamp != null ? ", time " + s.timestamp : "") + ")"}));
      });
      cpList.appendChild(el("li", {"data-size": String(cp.size)}, ["size " + cp.size + ", root " + (cp.root || "?") + (cp.error ? " (" + cp.error + ")" : ""), sigs]));
    });
  }
  async function loadModels() {
    var m = await api("/api/runs/" + ledgerRun() + "/ledger/models");
    clear(modelPick);
    m.models.forEach(function (x) { modelPick.appendChild(el("option", {value: x.model, text: "round " + x.round + " by " + x.by + ": " + x.model.slice(0, 16) + "…"})); });
    if (m.models.length) loadTrace(m.models[0].model); else clear(traceOut);
  }
  async function loadTrace(model) {
    var t;
    try { t = await api("/api/runs/" + ledgerRun() + "/ledger/trace/" + model); } catch (e) { clear(traceOut).appendChild(el("p", {text: e.message})); return; }
    clear(traceOut);
    traceOut.appendChild(el("p", {text: "Model " + t.model.slice(0, 16) + "… comes from " + t.records.length + " aggregate records over rounds " + t.rounds[t.rounds.length - 1] + "–" + t.rounds[0] + "."}));
    var tree = el("ul", {class: "trace"});
    t.records.slice(0, 60).forEach(function (r) {
      var kids = el("ul");
      r.inputs.slice(0, 40).forEach(function (x) { kids.appendChild(el("li", {text: "used " + x.node + " (entry " + x.entry + ", weight " + fmt(x.weight, 2) + ")"})); });
      if (r.inputs.length > 40) kids.appendChild(el("li", {text: "… " + (r.inputs.length - 40) + " more"}));
      r.rejected.forEach(function (x) { kids.appendChild(el("li", {class: "rejected", text: "rejected " + x.node + " (entry " + x.entry + "): " + x.reason})); });
      tree.appendChild(el("li", null, [el("details", null, [el("summary", {text: "round " + r.round + ": " + r.rule + " by " + r.by + " (entry " + r.index + ") -> " + r.result.slice(0, 16) + "…"}), kids])]));
    });
    traceOut.appendChild(tree);
    (t.reverted || []).forEach(function (rb) { if (rb.rounds.length) traceOut.appendChild(el("p", {text: "Reverted rounds " + rb.rounds.join(", ") + ": " + rb.reason})); });
  }

  drawLegend();
  if (STATIC) update().catch(function (e) { setStatus("Error: " + e.message); });
  else poll().then(function () { return loadLedger(); }).catch(function (e) { setStatus("Error: " + e.message); });
})();
