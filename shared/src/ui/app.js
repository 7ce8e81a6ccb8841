// Live sessions table: rows pushed by the server (Server-Sent Events) and
// filtered here. No reload, no build step.
(function () {
  const body = document.getElementById("sessions-body");
  if (!body) return;
  const token = document.body.dataset.token;
  const ns = document.getElementById("filter-namespace");
  const status = document.getElementById("filter-status");
  const text = document.getElementById("filter-text");
  const live = document.getElementById("live-status");

  function apply() {
    const t = text.value.toLowerCase();
    let shown = 0;
    for (const row of body.querySelectorAll("tr[data-name]")) {
      const ok = (!ns.value || row.dataset.namespace === ns.value) &&
        (!status.value || row.dataset.status === status.value) &&
        (!t || row.textContent.toLowerCase().includes(t));
      row.hidden = !ok;
      if (ok) shown++;
    }
    document.getElementById("shown-count").textContent = shown;
  }

  function namespaces() {
    const current = ns.value;
    const seen = new Set([...body.querySelectorAll("tr[data-name]")].map(r => r.dataset.namespace));
    ns.replaceChildren(new Option("all namespaces", ""), ...[...seen].sort().map(n => new Option(n, n)));
    ns.value = seen.has(current) ? current : "";
  }

  [ns, status, text].forEach(el => el.addEventListener("input", apply));
  const events = new EventSource("/events?token=" + encodeURIComponent(token));
  events.onmessage = (e) => {
    body.innerHTML = e.data;
    namespaces();
    apply();
    live.textContent = "live, updated " + new Date().toLocaleTimeString();
  };
  events.onerror = () => { live.textContent = "reconnecting…"; };
  namespaces();
  apply();
})();
