module kubectl-gitops.test/peers/hello-web

go 1.26.0
