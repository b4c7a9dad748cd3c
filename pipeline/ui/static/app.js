// The dashboard's own script: the disconnected banner and the overview's two uPlot charts.
// Everything else (live fragments, table refresh) is htmx and its SSE extension.
(function () {
  "use strict";
  const offline = () => document.getElementById("offline");
  document.body.addEventListener("htmx:sseError", () => { offline().hidden = false; });
  document.body.addEventListener("htmx:sseOpen", () => { offline().hidden = true; });
  document.body.addEventListener("htmx:sseClose", () => { offline().hidden = false; });

  const charts = {};
  function size(el) { return { width: Math.max(el.clientWidth, 300), height: 220 }; }

  function fmt(v, unit) {
    if (v == null) return "–";
    if (unit === " ms" && v >= 1000) return (v / 1000).toFixed(1) + " s";
    return (unit === " ms" ? v.toFixed(0) : v.toFixed(1)) + unit;
  }

  function draw(id, x, series, labels, unit) {
    const el = document.getElementById(id);
    if (!el) return;
    const data = [x, ...series];
    if (charts[id]) { charts[id].setData(data); return; }
    const colors = ["#2563eb", "#d97706", "#059669", "#dc2626"];
    const opts = {
      ...size(el),
      scales: { x: { time: true } },
      axes: [{}, { size: 64, values: (u, vals) => vals.map(v => v == null ? "" : fmt(v, unit)) }],
      series: [{}, ...labels.map((label, i) => ({
        label, stroke: colors[i % colors.length], width: 2, spanGaps: false,
        value: (u, v) => fmt(v, unit),
      }))],
    };
    charts[id] = new uPlot(opts, data, el);
    el.dataset.points = String(x.length);
  }

  function render(data) {
    if (!data) return;
    const t = data.throughput, l = data.latency;
    draw("chart-throughput", data.x, [t.submitted, t.launched, t.finished],
      ["submitted/s", "launched/s", "finished/s"], "");
    draw("chart-latency", data.x,
      [l.to_launch_p50, l.to_launch_p99, l.to_end_p50, l.to_end_p99],
      ["launch p50", "launch p99", "end p50", "end p99"], " ms");
    const el = document.getElementById("chart-throughput");
    if (el) {
      el.dataset.finished = String(t.finished.reduce((a, b) => a + b, 0));
      el.dataset.updates = String(Number(el.dataset.updates || 0) + 1);
    }
  }

  const initial = document.getElementById("series-initial");
  if (initial) render(JSON.parse(initial.textContent));
  document.body.addEventListener("sse:series", (e) => render(JSON.parse(e.detail.data)));
  window.addEventListener("resize", () => {
    for (const id in charts) charts[id].setSize(size(document.getElementById(id)));
  });
})();
