package dataplane

import (
	"context"
	"runtime/pprof"
	"strconv"

	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/profiling"
)

// The dataplane's pprof labels, on which per-core CPU profiles are cut:
//
//	core  the I/O core number: partition i's goroutine and event loop i (which
//	      placement pins to the same CPU) carry core=i
//	role  io (a partition's goroutine: the store and its ring), net (an event
//	      loop: sockets, frames, the fast path into a partition), worker (the
//	      request workers)
//	op    on workers, the request's operation (write, read, delete, stat,
//	      list, stats)
//
// Labels are set once per goroutine (partitions, event loops) or, on workers,
// per request from contexts built once here: pprof.SetGoroutineLabels of a
// ready context stores one pointer, with no allocation on the hot path.
//
// The names are profiling's (LabelCore, LabelRole, LabelOp, Role*), so the
// tools that cut profiles need not import the dataplane.
const (
	LabelCore  = profiling.LabelCore
	LabelRole  = profiling.LabelRole
	LabelOp    = profiling.LabelOp
	RoleIO     = profiling.RoleIO
	RoleNet    = profiling.RoleNet
	RoleWorker = profiling.RoleWorker
)

// coreLabels returns the label context of I/O core i in role.
func coreLabels(i int, role string) context.Context {
	return pprof.WithLabels(context.Background(), pprof.Labels(LabelCore, strconv.Itoa(i), LabelRole, role))
}

// opNames names the operations in LabelOp, indexed by opcode - OpWriteShard.
var opNames = [...]string{"write", "read", "delete", "stat", "list", "stats"}

// workerLabels are the workers' label contexts, indexed as opNames; built
// once.
var workerLabels = func() (out [len(opNames)]context.Context) {
	for i, name := range opNames {
		out[i] = pprof.WithLabels(context.Background(), pprof.Labels(LabelRole, RoleWorker, LabelOp, name))
	}
	return out
}()

// idleWorker is a worker's labels between requests and for an opcode
// without a name.
var idleWorker = pprof.WithLabels(context.Background(), pprof.Labels(LabelRole, RoleWorker))

// labelWorker labels the calling worker goroutine with opcode's operation.
func labelWorker(opcode netio.Opcode) {
	if i := int(opcode) - int(OpWriteShard); i >= 0 && i < len(workerLabels) {
		pprof.SetGoroutineLabels(workerLabels[i])
		return
	}
	pprof.SetGoroutineLabels(idleWorker)
}
