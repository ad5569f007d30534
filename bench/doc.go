// Package bench is ClaudeFS's fio-style benchmark harness: fio's job flags
// (Flags, Spec), targets that run jobs (Target, RegisterTarget; device:PATH
// is built in), lock-free per-goroutine recorders with log-linear latency
// histograms (Worker, Histogram), and fio's reports (WriteJSON, WriteNormal).
//
// Adding a target: in its own file, register an OpenFunc from init:
//
//	func init() { bench.RegisterTarget("store", "store:PATH  ...", openStore) }
//
// The OpenFunc validates the spec (returning Usagef errors), resolves
// spec.Size when 0, and returns a Target whose RunJob issues the job's I/O
// from one or more goroutines, each with its own Worker:
//
//	w, err := job.NewWorker()
//	for {
//		write, off, ok := w.Next()
//		if !ok {
//			break
//		}
//		start := bench.Now()
//		... do the I/O of job.Spec.BlockSize bytes at off ...
//		d := bench.Now() - start
//		w.Done(write, job.Spec.BlockSize, d, d)
//	}
package bench
