package main

import (
	"io"

	"github.com/claudefs/claudefs/cmd/internal/admincli"
	"github.com/spf13/cobra"
)

// newAdminCmd is `cfs admin`: the operator command tree, the same as cfsctl's.
func newAdminCmd(stdout, stderr io.Writer) *cobra.Command {
	return admincli.New("admin", admincli.Options{Stdout: stdout, Stderr: stderr, Prog: "cfs admin",
		Runtime: func(err error) error { return &runtimeError{err} }})
}
