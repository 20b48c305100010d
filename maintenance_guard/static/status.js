/* Live maintenance status: fills [data-mg] fields from the SSE stream (textContent only). */
(function () {
  "use strict";
  var body = document.body;
  var streamUrl = body.getAttribute("data-stream-url");
  var statusUrl = body.getAttribute("data-status-url");
  var listeners = [];

  function field(name) {
    return document.querySelectorAll('[data-mg="' + name + '"]');
  }

  function setText(name, text) {
    field(name).forEach(function (el) { el.textContent = text; });
  }

  function localTime(iso) {
    if (!iso) { return null; }
    var d = new Date(iso);
    return isNaN(d.getTime()) ? iso : iso + " (" + d.toLocaleString() + ")";
  }

  function render(status) {
    var active = !!status.is_active;
    field("badge").forEach(function (el) {
      el.textContent = active
        ? "Maintenance in progress (" + status.mode + " mode)"
        : "All systems operational";
      el.setAttribute("data-active", active ? "true" : "false");
    });
    setText("reason", active && status.reason ? status.reason : "\u2014");
    setText("started_at", localTime(status.started_at) || "\u2014");
    setText("estimated_completion",
      localTime(status.estimated_completion) || (active ? "not announced" : "\u2014"));
    setText("message", status.message || "No maintenance is scheduled right now.");
    setText("active_jobs_count", String(status.active_jobs_count || 0));
    if ("enabled_by" in status) { setText("enabled_by", status.enabled_by || "\u2014"); }
    field("blocked_operations").forEach(function (list) {
      while (list.firstChild) { list.removeChild(list.firstChild); }
      var ops = status.blocked_operations || [];
      if (!ops.length) {
        var none = document.createElement("li");
        none.className = "mg-none";
        none.textContent = "Nothing: every feature is available.";
        list.appendChild(none);
      }
      ops.forEach(function (name) {
        var li = document.createElement("li");
        li.textContent = name;
        list.appendChild(li);
      });
    });
    var messages = document.getElementById("mg-messages");
    if (messages && !active) { messages.hidden = true; }
    var over = document.getElementById("mg-over");
    if (over) { over.hidden = active; }
    body.setAttribute("data-mg-active", active ? "true" : "false");
    listeners.forEach(function (fn) { fn(status); });
  }

  function poll() {
    fetch(statusUrl, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (r) { return r.json(); })
      .then(render)
      .catch(function () {});
  }

  var polling = null;

  function startPolling() {
    if (polling) { return; }
    setText("live", "Refreshing every 5 seconds.");
    body.setAttribute("data-mg-stream", "polling");
    polling = setInterval(poll, 5000);
  }

  function connect() {
    if (!window.EventSource) { startPolling(); return; }
    var source = new EventSource(streamUrl);
    source.addEventListener("status", function (event) {
      try { render(JSON.parse(event.data)); } catch (e) { /* ignore a bad event */ }
    });
    source.onopen = function () {
      setText("live", "Updates live.");
      body.setAttribute("data-mg-stream", "open");
    };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        // Refused (e.g. 429: too many streams): EventSource gives up, so poll instead.
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
