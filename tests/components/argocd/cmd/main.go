// Command cmd is Argo CD's multi-role binary cut down to the roles the lab runs
// (crates/integration-tests/src/argocd.rs): the application controller, the repo server, the
// ApplicationSet controller, and git's askpass helper that the repo server hands to git. It is
// Argo CD's own cmd/main.go role switch without the CLI, API server (with its UI), Dex,
// notifications, commit server, CMP server and k8s-auth, whose code the lab never runs and
// which cost most of the build (docs/performance.md). The binary keeps the name `cmd` the lab
// looks for; its role follows ARGOCD_BINARY_NAME as upstream's does.
package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"k8s.io/klog/v2"

	appcontroller "github.com/argoproj/argo-cd/v3/cmd/argocd-application-controller/commands"
	applicationset "github.com/argoproj/argo-cd/v3/cmd/argocd-applicationset-controller/commands"
	gitaskpass "github.com/argoproj/argo-cd/v3/cmd/argocd-git-ask-pass/commands"
	reposerver "github.com/argoproj/argo-cd/v3/cmd/argocd-repo-server/commands"
	"github.com/argoproj/argo-cd/v3/common"
	"github.com/argoproj/argo-cd/v3/util/log"
)

func init() {
	klog.SetLogger(log.NewLogrusLogger(log.NewWithCurrentConfig()))
}

func main() {
	// Upstream's main calls grpc.DisableSRVLookups() to undo what grpclb's init sets; with
	// only these roles linked grpclb is not, SRV lookups stay off, and that call panics.
	name := filepath.Base(os.Args[0])
	if v := os.Getenv("ARGOCD_BINARY_NAME"); v != "" {
		name = v
	}
	var command *cobra.Command
	switch name {
	case common.CommandApplicationController:
		command = appcontroller.NewCommand()
	case common.CommandRepoServer:
		command = reposerver.NewCommand()
	case common.CommandApplicationSetController:
		command = applicationset.NewCommand()
	case common.CommandGitAskPass:
		command = gitaskpass.NewCommand()
		command.SilenceErrors = true
		command.SilenceUsage = true
	default:
		fmt.Fprintf(os.Stderr, "cmd: role %q is not built into the lab's Argo CD (tests/components/argocd/cmd)\n", name)
		os.Exit(2)
	}
	if err := command.Execute(); err != nil {
		os.Exit(1)
	}
}
