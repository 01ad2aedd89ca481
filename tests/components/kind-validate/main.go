// Command kind-validate loads a kind cluster configuration exactly as `kind create cluster
// --config` does (strict decoding, defaults, conversion to kind's internal types) and runs kind's
// own validation on it; it prints the loaded configuration as JSON, or the error and exits 1.
//
// kind's loader is internal to its module (sigs.k8s.io/kind/pkg/internal/apis/config), so
// scripts/install-test-deps copies the pinned module out of the Go module cache and builds this
// file inside it, under pkg/, with kind's own go.mod and go.sum. cmesh's tests run it on every
// kind.yaml that `cmesh lab up` writes.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"sigs.k8s.io/kind/pkg/internal/apis/config/encoding"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: kind-validate KIND_CONFIG")
		os.Exit(2)
	}
	cfg, err := encoding.Load(os.Args[1])
	if err == nil {
		err = cfg.Validate()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := json.NewEncoder(os.Stdout).Encode(cfg); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
