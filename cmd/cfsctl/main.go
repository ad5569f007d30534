// Command cfsctl is the ClaudeFS operator tool: the same commands as `cfs admin`, for
// machines that only need to operate a cluster. Exit status: 0 on success, 1 when a
// command failed while running, 2 on a bad command line.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/claudefs/claudefs/cmd/internal/admincli"
)

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

type runtimeError struct{ err error }

func (e *runtimeError) Error() string { return e.err.Error() }
func (e *runtimeError) Unwrap() error { return e.err }

func run(args []string, stdout, stderr io.Writer) int {
	root := admincli.New("cfsctl", admincli.Options{Stdout: stdout, Stderr: stderr, Prog: "cfsctl",
		Runtime: func(err error) error { return &runtimeError{err} }})
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "cfsctl: %v\n", err)
	var rerr *runtimeError
	if errors.As(err, &rerr) {
		return 1
	}
	fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return 2
}
