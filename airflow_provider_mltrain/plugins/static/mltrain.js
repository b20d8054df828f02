// ML Training pages: live refresh while runs are active, and the log's live tail.
// Only text from the JSON API goes into the page, through textContent; HTML fragments come from
// this app's own server-side templates (escaped there).
(function () {
  "use strict";
  var body = document.body;

  var reload = parseInt(body.dataset.reload || "0", 10);
  if (reload > 0) {
    window.setTimeout(function () { window.location.reload(); }, reload * 1000);
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
