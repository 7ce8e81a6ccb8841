// kubectl gitops-sessions ui: the one script, hand-written, no build step.
// Sections of the page are pushed by the server (Server-Sent Events) as its
// watches see changes; this swaps them in (table rows one by one, only the
// changed ones), ticks relative times, filters, runs the tabs and the logs.
(function () {
  "use strict";
  const $ = (s, r = document) => r.querySelector(s);
  const $$ = (s, r = document) => [...r.querySelectorAll(s)];
  const enc = encodeURIComponent;
  const liveStatus = $("#live-status");

  // Relative times ("12s ago", "in 3h 5m"), ticking every second.
  function rel(ms) {
    const future = ms < -2000;
    const s = Math.round(Math.abs(ms) / 1000);
    let t;
    if (s < 60) t = s + "s";
    else if (s < 600) t = Math.floor(s / 60) + "m " + (s % 60) + "s";
    else if (s < 3600) t = Math.floor(s / 60) + "m";
    else if (s < 86400) t = Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
    else t = Math.floor(s / 86400) + "d";
    return future ? "in " + t : (ms < 0 ? "0s" : t) + " ago";
  }
  function tick(root) {
    const now = Date.now();
    for (const el of (root || document).querySelectorAll("time[data-rel]")) {
      const t = Date.parse(el.getAttribute("datetime"));
      if (isNaN(t)) continue;
      const text = rel(now - t);
      if (el.textContent !== text) el.textContent = text;
      if (!el.title) el.title = new Date(t).toLocaleString();
    }
  }
  setInterval(tick, 1000);
  tick();

  // Table bodies: replace only the rows whose content hash changed.
  function patchRows(tbody, html) {
    const tmp = document.createElement("tbody");
    tmp.innerHTML = html;
    const fresh = [...tmp.children];
    const old = [...tbody.children];
    const same = fresh.length === old.length &&
      fresh.every((r, i) => r.dataset.key && r.dataset.key === old[i].dataset.key);
    if (same) {
      fresh.forEach((r, i) => { if (r.dataset.v !== old[i].dataset.v) old[i].replaceWith(r); });
    } else {
      tbody.replaceChildren(...fresh);
    }
  }
  function swap(id, html) {
    const el = document.getElementById(id);
    if (!el) return;
    if (el.tagName === "TBODY") {
      patchRows(el, html);
    } else {
      // Keep what the reader opened or closed.
      const closed = new Set($$("details[data-kind]:not([open])", el).map((d) => d.dataset.kind));
      const tableOpen = !!$("details.as-table[open]", el);
      el.innerHTML = html;
      for (const d of $$("details[data-kind]", el)) if (closed.has(d.dataset.kind)) d.open = false;
      const t = $("details.as-table", el);
      if (t && tableOpen) t.open = true;
    }
    tick(el);
    document.dispatchEvent(new CustomEvent("section", { detail: id }));
  }
  function connect(url) {
    const es = new EventSource(url);
    es.addEventListener("section", (e) => {
      const { id, html } = JSON.parse(e.data);
      swap(id, html);
      liveStatus.textContent = "live · updated " + new Date().toLocaleTimeString();
      liveStatus.className = "conn on";
    });
    es.onopen = () => { liveStatus.textContent = "live"; liveStatus.className = "conn on"; };
    es.onerror = () => { liveStatus.textContent = "reconnecting…"; liveStatus.className = "conn off"; };
    return es;
  }

  const sessionPage = $("#session-page");
  const base = sessionPage
    ? "/session/" + enc(sessionPage.dataset.namespace) + "/" + enc(sessionPage.dataset.name)
    : "";
  // The page's cookie goes with these requests: no secret in any URL.
  connect(sessionPage ? base + "/events" : "/events");

  // The sessions list: filters.
  const body = $("#sessions-body");
  if (body) {
    const ns = $("#filter-namespace"), status = $("#filter-status"), hb = $("#filter-heartbeat"), text = $("#filter-text");
    const apply = () => {
      const t = text.value.trim().toLowerCase();
      let shown = 0;
      for (const row of body.querySelectorAll("tr[data-name]")) {
        const ok = (!ns.value || row.dataset.namespace === ns.value) &&
          (!status.value || row.dataset.status === status.value) &&
          (!hb.value || row.dataset.heartbeat === hb.value) &&
          (!t || row.textContent.toLowerCase().includes(t));
        row.hidden = !ok;
        if (ok) shown++;
      }
      $("#shown-count").textContent = shown;
    };
    const namespaces = () => {
      const current = ns.value;
      const seen = new Set($$("tr[data-name]", body).map((r) => r.dataset.namespace));
      if (seen.size === ns.options.length - 1 && [...seen].every((n) => [...ns.options].some((o) => o.value === n))) return;
      ns.replaceChildren(new Option("all namespaces", ""), ...[...seen].sort().map((n) => new Option(n, n)));
      ns.value = seen.has(current) ? current : "";
    };
    [ns, status, hb, text].forEach((el) => el.addEventListener("input", apply));
    document.addEventListener("section", (e) => {
      if (e.detail === "sessions-body") { namespaces(); apply(); }
    });
    document.addEventListener("keydown", (e) => {
      if (e.key === "/" && !/INPUT|SELECT|TEXTAREA/.test(document.activeElement.tagName)) {
        e.preventDefault();
        text.focus();
      }
    });
    namespaces();
    apply();
  }

  // The session page: tabs (arrow keys move between them) and the logs.
  const tabs = $$('[role="tab"]');
  function select(tab, focus) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute("aria-selected", on);
      t.tabIndex = on ? 0 : -1;
      document.getElementById(t.getAttribute("aria-controls")).hidden = !on;
    }
    if (focus) tab.focus();
    if (tab.id === "tab-logs") startLogs();
    history.replaceState(null, "", tab.id === "tab-logs" ? "#logs" : location.pathname + location.search);
  }
  tabs.forEach((t, i) => {
    t.addEventListener("click", () => select(t, false));
    t.addEventListener("keydown", (e) => {
      const n = { ArrowRight: i + 1, ArrowLeft: i - 1, Home: 0, End: tabs.length - 1 }[e.key];
      if (n === undefined) return;
      e.preventDefault();
      select(tabs[(n + tabs.length) % tabs.length], true);
    });
  });

  let logsStarted = false;
  function startLogs() {
    if (logsStarted) return;
    logsStarted = true;
    const box = $("#log-lines"), pod = $("#log-pod"), container = $("#log-container"),
      filter = $("#log-filter"), follow = $("#log-follow"), wrap = $("#log-wrap"), state = $("#log-status");
    // At most MAX lines are shown; the queue of lines not yet shown is
    // capped too (a background tab gets no animation frames, and its timers
    // run seldom), so a fast log cannot grow the page's memory.
    const MAX = 5000, FLUSH_MS = 250;
    const pods = new Set(), containers = new Set();
    let info = "connecting…", count = 0, dropped = 0, queue = [], scheduled = false, timer = 0;
    const colour = (s) => {
      let h = 0;
      for (const c of s) h = (h * 31 + c.charCodeAt(0)) % 360;
      return "hsl(" + h + " 70% 70%)";
    };
    const shows = (el) => (!pod.value || el.dataset.pod === pod.value) &&
      (!container.value || el.dataset.container === container.value) &&
      (!filter.value || el.dataset.text.includes(filter.value.toLowerCase()));
    const lines = (n) => n + " line" + (n === 1 ? "" : "s");
    const say = () => {
      state.textContent = info + " · " + lines(count) + " from " +
        pods.size + " pod" + (pods.size === 1 ? "" : "s") +
        (dropped ? " · " + lines(dropped) + " dropped (the page fell behind)" : "");
    };
    const addOption = (sel, set, v) => {
      if (set.has(v)) return;
      set.add(v);
      sel.append(new Option(v, v));
    };
    const flush = () => {
      scheduled = false;
      clearTimeout(timer);
      if (!queue.length) return;
      const frag = document.createDocumentFragment();
      for (const l of queue) {
        if (l.dropped) {
          const div = document.createElement("div");
          div.className = "ll dropped";
          div.dataset.pod = div.dataset.container = "";
          div.dataset.text = "";
          div.textContent = "… " + lines(l.dropped) + " dropped here: the page could not keep up";
          frag.append(div);
          continue;
        }
        count++;
        addOption(pod, pods, l.pod);
        addOption(container, containers, l.container);
        const div = document.createElement("div");
        div.className = "ll";
        div.dataset.pod = l.pod;
        div.dataset.container = l.container;
        div.dataset.text = (l.pod + "/" + l.container + " " + l.line).toLowerCase();
        const src = document.createElement("span");
        src.className = "src";
        src.style.color = colour(l.pod);
        src.textContent = l.pod + "/" + l.container;
        div.append(src, document.createTextNode(" " + l.line));
        div.hidden = !shows(div);
        frag.append(div);
      }
      queue = [];
      box.append(frag);
      while (box.childElementCount > MAX) box.firstElementChild.remove();
      if (follow.checked) box.scrollTop = box.scrollHeight;
      say();
    };
    const shows2 = (el) => el.classList.contains("dropped") || shows(el);
    const refilter = () => {
      for (const el of box.children) el.hidden = !shows2(el);
      if (follow.checked) box.scrollTop = box.scrollHeight;
    };
    [pod, container, filter].forEach((el) => el.addEventListener("input", refilter));
    wrap.addEventListener("change", () => box.classList.toggle("wrap", wrap.checked));
    follow.addEventListener("change", () => { if (follow.checked) box.scrollTop = box.scrollHeight; });
    box.addEventListener("scroll", () => {
      const atEnd = box.scrollHeight - box.scrollTop - box.clientHeight < 24;
      if (!atEnd && follow.checked) follow.checked = false;
    });
    $("#log-clear").addEventListener("click", () => { box.replaceChildren(); count = 0; dropped = 0; say(); });
    const es = new EventSource(base + "/logs");
    let broken = false;
    // A reconnection follows the logs from their start again.
    es.onopen = () => { if (broken) { box.replaceChildren(); queue = []; count = 0; dropped = 0; broken = false; } };
    es.addEventListener("info", (e) => { info = e.data; say(); });
    // Shown on the next frame, or after FLUSH_MS when frames do not come.
    const enqueue = (item) => {
      queue.push(item);
      if (queue.length >= 2 * MAX) {
        // Only the last MAX could be shown: the rest is counted, not kept.
        for (const l of queue.splice(0, queue.length - MAX)) if (!l.dropped) count++;
      }
      if (!scheduled) {
        scheduled = true;
        requestAnimationFrame(flush);
        timer = setTimeout(flush, FLUSH_MS);
      }
    };
    es.onmessage = (e) => enqueue(JSON.parse(e.data));
    // The server dropped lines this page was too slow to take.
    es.addEventListener("dropped", (e) => {
      const n = Number(e.data) || 0;
      dropped += n;
      enqueue({ dropped: n });
      say();
    });
    es.onerror = () => { broken = true; info = "log stream interrupted, reconnecting…"; say(); };
  }
  // A link to the logs tab opens it (once everything above is defined).
  if (tabs.length && location.hash === "#logs") select($("#tab-logs"), false);
})();
