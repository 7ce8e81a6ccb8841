module kubectl-gitops.test/peers/git-server

go 1.26.0
