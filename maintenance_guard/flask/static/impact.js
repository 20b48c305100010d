/* Dashboard "Impact" section: redrawn from each admin overview (the "mg:overview" event
   admin.js sends), with textContent and SVG attributes only. */
(function () {
  "use strict";
  var WIDTH = 240;
  var HEIGHT = 40;

  function humanTime(iso) {
    if (!iso) { return ""; }
    var parts = iso.split("T");
    return parts.length > 1 ? parts[0] + " " + parts[1].slice(0, 5) + " UTC" : iso;
  }

  // The same drawing as maintenance_guard.impact.sparkline_points.
  function sparkline(counts) {
    if (!counts.length) { return ""; }
    var values = counts.length > 1 ? counts : [counts[0], counts[0]];
    var peak = Math.max.apply(null, values) || 1;
    var step = WIDTH / (values.length - 1);
    return values.map(function (n, i) {
      var x = Math.round(i * step * 10) / 10;
      var y = Math.round((HEIGHT - n / peak * HEIGHT) * 10) / 10;
      return x + "," + y;
    }).join(" ");
  }

  function set(name, value) {
    var node = document.querySelector("[data-mg-impact='" + name + "']");
    if (node) { node.textContent = String(value); }
  }

  function windowLine(impact) {
    if (!impact) { return "No maintenance window yet."; }
    var text = (impact.active ? "Maintenance window under way" : "Last maintenance window") +
      " (" + impact.modes.join(", ") + "), opened " + humanTime(impact.opened_at);
    if (!impact.active) { text += ", ended " + (humanTime(impact.ended_at) || "at an unknown time"); }
    return impact.reason ? text + ": " + impact.reason : text;
  }

  function rows(impact) {
    var out = [];
    function add(kind, byOperation) {
      Object.keys(byOperation).sort().forEach(function (op) {
        Object.keys(byOperation[op]).sort().forEach(function (surface) {
          out.push([kind, op, surface, byOperation[op][surface]]);
        });
      });
    }
    if (impact) {
      add("refused", impact.refused || {});
      Object.keys(impact.would_refuse || {}).sort().forEach(function (mode) {
        add(mode + " would refuse", impact.would_refuse[mode]);
      });
    }
    return out;
  }

  function render(impact) {
    document.getElementById("mg-impact-window").textContent = windowLine(impact);
    set("refused_total", impact ? impact.refused_total : 0);
    set("distinct_users", impact ? impact.distinct_users : 0);
    set("refused_without_user", impact ? impact.refused_without_user : 0);
    set("jobs_finished", impact ? impact.jobs_finished : 0);
    var s = impact && impact.sessions;
    set("sessions", s ? s.admin + " admin, " + s.non_admin + " non-admin" +
                        (s.truncated ? " (at least)" : "") : "unknown");
    var series = impact ? impact.attempts_per_minute.counts : [];
    var step = impact ? impact.attempts_per_minute.step_minutes : 1;
    document.querySelector("#mg-impact-chart polyline").setAttribute("points", sparkline(series));
    document.getElementById("mg-impact-chart-caption").textContent =
      "Refusals per " + (step === 1 ? "minute" : step + " minutes") +
      " since the window opened (peak " + (series.length ? Math.max.apply(null, series) : 0) + ")";
    var tbody = document.querySelector("#mg-impact-refused tbody");
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    var list = rows(impact);
    if (!list.length) { list = [["Nothing refused in this window."]]; }
    list.forEach(function (cells) {
      var tr = document.createElement("tr");
      cells.forEach(function (value) {
        var td = document.createElement("td");
        td.textContent = String(value);
        if (cells.length === 1) { td.colSpan = 4; }
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
  }

  document.addEventListener("mg:overview", function (event) {
    if (event.detail && document.getElementById("mg-impact")) {
      render(event.detail.impact || null);
    }
  });
})();
