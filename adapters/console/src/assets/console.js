// The console's one script: countdowns, times in the viewer's zone, and
// live refresh (server-sent events; where they are not routed, such as
// behind API Gateway, the page refreshes itself every 15 seconds).
(function () {
  "use strict";
  const body = document.body;
  let skew = Number(body.dataset.now || Date.now()) - Date.now();
  const pad = (n) => String(n).padStart(2, "0");
  function left(ms) {
    const s = Math.max(0, Math.floor(ms / 1000));
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h > 0 ? h + ":" + pad(m) + ":" + pad(r) : m + ":" + pad(r);
  }
  function tick() {
    const now = Date.now() + skew;
    document.querySelectorAll("[data-deadline]").forEach((el) => {
      const ms = Number(el.dataset.deadline) - now;
      el.textContent = ms > 0 ? el.dataset.label + " in " + left(ms) : el.dataset.label + " now";
    });
  }
  function times(root) {
    root.querySelectorAll("time[data-t]").forEach((el) => {
      const d = new Date(Number(el.dataset.t));
      el.title = el.textContent;
      el.textContent = el.dataset.f === "hm"
        ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
        : d.toLocaleString([], { weekday: "short", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" });
    });
  }
  function zoneName() {
    const z = Intl.DateTimeFormat().resolvedOptions().timeZone;
    document.querySelectorAll(".viewer-zone").forEach((el) => { el.textContent = " (" + z + ")"; });
  }
  let busy = false, again = false;
  async function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    try {
      const r = await fetch(location.href, { credentials: "same-origin", headers: { "X-Console-Refresh": "1" } });
      if (r.redirected || !r.ok) return;
      const doc = new DOMParser().parseFromString(await r.text(), "text/html");
      document.querySelectorAll("[data-live]").forEach((el) => {
        const fresh = doc.getElementById(el.id);
        if (fresh) { el.replaceWith(fresh); times(fresh); }
      });
      skew = Number(doc.body.dataset.now || Date.now()) - Date.now();
      tick();
    } catch (e) {
      // The next event or poll tries again.
    } finally {
      busy = false;
      if (again) { again = false; setTimeout(refresh, 100); }
    }
  }
  let timer = null;
  function soon() { clearTimeout(timer); timer = setTimeout(refresh, 150); }
  let polling = null;
  function poll(why) {
    if (polling) return;
    polling = setInterval(refresh, 15000);
    const live = document.getElementById("live");
    if (live) live.textContent = "Refreshes every 15 seconds" + (why ? " (" + why + ")" : "") + ".";
  }
  function listen() {
    if (!body.dataset.live) return;
    const url = body.dataset.events;
    if (!url) { poll("no live stream here"); return; }
    if (!window.EventSource) { poll(); return; }
    const mine = body.dataset.dispatch;
    const es = new EventSource(url);
    es.addEventListener("relay", (e) => {
      if (!mine) { soon(); return; }
      try {
        const d = JSON.parse(e.data);
        if (!d.dispatch || d.dispatch === mine) soon();
      } catch (_) { soon(); }
    });
    // On every (re)connection, catch up with what happened since the page
    // was rendered or the stream dropped.
    es.onopen = () => {
      soon();
      body.dataset.stream = "open";
    };
    es.onerror = () => {
      if (es.readyState === EventSource.CLOSED) poll("no live stream here");
    };
  }
  document.addEventListener("DOMContentLoaded", () => {
    zoneName();
    times(document);
    tick();
    setInterval(tick, 1000);
    listen();
  });
})();
