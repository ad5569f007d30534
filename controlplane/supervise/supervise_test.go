package supervise

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestRestartsAndStops(t *testing.T) {
	dir := t.TempDir()
	var mu sync.Mutex
	var lines []string
	logf := func(f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, strings.TrimSpace(sprintf(f, a...)))
	}
	pidFile := filepath.Join(dir, "pids.json")
	s := New([]Child{
		{Name: "crasher", Path: "/bin/sh", Args: []string{"-c", "sleep 0.1; exit 3"}, Log: filepath.Join(dir, "crasher.log")},
		{Name: "steady", Path: "/bin/sleep", Args: []string{"60"}, Log: filepath.Join(dir, "steady.log")},
	}, pidFile, logf)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = s.Run(ctx); close(done) }()

	deadline := time.Now().Add(5 * time.Second)
	var steady int
	for time.Now().Before(deadline) {
		mu.Lock()
		n := strings.Count(strings.Join(lines, "\n"), "crasher exited (exit status 3)")
		mu.Unlock()
		pids, _ := ReadPids(pidFile)
		steady = pids["steady"]
		if n >= 2 && steady != 0 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	mu.Lock()
	if strings.Count(strings.Join(lines, "\n"), "restarting in") < 2 || steady == 0 {
		t.Fatalf("want two restarts of the crasher and a steady pid; log:\n%s", strings.Join(lines, "\n"))
	}
	mu.Unlock()
	cancel()
	select {
	case <-done:
	case <-time.After(StopTimeout + 5*time.Second):
		t.Fatal("supervisor did not stop")
	}
	if err := syscall.Kill(steady, 0); err == nil {
		t.Fatalf("steady child %d still running after the supervisor stopped", steady)
	}
	pids, err := ReadPids(pidFile)
	if err != nil || pids["steady"] != 0 || pids["crasher"] != 0 {
		t.Fatalf("pid file after stop: %v %v", pids, err)
	}
}

func sprintf(f string, a ...any) string { return fmt.Sprintf(f, a...) }
