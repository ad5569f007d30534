// Command cfs is the ClaudeFS command-line tool. Each subcommand lives in its
// own file; this one only runs the root command and maps errors to exit
// codes: 0 success, 1 a failure while running, 2 a usage error.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run executes the command line args and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	root := newRootCmd(stdout, stderr)
	root.SetArgs(args)
	cmd, err := root.ExecuteC()
	if err == nil {
		return 0
	}
	fmt.Fprintf(stderr, "cfs: %v\n", err)
	var rerr *runtimeError
	if errors.As(err, &rerr) {
		return 1
	}
	fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", cmd.CommandPath())
	return 2
}

// runtimeError marks a failure while a command ran (exit status 1), as
// opposed to a bad command line (exit status 2).
type runtimeError struct{ err error }

func (e *runtimeError) Error() string { return e.err.Error() }
func (e *runtimeError) Unwrap() error { return e.err }
