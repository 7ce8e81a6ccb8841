module kubectl-gitops.test/peers/service-proxy

go 1.26.0
