module kubectl-gitops.test/peers/vcluster

go 1.26.0

// Not built: tests/cluster/build takes the vcluster Helm chart (chart/) from
// this release's module source and tests/cluster/up serves it as a Helm
// repository on loopback, for vcluster sandboxes (the harness cannot reach
// charts.loft.sh).
require (
	github.com/loft-sh/vcluster v0.21.0
)
