package dataplane

import (
	"context"
	"hash/crc32"
	"sync"
	"testing"
	"time"

	"github.com/claudefs/claudefs/profiling"
	"github.com/claudefs/claudefs/profiling/analyze"
)

// TestLabels profiles goroutines labelled as an I/O core, an event loop and
// a worker serving a stat: their samples carry core/role/op as labels.go
// says.
func TestLabels(t *testing.T) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	spin := func(label func()) {
		defer wg.Done()
		label()
		buf := make([]byte, 32<<10)
		for {
			select {
			case <-stop:
				return
			default:
				crc32.ChecksumIEEE(buf)
			}
		}
	}
	p := &placement{}
	wg.Add(3)
	go spin(func() { p.partitionThread(1) })
	go spin(func() { p.connThread(0) })
	go spin(func() { labelWorker(OpStatShard) })
	b, err := profiling.CPU(context.Background(), 700*time.Millisecond, 1<<20)
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	prof, err := analyze.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, s := range prof.Sample {
		key := ""
		for _, k := range []string{LabelCore, LabelRole, LabelOp} {
			if v := s.Label[k]; len(v) == 1 {
				key += k + "=" + v[0] + " "
			}
		}
		seen[key] = true
	}
	for _, want := range []string{"core=1 role=io ", "core=0 role=net ", "role=worker op=stat "} {
		if !seen[want] {
			t.Errorf("no sample labelled %q; seen %v", want, seen)
		}
	}
}
