//go:build tools

// Package tools pins the Flux controllers the lab's GitOps story runs (scripts/install-test-deps):
// source-controller, kustomize-controller and helm-controller, built together in one module
// (one compile of their shared dependencies). Nothing here is shipped: cmesh itself is one Rust
// binary.
package tools

import (
	_ "github.com/fluxcd/helm-controller"
	_ "github.com/fluxcd/kustomize-controller"
	_ "github.com/fluxcd/source-controller"
)
