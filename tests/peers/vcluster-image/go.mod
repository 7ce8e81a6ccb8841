module kubectl-gitops.test/peers/vcluster-image

go 1.26.0

// Not built as one module: tests/cluster/vcluster-images builds each of these
// from its own module source, as vcluster's Dockerfile (in its module, pinned
// in ../vcluster) builds its image: /vcluster from cmd/vcluster, kine (with
// SQLite, the virtual cluster's default backing store) and helm.
require (
	github.com/k3s-io/kine v0.13.2
	helm.sh/helm/v3 v3.16.2
)
