package bench

import (
	"context"
	"io"
	"path/filepath"
	"testing"
)

// TestPermutation: every pass visits each value of [0, n) once, passes
// differ, and the order is spread over the range.
func TestPermutation(t *testing.T) {
	for _, n := range []int64{1, 2, 3, 7, 64, 65, 1000, 4097, 1 << 16} {
		p := newPermutation(n, 42)
		var first []int64
		differs := false
		for pass := int64(0); pass < 2; pass++ {
			seen := make([]bool, n)
			for i := range n {
				v := p.at(pass*n + i)
				if v < 0 || v >= n || seen[v] {
					t.Fatalf("n=%d pass %d: value %d out of range or repeated", n, pass, v)
				}
				seen[v] = true
				if pass == 0 {
					first = append(first, v)
				} else if v != first[i] {
					differs = true
				}
			}
		}
		if n > 16 && !differs {
			t.Errorf("n=%d: the second pass repeats the first", n)
		}
	}
	// The first half of a pass lands about evenly in tenths of the range.
	const n = 10000
	p := newPermutation(n, 7)
	var tenths [10]int
	for i := range int64(n / 2) {
		tenths[p.at(i)*10/n]++
	}
	for i, c := range tenths {
		if c < 400 || c > 600 {
			t.Errorf("tenth %d holds %d of the first 5000 values, want about 500", i, c)
		}
	}
}

// TestRandomMap: a size-based random write job writes every block once,
// so a later random read job with verify finds every block stamped (as
// with fio's default random map); norandommap draws with replacement.
func TestRandomMap(t *testing.T) {
	path := filepath.Join(t.TempDir(), "dev.dat")
	res := runSpec(t, "--target=device:"+path, "--rw=randwrite", "--bs=4k", "--iodepth=8", "--size=1m", "--verify=crc32c", "--numjobs=2")
	for _, j := range res.Jobs {
		if j.Write.IOs != 256 || j.Verify.Units != 256 || j.Verify.Mismatches != 0 {
			t.Errorf("job %d: %d writes, verify %+v: every block once", j.Index, j.Write.IOs, j.Verify)
		}
	}
	spec := mustSpec(t, "--target=device:"+path, "--rw=randread", "--bs=4k", "--iodepth=8", "--size=1m", "--verify=crc32c",
		"--runtime=200ms", "--time_based")
	if _, err := Run(context.Background(), spec, io.Discard); err != nil {
		t.Fatalf("random reads of a file a random write job wrote: %v", err)
	}

	spec = mustSpec(t, "--target=device:x", "--rw=randread", "--bs=4k", "--size=1m", "--norandommap")
	w, _ := measuringJob(spec).NewWorker()
	seen := map[int64]bool{}
	for range 256 {
		io, _ := w.NextIO()
		seen[io.Off] = true
	}
	if len(seen) > 200 {
		t.Errorf("norandommap: 256 draws over 256 blocks hit %d distinct blocks, want about 162", len(seen))
	}
}
