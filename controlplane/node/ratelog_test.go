package node

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestRateLimited(t *testing.T) {
	var lines []string
	logf := RateLimited(func(f string, a ...any) { lines = append(lines, fmt.Sprintf(f, a...)) }, 10, 5)
	for i := range 100 {
		logf("line %d", i)
	}
	if len(lines) != 5 {
		t.Fatalf("%d lines passed a burst of 5: %q", len(lines), lines)
	}
	time.Sleep(250 * time.Millisecond) // ~2.5 tokens
	logf("after")
	if len(lines) != 7 || !strings.Contains(lines[5], "95 log lines dropped") || lines[6] != "after" {
		t.Fatalf("after the pause: %q", lines[5:])
	}
}
