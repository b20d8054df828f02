// ML Training pages: live refresh while runs are active, the log's live tail, the ticking duration
// of active runs, and charts pinned to the top (per experiment, kept in this browser's localStorage).
// Only text from the JSON API goes into the page, through textContent; HTML fragments come from
// this app's own server-side templates (escaped there).
(function () {
  "use strict";
  var body = document.body;

  var reload = parseInt(body.dataset.reload || "0", 10);
  if (reload > 0) {
    window.setTimeout(function () { window.location.reload(); }, reload * 1000);
  }

  // -- pinned charts: pinned first (in the order pinned), the rest in the order they were logged --
  var pinKey = function (container) { return "mltrain.pinned." + container.dataset.pinKey; };
  var readPins = function (container) {
    try {
      var pins = JSON.parse(window.localStorage.getItem(pinKey(container)) || "[]");
      return Array.isArray(pins) ? pins : [];
    } catch (e) { return []; }
  };
  var arrangeCharts = function () {
    var containers = document.querySelectorAll(".charts[data-pin-key]");
    Array.prototype.forEach.call(containers, function (container) {
      var pins = readPins(container);
      var figures = Array.prototype.slice.call(container.querySelectorAll(":scope > figure[data-metric]"));
      figures.sort(function (a, b) {
        var pa = pins.indexOf(a.dataset.metric), pb = pins.indexOf(b.dataset.metric);
        if (pa < 0) { pa = pins.length; }
        if (pb < 0) { pb = pins.length; }
        return pa !== pb ? pa - pb : parseInt(a.dataset.order, 10) - parseInt(b.dataset.order, 10);
      });
      figures.forEach(function (figure) {
        var pinned = pins.indexOf(figure.dataset.metric) >= 0;
        figure.classList.toggle("pinned", pinned);
        var button = figure.querySelector("button.pin");
        if (button) {
          button.setAttribute("aria-pressed", pinned ? "true" : "false");
          button.textContent = pinned ? "Unpin" : "Pin";
        }
        container.appendChild(figure);
      });
    });
  };
  document.addEventListener("click", function (event) {
    var button = event.target.closest ? event.target.closest("button.pin") : null;
    if (!button) { return; }
    var figure = button.closest("figure[data-metric]");
    var container = figure && figure.closest(".charts[data-pin-key]");
    if (!container) { return; }
    var pins = readPins(container).filter(function (m) { return m !== figure.dataset.metric; });
    if (button.getAttribute("aria-pressed") !== "true") { pins.push(figure.dataset.metric); }
    try { window.localStorage.setItem(pinKey(container), JSON.stringify(pins)); } catch (e) { /* private mode */ }
    arrangeCharts();
  });
  arrangeCharts();

  // -- the duration of an active run, ticking every second from the server's value --
  var formatDuration = function (seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    if (seconds < 60) { return seconds + "s"; }
    var minutes = Math.floor(seconds / 60), hours = Math.floor(minutes / 60);
    var pad = function (n) { return (n < 10 ? "0" : "") + n; };
    return hours ? hours + "h" + pad(minutes % 60) + "m" : minutes + "m" + pad(seconds % 60) + "s";
  };
  var tick = function () {
    var now = Date.now() / 1000;
    Array.prototype.forEach.call(document.querySelectorAll("[data-elapsed]"), function (el) {
      if (!el.dataset.seenAt) { el.dataset.seenAt = String(now); }
      el.textContent = formatDuration(parseFloat(el.dataset.elapsed) + now - parseFloat(el.dataset.seenAt));
    });
  };
  if (document.querySelector("[data-elapsed]")) {
    tick();
    window.setInterval(tick, 1000);
  }

  // -- cancelling waits for the run to stop (up to the grace period): say so, and send it once --
  var cancelForm = document.querySelector("details.cancel form");
  if (cancelForm) {
    cancelForm.addEventListener("submit", function () {
      var button = cancelForm.querySelector("button[type=submit]");
      window.setTimeout(function () { button.disabled = true; button.textContent = "Cancelling…"; }, 0);
    });
  }

  var live = body.dataset.live;
  if (live) {
    var refreshLive = function () {
      fetch(live, { credentials: "same-origin" }).then(function (r) {
        if (!r.ok) { return null; }
        return r.text();
      }).then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.body;
        var target = document.getElementById("live");
        if (target && fresh) {
          target.replaceChildren.apply(target, Array.prototype.slice.call(fresh.childNodes));
          arrangeCharts();
          tick();
        }
        var status = document.getElementById("run-status");
        var done = status && ["Completed", "Failed", "Canceled"].indexOf(status.textContent) >= 0;
        if (done) { window.location.reload(); } else { window.setTimeout(refreshLive, 5000); }
      }).catch(function () { window.setTimeout(refreshLive, 10000); });
    };
    window.setTimeout(refreshLive, 5000);
  }

  var log = document.getElementById("log");
  if (log && log.dataset.follow) {
    var offset = parseInt(log.dataset.nextOffset || "0", 10);
    var url = log.dataset.logUrl;
    var tail = function () {
      fetch(url + "?offset=" + offset + "&limit=65536", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (page) {
          if (!page) { window.setTimeout(tail, 5000); return; }
          if (page.text) {
            var atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
            log.appendChild(document.createTextNode(page.text));
            if (atBottom) { log.scrollTop = log.scrollHeight; }
          }
          offset = page.next_offset;
          if (page.active || !page.eof) { window.setTimeout(tail, page.eof ? 2000 : 50); }
        })
        .catch(function () { window.setTimeout(tail, 5000); });
    };
    log.scrollTop = log.scrollHeight;
    window.setTimeout(tail, 2000);
  } else if (log) {
    log.scrollTop = log.scrollHeight;
  }
})();
