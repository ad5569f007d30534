package ioengine

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/claudefs/claudefs/nvme/uring"
	"golang.org/x/sys/unix"
)

func TestParseKind(t *testing.T) {
	for in, want := range map[string]Kind{"": Auto, "auto": Auto, " AUTO ": Auto, "io_uring": Uring, "uring": Uring, "pread": Pread, "Pread": Pread} {
		if got, err := ParseKind(in); got != want || err != nil {
			t.Errorf("ParseKind(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseKind("aio"); err == nil || !strings.Contains(err.Error(), "use auto, io_uring or pread") {
		t.Errorf("ParseKind(aio) = %v", err)
	}
}

// stubUnavailable makes New believe io_uring is unavailable.
func stubUnavailable(t *testing.T) {
	saved := available
	available = func() error {
		return &uring.UnavailableError{Reason: "io_uring_disabled=2", Err: unix.EPERM}
	}
	fallbackLogged.Store(false)
	t.Cleanup(func() { available = saved; fallbackLogged.Store(false) })
}

func TestNewSelection(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	open := func(kind Kind, logf func(string, ...any)) (string, error) {
		e, err := New(kind, 4, logf)
		if err != nil {
			return "", err
		}
		defer e.Close()
		return e.Name(), nil
	}

	t.Setenv(EnvVar, "pread")
	if name, err := open(Auto, nil); name != "pread" || err != nil {
		t.Errorf("%s=pread, Auto: %q, %v", EnvVar, name, err)
	}
	t.Setenv(EnvVar, "bogus")
	if _, err := open(Auto, nil); err == nil || !strings.Contains(err.Error(), EnvVar) {
		t.Errorf("%s=bogus: %v", EnvVar, err)
	}
	if name, err := open(Pread, nil); name != "pread" || err != nil {
		t.Errorf("explicit Pread ignores the env var: %q, %v", name, err)
	}
	t.Setenv(EnvVar, "")
	for _, depth := range []int{0, MaxDepth + 1} {
		if _, err := New(Pread, depth, nil); err == nil {
			t.Errorf("depth %d accepted", depth)
		}
	}
	if _, err := open(Kind("spdk"), nil); err == nil {
		t.Error("unknown kind accepted")
	}

	t.Run("unavailable", func(t *testing.T) {
		stubUnavailable(t)
		var logs []string
		logf := func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) }
		for range 2 {
			if name, err := open(Auto, logf); name != "pread" || err != nil {
				t.Fatalf("Auto without io_uring: %q, %v", name, err)
			}
		}
		if len(logs) != 1 || logs[0] != "io_uring unavailable (io_uring_disabled=2): using pread engine" {
			t.Errorf("fallback logs %q, want exactly one", logs)
		}
		_, err := open(Uring, logf)
		if err == nil || !errors.Is(err, unix.EPERM) || !strings.Contains(err.Error(), "pread") {
			t.Errorf("Uring without io_uring: %v", err)
		}
	})

	t.Run("available", func(t *testing.T) {
		if err := uring.Available(); err != nil {
			t.Skipf("SKIPPING: io_uring unavailable on this machine: %v", err)
		}
		if name, err := open(Auto, t.Logf); name != "io_uring" || err != nil {
			t.Errorf("Auto with io_uring: %q, %v", name, err)
		}
	})
}
