//go:build tools

// Package tools pins the Argo CD build the lab's GitOps story runs (scripts/install-test-deps):
// Argo CD's one binary (`cmd`), whose role follows the name it is started under
// (argocd-application-controller, argocd-repo-server, argocd-applicationset-controller).
// Nothing here is shipped: cmesh itself is one Rust binary.
package tools

import (
	_ "github.com/argoproj/argo-cd/v3/cmd"
)
