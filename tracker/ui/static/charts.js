/* The charts of the run and compare pages (uPlot, vendored), drawn from the container
 * <section id="charts" data-runs='["id", ...]' data-live="true|false"> and the JSON API only.
 *
 * One chart per metric (train and val_ overlaid), runs overlaid in Okabe-Ito colours by their
 * position in data-runs, the learning rate on a second log axis of the loss chart, and the
 * markers the store knows: best epoch, EarlyStopping's stopped and restored epochs,
 * TerminateOnNaN, an open end for runs that did not finish, a tick per checkpoint coloured by
 * its state. Controls live in the URL (?x=epoch|time&y=lin|log&smooth=0..0.99&batches=1).
 * What is drawn is exposed as window.trackerCharts so tests read markers from data, not pixels.
 */
(function () {
  "use strict";

  const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000"];
  const STATE_COLOURS = { ok: "#009E73", missing: "#D55E00", modified: "#E69F00" };
  const MARKER_LABELS = { best: "best", stopped: "stop", restored: "restored", nan: "NaN" };
  const OPEN_END = ["interrupted", "failed", "crashed"];
  const LIVE_MS = 3000;

  // -- values and options ---------------------------------------------------------------------

  /** A JSON value as drawn: a finite number, else null (a gap: "NaN", "Infinity", null). */
  function num(v) {
    return typeof v === "number" && isFinite(v) ? v : null;
  }

  function readOptions() {
    const q = new URLSearchParams(location.search);
    const smooth = Math.min(0.99, Math.max(0, parseFloat(q.get("smooth")) || 0));
    return {
      x: q.get("x") === "time" ? "time" : "epoch",
      y: q.get("y") === "log" ? "log" : "lin",
      smooth: smooth,
      batches: q.get("batches") === "1",
    };
  }

  /** The options into the URL: a new history entry when a person changed the view (so back
   * and forward step through views), else the current one replaced. */
  function writeOptions(o, push) {
    const q = new URLSearchParams(location.search);
    const set = (k, v, dflt) => (v === dflt ? q.delete(k) : q.set(k, String(v)));
    set("x", o.x, "epoch");
    set("y", o.y, "lin");
    set("smooth", o.smooth, 0);
    set("batches", o.batches ? 1 : 0, 0);
    const s = q.toString();
    const url = location.pathname + (s ? "?" + s : "") + location.hash;
    if (url === location.pathname + location.search + location.hash) return;
    if (push) history.pushState(null, "", url);
    else history.replaceState(history.state, "", url);
  }

  async function getJSON(url) {
    const r = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try {
        msg = (await r.json()).error || msg;
      } catch (e) {
        /* not JSON */
      }
      const err = new Error(msg);
      err.status = r.status;
      throw err;
    }
    return r.json();
  }

  /** The metric the run was judged by, as `tracker restore` picks it: its checkpoints' monitor,
   * else EarlyStopping's, else val_loss, else loss. */
  function monitorOf(run) {
    const cks = run.checkpoints || [];
    for (let i = cks.length - 1; i >= 0; i--) if (cks[i].monitor) return cks[i].monitor;
    const stop = run.stop || {};
    if (stop.monitor) return stop.monitor;
    return ["val_loss", "loss"].find((k) => k in (run.summaries || {})) || null;
  }

  function runMarkers(run) {
    const id = run.id,
      stop = run.stop || {},
      out = [];
    const monitor = monitorOf(run);
    const s = monitor && run.summaries[monitor];
    if (s) {
      const mode =
        stop.monitor === monitor && ["min", "max"].includes(stop.mode)
          ? stop.mode
          : (run.modes || {})[monitor]; // the server's rule (tracker.modes), as `best` decides
      const epoch = mode === "max" ? s.max_epoch : mode === "min" ? s.min_epoch : null;
      if (epoch != null) out.push({ kind: "best", run_id: id, epoch: epoch, metric: monitor });
    }
    if (stop.reason === "early_stopping" && stop.stopped_epoch != null)
      out.push({ kind: "stopped", run_id: id, epoch: stop.stopped_epoch });
    if (stop.restored_epoch != null) out.push({ kind: "restored", run_id: id, epoch: stop.restored_epoch });
    if (stop.reason === "terminate_on_nan" && stop.epoch != null)
      out.push({ kind: "nan", run_id: id, epoch: stop.epoch });
    if (OPEN_END.includes(run.status) && run.last_epoch != null)
      out.push({ kind: "open_end", run_id: id, epoch: run.last_epoch, status: run.status });
    for (const ck of run.checkpoints || [])
      if (ck.epoch != null)
        out.push({
          kind: "checkpoint",
          run_id: id,
          epoch: ck.epoch,
          batch: ck.batch,
          state: ck.state,
          source: ck.source,
        });
    return out;
  }

  /** Metric keys grouped into charts: {metric, keys}, losses first, train before val_. */
  function chartGroups(keys) {
    const groups = new Map();
    for (const k of keys) {
      if (k === "epoch_time_s" || isLR(k)) continue;
      const base = k.startsWith("val_") ? k.slice(4) : k;
      if (!groups.has(base)) groups.set(base, new Set());
      groups.get(base).add(k);
    }
    const rank = (m) => (m === "loss" ? 0 : m.includes("loss") ? 1 : 2);
    return [...groups.entries()]
      .sort((a, b) => rank(a[0]) - rank(b[0]) || a[0].localeCompare(b[0]))
      .map(([metric, ks]) => ({
        metric: metric,
        keys: [...ks].sort((a, b) => a.startsWith("val_") - b.startsWith("val_")),
      }));
  }

  /** The learning-rate keys of a run drawn: ours when recorded (the rate in effect), else the
   * `learning_rate` a scheduler put in the logs. */
  function lrKeys(series) {
    const keys = Object.keys(series).filter(isLR);
    const ours = keys.filter((k) => k !== "learning_rate");
    return ours.length ? ours : keys;
  }

  /** The learning rate: ours (`lr`, `lr/<optimizer>`) and the key Keras's schedulers log. */
  function isLR(k) {
    return k === "lr" || k.startsWith("lr/") || k === "learning_rate";
  }

  // -- one run's data -------------------------------------------------------------------------

  function seriesUrl(id, keys, extra) {
    const q = new URLSearchParams();
    keys.forEach((k) => q.append("key", k));
    for (const [k, v] of Object.entries(extra)) if (v != null) q.set(k, String(v));
    return "/api/runs/" + encodeURIComponent(id) + "/series?" + q;
  }

  /** {key: {x, epoch, value, total, shown}} of a run: epoch level, or with `batches` the train
   * keys at batch level (those the run did not record by batch stay at epoch level). A run
   * with batch points and no epoch yet (its first epoch still running) shows its batches.
   * `batchExtra`: the batch-level request's parameters when they differ from `extra`. */
  async function fetchSeries(run, opts, extra, batchExtra) {
    const keys = Object.keys(run.summaries || {});
    const batch = (ks) => getJSON(seriesUrl(run.id, ks, Object.assign({ batches: 1 }, batchExtra || extra)));
    if (!keys.length) {
      const got = (await batch([])).series; // every key the run has batch points of
      for (const s of Object.values(got)) s.batches = true;
      return got;
    }
    const all = (await getJSON(seriesUrl(run.id, keys, extra))).series;
    if (opts.batches) {
      const trainKeys = keys.filter((k) => !k.startsWith("val_") && !isLR(k) && k !== "epoch_time_s");
      const noBatches = (e) => {
        if (e.status !== 400) throw e; // a key without batch points stays at epoch level
        return { series: {} };
      };
      // all train keys at once; when one has no batch points (400), each on its own
      let got = await batch(trainKeys).catch(noBatches);
      if (!Object.keys(got.series).length && trainKeys.length > 1)
        got = {
          series: Object.assign(
            {},
            ...(await Promise.all(trainKeys.map((k) => batch([k]).catch(noBatches)))).map((b) => b.series),
          ),
        };
      for (const [k, s] of Object.entries(got.series))
        if (s.x.length) all[k] = Object.assign(s, { batches: true });
    }
    return all;
  }

  /** Elapsed time at an x (epoch, or fractional epoch for batches): the sum of epoch_time_s. */
  function timeMapper(series) {
    const t = series.epoch_time_s;
    const ends = new Map(),
      durs = new Map();
    if (t) {
      let sum = 0;
      t.epoch.forEach((e, i) => {
        const d = num(t.value[i]) || 0;
        sum += d;
        ends.set(e, sum);
        durs.set(e, d);
      });
    }
    return function (x, batch) {
      const e = Math.floor(x);
      if (!ends.has(e)) return null;
      return batch ? ends.get(e) - durs.get(e) + (x - e) * durs.get(e) : ends.get(e);
    };
  }

  /** The inverse of timeMapper for batch positions: the x (fractional epoch) at elapsed time
   * t, or null past the last epoch (an open end of a range). */
  function timeInverse(series) {
    const t = series.epoch_time_s,
      spans = [];
    if (t) {
      let sum = 0;
      t.epoch.forEach((e, i) => {
        const d = num(t.value[i]) || 0;
        spans.push([e, sum, d]);
        sum += d;
      });
    }
    return function (time) {
      for (const [e, start, d] of spans) {
        if (time < start) return e;
        if (time <= start + d) return d > 0 ? e + (time - start) / d : e;
      }
      return null;
    };
  }

  /** A run drawn with batch points: its epoch-level values (and markers) sit at the end of
   * their epoch, x = epoch + 1, where that epoch's batches end. */
  function batchView(series) {
    return Object.values(series).some((s) => s.batches && s.x.length);
  }

  function ema(ys, w) {
    const out = new Array(ys.length);
    let last = 0,
      n = 0;
    for (let i = 0; i < ys.length; i++) {
      const y = ys[i];
      if (y == null) {
        out[i] = null;
        continue;
      }
      last = last * w + (1 - w) * y;
      n++;
      out[i] = last / (1 - Math.pow(w, n));
    }
    return out;
  }

  // -- charts ---------------------------------------------------------------------------------

  function el(tag, attrs, text) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text != null) e.textContent = text;
    return e;
  }

  function theme(container) {
    const fg = getComputedStyle(container).color || "#222";
    return { fg: fg, grid: "rgba(128,128,128,0.22)" };
  }

  function colourOf(i, th) {
    const c = PALETTE[i % PALETTE.length];
    return c === "#000000" ? th.fg : c;
  }

  function logRange(u, min, max) {
    if (min == null || max == null || !(min > 0)) return [1e-4, 1];
    let lo = Math.pow(10, Math.floor(Math.log10(min))),
      hi = Math.pow(10, Math.ceil(Math.log10(max)));
    if (hi <= lo) hi = lo * 10;
    return [lo, hi];
  }

  function fmtValue(v) {
    if (v == null) return "–";
    const a = Math.abs(v);
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : +v.toPrecision(4) + "";
  }

  function axisValues(u, vs) {
    return vs.map((v) => (v == null ? "" : String(+v.toPrecision(3))));
  }

  /** Everything one chart draws, from the loaded runs: uPlot data, series options, markers. */
  function buildChart(group, runs, opts, th, withLR) {
    const xLabel = opts.x === "time" ? "elapsed (s)" : "epoch";
    const tables = [],
      lines = [],
      seriesOpts = [{ label: xLabel, value: (u, v) => fmtValue(v) }];
    let shown = 0,
      total = 0;
    const addLine = (xs, ys, s) => {
      tables.push([xs, ys]);
      seriesOpts.push(s.opts);
      lines.push(s.line);
    };
    runs.forEach((r, i) => {
      const colour = colourOf(i, th),
        toTime = timeMapper(r.series),
        shift = batchView(r.series) ? 1 : 0;
      const keys = group.keys.slice();
      if (withLR) keys.push(...lrKeys(r.series));
      for (const key of keys) {
        const s = r.series[key];
        if (!s) continue; // an empty line stays: a chart keeps its series through zoom and live
        const lr = isLR(key),
          val = key.startsWith("val_");
        const xs = [],
          ys = [];
        s.x.forEach((x, j) => {
          const px = opts.x === "time" ? toTime(x, !!s.batches) : s.batches ? x : x + shift;
          if (px == null) return;
          let y = num(s.value[j]);
          if (y != null && y <= 0 && (lr || opts.y === "log")) y = null;
          xs.push(px);
          ys.push(y);
        });
        if (!lr) {
          shown += s.shown;
          total += s.total;
        }
        const label = r.run.name + " · " + key;
        const base = {
          label: label,
          scale: lr ? "lr" : "y",
          stroke: colour,
          width: lr ? 1 : val ? 2 : 1.5,
          dash: lr ? [2, 3] : val ? undefined : [6, 4],
          value: (u, v) => fmtValue(v),
          points: { show: false },
        };
        const line = { run_id: r.run.id, key: key, axis: lr ? "lr" : "y", colour: colour, x: xs, y: ys };
        if (opts.smooth > 0 && !lr) {
          addLine(xs, ys, {
            opts: Object.assign({}, base, {
              label: label + " (raw)",
              class: "chart-raw",
              stroke: colour.startsWith("#") ? colour + "40" : "rgba(128,128,128,0.3)",
              dash: undefined,
              width: 1,
            }),
            line: Object.assign({ raw: true }, line),
          });
          const sm = ema(ys, opts.smooth);
          addLine(xs, sm, { opts: base, line: Object.assign({}, line, { y: sm, smoothed: opts.smooth }) });
        } else {
          addLine(xs, ys, { opts: base, line: line });
        }
      }
    });
    const data = tables.length ? uPlot.join(tables) : [[]];
    const markers = [];
    runs.forEach((r, i) => {
      const toTime = timeMapper(r.series),
        shift = batchView(r.series) ? 1 : 0;
      for (const m of r.markers) {
        const x = opts.x === "time" ? toTime(m.epoch, false) : m.epoch + shift;
        if (x != null) markers.push(Object.assign({ x: x, colour: colourOf(i, th) }, m));
      }
    });
    return { data: data, seriesOpts: seriesOpts, lines: lines, markers: markers, shown: shown, total: total };
  }

  function drawMarkers(u, markers, th) {
    const ctx = u.ctx,
      dpr = devicePixelRatio || 1,
      { left, top, width, height } = u.bbox;
    ctx.save();
    ctx.font = 10 * dpr + "px sans-serif";
    ctx.textBaseline = "top";
    const labelled = new Map();
    for (const m of markers) {
      const px = Math.round(u.valToPos(m.x, "x", true));
      if (!(px >= left - 1 && px <= left + width + 1)) continue;
      if (m.kind === "checkpoint") {
        ctx.fillStyle = STATE_COLOURS[m.state] || th.fg;
        ctx.fillRect(px - 1.5 * dpr, top + height - 10 * dpr, 3 * dpr, 10 * dpr);
        continue;
      }
      ctx.strokeStyle = m.colour;
      ctx.lineWidth = (m.kind === "best" ? 1.5 : 1) * dpr;
      ctx.setLineDash(
        m.kind === "best" ? [] : m.kind === "open_end" ? [2 * dpr, 2 * dpr] : [5 * dpr, 3 * dpr],
      );
      ctx.beginPath();
      ctx.moveTo(px, top);
      ctx.lineTo(px, top + height);
      ctx.stroke();
      const row = labelled.get(px) || 0; // stacked labels where markers coincide
      labelled.set(px, row + 1);
      ctx.fillStyle = m.colour;
      const text = m.kind === "open_end" ? m.status + " here" : MARKER_LABELS[m.kind],
        right = px + 3 * dpr + ctx.measureText(text).width > left + width;
      ctx.textAlign = right ? "right" : "left";
      ctx.fillText(text, px + (right ? -3 : 3) * dpr, top + 2 * dpr + row * 11 * dpr);
    }
    ctx.restore();
  }

  function uplotOptions(c, width, opts, th, hasLR) {
    const axis = { stroke: th.fg, grid: { stroke: th.grid, width: 1 }, ticks: { stroke: th.grid } };
    const scales = { x: { time: false }, y: opts.y === "log" ? { distr: 3, log: 10, range: logRange } : {} };
    const axes = [
      Object.assign({ label: opts.x === "time" ? "elapsed (s)" : "epoch" }, axis),
      Object.assign({ label: c.group.metric, size: 60, values: axisValues }, axis),
    ];
    if (hasLR) {
      scales.lr = { distr: 3, log: 10, range: logRange };
      axes.push(
        Object.assign({}, axis, {
          scale: "lr",
          side: 1,
          label: "lr (log)",
          size: 80,
          grid: { show: false },
          values: axisValues,
        }),
      );
    }
    return {
      width: width,
      height: hasLR ? 300 : 240,
      scales: scales,
      axes: axes,
      series: c.built.seriesOpts,
      cursor: { drag: { x: true, y: false, setScale: true } },
      legend: { live: true },
      hooks: {
        draw: [
          (u) => drawMarkers(u, c.built.markers, th),
          () => c.drawMs == null && (c.drawMs = performance.now() - c.t0),
        ],
        setScale: [(u, key) => key === "x" && onZoom(c, u)],
      },
    };
  }

  // -- the page's state -----------------------------------------------------------------------

  const state = {
    container: null,
    ids: [],
    runs: [],
    charts: [],
    opts: null,
    timer: null,
    showOptions: null,
    rebuilding: false,
    refreshing: false,
  };

  function onZoom(c, u) {
    if (state.rebuilding) return;
    const xs = u.data[0];
    const { min, max } = u.scales.x;
    c.zoomed = xs.length > 0 && (min > xs[0] || max < xs[xs.length - 1]);
    if (!c.zoomed && c.refetched) {
      // reset (double-click) after a zoomed refetch: back to the whole downsampled series
      c.refetched = false;
      update(c, buildChart(c.group, state.runs, state.opts, theme(state.container), c.hasLR), null);
    }
    publish();
    if (c.zoomed && c.built.shown < c.built.total) {
      clearTimeout(c.refetch);
      c.refetch = setTimeout(() => refetchRange(c, min, max), 250);
    }
  }

  /** The series' x range (epoch, or epoch + step / steps for batches) of a chart's x range
   * [min, max] for one run: by batch position and by epoch (an epoch-level value is drawn at
   * its epoch's end when x is time or the run shows batches). */
  function seriesRange(r, min, max) {
    const inv = state.opts.x === "time" ? timeInverse(r.series) : (v) => v;
    const lo = inv(min),
      hi = inv(max);
    const back = state.opts.x === "time" || batchView(r.series) ? 1 : 0;
    const minus = (v) => (v == null ? null : v - back);
    return { batch: { x_min: lo, x_max: hi }, epoch: { x_min: minus(lo), x_max: minus(hi) } };
  }

  /** Zoomed into downsampled series: fetch the range again at full resolution for the width. */
  async function refetchRange(c, min, max) {
    try {
      const runs = await Promise.all(
        state.runs.map(async (r) => {
          const range = seriesRange(r, min, max),
            n = { max_points: maxPoints() };
          const series = await fetchSeries(
            r.run,
            state.opts,
            Object.assign({}, n, range.epoch),
            Object.assign({}, n, range.batch),
          );
          // elapsed time is summed from the first epoch: its durations stay whole
          if (r.series.epoch_time_s) series.epoch_time_s = r.series.epoch_time_s;
          return Object.assign({}, r, { series: Object.assign({}, r.series, series) });
        }),
      );
      c.refetched = true;
      update(c, buildChart(c.group, runs, state.opts, theme(state.container), c.hasLR), {
        min: min,
        max: max,
      });
      publish();
    } catch (e) {
      showError(e);
    }
  }

  function maxPoints() {
    // ~3 points (min, max, last) per bucket and about one bucket per pixel of the chart
    return Math.max(300, 3 * Math.round(state.container.clientWidth || 800));
  }

  async function loadRun(id) {
    const run = await getJSON("/api/runs/" + encodeURIComponent(id) + "?epochs=0");
    const series = await fetchSeries(run, state.opts, { max_points: maxPoints() });
    return { run: run, series: series, markers: runMarkers(run) };
  }

  /** The chart's uPlot, made anew (before its note) from c.built. */
  function mount(c, width) {
    const th = theme(state.container);
    c.fg = th.fg;
    c.plot = new uPlot(
      uplotOptions(c, width, state.opts, th, c.hasLR),
      c.built.data,
      (u, init) => {
        c.fig.insertBefore(u.root, c.note);
        init();
      },
    );
    c.fig.querySelectorAll(".u-legend .chart-raw").forEach((row) => (row.style.display = "none"));
    renderNote(c);
  }

  /** New data for a drawn chart; `zoom` ({min, max} of x) kept when given, else the whole
   * data shown. Series added or gone (a new key, a run's first point): the chart is remade. */
  function update(c, built, zoom) {
    state.rebuilding = true;
    try {
      c.built = built;
      if (built.seriesOpts.length !== c.plot.series.length) {
        const width = c.plot.width;
        c.plot.destroy();
        mount(c, Math.max(320, c.fig.clientWidth || width));
      } else {
        c.plot.setData(built.data, !zoom);
        renderNote(c);
      }
      if (zoom) c.plot.setScale("x", zoom);
    } finally {
      state.rebuilding = false;
    }
  }

  function renderNote(c) {
    const b = c.built;
    c.note.textContent =
      b.shown < b.total ? b.shown + " of " + b.total + " points (zoom in for more)" : b.total + " points";
  }

  function publish() {
    window.trackerCharts = state.charts.map((c) => {
      const series = {},
        lr = {};
      for (const l of c.built.lines) {
        if (l.raw) continue;
        if (l.axis === "lr")
          lr[l.run_id] =
            lr[l.run_id] && lr[l.run_id].key === "lr" ? lr[l.run_id] : { key: l.key, x: l.x, y: l.y };
        else if (!series[l.run_id] || l.key.startsWith("val_"))
          series[l.run_id] = { key: l.key, x: l.x, y: l.y };
      }
      const entry = {
        metric: c.group.metric,
        keys: c.group.keys,
        runs: state.runs.map((r) => r.run.id),
        series: series,
        lr: lr,
        lines: c.built.lines.map((l) => ({
          run_id: l.run_id,
          key: l.key,
          axis: l.axis,
          raw: !!l.raw,
          colour: l.colour,
          x: l.x,
          y: l.y,
        })),
        colours: Object.fromEntries(c.built.lines.map((l) => [l.run_id, l.colour])),
        markers: c.built.markers.map((m) => Object.assign({}, m)),
        scales: {
          x: state.opts.x,
          y: state.opts.y,
          yDistr: c.plot.scales.y.distr,
          lr: c.hasLR ? "log" : null,
          lrDistr: c.hasLR ? c.plot.scales.lr.distr : null,
        },
        refetched: !!c.refetched,
        fg: c.fg,
        zoom: c.zoomed ? { min: c.plot.scales.x.min, max: c.plot.scales.x.max } : null,
        shown: c.built.shown,
        total: c.built.total,
        drawMs: c.drawMs,
      };
      Object.defineProperty(entry, "plot", { value: c.plot, enumerable: false });
      return entry;
    });
  }

  function showError(e) {
    let p = state.container.querySelector(".charts-error");
    if (!p) p = state.container.appendChild(el("p", { class: "charts-error", role: "alert" }));
    p.textContent = "Charts: " + (e && e.message ? e.message : String(e));
    state.container.dataset.state = "error";
  }

  function controls() {
    const o = state.opts;
    const bar = el("form", {
      class: "charts-controls",
      style: "display:flex;flex-wrap:wrap;gap:0.5em 1.5em;align-items:center",
    });
    bar.addEventListener("submit", (e) => e.preventDefault());
    const select = (name, label, choices, value) => {
      const l = el("label", {}, label + " ");
      const s = el("select", { name: name });
      for (const [v, t] of choices) {
        const opt = el("option", { value: v }, t);
        if (v === value) opt.selected = true;
        s.appendChild(opt);
      }
      l.appendChild(s);
      bar.appendChild(l);
      return s;
    };
    const x = select(
      "x",
      "x",
      [
        ["epoch", "epoch"],
        ["time", "elapsed time"],
      ],
      o.x,
    );
    const y = select(
      "y",
      "y",
      [
        ["lin", "linear"],
        ["log", "log"],
      ],
      o.y,
    );
    const sl = el("label", {}, "smoothing ");
    const sm = el("input", {
      type: "range",
      name: "smooth",
      min: "0",
      max: "0.99",
      step: "0.01",
      value: String(o.smooth),
    });
    const out = el("output", {}, String(o.smooth));
    sl.append(sm, " ", out);
    const bl = el("label", {}, " batches");
    const b = el("input", { type: "checkbox", name: "batches" });
    b.checked = o.batches;
    bl.prepend(b);
    bar.append(sl, bl);
    let sliding = false; // one history entry for a drag of the smoothing slider
    const changed = async (reload, push) => {
      state.opts = { x: x.value, y: y.value, smooth: +sm.value, batches: b.checked };
      out.textContent = sm.value;
      writeOptions(state.opts, push);
      if (reload) await load();
      else render();
    };
    x.addEventListener("change", () => changed(false, true));
    y.addEventListener("change", () => changed(false, true));
    sm.addEventListener("input", () => {
      changed(false, !sliding);
      sliding = true;
    });
    sm.addEventListener("change", () => (sliding = false));
    b.addEventListener("change", () => changed(true, true));
    /** Back or forward: the controls and charts of that entry's URL. */
    state.showOptions = (o) => {
      x.value = o.x;
      y.value = o.y;
      sm.value = String(o.smooth);
      out.textContent = sm.value;
      b.checked = o.batches;
    };
    return bar;
  }

  /** Draws every chart anew from state.runs (first load, a control changed, a new metric). */
  function render() {
    const box = state.container.querySelector(".charts-body");
    for (const c of state.charts) c.plot.destroy();
    box.textContent = "";
    state.charts = [];
    const th = theme(state.container);
    const keys = new Set();
    state.runs.forEach((r) => Object.keys(r.series).forEach((k) => r.series[k].x.length && keys.add(k)));
    const groups = chartGroups(keys);
    if (!groups.length) box.appendChild(el("p", { class: "charts-empty" }, "No epochs recorded yet."));
    const width = Math.max(320, box.clientWidth || state.container.clientWidth || 800);
    const lrOn = groups.findIndex((g) => g.metric.includes("loss"));
    groups.forEach((group, gi) => {
      const hasLR = gi === Math.max(lrOn, 0) && [...keys].some(isLR);
      const c = { group: group, hasLR: hasLR, zoomed: false, t0: performance.now(), drawMs: null };
      c.built = buildChart(group, state.runs, state.opts, th, hasLR);
      const fig = el("figure", { class: "chart", "data-metric": group.metric });
      const styled = group.keys.map((k) =>
        group.keys.length > 1 ? k + (k.startsWith("val_") ? " (solid)" : " (dashed)") : k,
      );
      fig.appendChild(
        el("figcaption", {}, styled.join(", ") + (hasLR ? "; learning rate dotted, on the right (log)" : "")),
      );
      box.appendChild(fig);
      c.fig = fig;
      c.note = fig.appendChild(el("p", { class: "chart-points" }));
      mount(c, Math.max(320, fig.clientWidth || width)); // inside the figure's own margins
      state.charts.push(c);
    });
    // uPlot draws on the next microtask: "ready" (and drawMs, data to first draw) after that
    queueMicrotask(() => {
      publish();
      state.container.dataset.state = "ready";
    });
  }

  async function load() {
    state.container.dataset.state = "loading";
    try {
      state.runs = await Promise.all(state.ids.map(loadRun));
      render();
    } catch (e) {
      showError(e);
    }
  }

  // -- live refresh ---------------------------------------------------------------------------

  function lastEpoch(r) {
    let last = null;
    for (const s of Object.values(r.series))
      if (s.epoch.length) last = Math.max(last == null ? -Infinity : last, s.epoch[s.epoch.length - 1]);
    return last;
  }

  /** A running run: the epochs after the last one shown, appended; zoom kept where set. */
  async function refreshLive() {
    const running = state.runs.filter((r) => r.run.status === "running");
    if (!running.length) return stopLive();
    if (state.refreshing) return; // the previous refresh is still waiting for the server
    state.refreshing = true;
    try {
      let newKeys = false;
      for (const r of running) {
        const run = await getJSON("/api/runs/" + encodeURIComponent(r.run.id) + "?epochs=0");
        const last = lastEpoch(r);
        const fresh = await fetchSeries(run, state.opts, { after_epoch: last == null ? -1 : last });
        for (const [k, s] of Object.entries(fresh)) {
          const old = r.series[k];
          if (!old || (old.batches && !s.batches)) {
            r.series[k] = s;
            newKeys = newKeys || s.x.length > 0;
            continue;
          }
          if (!!old.batches !== !!s.batches) continue;
          old.x.push(...s.x);
          old.epoch.push(...s.epoch);
          old.value.push(...s.value);
          if (old.step && s.step) old.step.push(...s.step);
          old.total += s.total;
          old.shown += s.shown;
        }
        r.run = run;
        r.markers = runMarkers(run);
      }
      const keys = new Set(state.charts.map((c) => c.group.keys.join()));
      const groups = chartGroups(
        new Set(state.runs.flatMap((r) => Object.keys(r.series).filter((k) => r.series[k].x.length))),
      );
      if (newKeys && groups.some((g) => !keys.has(g.keys.join()))) return render();
      const th = theme(state.container);
      for (const c of state.charts) {
        const zoom = c.zoomed ? { min: c.plot.scales.x.min, max: c.plot.scales.x.max } : null;
        update(c, buildChart(c.group, state.runs, state.opts, th, c.hasLR), zoom);
      }
      publish();
    } catch (e) {
      showError(e);
    } finally {
      state.refreshing = false;
    }
  }

  function startLive() {
    if (state.timer == null) state.timer = setInterval(refreshLive, LIVE_MS);
  }

  function stopLive() {
    clearInterval(state.timer);
    state.timer = null;
  }

  // -- start ----------------------------------------------------------------------------------

  function start() {
    const container = document.getElementById("charts");
    if (!container || typeof uPlot === "undefined") return;
    let ids;
    try {
      ids = JSON.parse(container.dataset.runs || "[]");
    } catch (e) {
      ids = [];
    }
    state.container = container;
    state.ids = ids;
    state.opts = readOptions();
    container.textContent = "";
    container.append(controls(), el("div", { class: "charts-body" }));
    window.trackerCharts = [];
    load().then(() => {
      if (container.dataset.live === "true") startLive();
    });
    // the theme toggle changes data-theme on <html>: redraw with its colours
    new MutationObserver(() => state.runs.length && render()).observe(document.documentElement, {
      attributes: true,
      attributeFilter: ["data-theme"],
    });
    window.addEventListener("popstate", () => {
      const before = state.opts;
      state.opts = readOptions();
      state.showOptions(state.opts);
      if (state.opts.batches !== before.batches) load();
      else if (state.runs.length) render();
    });
    let resize;
    window.addEventListener("resize", () => {
      clearTimeout(resize);
      resize = setTimeout(() => {
        state.charts.forEach((c) =>
          c.plot.setSize({ width: Math.max(320, c.fig.clientWidth), height: c.plot.height }),
        );
      }, 150);
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
