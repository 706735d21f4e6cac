// zeek-pipeline health dashboard: refreshes the server-rendered page from the JSON API and draws the
// throughput chart as SVG. No library, no CDN. Every value is inserted with textContent or setAttribute,
// never as HTML, so a hostile status record shows as text.
(function () {
  "use strict";

  var SVG = "http://www.w3.org/2000/svg";
  var body = document.body;
  var refreshSeconds = Math.max(Number(body.getAttribute("data-refresh")) || 5, 1);
  var ALWAYS_TOTALS = ["consumed", "produced", "rejected", "errors"];

  // --- formatting (mirrors health/formatting.py) -------------------------------------------------
  function number(value, digits) {
    if (value === null || value === undefined) return "\u2013";
    return Number(value).toLocaleString("en-US", {minimumFractionDigits: digits || 0, maximumFractionDigits: digits || 0});
  }
  function size(value) {
    if (value === null || value === undefined) return "\u2013";
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var amount = Number(value);
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(amount) < 1024 || i === units.length - 1) {
        return i === 0 ? amount.toFixed(0) + " B" : amount.toFixed(1) + " " + units[i];
      }
      amount /= 1024;
    }
    return amount.toFixed(1) + " TiB";
  }
  function duration(seconds) {
    seconds = Math.max(Number(seconds) || 0, 0);
    if (seconds < 120) return seconds.toFixed(0) + " s";
    if (seconds < 7200) return (seconds / 60).toFixed(0) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(0) + " h";
    return (seconds / 86400).toFixed(0) + " d";
  }
  function clock(ts) {
    if (ts === null || ts === undefined) return "\u2013";
    var d = new Date(ts * 1000);
    if (isNaN(d.getTime())) return "\u2013";
    return d.toISOString().substring(11, 19);
  }

  // --- DOM helpers --------------------------------------------------------------------------------
  function el(tag, attrs) {
    var node = document.createElement(tag);
    var key;
    for (key in attrs || {}) {
      if (Object.prototype.hasOwnProperty.call(attrs, key) && attrs[key] !== null && attrs[key] !== undefined) {
        node.setAttribute(key, String(attrs[key]));
      }
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "object" ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    for (var key in attrs) {
      if (Object.prototype.hasOwnProperty.call(attrs, key)) node.setAttribute(key, String(attrs[key]));
    }
    return node;
  }
  function replaceChildren(parent, children) {
    while (parent.firstChild) parent.removeChild(parent.firstChild);
    children.forEach(function (child) { parent.appendChild(child); });
  }
  function byId(id) { return document.getElementById(id); }

  // The "all ok" line claims no growing lag only when no reason (not even an info one) says otherwise.
  function okLine(reasons) {
    return "All components report ok" + (reasons.length ? "." : " and no lag is growing.");
  }

  // --- sections -----------------------------------------------------------------------------------
  function card(c) {
    var list = el("dl", null);
    function row(label, field, value) {
      list.appendChild(el("dt", null, label));
      list.appendChild(el("dd", {"data-field": field}, value));
    }
    row("heartbeat", "heartbeat", (c.heartbeat_age_seconds === null ? "\u2013" : duration(c.heartbeat_age_seconds)) + " ago");
    row("events/s in \u00b7 out", "rates", number(c.rates.in_eps, 1) + " \u00b7 " + number(c.rates.out_eps, 1));
    Object.keys(c.totals).forEach(function (name) {
      var value = c.totals[name];
      if (value || ALWAYS_TOTALS.indexOf(name) >= 0) {
        row(name.replace(/_/g, " "), name, name === "bytes_written" ? size(value) : number(value));
      }
    });
    row("memory (RSS)", "rss", size(c.rss_bytes));
    if (c.buffer_pct !== null) row("buffer", "buffer", number(c.buffer_pct, 0) + " %");
    list.appendChild(el("dt", null, "partitions"));
    list.appendChild(el("dd", {"data-field": "partitions",
      title: c.assigned.map(function (p) { return p.topic + "[" + p.partition + "]"; }).join(" ")}, String(c.assigned.length)));
    row("version \u00b7 config", "version", (c.version || "\u2013") + " \u00b7 " + (c.config_hash || "\u2013"));

    var node = el("article", {"class": "card state-" + c.state, "data-key": c.key, "data-state": c.state},
      el("header", null, el("h3", null, c.component), el("span", {"class": "badge state-" + c.state}, c.state)),
      el("p", {"class": "instance", title: "instance"}, c.instance),
      el("p", {"class": "reason"}, c.reason),
      list);
    var reasons = Object.keys(c.reject_reasons);
    if (reasons.length) {
      var line = el("p", {"class": "rejects-line"}, "rejects: ");
      reasons.forEach(function (r) {
        line.appendChild(el("span", {"class": "chip"}, r + " " + number(c.reject_reasons[r])));
        line.appendChild(document.createTextNode(" "));
      });
      node.appendChild(line);
    }
    if (c.last_error) node.appendChild(el("p", {"class": "error", title: "last error"}, c.last_error));
    return node;
  }

  function renderPipeline(p) {
    var badge = byId("verdict-state");
    badge.textContent = p.verdict.state;
    badge.className = "badge big state-" + p.verdict.state;
    document.title = "zeek-pipeline health \u00b7 " + p.verdict.state;
    byId("updated").textContent = clock(p.generated_at);

    var reasons = p.verdict.reasons.map(function (r) { return el("li", {"class": "sev-" + r.severity}, r.text); });
    if (p.verdict.state === "ok") reasons.unshift(el("li", {"class": "sev-ok"}, okLine(p.verdict.reasons)));
    replaceChildren(byId("reasons"), reasons);

    byId("unreachable").hidden = p.unreachable.length === 0;
    replaceChildren(byId("unreachable-list"), p.unreachable.map(function (u) { return el("li", null, u); }));

    var cards = p.components.map(card);
    if (!cards.length) cards = [el("p", {"class": "empty"}, "No instance has reported on " + p.status_channel.topic + " yet.")];
    replaceChildren(byId("cards"), cards);

    var ch = p.status_channel;
    byId("channel-summary").textContent = ch.topic + " \u00b7 " + number(ch.records_read) + " read \u00b7 " +
      number(ch.malformed) + " unusable";
    var problemRows = ch.problems.map(function (x) {
      return el("tr", null, el("td", null, clock(x.at)), el("td", {"class": "detail"}, x.key),
        el("td", null, String(x.partition) + "/" + String(x.offset)), el("td", {"class": "detail"}, x.error));
    });
    var tbody = byId("problem-rows");
    replaceChildren(tbody, problemRows);
    tbody.parentNode.hidden = problemRows.length === 0;

    drawChart(p.throughput, p.generated_at);
  }

  function renderLag(lag) {
    byId("lag-note").textContent = (lag.error ? lag.error + " \u00b7 " : "") + "read " + clock(lag.checked_at) + " UTC";
    var rows = [];
    lag.groups.forEach(function (g) {
      var label = g.role + (g.state ? " \u00b7 " + g.state : "") + (g.members !== null ? " \u00b7 " + g.members + " member(s)" : "");
      if (!g.topics.length) {
        rows.push(el("tr", null, el("td", null, g.group + " ", el("span", {"class": "sub"}, g.role)),
          el("td", {colspan: 6}, g.error || "no topics")));
      }
      g.topics.forEach(function (t) {
        var trend = t.trend + (t.growing_for_seconds ? " for " + duration(t.growing_for_seconds) : "") + (t.error ? " \u00b7 " + t.error : "");
        rows.push(el("tr", {"class": "topic-row"}, el("td", null, g.group + " ", el("span", {"class": "sub"}, label)),
          el("td", null, t.topic), el("td", null, "all"), el("td", {"class": "n"}), el("td", {"class": "n"}),
          el("td", {"class": "n"}, number(t.lag)), el("td", {"class": "trend-" + t.trend}, trend)));
        t.partitions.forEach(function (p) {
          rows.push(el("tr", null, el("td"), el("td", null, t.topic), el("td", null, String(p.partition)),
            el("td", {"class": "n"}, number(p.committed)), el("td", {"class": "n"}, number(p.high_watermark)),
            el("td", {"class": "n"}, number(p.lag)), el("td", {"class": "trend-" + p.trend}, p.trend)));
        });
      });
    });
    replaceChildren(byId("lag-rows"), rows);
  }

  function renderRejects(r) {
    byId("rejects-total").textContent = number(r.total) + " in total";
    var rows = r.recent.map(function (x) {
      return el("tr", null, el("td", null, clock(x.at)), el("td", null, x.component),
        el("td", null, x.reason, x.log_type ? " " : null, x.log_type ? el("span", {"class": "sub"}, x.log_type) : null),
        el("td", {"class": "detail", title: x.source}, x.detail),
        el("td", null, el("code", {"class": "preview"}, x.preview)));
    });
    if (!rows.length) rows = [el("tr", null, el("td", {colspan: 5, "class": "empty"}, "none"))];
    replaceChildren(byId("reject-rows"), rows);
  }

  function renderFiles(f) {
    var rows = f.recent.map(function (x) {
      return el("tr", null, el("td", null, clock(x.at)), el("td", null, x.log_type), el("td", {"class": "path"}, x.path),
        el("td", {"class": "n"}, number(x.rows)), el("td", {"class": "n"}, size(x.bytes)));
    });
    if (!rows.length) rows = [el("tr", null, el("td", {colspan: 5, "class": "empty"}, "none"))];
    replaceChildren(byId("file-rows"), rows);
  }

  function sparkline(node, points) {
    var W = 120, H = 24;
    var max = points.reduce(function (m, p) { return Math.max(m, p.in_eps, p.out_eps); }, 0) || 1;
    var first = points.length ? points[0].at : 0, last = points.length ? points[points.length - 1].at : 1;
    var span = Math.max(last - first, 1);
    function coords(key) {
      return points.map(function (p) {
        return (W * (p.at - first) / span).toFixed(1) + "," + (H - 1 - (H - 2) * p[key] / max).toFixed(1);
      }).join(" ");
    }
    replaceChildren(node, points.length < 2 ? [] : [
      svg("polyline", {points: coords("in_eps"), "class": "series-in"}),
      svg("polyline", {points: coords("out_eps"), "class": "series-out"})]);
  }

  function renderFlows(f) {
    var rows = f.rows.map(function (x) {
      var spark = svg("svg", {"class": "spark", viewBox: "0 0 120 24", role: "img",
        "aria-label": x.log_type + " in and out over time"});
      sparkline(spark, x.points);
      return el("tr", {"data-log-type": x.log_type}, el("td", null, x.log_type),
        el("td", {"class": "n"}, number(x.in_eps, 1)), el("td", {"class": "n"}, number(x.out_eps, 1)),
        el("td", {"class": "n"}, number(x.rejected_eps, 2)), el("td", {"class": "n"}, number(x.in_total)),
        el("td", {"class": "n"}, number(x.out_total)),
        el("td", {"class": x.rejected_total ? "n warn" : "n"}, number(x.rejected_total)), el("td", null, spark));
    });
    if (!rows.length) rows = [el("tr", null, el("td", {colspan: 8, "class": "empty"}, "nothing has flowed yet"))];
    replaceChildren(byId("flow-rows"), rows);
  }

  function lakeCell(c) {
    return el("td", {"class": "n"}, number(c.rows), el("span", {"class": "sub"}, " \u00b7 " + c.files + " \u00b7 " + size(c.bytes)));
  }

  function renderLake(lake) {
    replaceChildren(byId("lake-head"), [el.apply(null, ["tr", null, el("th", null, "log type")].concat(
      lake.hours.map(function (h) { return el("th", {"class": "n"}, h.replace("T", " ") + "h"); }),
      [el("th", {"class": "n"}, "total")]))]);
    var rows = lake.rows.map(function (row) {
      var cells = lake.hours.map(function (h) {
        var cell = row.hours.filter(function (c) { return c.hour === h; })[0];
        return cell ? lakeCell(cell) : el("td", {"class": "n"}, "\u2013");
      });
      return el.apply(null, ["tr", null, el("td", null, row.log_type)].concat(cells, [lakeCell(row)]));
    });
    if (!rows.length) rows = [el("tr", null, el("td", {colspan: lake.hours.length + 2, "class": "empty"}, "no file written yet"))];
    replaceChildren(byId("lake-rows"), rows);
  }

  // --- the chart ----------------------------------------------------------------------------------
  function niceMax(value) {
    if (!(value > 0)) return 1;
    var exp = Math.pow(10, Math.floor(Math.log10(value)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * exp >= value) return steps[i] * exp;
    return 10 * exp;
  }

  function drawChart(throughput, now) {
    var chart = byId("chart");
    var W = 800, H = 240, left = 56, right = 12, top = 12, bottom = 28;
    // The x axis covers the history we have, from one minute up to the 15-minute window.
    var all = throughput.points;
    var oldest = all.length ? all[0].at : now;
    var span = Math.min(throughput.window_seconds || 900, Math.max(60, now - oldest));
    var points = all.filter(function (p) { return p.at >= now - span; });
    var max = niceMax(points.reduce(function (m, p) { return Math.max(m, p.in_eps, p.out_eps); }, 0) * 1.05);
    function x(at) { return left + (W - left - right) * (1 - (now - at) / span); }
    function y(v) { return top + (H - top - bottom) * (1 - v / max); }
    var nodes = [];
    for (var i = 0; i <= 4; i++) {
      var value = max * i / 4;
      nodes.push(svg("line", {x1: left, x2: W - right, y1: y(value), y2: y(value), "class": "grid"}));
      var label = svg("text", {x: left - 6, y: y(value) + 4, "text-anchor": "end", "class": "axis"});
      label.textContent = value >= 1000 ? number(value) : String(Math.round(value * 10) / 10);
      nodes.push(label);
    }
    var steps = [10, 15, 30, 60, 120, 180, 300];
    var step = steps.filter(function (st) { return span / st <= 5; })[0] || 300;
    for (var ago = 0; ago <= span + 0.001; ago += step) {
      var tick = svg("text", {x: x(now - ago), y: H - 8, "text-anchor": ago === 0 ? "end" : "middle", "class": "axis"});
      tick.textContent = ago === 0 ? "now" : "\u2212" + (step < 60 ? ago + " s" : ago / 60 + " min");
      nodes.push(tick);
    }
    if (points.length < 2) {
      var note = svg("text", {x: (W + left) / 2, y: H / 2, "text-anchor": "middle", "class": "axis"});
      note.textContent = "collecting samples\u2026";
      nodes.push(note);
    }
    [["in_eps", "series-in"], ["out_eps", "series-out"]].forEach(function (series) {
      var coords = points.map(function (p) { return x(p.at).toFixed(1) + "," + y(p[series[0]]).toFixed(1); });
      nodes.push(svg("polyline", {points: coords.join(" "), "class": series[1], "data-points": coords.length}));
    });
    if (points.length) {
      var last = points[points.length - 1];
      var latest = svg("text", {x: W - right, y: top + 10, "text-anchor": "end", "class": "axis latest"});
      latest.textContent = "in " + number(last.in_eps, 1) + " \u00b7 out " + number(last.out_eps, 1) + " ev/s";
      nodes.push(latest);
    }
    replaceChildren(chart, nodes);
  }

  // --- refresh loop -------------------------------------------------------------------------------
  function getJSON(path) {
    return fetch(path, {cache: "no-store", headers: {Accept: "application/json"}}).then(function (response) {
      if (!response.ok) throw new Error(path + ": HTTP " + response.status);
      return response.json();
    });
  }

  function refresh() {
    Promise.all([getJSON("api/v1/pipeline"), getJSON("api/v1/lag"), getJSON("api/v1/rejects?limit=20"),
      getJSON("api/v1/files?limit=20"), getJSON("api/v1/flows"), getJSON("api/v1/lake?hours=6")])
      .then(function (results) {
        renderPipeline(results[0]);
        renderLag(results[1]);
        renderRejects(results[2]);
        renderFiles(results[3]);
        renderFlows(results[4]);
        renderLake(results[5]);
        byId("offline").hidden = true;
        body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function (error) {
        var banner = byId("offline");
        banner.textContent = "The health service did not answer (" + error.message + "); showing the last data.";
        banner.hidden = false;
      })
      .then(function () { window.setTimeout(refresh, refreshSeconds * 1000); });
  }

  var initial = JSON.parse(byId("initial-data").textContent);
  drawChart(initial.pipeline.throughput, initial.pipeline.generated_at);
  renderFlows(initial.flows);
  window.setTimeout(refresh, refreshSeconds * 1000);
})();
