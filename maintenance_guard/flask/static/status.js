/* Live maintenance status: fills [data-mg] fields from the SSE stream (textContent only).
   When the stream is refused (429: the server's stream limit) or unavailable, it polls. */
(function () {
  "use strict";
  var body = document.body;
  var streamUrl = body.getAttribute("data-stream-url");
  var statusUrl = body.getAttribute("data-status-url");
  var listeners = [];
  var POLL_MS = 5000;
  var catalog = {operations: {}, badges: {}};
  var catalogEl = document.getElementById("mg-catalog");
  if (catalogEl) {
    try { catalog = JSON.parse(catalogEl.textContent); } catch (e) { /* keep the default */ }
  }

  function field(name) {
    return document.querySelectorAll('[data-mg="' + name + '"]');
  }

  function setText(name, text) {
    field(name).forEach(function (el) { el.textContent = text; });
  }

  function label(name) {
    var info = catalog.operations[name];
    return info && info.label ? info.label : name;
  }

  // One time per field: the local time as text, the exact ISO time as a tooltip.
  function setTime(name, iso, empty) {
    field(name).forEach(function (el) {
      var d = iso ? new Date(iso) : null;
      if (!d || isNaN(d.getTime())) {
        el.textContent = iso || empty;
        el.removeAttribute("title");
        el.removeAttribute("data-iso");
        return;
      }
      el.textContent = d.toLocaleString([], {dateStyle: "medium", timeStyle: "short"});
      el.setAttribute("title", iso);
      el.setAttribute("data-iso", iso);
    });
  }

  function clear(el) {
    while (el.firstChild) { el.removeChild(el.firstChild); }
  }

  function item(text, className) {
    var li = document.createElement("li");
    if (className) { li.className = className; }
    li.textContent = text;
    return li;
  }

  function renderBlocked(status) {
    var ops = status.blocked_operations || [];
    field("blocked_operations").forEach(function (list) {
      clear(list);
      if (status.mode === "emergency") {
        list.appendChild(item("Everything except the maintenance status page", "mg-all"));
        return;
      }
      if (!ops.length) {
        list.appendChild(item("Nothing: every feature is available.", "mg-none"));
      }
      ops.forEach(function (name) {
        var li = item(label(name));
        li.setAttribute("data-operation", name);
        list.appendChild(li);
      });
    });
  }

  // "What this means for you" on the status page, for every mode and every change.
  function renderImpact(status) {
    var section = document.getElementById("mg-impact");
    var list = document.getElementById("mg-messages");
    if (!section || !list) { return; }
    clear(list);
    if (status.mode === "emergency") {
      list.appendChild(item(section.getAttribute("data-emergency-text")));
    } else if (status.mode === "normal") {
      (status.blocked_operations || []).forEach(function (name) {
        var info = catalog.operations[name];
        if (info && info.message) { list.appendChild(item(info.message)); }
      });
    }
    section.hidden = !list.firstChild;
  }

  function localTime(iso) {
    var d = iso ? new Date(iso) : null;
    return d && !isNaN(d.getTime())
      ? d.toLocaleString([], {dateStyle: "medium", timeStyle: "short"}) : (iso || "");
  }

  // The announced window and the progress timeline (text only).
  function renderSchedule(status) {
    var next = status.upcoming;
    field("upcoming").forEach(function (el) { el.hidden = !next; });
    setText("upcoming_when", next ? localTime(next.start) + " to " + localTime(next.expected_end) : "");
    setText("upcoming_reason", next ? next.reason : "");
    var updates = status.updates || [];
    field("updates_section").forEach(function (el) { el.hidden = !updates.length; });
    field("updates").forEach(function (list) {
      clear(list);
      updates.forEach(function (u) {
        var li = document.createElement("li");
        var time = document.createElement("time");
        time.setAttribute("datetime", u.at);
        time.textContent = localTime(u.at);
        li.appendChild(time);
        li.appendChild(document.createTextNode(" " + u.text));
        list.appendChild(li);
      });
    });
  }

  function render(status) {
    var active = !!status.is_active;
    var mode = active ? (status.mode || "normal") : "off";
    field("badge").forEach(function (el) {
      el.textContent = catalog.badges[mode] || (active ? "Maintenance in progress" : "");
      el.setAttribute("data-active", active ? "true" : "false");
      el.setAttribute("data-mode", mode);
    });
    setText("reason", active && status.reason ? status.reason : "\u2014");
    setTime("started_at", status.started_at, "\u2014");
    setTime("estimated_completion", status.estimated_completion,
      active ? "not announced" : "\u2014");
    setText("message", status.message || "No maintenance is scheduled right now.");
    setText("active_jobs_count", String(status.active_jobs_count || 0));
    if ("enabled_by" in status) { setText("enabled_by", status.enabled_by || "\u2014"); }
    renderBlocked(status);
    renderImpact(status);
    renderSchedule(status);
    var over = document.getElementById("mg-over");
    if (over) { over.hidden = active; }
    body.setAttribute("data-mg-active", active ? "true" : "false");
    body.setAttribute("data-mg-mode", mode);
    listeners.forEach(function (fn) { fn(status); });
  }

  // Server-rendered times are UTC; show them in local time at once, not at the first event.
  ["started_at", "estimated_completion"].forEach(function (name) {
    field(name).forEach(function (el) {
      var iso = el.getAttribute("data-iso");
      if (iso) { setTime(name, iso, ""); }
    });
  });

  function poll() {
    return fetch(statusUrl, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (r) {
        if (!r.ok) { throw new Error("status " + r.status); }
        return r.json();
      })
      .then(render)
      .catch(function () {});
  }

  var polling = null;

  function startPolling() {
    if (polling) { return; }
    setText("live", "Refreshing every 5 seconds.");
    body.setAttribute("data-mg-stream", "polling");
    poll();
    polling = setInterval(poll, POLL_MS);
  }

  function connect() {
    if (!window.EventSource) { startPolling(); return; }
    var source = new EventSource(streamUrl);
    var opened = false;
    source.addEventListener("status", function (event) {
      try { render(JSON.parse(event.data)); } catch (e) { /* ignore a bad event */ }
    });
    source.onopen = function () {
      opened = true;
      setText("live", "Updates live.");
      body.setAttribute("data-mg-stream", "open");
    };
    source.onerror = function () {
      // Refused (429: too many streams) or never connected: EventSource would give up or
      // retry forever, so poll instead. A stream that was open reconnects by itself.
      if (source.readyState === EventSource.CLOSED || !opened) {
        source.close();
        startPolling();
        return;
      }
      setText("live", "Reconnecting\u2026");
      body.setAttribute("data-mg-stream", "reconnecting");
    };
  }

  window.maintenanceGuard = {
    onStatus: function (fn) { listeners.push(fn); },
    render: render,
    refresh: poll
  };
  connect();
})();
