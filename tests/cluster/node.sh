# The harness's one real Node: a kubelet (built from the pinned Kubernetes
# module, tests/peers/kubelet) with Debian's containerd, runc and CNI plugins,
# beside the kwok Nodes. Sourced by tests/cluster/up and down, after lib.sh.
# shellcheck shell=bash
#
# Layout. The kubelet refuses a loopback node IP, and the API server reaches
# pods/log, exec and portforward at the Node's InternalIP, so the Node is a
# host of its own, as kind makes one with a container: a network namespace
# ($NODE_NETNS) joined to this machine by a veth pair ($NODE_HOST_IP here,
# $NODE_IP inside). containerd, the kubelet, the CNI bridge and the pods live
# in it; they share this machine's mounts, cgroups and processes (nsenter
# --net only), which is what runc needs. Two socat forwarders on
# $NODE_HOST_IP give the Node the API server and the registry, both of
# which listen on loopback only (and a third, inside the Node, puts the
# registry at 127.0.0.1:$REGISTRY_PORT there too). Everything else is under
# $STATE/node.
#
# Placement. The Node carries the taint and label $REAL_NODE_KEY=real: a pod
# lands there only when it tolerates the taint and selects the label
# (tests/src/lib.rs, on_real_node); everything else stays on the kwok Nodes.
#
# Images come only from the harness registry: containerd pulls
# 127.0.0.1:$REGISTRY_PORT/NAME:TAG (the same reference a test pushes to)
# through the forwarders (certs.d/127.0.0.1:PORT/hosts.toml: plain HTTP).
# tests/cluster/images pushes the sandbox image pause:harness, busybox:harness
# and hello-web:1.0 there.
#
# Host settings it touches: the kubelet sets vm.overcommit_memory,
# vm.panic_on_oom, kernel.panic, kernel.panic_on_oops and kernel.keys.* as
# on any node; up saves their values first and down puts them back.

REAL_NODE=real-node-0
REAL_NODE_KEY=gitops.harness/node
NODE_DIR=$STATE/node
NODE_SOCK=$NODE_DIR/containerd.sock
# The pods' addresses on the Node's bridge (kwok's pods use 10.244.0.0/16).
NODE_POD_CIDR=10.245.0.0/24
# Names and addresses of the port block in use (again once `up` chose it).
set_node_vars() {
    NODE_NETNS=gitops-harness-$PORT_BASE
    NODE_VETH=gitops$PORT_BASE
    # A /30 of its own per port block: 10.213.N.0/30, N from the port base.
    NODE_NET=${GITOPS_HARNESS_NODE_NET:-10.213.$(((PORT_BASE / 100) % 250))}
    NODE_HOST_IP=$NODE_NET.1
    NODE_IP=$NODE_NET.2
    NODE_CGROUP=kubectl-gitops-$PORT_BASE
}
set_node_vars
NODE_SYSCTLS="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"

in_node() { nsenter --net="/run/netns/$NODE_NETNS" "$@"; }
ctr_node() { ctr --address "$NODE_SOCK" --namespace k8s.io "$@"; }

need_node_packages() {
    local missing=()
    command -v containerd >/dev/null || missing+=(containerd)
    command -v runc >/dev/null || missing+=(runc)
    [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
    command -v iptables >/dev/null || missing+=(iptables)
    command -v socat >/dev/null || missing+=(socat)
    command -v nsenter >/dev/null || missing+=(util-linux)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v sysctl >/dev/null || missing+=(procps)
    [[ -x /bin/busybox && $(ldd /bin/busybox 2>&1 || true) == *"not a dynamic executable"* ]] || missing+=(busybox-static)
    ((${#missing[@]})) || return 0
    say "installing Debian's ${missing[*]} (the real Node's runtime and images)"
    local sudo=""
    ((EUID == 0)) || sudo=sudo
    if ! { $sudo apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
        { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q "${missing[@]}" >/dev/null; }; }; then
        die "cannot install ${missing[*]}; install them with: sudo apt-get install ${missing[*]}"
    fi
}

# The Node's certificates: the kubelet's serving certificate (the API server
# checks it against the harness CA at $NODE_IP) and its client certificate.
node_pki() {
    local d=$STATE/pki
    [[ -f $d/node-$NODE_IP.crt ]] && return
    (
        cd "$d"
        openssl req -newkey rsa:2048 -nodes -keyout "node-$NODE_IP.key" -out node.csr -subj "/CN=$REAL_NODE" 2>/dev/null
        printf 'subjectAltName=IP:%s,DNS:%s\nextendedKeyUsage=serverAuth\n' "$NODE_IP" "$REAL_NODE" >node.ext
        backdated openssl x509 -req -in node.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile node.ext -out "node-$NODE_IP.crt" 2>/dev/null
        # system:masters: the harness's API server authorizes with RBAC only
        # (no Node authorizer), so the kubelet is an administrator.
        openssl req -newkey rsa:2048 -nodes -keyout node-client.key -out node-client.csr \
            -subj "/O=system:masters/CN=system:node:$REAL_NODE" 2>/dev/null
        printf 'extendedKeyUsage=clientAuth\n' >node-client.ext
        backdated openssl x509 -req -in node-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
            -extfile node-client.ext -out node-client.crt 2>/dev/null
    )
    chmod 600 "$d"/*.key
}

node_netns() {
    if [[ ! -e /run/netns/$NODE_NETNS ]]; then
        say "creating the real Node's network namespace $NODE_NETNS ($NODE_IP, this machine $NODE_HOST_IP)"
        ip netns add "$NODE_NETNS"
    fi
    if ! ip link show "$NODE_VETH" >/dev/null 2>&1; then
        ip link add "$NODE_VETH" type veth peer name "${NODE_VETH}n"
        ip link set "${NODE_VETH}n" netns "$NODE_NETNS"
        ip addr add "$NODE_HOST_IP/30" dev "$NODE_VETH"
        ip link set "$NODE_VETH" up
        in_node ip link set lo up
        in_node ip link set "${NODE_VETH}n" name eth0
        in_node ip addr add "$NODE_IP/30" dev eth0
        in_node ip link set eth0 up
        in_node ip route add default via "$NODE_HOST_IP"
    fi
}

# The API server and the registry listen on this machine's loopback; the
# Node reaches them at $NODE_HOST_IP through these. The registry is also at
# 127.0.0.1:$REGISTRY_PORT inside the Node (a forwarder there), so an image
# is named the same on this machine, in pod specs and for containerd (whose
# hosts.toml mirrors would fall back to the unreachable 127.0.0.1 and turn a
# missing image's "not found" into "connection refused").
node_forwarders() {
    local name port
    for name in node-api:$API_PORT node-registry:$REGISTRY_PORT; do
        port=${name#*:} name=${name%:*}
        running "$name" && continue
        start "$name" socat "TCP-LISTEN:$port,bind=$NODE_HOST_IP,fork,reuseaddr" "TCP:127.0.0.1:$port"
    done
    running node-registry-local ||
        start node-registry-local nsenter --net="/run/netns/$NODE_NETNS" \
            socat "TCP-LISTEN:$REGISTRY_PORT,bind=127.0.0.1,fork,reuseaddr" "TCP:$NODE_HOST_IP:$REGISTRY_PORT"
    wait_for node-api 15 in_node curl -sS -o /dev/null --max-time 2 -k "https://$NODE_HOST_IP:$API_PORT/healthz"
    wait_for node-registry 15 in_node curl -sS -o /dev/null --max-time 2 "http://$NODE_HOST_IP:$REGISTRY_PORT/v2/"
    wait_for node-registry-local 15 in_node curl -sS -o /dev/null --max-time 2 "http://127.0.0.1:$REGISTRY_PORT/v2/"
}

node_containerd() {
    local d=$NODE_DIR
    mkdir -p "$d/containerd" "$d/cni" "$d/certs.d/127.0.0.1:$REGISTRY_PORT"
    cat >"$d/certs.d/127.0.0.1:$REGISTRY_PORT/hosts.toml" <<HOSTS
# The harness registry, plain HTTP. Inside the Node, 127.0.0.1:$REGISTRY_PORT
# is a forwarder to this machine's (node-registry-local, node-registry).
server = "http://127.0.0.1:$REGISTRY_PORT"
HOSTS
    cat >"$d/cni/10-gitops-harness.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "gitops-harness",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$d/cni-ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
    # restrict_oom_score_adj: runc cannot set the negative oom_score_adj the
    # kubelet asks for on this kind of machine ("can't get final child's PID
    # from pipe: EOF"). Pod network namespaces are kept under the state dir.
    cat >"$d/containerd.toml" <<TOML
version = 2
root = "$d/containerd/root"
state = "$d/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$NODE_SOCK"
[ttrpc]
  address = "$NODE_SOCK.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "127.0.0.1:$REGISTRY_PORT/pause:harness"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$d/cni"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$d/certs.d"
TOML
    if ! running containerd; then
        say "starting containerd for the real Node (socket $NODE_SOCK)"
        start containerd nsenter --net="/run/netns/$NODE_NETNS" containerd --config "$d/containerd.toml"
    fi
    wait_for containerd 30 ctr --address "$NODE_SOCK" version
}

# The kubelet's cgroup root, in every v1 hierarchy (cpuset's needs its CPUs
# and memory nodes set before anything can join it).
node_cgroups() {
    local h
    for h in /sys/fs/cgroup/*/; do
        h=${h%/}
        [[ -f $h/cgroup.procs && ! -f $h/cgroup.controllers ]] || continue
        mkdir -p "$h/$NODE_CGROUP"
        if [[ -f $h/cpuset.cpus ]]; then
            [[ -n $(<"$h/$NODE_CGROUP/cpuset.cpus") ]] || cat "$h/cpuset.cpus" >"$h/$NODE_CGROUP/cpuset.cpus"
            [[ -n $(<"$h/$NODE_CGROUP/cpuset.mems") ]] || cat "$h/cpuset.mems" >"$h/$NODE_CGROUP/cpuset.mems"
        fi
    done
}

save_sysctls() {
    [[ -f $NODE_DIR/sysctls ]] && return
    local k
    for k in $NODE_SYSCTLS; do
        echo "$k=$(sysctl -n "$k")"
    done >"$NODE_DIR/sysctls"
}

node_kubelet() {
    local d=$NODE_DIR p=$STATE/pki
    mkdir -p "$d/kubelet" "$d/pod-logs"
    cat >"$d/kubelet.kubeconfig" <<KC
apiVersion: v1
kind: Config
current-context: node
clusters:
- name: harness
  cluster:
    server: https://$NODE_HOST_IP:$API_PORT
    certificate-authority: $p/ca.crt
    tls-server-name: localhost
users:
- name: node
  user:
    client-certificate: $p/node-client.crt
    client-key: $p/node-client.key
contexts:
- name: node
  context: {cluster: harness, user: node}
KC
    chmod 600 "$d/kubelet.kubeconfig"
    cat >"$d/kubelet.yaml" <<CFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine's cgroup hierarchy is v1 (KEP-5573: 1.35+ refuse it unless told).
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$NODE_CGROUP
containerRuntimeEndpoint: unix://$NODE_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $p/node-$NODE_IP.crt
tlsPrivateKeyFile: $p/node-$NODE_IP.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $p/ca.crt}
authorization:
  mode: AlwaysAllow
registerWithTaints:
- {key: $REAL_NODE_KEY, value: real, effect: NoSchedule}
# No cluster DNS runs: an address nothing answers, so pods get no
# MissingClusterDNS warning and resolve nothing.
clusterDNS: [10.0.0.10]
clusterDomain: cluster.local
podLogsDirectory: $d/pod-logs
maxPods: 50
# Mounted ConfigMaps and Secrets follow their objects within seconds.
syncFrequency: 10s
failSwapOn: false
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
evictionHard:
  memory.available: 100Mi
  nodefs.available: 2%
  nodefs.inodesFree: 2%
  imagefs.available: 2%
CFG
    if ! running kubelet; then
        say "starting the kubelet of $REAL_NODE ($NODE_IP in $NODE_NETNS)"
        save_sysctls
        start kubelet nsenter --net="/run/netns/$NODE_NETNS" "$(peer_bin kubelet)" \
            --config "$d/kubelet.yaml" --kubeconfig "$d/kubelet.kubeconfig" \
            --root-dir "$d/kubelet" --cert-dir "$d/kubelet/pki" \
            --hostname-override "$REAL_NODE" --node-ip "$NODE_IP" \
            --node-labels "$REAL_NODE_KEY=real" --v 1
    fi
    wait_for kubelet 120 real_node_ready
}

# Ready, and the controller-manager lifted the not-ready taint.
real_node_ready() {
    local state
    state=$(kubectl_h get node "$REAL_NODE" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}/{.spec.taints[*].key}')
    [[ $state == True/* && $state != *node.kubernetes.io/* ]]
}

need_root() {
    ((EUID == 0)) || die "the real Node needs root (a network namespace, mounts, cgroups, containerd): run tests/cluster/up as root, e.g. sudo -E tests/cluster/up"
}

up_node() {
    need_root
    need_node_packages
    node_pki
    mkdir -p "$NODE_DIR"
    node_netns
    node_forwarders
    "$HARNESS_ROOT/tests/cluster/images" harness >/dev/null
    node_cgroups
    node_containerd
    node_kubelet
}

# Every process whose command line names the node's state directory and
# matches a pattern (the containerd shims, which outlive containerd).
node_pids() { # <pattern>
    local f c
    for f in /proc/[0-9]*/cmdline; do
        { c=$(tr '\0' ' ' <"$f"); } 2>/dev/null || continue
        [[ $c == *"$1"* && $c == *"$NODE_DIR"* ]] && basename "$(dirname "$f")"
    done
    return 0
}

# The mount points under the Node's directory, deepest first.
node_mounts() {
    [[ -d $NODE_DIR ]] || return 0
    awk -v d="$NODE_DIR" 'index($5, d "/") == 1 { print length($5) " " $5 }' /proc/self/mountinfo |
        sort -rn | cut -d' ' -f2- | sed 's/\\040/ /g'
}

# Stops the Node and removes everything it left: containers (and their
# shims), mounts, the network namespace, cgroups; puts the sysctls back.
# Idempotent: each step checks what is there.
down_node() {
    local id pid h m c
    stop kubelet
    if running containerd; then
        for id in $(ctr_node tasks ls -q 2>/dev/null); do
            ctr_node tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
        done
        for id in $(ctr_node tasks ls -q 2>/dev/null); do
            for _ in $(seq 20); do
                ctr_node tasks delete "$id" >/dev/null 2>&1 && break
                sleep 0.2
            done
        done
        for id in $(ctr_node containers ls -q 2>/dev/null); do
            ctr_node containers delete "$id" >/dev/null 2>&1 || true
        done
    fi
    stop containerd
    # What is still running in the Node's cgroups (containers), then the shims.
    for h in /sys/fs/cgroup/*/"$NODE_CGROUP"; do
        [[ -d $h ]] || continue
        for pid in $(find "$h" -name cgroup.procs -exec cat {} + 2>/dev/null); do
            kill -KILL "$pid" 2>/dev/null || true
        done
    done
    for pid in $(node_pids containerd-shim); do
        info "stopping a containerd shim of the Node (pid $pid)"
        kill -KILL "$pid" 2>/dev/null || true
    done
    stop node-registry-local
    stop node-api
    stop node-registry
    # Mounts under the node's directory (volumes, rootfs, pod netns, shm),
    # deepest first.
    for _ in 1 2 3; do
        m=$(node_mounts)
        [[ -n $m ]] || break
        while IFS= read -r c; do
            umount "$c" 2>/dev/null || umount -l "$c" 2>/dev/null || true
        done <<<"$m"
    done
    if [[ -e /run/netns/$NODE_NETNS ]]; then
        info "removing the network namespace $NODE_NETNS"
        ip netns delete "$NODE_NETNS" || true
    fi
    ip link show "$NODE_VETH" >/dev/null 2>&1 && { ip link delete "$NODE_VETH" || true; }
    # The kubelet's cgroups, leaves first (empty once their processes died).
    for h in /sys/fs/cgroup/*/"$NODE_CGROUP"; do
        [[ -d $h ]] || continue
        for _ in $(seq 20); do
            find "$h" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [[ -d $h ]] || break
            sleep 0.2
        done
        [[ -d $h ]] && info "could not remove the cgroup $h (still in use)"
    done
    if [[ -f $NODE_DIR/sysctls ]]; then
        while IFS='=' read -r k v; do
            sysctl -q -w "$k=$v" >/dev/null 2>&1 || info "could not restore $k=$v"
        done <"$NODE_DIR/sysctls"
        rm -f "$NODE_DIR/sysctls"
    fi
    return 0
}
