package node

import (
	"sync"
	"time"
)

// RateLimited returns a logf that passes at most burst lines at once and perSec lines per
// second on average to logf, and says how many it dropped (at the next line it passes).
// A control process with hundreds of Raft groups would otherwise write a line per group
// per retry while a peer is down.
func RateLimited(logf func(string, ...any), perSec, burst int) func(string, ...any) {
	var mu sync.Mutex
	tokens := float64(burst)
	last := time.Now()
	dropped := 0
	return func(format string, args ...any) {
		mu.Lock()
		now := time.Now()
		tokens = min(float64(burst), tokens+now.Sub(last).Seconds()*float64(perSec))
		last = now
		if tokens < 1 {
			dropped++
			mu.Unlock()
			return
		}
		tokens--
		d := dropped
		dropped = 0
		mu.Unlock()
		if d > 0 {
			logf("(%d log lines dropped: more than %d per second)", d, perSec)
		}
		logf(format, args...)
	}
}
