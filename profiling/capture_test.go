package profiling

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestCPUOneAtATime: a second profile while one runs is ErrBusy; a profile
// cut short by its context still returns what it holds; a limit below the
// profile's size is an error.
func TestCPUOneAtATime(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := CPU(ctx, time.Minute, 1<<20)
		done <- err
	}()
	// Nothing else takes a profile meanwhile, so the first has started
	// (or failed, and said so) by then.
	time.Sleep(300 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("the first profile ended early: %v", err)
	default:
	}
	if _, err := CPU(context.Background(), time.Millisecond, 1<<20); !errors.Is(err, ErrBusy) {
		t.Fatalf("a second profile while one runs: %v, want ErrBusy", err)
	}
	start := time.Now()
	cancel()
	if err := <-done; err != nil || time.Since(start) > 5*time.Second {
		t.Fatalf("a cancelled profile: %v after %v", err, time.Since(start))
	}
	if _, err := CPU(context.Background(), 10*time.Millisecond, 1); err == nil {
		t.Error("a profile over its 1-byte limit was returned")
	}
	if _, err := CPU(context.Background(), 0, 1<<20); err == nil {
		t.Error("a zero duration was accepted")
	}
}
