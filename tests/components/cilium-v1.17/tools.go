//go:build tools

// Package tools pins the test components this module builds (scripts/install-test-deps). Nothing
// here is shipped: cmesh itself is one Rust binary.
package tools

import (
	_ "github.com/cilium/cilium/cilium-dbg"
	_ "github.com/cilium/cilium/clustermesh-apiserver"
	_ "github.com/cilium/cilium/daemon"
	_ "github.com/cilium/cilium/operator"
	_ "github.com/cilium/cilium/plugins/cilium-cni"
)
