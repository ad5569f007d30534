// Package bench is ClaudeFS's fio-style benchmark harness: fio's job files
// (ParseJobFile, JobFile.Specs) and flags (Flags, Spec), built-in profiles
// (Profiles), targets that run jobs (Target, RegisterTarget; device:PATH,
// store:PATH and dataplane:HOST:PORT are built in), lock-free per-goroutine
// recorders with log-linear latency histograms (Worker, Histogram), fio's
// reports (WriteJSON, WriteNormal) and comparison with a baseline report
// (ParseReport, Compare).
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
//		io, ok := w.NextIO()
//		if !ok {
//			break
//		}
//		if io.Kind == bench.IOWrite {
//			w.Stamp(buf[:io.Len], io.Off) // verify=crc32c; a no-op otherwise
//		}
//		start := bench.Now()
//		... read, write (io.Len bytes at io.Off) or sync ...
//		d := bench.Now() - start
//		if io.Verify {
//			w.Check(buf[:io.Len], io.Off)
//		}
//		w.Complete(io, d, d)
//	}
//	job.EndMeasure()
//	... if job.ReadBack(), read what job.WrittenRuns lists and Check it ...
package bench
