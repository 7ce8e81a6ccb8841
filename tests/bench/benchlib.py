"""What the latency benchmarks share: the running harness, a session driven
through its `-o json` events, the stock Flux loop a skilled user scripts, and
the real peers' own accounts (the controllers' metrics and logs, the API
server's audit log) of what each save cost."""
import atexit, datetime, json, os, pathlib, queue, re, signal, subprocess, sys, threading, time, urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[2]
STATE = pathlib.Path(os.environ.get("GITOPS_HARNESS_DIR", ROOT / "target/harness"))
_env_file = STATE / "harness.env"
if not _env_file.exists():
    sys.exit("the harness is not running: start it with tests/cluster/up")
HARNESS = dict(l.split("=", 1) for l in _env_file.read_text().splitlines() if "=" in l)
ENV = dict(os.environ, KUBECONFIG=HARNESS["KUBECONFIG"])
FLUX = HARNESS["GITOPS_HARNESS_FLUX"]
REGISTRY = HARNESS["GITOPS_HARNESS_REGISTRY"]
PORT_BASE = int((STATE / "ports").read_text().strip())
# tests/cluster/lib.sh: source-controller's and kustomize-controller's metrics.
METRICS = {"ocirepository": PORT_BASE + 6, "kustomization": PORT_BASE + 8}
LOGS = STATE / "logs"
AUDIT = LOGS / "kube-apiserver-audit.log"
AGENT = "kubectl-gitops/"


def release_binary(name="kubectl-gitops_run"):
    """The plugin, built as released; GITOPS_BENCH_PROFILE=debug takes the
    debug build instead (a quick look, not numbers to report)."""
    if os.environ.get("GITOPS_BENCH_PROFILE") == "debug":
        print(f"==> building {name} (debug: numbers not representative)", file=sys.stderr)
        subprocess.run(["cargo", "build", "-q", "-p", name], cwd=ROOT, check=True)
        return ROOT / "target/debug" / name
    print(f"==> building {name} (release)", file=sys.stderr)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", name], cwd=ROOT, check=True)
    return ROOT / "target/release" / name


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def kubectl(*args, stdin=None):
    return subprocess.run(["kubectl", *args], env=ENV, input=stdin, text=True, check=True,
                          capture_output=True).stdout


def reconcile_seconds():
    """The controllers' cumulative reconcile time, from their metrics."""
    out = {}
    for controller, port in METRICS.items():
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        m = re.search(r'^controller_runtime_reconcile_time_seconds_sum\{controller="%s"\} (\S+)$' % controller,
                      text, re.M)
        out[controller] = float(m.group(1)) if m else 0.0
    return out


def _ts(value):
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def kustomize_seconds(namespace, name, revision):
    """kustomize-controller's own time for the reconcile that applied
    `revision`, from its log: from the reconcile's start (its end, 'Reconciliation
    finished in D', minus D) to 'server-side apply completed'. What comes after
    (health checks, the status) is not counted: the floor is the least time
    before anyone can know the revision is applied."""
    units = {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
    applied = {}
    with open(LOGS / "kustomize-controller.log", errors="replace") as f:
        for line in f:
            if revision not in line:
                continue
            e = json.loads(line)
            if e.get("namespace") != namespace or e.get("name") != name or e.get("revision") != revision:
                continue
            rid = e.get("reconcileID")
            if e.get("msg") == "server-side apply completed":
                applied.setdefault(rid, _ts(e["ts"]))
            elif e.get("msg", "").startswith("Reconciliation finished in") and rid in applied:
                took = sum(float(v) * units[u] for v, u in
                           re.findall(r"([\d.]+)(ns|µs|us|ms|s|m)(?![a-z])", e["msg"].split(",")[0]))
                return applied[rid] - (_ts(e["ts"]) - took)
    return None


class Audit:
    """Counts the API requests the sessions made (user agent kubectl-gitops/),
    from the API server's audit log (one line per request received)."""

    def __init__(self):
        self.f = open(AUDIT, errors="replace")
        self.f.seek(0, os.SEEK_END)

    def count(self, agent=AGENT):
        n = 0
        for line in self.f:
            if f'"userAgent":"{agent}' in line:
                n += 1
        return n


class Session:
    """A `kubectl gitops-run` session with `-o json`, its events read as they come."""

    def __init__(self, binary, work, name, *args):
        self.proc = subprocess.Popen([str(binary), "-o", "json", "--name", name, *args, str(work)],
                                     env=ENV, stdout=subprocess.PIPE, text=True)
        self.events = queue.Queue()
        threading.Thread(target=lambda: [self.events.put(json.loads(l)) for l in self.proc.stdout],
                         daemon=True).start()
        # A benchmark that fails still stops its sessions (they clean up).
        atexit.register(self.stop)

    def synced(self, timeout=120):
        """Waits for the next `synced`: (monotonic time, revision). The
        events read on the way are kept, with when they were read, for
        `breakdown`."""
        deadline = time.monotonic() + timeout
        self.trail = []
        while True:
            e = self.events.get(timeout=max(0.1, deadline - time.monotonic()))
            self.trail.append((time.monotonic(), e))
            if e.get("event") == "synced":
                return time.monotonic(), e.get("revision", "")
            if e.get("event") == "failed":
                raise SystemExit(f"sync failed: {e}")

    def breakdown(self, saved):
        """Where the last sync's time went, in seconds, from its events:
        'watch' (the save to the first phase: notification and coalescing),
        each phase's own time as the session measured it, 'request' (the
        push done to the fetch's start: asking Flux to reconcile) and
        'report' (Flux done to `synced`)."""
        out, started, done = {}, {}, {}
        for t, e in self.trail:
            if e.get("event") == "phase_started":
                started.setdefault(e["phase"], t)
            elif e.get("event") == "phase_done":
                done[e["phase"]] = t
                out[e["phase"]] = e.get("elapsed_ms", 0) / 1000
        if started:
            out["watch"] = min(started.values()) - saved
        if "push" in done and "fetch" in started:
            out["request"] = started["fetch"] - done["push"]
        if "apply" in done and self.trail:
            out["report"] = self.trail[-1][0] - done["apply"]
        return out

    def cpu_seconds(self):
        fields = pathlib.Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self):
        for line in pathlib.Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            self.proc.wait(timeout=120)


class Stock:
    """The best loop a skilled user scripts with the stock tools: `flux push
    artifact`, annotate the OCIRepository with reconcile.fluxcd.io/requestedAt,
    then a watch-based `kubectl wait` for the Kustomization's
    lastAppliedRevision (`wait: true`, so Ready means healthy)."""

    def __init__(self, work, name):
        self.work, self.ns, self.ref = work, name, f"oci://{REGISTRY}/bench/{name}"

    def push(self):
        out = subprocess.run([FLUX, "push", "artifact", f"{self.ref}:latest", f"--path={self.work}",
                              "--source=file:///bench", "--revision=bench@sha1:0", "-o", "json"],
                             env=ENV, check=True, capture_output=True, text=True).stdout
        return "latest@" + json.loads(out)["digest"]

    def __enter__(self):
        self.push()
        kubectl("create", "namespace", self.ns)
        kubectl("apply", "-f", "-", stdin=f"""
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata: {{name: bench, namespace: {self.ns}}}
spec: {{url: "{self.ref}", ref: {{tag: latest}}, interval: 10m}}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata: {{name: bench, namespace: {self.ns}}}
spec: {{sourceRef: {{kind: OCIRepository, name: bench}}, path: ./, prune: true, wait: true, interval: 10m, targetNamespace: {self.ns}}}
""")
        kubectl("-n", self.ns, "wait", "kustomization/bench", "--for=condition=Ready", "--timeout=120s")
        return self

    def save(self):
        """After a save: push, request a reconcile, wait (watching) for the
        revision; returns it."""
        revision = self.push()
        kubectl("-n", self.ns, "annotate", "--overwrite", "ocirepository/bench",
                f"reconcile.fluxcd.io/requestedAt={time.time_ns()}")
        kubectl("-n", self.ns, "wait", "kustomization/bench", "--timeout=120s",
                f"--for=jsonpath={{.status.lastAppliedRevision}}={revision}")
        return revision

    def reconcile_save(self):
        """The older recipe: push, then `flux reconcile --with-source`
        (which polls the status every 2 s)."""
        revision = self.push()
        subprocess.run([FLUX, "reconcile", "kustomization", "bench", "-n", self.ns, "--with-source"],
                       env=ENV, check=True, capture_output=True)
        return revision

    def __exit__(self, *exc):
        kubectl("-n", self.ns, "delete", "kustomization/bench", "--wait")
        kubectl("delete", "namespace", self.ns, "--wait=false")


def timed_saves(n, edit, save, namespace, name, pause=0.3, breakdown=None):
    """Runs `n` edits: `edit(i)` writes the files, `save()` returns once the
    revision is Ready, with the revision. Per save: latency, the Flux floor (source-controller's
    reconcile time over the save plus kustomize-controller's time for the
    revision), and the sessions' API requests."""
    loop = dict(edit=edit, save=save, namespace=namespace, name=name, pause=pause, breakdown=breakdown)
    return interleaved_saves(n, {"one": loop})["one"]


def interleaved_saves(n, loops):
    """As `timed_saves` for several loops (a dict of name -> dict(edit, save,
    namespace, name, pause, breakdown)), one save of each in turn, so that
    whatever else the machine does over the run weighs on each alike."""
    audit = Audit()
    rows = {key: [] for key in loops}
    for i in range(1, n + 1):
        for key, loop in loops.items():
            before = reconcile_seconds()
            audit.count()
            loop["edit"](i)
            saved = time.monotonic()
            revision = loop["save"]()
            latency = time.monotonic() - saved
            time.sleep(loop.get("pause", 0.3))  # Flux's trailing work for this save lands in its window
            after = reconcile_seconds()
            kustomize = kustomize_seconds(loop["namespace"], loop["name"], revision)
            source = after["ocirepository"] - before["ocirepository"]
            floor = source + kustomize if kustomize is not None else None
            breakdown = loop.get("breakdown")
            rows[key].append({"latency": latency, "floor": floor, "requests": audit.count(),
                              "parts": breakdown(saved) if breakdown else {}})
    return rows


def floor_rows(rows):
    floors = [r["floor"] for r in rows if r["floor"] is not None]
    over = [r["latency"] - r["floor"] for r in rows if r["floor"] is not None]
    return floors, over
