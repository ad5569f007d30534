package fusefs

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// SetReadahead sets the kernel's readahead window for the FUSE mount at
// mnt to n bytes (the read_ahead_kb of the mount's backing device, which
// the kernel starts at 128 KiB whatever the file system's max_readahead).
// With 128 KiB, a sequential reader costs one FUSE request per 128 KiB; a
// window of the largest FUSE read (1 MiB) sends 1 MiB requests, an eighth
// of the requests, context switches and replies. It needs root (sysfs);
// the caller may go on without it.
func SetReadahead(mnt string, n int) error {
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		return err
	}
	p := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(p, []byte(strconv.Itoa(n>>10)), 0); err != nil {
		return fmt.Errorf("setting the readahead window of %s: %w", mnt, err)
	}
	return nil
}

// Readahead returns the kernel's readahead window for the mount at mnt, in bytes.
func Readahead(mnt string) (int, error) {
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		return 0, err
	}
	b, err := os.ReadFile(fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev)))
	if err != nil {
		return 0, err
	}
	kb, err := strconv.Atoi(strings.TrimSpace(string(b)))
	return kb << 10, err
}
