package main

import (
	"io"

	"github.com/spf13/cobra"
)

const rootLong = `cfs is the command-line tool of ClaudeFS, a distributed file system written
in Go. A ClaudeFS node stores data on NVMe devices through its own I/O engine
(io_uring, or a pread/pwrite pool where io_uring is unavailable), keeps
metadata consistent with Raft, and serves clients through its data plane.

cfs runs the pieces of a node one at a time and measures them. Today it has:

  bench run   a fio-compatible benchmark: fio's flags (--rw, --bs, --iodepth,
              --numjobs, --size, --runtime, --time_based, ...) and fio's JSON
              report, against a --target such as device:PATH (a file or block
              device driven through the ClaudeFS I/O engine)
  version     the build's version

Exit status: 0 on success, 1 when a command fails while running, 2 on a bad
command line.`

const rootExample = `  # 4 KiB random reads, 32 in flight, for 5 s on a 1 GiB file (laid out if absent)
  cfs bench run --target device:/var/tmp/cfs.dat --rw=randread --bs=4k --iodepth=32 --size=1G --runtime=5 --time_based

  # the same as fio's JSON report, for scripts that read fio
  cfs bench run --target device:/var/tmp/cfs.dat --rw=randread --bs=4k --iodepth=32 --size=1G --runtime=5 --time_based --output-format=json

  # help on one command
  cfs bench run --help`

// newRootCmd builds the cfs command tree writing to stdout and stderr. Each
// subcommand is built in its own file and added here.
func newRootCmd(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "cfs",
		Short:         "ClaudeFS command-line tool",
		Long:          rootLong,
		Example:       rootExample,
		SilenceErrors: true,
		SilenceUsage:  true,
		Args:          cobra.NoArgs,
		RunE:          showHelp,
	}
	root.CompletionOptions.DisableDefaultCmd = true
	root.SetOut(stdout)
	root.SetErr(stderr)
	bench := newBenchCmd(stdout, stderr)
	bench.AddCommand(newBenchKVCmd(stdout, stderr))
	root.AddCommand(bench, newVersionCmd(stdout))
	root.AddCommand(newDataplaneCmd(stderr), newMountCmd(stderr), newUmountCmd(stderr))
	root.AddCommand(newControlCmd(stderr), newServerCmd(stdout, stderr), newDevCmd(stdout, stderr), newAdminCmd(stdout, stderr))
	return root
}

// showHelp is the RunE of commands that only group others: without
// arguments they print their help; an argument (a mistyped subcommand) is
// refused by cobra.NoArgs as a usage error.
func showHelp(cmd *cobra.Command, _ []string) error { return cmd.Help() }
