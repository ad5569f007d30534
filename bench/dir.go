package bench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"

	"github.com/claudefs/claudefs/nvme"
	"golang.org/x/sys/unix"
)

func init() {
	RegisterTarget("dir", "dir:PATH  files in a directory (a mounted file system): pread/pwrite/fsync through ordinary system calls, one file per job named as fio does (NAME.JOB.0), laid out when absent or short; O_DIRECT unless --direct=0", openDir)
}

// dirAlign is what O_DIRECT asks of offsets, lengths and buffers on the
// file systems we run on (ext4, xfs, and ClaudeFS's mount).
const dirAlign = 4096

// dirTarget runs each job on its own file in the directory, as fio's psync
// engine with --iodepth threads would: --iodepth goroutines per job making
// synchronous pread/pwrite calls on the job's descriptor, fsync/fdatasync
// after every --fsync/--fdatasync writes of a goroutine, an end_fsync once
// the job's writes are done, and verify=crc32c reading back what it wrote.
type dirTarget struct {
	dir      string
	name     string // the job name the files are named after
	buffered bool
	size     int64 // each file's size: Offset + Size
}

func openDir(path string, spec *Spec, env *Env) (Target, error) {
	switch {
	case path == "":
		return nil, Usagef("--target=dir:PATH: PATH is empty")
	case spec.Size == 0:
		return nil, Usagef("--target=dir: needs --size (each job's file holds --offset + --size bytes)")
	case !spec.Buffered && spec.BSSplit == nil && spec.BlockSize%dirAlign != 0:
		return nil, Usagef("--bs=%d: O_DIRECT needs a multiple of %d (or --direct=0)", spec.BlockSize, dirAlign)
	case !spec.Buffered && spec.Align%dirAlign != 0:
		return nil, Usagef("--bssplit: O_DIRECT needs every size to be a multiple of %d (or --direct=0)", dirAlign)
	case !spec.Buffered && spec.Offset%dirAlign != 0:
		return nil, Usagef("--offset=%d: O_DIRECT needs a multiple of %d (or --direct=0)", spec.Offset, dirAlign)
	case int64(spec.IODepth)*int64(spec.BlockSize) > maxDeviceBuffers:
		return nil, Usagef("--iodepth=%d × --bs=%d: a job's buffers are limited to %s", spec.IODepth, spec.BlockSize, formatBinary(maxDeviceBuffers))
	}
	if err := os.MkdirAll(path, 0o755); err != nil {
		return nil, fmt.Errorf("dir:%s: %w", path, err)
	}
	t := &dirTarget{dir: path, name: spec.Name, buffered: spec.Buffered, size: spec.Offset + spec.Size}
	for j := 0; j < spec.NumJobs; j++ {
		if err := t.layout(t.file(j), env); err != nil {
			return nil, err
		}
	}
	return t, nil
}

// file is job j's file: NAME.J.0, as fio names a job's first file.
func (t *dirTarget) file(j int) string {
	return filepath.Join(t.dir, fmt.Sprintf("%s.%d.0", t.name, j))
}

// layout makes path at least t.size bytes of written data (not a hole:
// reads must reach the device), appending to what is there.
func (t *dirTarget) layout(path string, env *Env) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("dir: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	have := fi.Size() / dirAlign * dirAlign
	if have >= t.size {
		return nil
	}
	progress := env.LayoutProgress(path)
	buf := make([]byte, 1<<20)
	fillPattern(buf)
	for off := have; off < t.size; {
		n := min(int64(len(buf)), t.size-off)
		if _, err := f.WriteAt(buf[:n], off); err != nil {
			return fmt.Errorf("dir: laying out %s: %w", path, err)
		}
		off += n
		if progress != nil {
			progress(off-have, t.size-have)
		}
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("dir: laying out %s: fsync: %w", path, err)
	}
	return nil
}

func (t *dirTarget) String() string {
	mode := "O_DIRECT"
	if t.buffered {
		mode = "buffered"
	}
	return fmt.Sprintf("dir:%s (pread/pwrite, %s)", t.dir, mode)
}

func (t *dirTarget) Close() error { return nil }

// RunJob runs --iodepth goroutines on the job's file.
func (t *dirTarget) RunJob(job *Job) error {
	spec := job.Spec
	flags := os.O_RDWR
	if !t.buffered {
		flags |= syscall.O_DIRECT
	}
	f, err := os.OpenFile(t.file(job.Index), flags, 0)
	if err != nil {
		return fmt.Errorf("dir: %w", err)
	}
	defer f.Close()
	fd := int(f.Fd())
	workers := make([]*Worker, spec.IODepth)
	bufs := make([][]byte, spec.IODepth)
	defer func() {
		for _, b := range bufs {
			if b != nil {
				nvme.FreeAligned(b)
			}
		}
	}()
	for i := range workers {
		if workers[i], err = job.NewWorker(); err != nil {
			return err
		}
		if bufs[i], err = nvme.AllocAligned(2 * spec.BlockSize); err != nil { // reads land in the first half
			return err
		}
	}
	errs := make([]error, len(workers))
	var wg sync.WaitGroup
	for i := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = dirWorker(fd, workers[i], bufs[i], spec)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if spec.EndFsync && job.Writes() {
		start := Now()
		if err := syncFd(fd, spec.SyncData); err != nil {
			return fmt.Errorf("end_fsync %s: %w", f.Name(), err)
		}
		d := Now() - start
		workers[0].Complete(IO{Kind: IOSync}, d, d)
	}
	job.EndMeasure()
	if job.ReadBack() {
		return dirReadBack(fd, job, workers[0], bufs[0][:spec.BlockSize])
	}
	return nil
}

// dirWorker issues w's I/Os one at a time on fd. buf holds 2 × --bs:
// reads land in the first half, writes go from the second (the pattern),
// so what is written never is what was just read.
func dirWorker(fd int, w *Worker, buf []byte, spec *Spec) error {
	// A thread of its own, as fio's: blocking system calls then cost no
	// handoff of the goroutine between threads.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	rbuf, wbuf := buf[:spec.BlockSize], buf[spec.BlockSize:]
	fillPattern(wbuf)
	for {
		io, ok := w.NextIO()
		if !ok {
			return nil
		}
		start := Now()
		var err error
		switch io.Kind {
		case IORead:
			err = preadFull(fd, rbuf[:io.Len], io.Off)
			if err == nil && io.Verify {
				w.Check(rbuf[:io.Len], io.Off)
			}
		case IOWrite:
			if spec.Verify {
				w.Stamp(wbuf[:io.Len], io.Off)
			}
			err = pwriteFull(fd, wbuf[:io.Len], io.Off)
		case IOSync:
			err = syncFd(fd, spec.SyncData)
		}
		if err != nil {
			return fmt.Errorf("dir: %s of %d bytes at offset %d: %w", kindName(io.Kind), io.Len, io.Off, err)
		}
		d := Now() - start
		w.Complete(io, d, d)
	}
}

func kindName(k IOKind) string {
	switch k {
	case IORead:
		return "read"
	case IOWrite:
		return "write"
	}
	return "sync"
}

func syncFd(fd int, data bool) error {
	if data {
		return unix.Fdatasync(fd)
	}
	return unix.Fsync(fd)
}

func preadFull(fd int, b []byte, off int64) error {
	for got := 0; got < len(b); {
		n, err := unix.Pread(fd, b[got:], off+int64(got))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		got += n
	}
	return nil
}

func pwriteFull(fd int, b []byte, off int64) error {
	for put := 0; put < len(b); {
		n, err := unix.Pwrite(fd, b[put:], off+int64(put))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		put += n
	}
	return nil
}

// dirReadBack reads what the job wrote and checks it (verify=crc32c).
func dirReadBack(fd int, job *Job, w *Worker, buf []byte) error {
	return readBackRuns(job, w, buf, func(b []byte, off int64) error { return preadFull(fd, b, off) })
}
