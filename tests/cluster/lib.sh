# Shared definitions of the local control plane harness. Sourced, not run.
# shellcheck shell=bash

set -euo pipefail

HARNESS_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PEERS="$HARNESS_ROOT/tests/peers"
# Built peer binaries, keyed by version, shared by every clone on this machine.
CACHE="${GITOPS_HARNESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/kubectl-gitops/peers}"
# Everything a running harness owns: pids, logs, certificates, data.
STATE="${GITOPS_HARNESS_DIR:-$HARNESS_ROOT/target/harness}"
# Ports: a block of PORT_SPAN ports from PORT_BASE. The default block lies
# below Linux's ephemeral range (ip_local_port_range, 32768-60999 by default;
# macOS starts at 49152): a port in that range can be taken at any moment as
# the local end of some outgoing connection, which is how a charts server on
# port 36016 once failed with "Address already in use" in CI. `up` checks the
# whole block and moves to the next free one when a port is taken (see
# choose_port_base); an explicit GITOPS_HARNESS_PORT_BASE is used as given.
# The ports a running harness was started with win over the default, so a
# script that restarts a component (the restart e2e test) finds them again.
DEFAULT_PORT_BASE=26000
PORT_SPAN=24
PORT_BASE="${GITOPS_HARNESS_PORT_BASE:-$(cat "$STATE/ports" 2>/dev/null || echo $DEFAULT_PORT_BASE)}"

set_ports() {
    ETCD_PORT=$((PORT_BASE + 1))
    ETCD_PEER_PORT=$((PORT_BASE + 2))
    API_PORT=$((PORT_BASE + 3))
    KCM_PORT=$((PORT_BASE + 4))
    SC_STORAGE_PORT=$((PORT_BASE + 5))
    SC_METRICS_PORT=$((PORT_BASE + 6))
    SC_HEALTH_PORT=$((PORT_BASE + 7))
    KC_METRICS_PORT=$((PORT_BASE + 8))
    KC_HEALTH_PORT=$((PORT_BASE + 9))
    REGISTRY_PORT=$((PORT_BASE + 10))
    AUTH_REGISTRY_PORT=$((PORT_BASE + 11))
    HC_METRICS_PORT=$((PORT_BASE + 12))
    HC_HEALTH_PORT=$((PORT_BASE + 13))
    SCHED_PORT=$((PORT_BASE + 14))
    # kwok's kubelet-like server (logs, exec, port-forward), the nodes' daemon port.
    KWOK_PORT=$((PORT_BASE + 15))
    # A Helm repository (static files) of the pinned vcluster chart.
    CHARTS_PORT=$((PORT_BASE + 16))
    # The Git server (Git's own git http-backend behind tests/peers/git-server).
    GIT_PORT=$((PORT_BASE + 17))
    # service-proxy: Service names for kustomize-controller (tests/cluster/vcluster).
    SVC_PROXY_PORT=$((PORT_BASE + 19))
    ETCD2_PORT=$((PORT_BASE + 21))
    ETCD2_PEER_PORT=$((PORT_BASE + 22))
    API2_PORT=$((PORT_BASE + 23))
}
set_ports

# The local ports of every TCP socket on this machine, listening or connected,
# in decimal, from /proc (no ss or netstat needed). TIME_WAIT (state 06) is
# left out: the servers here bind with SO_REUSEADDR, which it does not block.
tcp_ports_in_use() {
    local f hex st
    for f in /proc/net/tcp /proc/net/tcp6; do
        [[ -r $f ]] || continue
        while read -r _ hex _ st _; do
            hex=${hex##*:}
            [[ $st != 06 && $hex =~ ^[0-9A-Fa-f]+$ ]] && echo $((16#$hex))
        done <"$f"
    done | sort -un
}

# The first port of the block [base, base+PORT_SPAN) that a socket uses, if any.
busy_port_in_block() { # <base>
    local used p
    used=$(tcp_ports_in_use)
    for ((p = $1; p < $1 + PORT_SPAN; p++)); do
        grep -qx "$p" <<<"$used" && { echo "$p"; return 0; }
    done
    return 1
}

# The low end of the kernel's ephemeral port range.
ephemeral_low() {
    local lo=32768 hi
    [[ -r /proc/sys/net/ipv4/ip_local_port_range ]] && read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
    echo "$lo"
}

# Picks PORT_BASE for a harness that is not running yet. An explicit
# GITOPS_HARNESS_PORT_BASE is used as given (and refused when a port of its
# block is taken); otherwise the first free block below the ephemeral range,
# from the last base used in this state directory or the default, in steps of
# 100.
choose_port_base() {
    local busy lo base
    lo=$(ephemeral_low)
    if [[ -n ${GITOPS_HARNESS_PORT_BASE:-} ]]; then
        if busy=$(busy_port_in_block "$PORT_BASE"); then
            die "port $busy (in the harness's block $PORT_BASE-$((PORT_BASE + PORT_SPAN - 1)) from GITOPS_HARNESS_PORT_BASE) is in use; pick another base, or unset GITOPS_HARNESS_PORT_BASE to have a free block chosen"
        fi
        ((PORT_BASE + PORT_SPAN > lo)) &&
            info "note: ports $PORT_BASE-$((PORT_BASE + PORT_SPAN - 1)) reach into the kernel's ephemeral range (from $lo), where an outgoing connection may take one at any time; the default base $DEFAULT_PORT_BASE avoids that"
        return 0
    fi
    for base in $({ echo "$PORT_BASE"; seq "$DEFAULT_PORT_BASE" 100 $((lo - PORT_SPAN)); } | awk '!seen[$0]++'); do
        ((base + PORT_SPAN <= lo)) || continue
        if busy=$(busy_port_in_block "$base"); then
            info "port $busy is in use; not using the block at $base"
            continue
        fi
        PORT_BASE=$base
        set_ports
        return 0
    done
    die "no free block of $PORT_SPAN ports below $lo from $DEFAULT_PORT_BASE; set GITOPS_HARNESS_PORT_BASE to a free range"
}

# A second registry that demands credentials: a fixed test account, nothing
# secret (bcrypt of "harness-secret").
AUTH_REGISTRY_USER=gitops
AUTH_REGISTRY_PASSWORD=harness-secret
AUTH_REGISTRY_HTPASSWD='gitops:$2b$06$rFKg3d/yfD/kO7FvsMxCSexbFYu/3zNx2h6j/ROlrv2/uhSida.ta'

CONTEXT=local-gitops-harness
# The Nodes that kwok plays the kubelet of; all share kwok's one server.
KWOK_NODES="kwok-node-0 kwok-node-1"
SECOND_CONTEXT=local-gitops-harness-second
FLUX_NAMESPACE=flux-system

# name | peer module directory | package to build | binary
PEER_TABLE="
etcd|etcd|go.etcd.io/etcd/server/v3|etcd
kube-apiserver|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver|kube-apiserver
kube-controller-manager|kubernetes|k8s.io/kubernetes/cmd/kube-controller-manager|kube-controller-manager
kube-scheduler|kubernetes|k8s.io/kubernetes/cmd/kube-scheduler|kube-scheduler
kubelet|kubelet|k8s.io/kubernetes/cmd/kubelet|kubelet
source-controller|source-controller|github.com/fluxcd/source-controller|source-controller
kustomize-controller|kustomize-controller|github.com/fluxcd/kustomize-controller|kustomize-controller
helm-controller|helm-controller|github.com/fluxcd/helm-controller|helm-controller
flux|flux|github.com/fluxcd/flux2/v2/cmd/flux|flux
krew|krew|sigs.k8s.io/krew/cmd/krew|krew
kwok|kwok|sigs.k8s.io/kwok/cmd/kwok|kwok
vcluster-chart|vcluster|github.com/loft-sh/vcluster|repo/index.yaml
git-server|git-server|kubectl-gitops.test/peers/git-server|git-server
hello-web|hello-web|kubectl-gitops.test/peers/hello-web|hello-web
service-proxy|service-proxy|kubectl-gitops.test/peers/service-proxy|service-proxy
"

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
info() { printf '    %s\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 1; }

# The version a peer module pins for a module, read from its go.mod; "local"
# for a peer that is our own program (the module itself, e.g. git-server).
pinned_version() { # <peer dir> <module>
    awk -v m="$2" '$1 == "module" && $2 == m { print "local"; exit }
        $1 == m && $2 ~ /^v/ { print $2; exit }' "$PEERS/$1/go.mod"
}

# The main module a peer package belongs to.
peer_module() { # <package>
    case "$1" in
        k8s.io/kubernetes/*) echo k8s.io/kubernetes ;;
        github.com/fluxcd/flux2/v2/*) echo github.com/fluxcd/flux2/v2 ;;
        sigs.k8s.io/krew/*) echo sigs.k8s.io/krew ;;
        sigs.k8s.io/kwok/*) echo sigs.k8s.io/kwok ;;
        *) echo "$1" ;;
    esac
}

# Where a peer's binary is cached: keyed by the pinned version and by the
# files of its directory (go.mod, go.sum; the sources of a peer of our own),
# so any change of pins or sources builds afresh.
peer_dir() { # <name>
    local line dir pkg module version key
    line=$(grep "^$1|" <<<"$PEER_TABLE")
    IFS='|' read -r _ dir pkg _ <<<"$line"
    module=$(peer_module "$pkg")
    version=$(pinned_version "$dir" "$module")
    key=$(find "$PEERS/$dir" -type f -print0 | LC_ALL=C sort -z | xargs -0 cat | sha256sum | cut -c1-12)
    echo "$CACHE/$1-$version-$key"
}

peer_bin() { # <name>
    local line bin
    line=$(grep "^$1|" <<<"$PEER_TABLE")
    IFS='|' read -r _ _ _ bin <<<"$line"
    echo "$(peer_dir "$1")/$bin"
}

pidfile() { echo "$STATE/pids/$1.pid"; }
logfile() { echo "$STATE/logs/$1.log"; }

# True when the process recorded for a component is alive and still ours.
running() { # <name>
    local pf pid
    pf=$(pidfile "$1")
    [[ -f $pf ]] || return 1
    pid=$(<"$pf")
    [[ -d /proc/$pid ]] || return 1
    grep -qF -- "$STATE" "/proc/$pid/cmdline" 2>/dev/null || grep -qF -- "$STATE" "/proc/$pid/environ" 2>/dev/null
}

# Starts a component in its own session, with its pid and log recorded.
start() { # <name> <command...>
    local name=$1
    shift
    mkdir -p "$STATE/pids" "$STATE/logs"
    GITOPS_HARNESS_DIR="$STATE" setsid "$@" >>"$(logfile "$name")" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >"$(pidfile "$name")"
    # Until the forked shell has exec'd the component, /proc shows the
    # parent's command line and environment, so running() would call a
    # healthy start "exited". Return once the component itself is there.
    local _
    for _ in $(seq 250); do
        grep -qF -- "$STATE" "/proc/$pid/environ" 2>/dev/null && return 0
        [[ -d /proc/$pid ]] || return 0
        sleep 0.02
    done
}

# Stops a component started by start(), TERM then KILL after 5 s.
stop() { # <name>
    local pf pid
    pf=$(pidfile "$1")
    [[ -f $pf ]] || return 0
    pid=$(<"$pf")
    if running "$1"; then
        info "stopping $1 (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do
            [[ -d /proc/$pid ]] || break
            sleep 0.1
        done
        [[ -d /proc/$pid ]] && kill -KILL "$pid" 2>/dev/null
    fi
    rm -f "$pf"
}

# Waits until a command succeeds; on timeout, names the component and its log.
wait_for() { # <name> <seconds> <command...>
    local name=$1 deadline=$((SECONDS + $2))
    shift 2
    until "$@" >/dev/null 2>&1; do
        # Twice: right after start() the pid may still be mid-exec.
        if ! running "$name" && { sleep 0.3; ! running "$name"; }; then
            die "$name exited while starting; see its log: $(logfile "$name")
$(tail -n 15 "$(logfile "$name")" 2>/dev/null | sed 's/^/    | /')"
        fi
        if ((SECONDS >= deadline)); then
            die "$name did not become ready within $2s; see its log: $(logfile "$name")"
        fi
        sleep 0.2
    done
}

kubectl_h() { kubectl --kubeconfig "$STATE/kubeconfig" "$@"; }

# The sample GitOps repository (tests/cluster/fleet) with its placeholders
# filled in, copied into a directory: what `flux bootstrap git` leaves in a
# repository, plus two apps. The end-to-end fixture (tests/src/lib.rs,
# GitOpsRepo) fills in the same files with a test's own names.
render_fleet() { # <into> <git url> <flux namespace> <podinfo namespace> <hello-chart namespace>
    local f
    cp -r "$HARNESS_ROOT/tests/cluster/fleet/." "$1/"
    while IFS= read -r -d '' f; do
        sed -i -e "s|@GIT_URL@|$2|g" -e "s|@FLUX_NAMESPACE@|$3|g" \
            -e "s|@PODINFO_NAMESPACE@|$4|g" -e "s|@HELLO_NAMESPACE@|$5|g" "$f"
    done < <(find "$1" -type f -print0)
}

# Does what `flux bootstrap git` does once the controllers run: a bare
# repository REPO.git on the Git server (pushes allowed) holding the rendered
# fleet, then gotk-sync.yaml from Git applied to the cluster. Waits until the
# parent Kustomization and the apps' Kustomizations have applied the pushed
# commit and are Ready, and the HelmRelease is Ready. A repository that
# exists already is not pushed again.
bootstrap_fleet() { # <repo> <flux namespace> <podinfo namespace> <hello-chart namespace>
    local url="http://127.0.0.1:$GIT_PORT/$1.git" bare=$STATE/git/$1.git fns=$2 work sha rev
    if [[ ! -d $bare ]]; then
        say "bootstrapping $url: Flux's sync (clusters/local) and two apps, as flux bootstrap git leaves a repository"
        git init -q --bare -b main "$bare"
        git -C "$bare" config http.receivepack true
        work=$(mktemp -d)
        render_fleet "$work" "$url" "$2" "$3" "$4"
        git -C "$work" init -q -b main
        git -C "$work" add -A
        git -C "$work" -c user.name=harness -c user.email=harness@localhost \
            commit -q -m "Flux sync for clusters/local; apps podinfo and hello-chart"
        git -C "$work" push -q "$url" main || die "cannot push the fleet to $url; see $(logfile git-server)"
        rm -rf "$work"
    fi
    sha=$(git ls-remote "$url" refs/heads/main | cut -f1)
    [[ -n $sha ]] || die "$url has no branch main; remove $bare and run tests/cluster/up again"
    rev="main@sha1:$sha"
    kubectl_h create namespace "$fns" --dry-run=client -o yaml | kubectl_h apply -f - >/dev/null
    # Server-side, as kubectl's manager: the parent Kustomization takes the
    # objects over and kustomize-controller drops kubectl's fields.
    git -C "$bare" show main:clusters/local/flux-system/gotk-sync.yaml |
        kubectl_h apply --server-side --force-conflicts -f - >/dev/null
    fleet_wait "$fns" kustomization/flux-system "{.status.lastAppliedRevision}=$rev"
    fleet_wait "$fns" kustomization/podinfo "{.status.lastAppliedRevision}=$rev"
    fleet_wait "$fns" kustomization/hello-chart "{.status.lastAppliedRevision}=$rev"
    fleet_wait "$fns" "kustomization/podinfo kustomization/hello-chart" condition=Ready
    fleet_wait "$4" helmrelease/hello condition=Ready
    info "$1 at $rev: Kustomizations flux-system, podinfo, hello-chart and HelmRelease $4/hello Ready"
}

fleet_wait() { # <namespace> <objects> <condition or jsonpath=value>
    local cond=$3
    [[ $cond == condition=* ]] || cond="jsonpath=$cond"
    # shellcheck disable=SC2086 # several objects in one word
    kubectl_h -n "$1" wait $2 --for="$cond" --timeout=120s >/dev/null 2>&1 && return
    die "the fleet did not converge: $2 in $1 not $3 within 120s
$(kubectl_h get gitrepositories,kustomizations,helmreleases -A 2>&1 | sed 's/^/    | /')
    see the logs of source-controller, kustomize-controller, helm-controller in $STATE/logs"
}
