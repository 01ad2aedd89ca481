//go:build tools

// Package tools pins the Argo CD release the lab's GitOps story runs (scripts/install-test-deps
// builds ./cmd: Argo CD's role switch with only the roles the lab starts,
// argocd-application-controller, argocd-repo-server, argocd-applicationset-controller and git's
// askpass helper). Nothing here is shipped: cmesh itself is one Rust binary.
package tools

import (
	_ "github.com/argoproj/argo-cd/v3/cmd"
)
