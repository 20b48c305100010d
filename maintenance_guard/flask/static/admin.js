/* Admin dashboard: JSON calls with the CSRF token; tables rebuilt with textContent only. */
(function () {
  "use strict";
  var tokenMeta = document.querySelector('meta[name="mg-csrf-token"]');
  var token = tokenMeta ? tokenMeta.getAttribute("content") : "";
  var script = document.getElementById("mg-admin-script");
  var overviewUrl = script.getAttribute("data-overview-url");
  var result = document.getElementById("mg-result");

  function show(text, ok) {
    result.textContent = text;
    result.setAttribute("data-ok", ok ? "true" : "false");
  }

  function post(url, payload) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json",
                "X-CSRF-Token": token},
      body: JSON.stringify(payload)
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) {
          throw new Error(data.message || ("request failed (" + response.status + ")"));
        }
        return data;
      });
    });
  }

  function row(cells) {
    var tr = document.createElement("tr");
    cells.forEach(function (value) {
      var td = document.createElement("td");
      td.textContent = value === null || value === undefined ? "" : String(value);
      tr.appendChild(td);
    });
    return tr;
  }

  function fill(tableId, rows, empty, columns) {
    var tbody = document.querySelector("#" + tableId + " tbody");
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    if (!rows.length) {
      var tr = row([empty]);
      tr.firstChild.colSpan = columns;
      tbody.appendChild(tr);
    }
    rows.forEach(function (cells) { tbody.appendChild(row(cells)); });
  }

  function renderOverview(data) {
    var jobs = data.jobs || [];
    fill("mg-jobs", jobs.map(function (j) {
      return [j.name, j.operation || "", j.id, j.worker, j.started_at || ""];
    }), data.jobs === null ? data.active_jobs_count + " running (details unavailable)"
                           : "No jobs running.", 5);
    document.getElementById("mg-jobs-count").textContent = String(data.active_jobs_count);
    var attempts = [];
    Object.keys(data.attempts || {}).forEach(function (kind) {
      Object.keys(data.attempts[kind]).forEach(function (op) {
        Object.keys(data.attempts[kind][op]).forEach(function (surface) {
          attempts.push([kind, op, surface, data.attempts[kind][op][surface]]);
        });
      });
    });
    fill("mg-attempts", attempts, "No refused attempts recorded.", 4);
    fill("mg-paused", (data.paused_queues || []).map(function (p) {
      return [p.queue, p.until || "until resumed", (p.workers || ["all"]).join(", "),
              p.beat ? "skips" : "queues up", p.reason, p.by];
    }), "No queue is paused.", 6);
    var workers = data.workers || {};
    fill("mg-workers", Object.keys(workers).sort().map(function (name) {
      var w = workers[name];
      return [name, w.consuming.filter(function (q) { return w.paused.indexOf(q) < 0; }).join(", "),
              w.paused.join(", ")];
    }), "No worker registered.", 3);
    fill("mg-history", (data.events || []).map(function (e) {
      return [e.at, e.type, e.actor, e.reason, e.mode || e.previous_mode || ""];
    }), "No events yet.", 5);
    // Other parts of the dashboard (impact.js) render their own section from it.
    document.dispatchEvent(new CustomEvent("mg:overview", {detail: data}));
  }

  function refreshOverview() {
    fetch(overviewUrl, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { renderOverview(data); } })
      .catch(function () {});
  }

  document.getElementById("mg-enable-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var form = event.target;
    var payload = {mode: form.mode.value, reason: form.reason.value};
    var duration = form.duration.value.trim();
    if (duration) { payload.duration = /^\d+$/.test(duration) ? Number(duration) : duration; }
    if (form.auto_end.checked) { payload.auto_end = true; }
    var ops = Array.prototype.filter.call(form.querySelectorAll('input[name="operations"]'),
      function (box) { return box.checked; }).map(function (box) { return box.value; });
    if (ops.length && payload.mode === "normal") { payload.operations = ops; }
    post(form.getAttribute("data-url"), payload)
      .then(function (s) { show("Maintenance enabled (" + s.mode + " mode).", true); refreshOverview(); })
      .catch(function (e) { show(e.message, false); });
  });

  document.getElementById("mg-disable-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var form = event.target;
    var payload = {};
    if (form.reason.value.trim()) { payload.reason = form.reason.value; }
    post(form.getAttribute("data-url"), payload)
      .then(function () { show("Maintenance disabled.", true); refreshOverview(); })
      .catch(function (e) { show(e.message, false); });
  });

  document.getElementById("mg-emergency-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var form = event.target;
    if (!window.confirm("Trigger emergency maintenance? Running jobs will be stopped.")) { return; }
    var grace = form.grace_period.value.trim();
    var payload = {reason: form.reason.value};
    if (grace !== "") { payload.grace_period = /^\d+$/.test(grace) ? Number(grace) : grace; }
    post(form.getAttribute("data-url"), payload)
      .then(function () { show("Emergency maintenance triggered.", true); refreshOverview(); })
      .catch(function (e) { show(e.message, false); });
  });

  function names(text) {
    return text.split(",").map(function (n) { return n.trim(); }).filter(function (n) { return n; });
  }

  document.getElementById("mg-pause-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var form = event.target;
    var payload = {queues: names(form.queues.value), reason: form.reason.value};
    var workers = names(form.workers.value);
    if (workers.length) { payload.workers = workers; }
    var duration = form.duration.value.trim();
    if (duration) { payload.duration = /^\d+$/.test(duration) ? Number(duration) : duration; }
    if (form.beat.checked) { payload.beat = true; }
    post(form.getAttribute("data-url"), payload)
      .then(function (r) {
        var text = "Paused: " + payload.queues.join(", ") + ".";
        if (r.warnings && r.warnings.length) { text += " Warning: " + r.warnings.join(" "); }
        show(text, true);
        refreshOverview();
      })
      .catch(function (e) { show(e.message, false); });
  });

  document.getElementById("mg-resume-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var queues = names(event.target.queues.value);
    var payload = queues.length ? {queues: queues} : {all: true};
    post(event.target.getAttribute("data-url"), payload)
      .then(function (r) {
        show(r.resumed.length ? "Resumed: " + r.resumed.join(", ") + "." : "Nothing was paused.", true);
        refreshOverview();
      })
      .catch(function (e) { show(e.message, false); });
  });

  var windowsTable = document.getElementById("mg-windows");
  var scheduleUrl = document.getElementById("mg-schedule-form").getAttribute("data-url");

  function renderWindows(windows) {
    var tbody = windowsTable.querySelector("tbody");
    fill("mg-windows", windows.map(function (w) {
      return [w.id, w.start, w.expected_end, w.mode, w.reason, w.announce_at || "at once", ""];
    }), "Nothing is scheduled.", 7);
    Array.prototype.forEach.call(tbody.querySelectorAll("tr"), function (tr, i) {
      if (!windows[i]) { return; }
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = "Cancel";
      button.setAttribute("data-window", windows[i].id);
      button.addEventListener("click", function () {
        post(scheduleUrl + "/" + encodeURIComponent(windows[i].id) + "/cancel", {})
          .then(function (r) { show("Cancelled " + windows[i].id + ".", true); renderWindows(r.windows); })
          .catch(function (e) { show(e.message, false); });
      });
      tr.lastChild.appendChild(button);
    });
  }

  function refreshWindows() {
    fetch(windowsTable.getAttribute("data-url"), {credentials: "same-origin",
                                                  headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) { if (data) { renderWindows(data.windows); } })
      .catch(function () {});
  }

  document.getElementById("mg-schedule-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var form = event.target;
    var start = new Date(form.at.value);  // the browser's local time
    if (isNaN(start.getTime())) { show("Enter a start time.", false); return; }
    var payload = {at: start.toISOString(), duration: form.duration.value.trim(),
                   mode: form.mode.value, reason: form.reason.value};
    if (/^\d+$/.test(payload.duration)) { payload.duration = Number(payload.duration); }
    if (form.notice.value.trim()) { payload.notice = form.notice.value.trim(); }
    if (form.drain_before.value.trim()) { payload.drain_before = form.drain_before.value.trim(); }
    if (form.auto_end.checked) { payload.auto_end = true; }
    post(scheduleUrl, payload)
      .then(function (r) { show("Scheduled " + r.window.id + " at " + r.window.start + ".", true);
                           renderWindows(r.windows); refreshOverview(); })
      .catch(function (e) { show(e.message, false); });
  });

  document.getElementById("mg-update-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var form = event.target;
    post(form.getAttribute("data-url"), {text: form.text.value})
      .then(function () { show("Update posted.", true); form.text.value = ""; })
      .catch(function (e) { show(e.message, false); });
  });

  refreshWindows();

  if (window.maintenanceGuard) { window.maintenanceGuard.onStatus(refreshOverview); }
  setInterval(refreshOverview, 5000);
})();
