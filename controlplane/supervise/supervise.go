// Package supervise keeps a node's child processes (its dataplane and control process)
// running: a child that exits is restarted after a back-off that grows while it keeps
// crashing, and every start, exit and restart is logged with the reason. A SIGTERM to the
// supervisor is passed on to the children, which get StopTimeout to exit before SIGKILL.
package supervise

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// Child is one supervised program.
type Child struct {
	Name string   // "dataplane", "control"
	Path string   // executable
	Args []string // arguments after the program name
	Log  string   // file receiving its stdout and stderr (appended)
}

// Limits of the restart policy.
const (
	MinBackoff = 500 * time.Millisecond
	MaxBackoff = 30 * time.Second
	// StableAfter is how long a child must run before its back-off resets.
	StableAfter = 30 * time.Second
	StopTimeout = 15 * time.Second
)

// Supervisor runs children until its context ends.
type Supervisor struct {
	children []Child
	logf     func(string, ...any)
	pidFile  string

	mu   sync.Mutex
	pids map[string]int
}

// New returns a supervisor of children that records their pids in pidFile (JSON object
// name → pid, rewritten atomically on every change) and logs with logf.
func New(children []Child, pidFile string, logf func(string, ...any)) *Supervisor {
	return &Supervisor{children: children, logf: logf, pidFile: pidFile, pids: map[string]int{}}
}

// Run starts every child and keeps it running until ctx ends; then it sends SIGTERM to
// each, waits up to StopTimeout, SIGKILLs what is left and returns.
func (s *Supervisor) Run(ctx context.Context) error {
	s.setPid("supervisor", os.Getpid())
	var wg sync.WaitGroup
	for _, c := range s.children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.keep(ctx, c)
		}()
	}
	wg.Wait()
	return nil
}

func (s *Supervisor) keep(ctx context.Context, c Child) {
	backoff := MinBackoff
	for restarts := 0; ; restarts++ {
		started := time.Now()
		err := s.runOnce(ctx, c)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > StableAfter {
			backoff = MinBackoff
		}
		s.logf("%s exited (%v) after %s; restarting in %s (restart %d; see %s)", c.Name, err, time.Since(started).Round(time.Millisecond), backoff, restarts+1, c.Log)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, MaxBackoff)
	}
}

func (s *Supervisor) runOnce(ctx context.Context, c Child) error {
	out, err := os.OpenFile(c.Log, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer out.Close()
	cmd := exec.Command(c.Path, c.Args...)
	cmd.Stdout, cmd.Stderr = out, out
	// Children die with the supervisor even if it is SIGKILLed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	s.setPid(c.Name, cmd.Process.Pid)
	s.logf("%s started, pid %d", c.Name, cmd.Process.Pid)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		s.setPid(c.Name, 0)
		if err == nil {
			return errors.New("exit status 0")
		}
		return err
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			s.setPid(c.Name, 0)
			return err
		case <-time.After(StopTimeout):
			s.logf("%s did not stop within %s of SIGTERM; killing it", c.Name, StopTimeout)
			_ = cmd.Process.Kill()
			s.setPid(c.Name, 0)
			return <-done
		}
	}
}

func (s *Supervisor) setPid(name string, pid int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pid == 0 {
		delete(s.pids, name)
	} else {
		s.pids[name] = pid
	}
	b, _ := json.Marshal(s.pids)
	tmp := s.pidFile + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		s.logf("writing %s: %v", s.pidFile, err)
		return
	}
	if err := os.Rename(tmp, s.pidFile); err != nil {
		s.logf("writing %s: %v", s.pidFile, err)
	}
}

// ReadPids reads a pid file written by a supervisor.
func ReadPids(path string) (map[string]int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b) > 1<<16 {
		return nil, fmt.Errorf("%s: %d bytes, not a pid file", path, len(b))
	}
	m := map[string]int{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}
