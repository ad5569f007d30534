// Package nvme owns device access for the dataplane: O_DIRECT devices (a block
// device or a preallocated regular file), aligned buffers allocated outside
// the Go heap, and per-core queues that submit through nvme/ioengine.
//
// It knows nothing of files, inodes or Raft. The chunk store built on it is
// nvme/chunkstore.
package nvme

import (
	"errors"
	"fmt"
	"os"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Device is a block device or regular file opened with O_DIRECT.
//
// Invariants: BlockSize is a power of two >= 512; Size is a multiple of
// BlockSize; every I/O through the device is aligned to BlockSize in offset,
// length and memory address (CheckIO enforces it).
type Device struct {
	path      string
	fd        int
	blockSize int
	size      int64
	isBlock   bool
}

// OpenOptions controls Open.
type OpenOptions struct {
	// CreateSize, when > 0 and the path does not exist (or is a regular
	// file shorter than this), creates or extends the file to this many
	// bytes and writes zeros over the new range so later O_DIRECT writes
	// never have to convert unwritten extents (which would make every
	// fdatasync a journal commit). Rounded up to 1 MiB.
	CreateSize int64
	// ReadOnly opens the device for reading only.
	ReadOnly bool
	// Progress, when set, is called while a new file is laid out with the
	// bytes written so far and the total.
	Progress func(done, total int64)
	// LockWait is how long Open waits for another holder of the device to
	// let go (default 10 s). Every open takes an exclusive lock: a process
	// killed with I/O in flight keeps the device locked until the kernel
	// has finished that I/O, so a successor never reads a device that a
	// dead process is still writing.
	LockWait time.Duration
}

// Open opens path with O_DIRECT and discovers its logical block size and
// capacity (BLKSSZGET/BLKGETSIZE64 for block devices, the file system's
// block size and the file length for regular files).
func Open(path string, opts OpenOptions) (*Device, error) {
	flags := unix.O_RDWR | unix.O_DIRECT | unix.O_CLOEXEC
	if opts.ReadOnly {
		flags = unix.O_RDONLY | unix.O_DIRECT | unix.O_CLOEXEC
	}
	if opts.CreateSize > 0 && !opts.ReadOnly {
		if err := layout(path, roundUp(opts.CreateSize, 1<<20), opts.Progress); err != nil {
			return nil, err
		}
	}
	fd, err := unix.Open(path, flags, 0)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("device %s: the file system does not support O_DIRECT (tmpfs?): put the device on ext4/xfs or use a block device", path)
		}
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("device %s does not exist: pass a size to create a file device", path)
		}
		return nil, fmt.Errorf("open device %s: %w", path, err)
	}
	d := &Device{path: path, fd: fd}
	if err := lockDevice(fd, path, opts.LockWait); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := d.discover(); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return d, nil
}

// lockDevice takes an exclusive flock on the device, waiting up to wait.
func lockDevice(fd int, path string, wait time.Duration) error {
	if wait <= 0 {
		wait = 10 * time.Second
	}
	deadline := time.Now().Add(wait)
	for {
		err := unix.Flock(fd, unix.LOCK_EX|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case err == unix.EINTR:
			continue
		case err != unix.EWOULDBLOCK:
			return fmt.Errorf("lock device %s: %w", path, err)
		case time.Now().After(deadline):
			return fmt.Errorf("device %s is in use by another process (a running dataplane or store, or one that died with I/O still draining); waited %v: stop it first", path, wait)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (d *Device) discover() error {
	var st unix.Stat_t
	if err := unix.Fstat(d.fd, &st); err != nil {
		return fmt.Errorf("stat device %s: %w", d.path, err)
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFBLK:
		d.isBlock = true
		bs, err := unix.IoctlGetInt(d.fd, unix.BLKSSZGET)
		if err != nil {
			return fmt.Errorf("device %s: BLKSSZGET: %w", d.path, err)
		}
		var size uint64
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(d.fd), unix.BLKGETSIZE64, uintptr(unsafe.Pointer(&size))); e != 0 {
			return fmt.Errorf("device %s: BLKGETSIZE64: %w", d.path, e)
		}
		d.blockSize = bs
		d.size = int64(size)
	case unix.S_IFREG:
		// The logical block size O_DIRECT needs on a file is the file
		// system's block size at most; 4096 is what every modern NVMe
		// formats to and what ext4/xfs use, and it is never too small.
		bs := int(st.Blksize)
		if bs < 4096 {
			bs = 4096
		}
		d.blockSize = bs
		d.size = st.Size
	default:
		return fmt.Errorf("device %s is neither a block device nor a regular file", d.path)
	}
	if d.blockSize < 512 || d.blockSize&(d.blockSize-1) != 0 {
		return fmt.Errorf("device %s: logical block size %d is not a power of two >= 512", d.path, d.blockSize)
	}
	d.size -= d.size % int64(d.blockSize)
	if d.size == 0 {
		return fmt.Errorf("device %s is empty: pass a size to lay out a file device", d.path)
	}
	return nil
}

// Path is the path the device was opened with.
func (d *Device) Path() string { return d.path }

// Fd is the O_DIRECT file descriptor; register it with each core's engine.
func (d *Device) Fd() int { return d.fd }

// BlockSize is the logical block size in bytes.
func (d *Device) BlockSize() int { return d.blockSize }

// Size is the usable capacity in bytes (a multiple of BlockSize).
func (d *Device) Size() int64 { return d.size }

// IsBlockDevice reports whether the device is a block device.
func (d *Device) IsBlockDevice() bool { return d.isBlock }

// MisalignedError reports an I/O that O_DIRECT would refuse or that falls
// outside the device.
type MisalignedError struct {
	Path      string
	Off       int64
	Len       int
	BlockSize int
	Size      int64
	Reason    string
}

func (e *MisalignedError) Error() string {
	return fmt.Sprintf("device %s: I/O at offset %d length %d refused: %s (block size %d, capacity %d)",
		e.Path, e.Off, e.Len, e.Reason, e.BlockSize, e.Size)
}

// CheckIO returns a *MisalignedError when an I/O of buf at off is not
// aligned to the block size (offset, length or memory address) or does not
// lie inside the device.
func (d *Device) CheckIO(off int64, buf []byte) error {
	bs := int64(d.blockSize)
	reason := ""
	switch {
	case off < 0 || off%bs != 0:
		reason = "offset is not a multiple of the block size"
	case len(buf) == 0 || int64(len(buf))%bs != 0:
		reason = "length is not a positive multiple of the block size"
	case uintptr(unsafe.Pointer(&buf[0]))%uintptr(bs) != 0:
		reason = "buffer address is not aligned to the block size (use nvme.AllocAligned)"
	case off+int64(len(buf)) > d.size:
		reason = "range ends past the end of the device"
	default:
		return nil
	}
	return &MisalignedError{Path: d.path, Off: off, Len: len(buf), BlockSize: d.blockSize, Size: d.size, Reason: reason}
}

// ReadAt reads synchronously with pread; for setup paths (superblock,
// recovery), not the hot path.
func (d *Device) ReadAt(buf []byte, off int64) error {
	if err := d.CheckIO(off, buf); err != nil {
		return err
	}
	for done := 0; done < len(buf); {
		n, err := unix.Pread(d.fd, buf[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("device %s: read at %d: %w", d.path, off+int64(done), err)
		}
		if n == 0 {
			return fmt.Errorf("device %s: read at %d: unexpected end of device", d.path, off+int64(done))
		}
		done += n
	}
	return nil
}

// WriteAt writes synchronously with pwrite; for setup paths only.
func (d *Device) WriteAt(buf []byte, off int64) error {
	if err := d.CheckIO(off, buf); err != nil {
		return err
	}
	for done := 0; done < len(buf); {
		n, err := unix.Pwrite(d.fd, buf[done:], off+int64(done))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if err == unix.ENOSPC {
				return fmt.Errorf("device %s: write at %d: no space left on the backing file system: %w", d.path, off+int64(done), err)
			}
			return fmt.Errorf("device %s: write at %d: %w", d.path, off+int64(done), err)
		}
		done += n
	}
	return nil
}

// Sync makes every completed write durable (fdatasync).
func (d *Device) Sync() error {
	for {
		err := unix.Fdatasync(d.fd)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("device %s: fdatasync: %w", d.path, err)
		}
		return nil
	}
}

// Close closes the device.
func (d *Device) Close() error {
	if d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// layout creates path (or extends a short regular file) to size bytes and
// fills the new range with zeros using large O_DIRECT writes, the way fio lays
// out a job file. A block device or a file already long enough is left alone.
func layout(path string, size int64, progress func(done, total int64)) error {
	st, err := os.Stat(path)
	switch {
	case err == nil && st.Mode()&os.ModeDevice != 0:
		return nil
	case err == nil && st.Size() >= size:
		return nil
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("device %s: %w", path, err)
	}
	start := int64(0)
	if err == nil {
		start = st.Size() - st.Size()%(1<<20)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_DIRECT|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return fmt.Errorf("create device file %s: %w", path, err)
	}
	defer unix.Close(fd)
	// Reserve the space first so a too-small file system fails now, with
	// a clear message, rather than halfway through.
	if err := unix.Fallocate(fd, 0, start, size-start); err != nil && err != unix.EOPNOTSUPP {
		if err == unix.ENOSPC {
			return fmt.Errorf("create device file %s: the file system has less than %d bytes free: choose a smaller size", path, size)
		}
		return fmt.Errorf("create device file %s: fallocate: %w", path, err)
	}
	const chunk = 4 << 20
	zeros, err := AllocAligned(chunk)
	if err != nil {
		return err
	}
	defer FreeAligned(zeros)
	for off := start; off < size; {
		n := int64(chunk)
		if size-off < n {
			n = size - off
		}
		if _, err := unix.Pwrite(fd, zeros[:n], off); err != nil {
			if err == unix.EINTR {
				continue
			}
			return fmt.Errorf("lay out device file %s at %d: %w", path, off, err)
		}
		off += n
		if progress != nil {
			progress(off-start, size-start)
		}
	}
	if err := unix.Fdatasync(fd); err != nil {
		return fmt.Errorf("lay out device file %s: fdatasync: %w", path, err)
	}
	return nil
}

func roundUp(n, to int64) int64 { return (n + to - 1) / to * to }
