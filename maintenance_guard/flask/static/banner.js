/* maintenance-guard banner for every page of the host app.
   Include it with {{ maintenance_banner() }} (the state comes in the tag: no request when
   nothing is scheduled) or <script src="/maintenance/banner.js" defer> (one status read).
   Shows upcoming maintenance with a countdown, the maintenance under way with what is
   unavailable, and "maintenance has ended" when it ends; follows the live stream while
   something is announced or on, else polls. Text only (textContent), no external assets;
   an ARIA live region; dismissible per window (localStorage). */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script || window.__maintenanceGuardBanner) { return; }
  window.__maintenanceGuardBanner = true;
  var streamUrl = script.getAttribute("data-stream-url") || "/api/maintenance/stream";
  var statusUrl = script.getAttribute("data-status-url") || "/api/maintenance/status";
  var statusPage = script.getAttribute("data-status-page") || "/maintenance";
  var POLL_MS = 30000;
  var DISMISS_KEY = "mg-banner-dismissed";
  var root = null, text = null, countdown = null, timer = null, source = null, poller = null;
  var state = null, wasActive = false, endedKey = null;

  function humanOperation(name) {
    var words = String(name).replace(/_/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }

  function localTime(iso) {
    var d = iso ? new Date(iso) : null;
    return d && !isNaN(d.getTime())
      ? d.toLocaleString([], {dateStyle: "medium", timeStyle: "short"}) : (iso || "");
  }

  function span(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var d = Math.floor(seconds / 86400), h = Math.floor(seconds % 86400 / 3600);
    var m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    if (d) { return d + "d " + h + "h " + m + "m"; }
    if (h) { return h + "h " + m + "m " + s + "s"; }
    return m + "m " + s + "s";
  }

  function build() {
    if (root) { return; }
    var style = document.createElement("style");
    style.textContent = "#mg-banner{position:sticky;top:0;z-index:2147483000;display:flex;" +
      "gap:1em;align-items:center;padding:.6em 1em;font:15px/1.4 system-ui,sans-serif;" +
      "background:#fff4ce;color:#1f1f1f;border-bottom:1px solid #c9a400}" +
      "#mg-banner[data-kind=active]{background:#fde7e9;border-color:#c50f1f}" +
      "#mg-banner[data-kind=ended]{background:#dff6dd;border-color:#107c10}" +
      "#mg-banner[hidden]{display:none}#mg-banner p{margin:0;flex:1}#mg-banner a{color:inherit}" +
      "#mg-banner button{font:inherit;cursor:pointer;background:none;border:1px solid;" +
      "border-radius:4px;padding:.1em .6em}";
    document.head.appendChild(style);
    root = document.createElement("div");
    root.id = "mg-banner";
    root.setAttribute("role", "status");
    root.setAttribute("aria-live", "polite");
    root.hidden = true;
    var p = document.createElement("p");
    text = document.createElement("span");
    countdown = document.createElement("strong");
    countdown.setAttribute("data-mg-banner", "countdown");
    var link = document.createElement("a");
    link.href = statusPage;
    link.textContent = "Status page";
    p.appendChild(text);
    p.appendChild(document.createTextNode(" "));
    p.appendChild(countdown);
    p.appendChild(document.createTextNode(" "));
    p.appendChild(link);
    var close = document.createElement("button");
    close.type = "button";
    close.setAttribute("aria-label", "Dismiss this notice");
    close.textContent = "\u00d7";
    close.addEventListener("click", function () {
      try { localStorage.setItem(DISMISS_KEY, root.getAttribute("data-key") || ""); } catch (e) { /* private mode */ }
      root.hidden = true;
    });
    root.appendChild(p);
    root.appendChild(close);
    document.body.insertBefore(root, document.body.firstChild);
  }

  function dismissed(key) {
    try { return localStorage.getItem(DISMISS_KEY) === key; } catch (e) { return false; }
  }

  function show(kind, key, message, until) {
    build();
    root.setAttribute("data-kind", kind);
    root.setAttribute("data-key", key);
    text.textContent = message;
    countdown.textContent = "";
    clearInterval(timer);
    if (until) {
      var tick = function () {
        var left = (new Date(until).getTime() - Date.now()) / 1000;
        countdown.textContent = left > 0 ? "Starts in " + span(left) + "." : "Starting now.";
      };
      tick();
      timer = setInterval(tick, 1000);
    }
    root.hidden = dismissed(key);
    document.documentElement.setAttribute("data-mg-banner", kind);
  }

  function hide() {
    if (root) { root.hidden = true; }
    clearInterval(timer);
    document.documentElement.setAttribute("data-mg-banner", "none");
  }

  function render(status) {
    state = status;
    if (status.is_active) {
      wasActive = true;
      endedKey = "ended:" + (status.started_at || "");
      var blocked = status.mode === "emergency" ? ["Everything except the status page"]
        : (status.blocked_operations || []).map(humanOperation);
      var message = "Maintenance in progress" + (status.reason ? ": " + status.reason : "") + ". " +
        (blocked.length ? "Unavailable: " + blocked.join(", ") + ". " : "") +
        (status.estimated_completion ? "Expected to end " + localTime(status.estimated_completion) + "." : "");
      show("active", "active:" + (status.started_at || ""), message, null);
    } else if (status.upcoming) {
      var u = status.upcoming;
      var ops = (u.blocked_operations || []).map(humanOperation);
      show("upcoming", "upcoming:" + u.id + ":" + u.start,
        "Scheduled maintenance " + localTime(u.start) + " to " + localTime(u.expected_end) +
        (u.reason ? ": " + u.reason : "") + "." +
        (ops.length ? " Unavailable then: " + ops.join(", ") + "." : ""), u.start);
    } else if (wasActive) {
      show("ended", endedKey || "ended", "Maintenance has ended. Everything is available again.", null);
    } else {
      hide();
    }
    follow(status.is_active || !!status.upcoming || wasActive);
  }

  function poll() {
    fetch(statusUrl, {headers: {"Accept": "application/json"}, credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (s) { if (s) { render(s); } })
      .catch(function () {});
  }

  // Live updates only while there is something to show; polling if streams are refused.
  function follow(wanted) {
    if (!wanted || source || poller) { return; }
    if (!window.EventSource) { poller = setInterval(poll, POLL_MS); return; }
    var opened = false;
    source = new EventSource(streamUrl);
    source.addEventListener("status", function (event) {
      try { render(JSON.parse(event.data)); } catch (e) { /* ignore a bad event */ }
    });
    source.onopen = function () { opened = true; };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED || !opened) {
        source.close();
        source = null;
        if (!poller) { poller = setInterval(poll, POLL_MS); }
      }
    };
  }

  var embedded = script.getAttribute("data-mg-state");
  function start() {
    if (embedded) {
      try { render(JSON.parse(embedded)); return; } catch (e) { /* fall back to a read */ }
    }
    poll();
  }
  if (document.body) { start(); } else { document.addEventListener("DOMContentLoaded", start); }
  window.maintenanceGuardBanner = {state: function () { return state; }};
})();
