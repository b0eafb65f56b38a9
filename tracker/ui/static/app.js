// tracker ui: the theme toggle (every page) and the runs table's live refresh.
// No framework and no inline script (the CSP forbids them); state stays in the URL.
(function () {
  "use strict";

  // -- theme: system preference unless the toggle chose one (kept in localStorage) --
  var THEME_KEY = "tracker-theme";
  var root = document.documentElement;

  function storedTheme() {
    try { return localStorage.getItem(THEME_KEY); } catch (e) { return null; }
  }
  function applyTheme(theme) {
    if (theme === "light" || theme === "dark") root.dataset.theme = theme;
    else delete root.dataset.theme;
  }
  function currentTheme() {
    if (root.dataset.theme) return root.dataset.theme;
    var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
    return dark ? "dark" : "light";
  }
  applyTheme(storedTheme());

  function setUpToggle() {
    var button = document.getElementById("theme-toggle");
    if (!button) return;
    button.addEventListener("click", function () {
      var next = currentTheme() === "dark" ? "light" : "dark";
      applyTheme(next);
      try { localStorage.setItem(THEME_KEY, next); } catch (e) { /* private mode */ }
      document.dispatchEvent(new CustomEvent("tracker:theme", { detail: next }));
    });
  }

  // -- runs table: refresh every 5 s through /api/runs, in place (filters, scroll, selection kept) --
  var REFRESH_MS = 5000;

  function fmtNumber(v) {
    if (v === null || v === undefined) return "-";
    if (v === "NaN") return "nan";
    if (v === "Infinity") return "inf";
    if (v === "-Infinity") return "-inf";
    // As the server writes it (Python's "%.4g"): 4 significant digits, exponent form
    // below 1e-4 and from 1e4 on, trailing zeros dropped.
    var n = Number(v);
    if (n === 0) return "0";
    var parts = n.toExponential(3).split("e");
    var exp = Number(parts[1]);
    if (exp < -4 || exp >= 4) {
      var mantissa = parts[0].indexOf(".") < 0 ? parts[0] : parts[0].replace(/\.?0+$/, "");
      return mantissa + "e" + (exp < 0 ? "-" : "+") + String(Math.abs(exp)).padStart(2, "0");
    }
    return String(Number(n.toPrecision(4)));
  }
  function fmtAt(v) {
    if (!v || v.value === null || v.value === undefined) return "-";
    return fmtNumber(v.value) + " @ e" + v.epoch;
  }
  function fmtDuration(s) {
    if (s === null || s === undefined) return "-";
    s = Math.round(s);
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m" + String(s % 60).padStart(2, "0") + "s";
    return Math.floor(s / 3600) + "h" + String(Math.floor((s % 3600) / 60)).padStart(2, "0") + "m";
  }
  function badge(cell, prefix, value) {
    cell.textContent = "";
    if (!value) return;
    var span = document.createElement("span");
    span.className = "badge " + prefix + value;
    span.textContent = value;
    cell.appendChild(span);
  }
  function setText(row, selector, text) {
    var cell = row.querySelector(selector);
    if (cell && cell.textContent !== text) cell.textContent = text;
  }

  function updateRow(row, run) {
    var status = row.querySelector('[data-col="status"]');
    if (status && status.textContent.trim() !== run.status) badge(status, "status-", run.status);
    var stop = row.querySelector('[data-col="stop_reason"]');
    if (stop && stop.textContent.trim() !== (run.stop_reason || "")) badge(stop, "stop-", run.stop_reason);
    setText(row, '[data-col="epochs"]', run.epochs + (run.epochs_planned ? "/" + run.epochs_planned : ""));
    setText(row, '[data-col="duration"]', fmtDuration(run.duration_s));
    row.querySelectorAll("[data-metric]").forEach(function (cell) {
      var text = fmtAt((run.values || {})[cell.dataset.metric]);
      if (cell.textContent !== text) cell.textContent = text;
    });
  }

  function refreshRuns(table) {
    var url = table.dataset.api;
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) return;
        var rows = {};
        table.querySelectorAll("tbody tr[data-run-id]").forEach(function (tr) { rows[tr.dataset.runId] = tr; });
        var added = 0;
        data.runs.forEach(function (run) {
          if (rows[run.id]) updateRow(rows[run.id], run);
          else added += 1;
        });
        var note = document.getElementById("live-note");
        var count = document.getElementById("runs-count");
        var before = count ? Number(count.dataset.total) : data.total;
        if (note) {
          var fresh = Math.max(added, data.total - before);
          note.textContent = fresh > 0 ? fresh + " new run" + (fresh > 1 ? "s" : "") + ": reload to show" : "";
        }
      })
      .catch(function () { /* the server is away for a moment: try again next time */ });
  }

  function setUpRunsTable() {
    var table = document.getElementById("runs");
    if (!table || !table.dataset.api) return;
    window.setInterval(function () {
      if (!document.hidden) refreshRuns(table);
    }, REFRESH_MS);
  }

  // The compare button needs two runs: say so instead of sending a request that fails.
  function setUpCompare() {
    var form = document.getElementById("compare-form");
    if (!form) return;
    form.addEventListener("submit", function (event) {
      var chosen = document.querySelectorAll('input[name="run"][form="compare-form"]:checked');
      if (chosen.length < 2) {
        event.preventDefault();
        var note = document.getElementById("live-note");
        if (note) note.textContent = "select two or more runs to compare";
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpToggle();
    setUpRunsTable();
    setUpCompare();
  });
})();
