package node

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"time"

	"github.com/claudefs/claudefs/controlplane/supervise"
	"github.com/prometheus/procfs"
)

// ProcessesResponse is GET /v1/admin/processes: the node's processes and the
// dataplane's threads, their CPU use over the interval sampled.
type ProcessesResponse struct {
	Node       string        `json:"node"`
	IntervalNs int64         `json:"interval_ns"`
	Processes  []ProcessInfo `json:"processes"`
	// Threads are the dataplane's threads, busiest first; those of its I/O cores and
	// event loops say so (core, loop) and where they are pinned.
	Threads []ThreadInfo `json:"dataplane_threads"`
	Error   string       `json:"error,omitempty"` // what could not be read
}

// ProcessInfo is one process: its CPU use over the interval (100 = one CPU busy) and
// cumulative CPU seconds, resident memory and thread count.
type ProcessInfo struct {
	Name       string  `json:"name"` // supervisor, control, dataplane
	PID        int     `json:"pid"`
	CPUPercent float64 `json:"cpu_percent"`
	UserCPUs   float64 `json:"user_cpu_s"`
	SystemCPUs float64 `json:"system_cpu_s"`
	RSSBytes   uint64  `json:"rss_bytes"`
	Threads    int     `json:"threads"`
}

// ThreadInfo is one thread of the dataplane.
type ThreadInfo struct {
	TID        int     `json:"tid"`
	Comm       string  `json:"comm"`
	Role       string  `json:"role,omitempty"` // "io" (I/O core), "net" (event loop)
	Core       int     `json:"core"`           // the I/O core or loop number, -1 for other threads
	PinnedCPU  int     `json:"pinned_cpu"`     // -1 when not pinned
	LastCPU    int     `json:"last_cpu"`       // the CPU it last ran on
	CPUPercent float64 `json:"cpu_percent"`
}

// maxIntervalProcs bounds the sampling interval of /v1/admin/processes.
const maxIntervalProcs = 10 * time.Second

func copyLimited(w io.Writer, r io.Reader, limit int64) (int64, error) {
	return io.Copy(w, io.LimitReader(r, limit))
}

type cpuSample struct {
	ticks uint64 // user+system, in USER_HZ
	user  uint64
	sys   uint64
}

const userHZ = 100 // /proc's CPU time unit (fixed by the Linux ABI)

func (n *Node) handleProcesses(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	interval := time.Second
	if s := q.Get("interval"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d < 100*time.Millisecond || d > maxIntervalProcs {
			n.fail(w, http.StatusBadRequest, "bad_request", fmt.Errorf("interval %q: want a duration in 100ms..%v", s, maxIntervalProcs), "")
			return
		}
		interval = d
	}
	if n.forwardTo(w, r, q.Get("node"), interval+10*time.Second) {
		return
	}
	out := &ProcessesResponse{Node: n.cfg.ID, IntervalNs: int64(interval)}
	pids := map[string]int{"control": os.Getpid()}
	if sp, err := supervise.ReadPids(PidFile(n.dir)); err == nil && sp["supervisor"] == os.Getppid() && sp["supervisor"] > 1 {
		pids["supervisor"] = sp["supervisor"]
	}
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	h, herr := n.adm.dp.Health(ctx)
	var cores, loops map[int][2]int // tid -> {index, pinned cpu}
	if herr == nil {
		pids["dataplane"] = h.PID
		if st, err := n.adm.dp.Stats(ctx); err == nil {
			cores, loops = map[int][2]int{}, map[int][2]int{}
			for _, c := range st.Cores {
				cores[c.TID] = [2]int{c.Partition, c.CPU}
			}
			for _, l := range st.EventLoops {
				loops[l.TID] = [2]int{l.Loop, l.CPU}
			}
		}
	} else {
		out.Error = fmt.Sprintf("the dataplane does not answer its sidecar channel: %v", herr)
	}
	cancel()

	procSample := func() map[string]cpuSample {
		m := map[string]cpuSample{}
		for name, pid := range pids {
			if p, err := procfs.NewProc(pid); err == nil {
				if st, err := p.Stat(); err == nil {
					m[name] = cpuSample{ticks: uint64(st.UTime + st.STime), user: uint64(st.UTime), sys: uint64(st.STime)}
				}
			}
		}
		return m
	}
	threadSample := func() map[int]procfs.ProcStat {
		m := map[int]procfs.ProcStat{}
		if pid, ok := pids["dataplane"]; ok {
			if ts, err := procfs.AllThreads(pid); err == nil {
				for i, t := range ts {
					if i >= 4096 {
						break
					}
					if st, err := t.Stat(); err == nil {
						m[t.PID] = st
					}
				}
			}
		}
		return m
	}
	p0, t0 := procSample(), threadSample()
	select {
	case <-time.After(interval):
	case <-r.Context().Done():
		return
	}
	p1, t1 := procSample(), threadSample()
	pct := func(a, b uint64) float64 {
		if b < a {
			return 0
		}
		return 100 * float64(b-a) / userHZ / interval.Seconds()
	}
	for name, pid := range pids {
		pi := ProcessInfo{Name: name, PID: pid}
		if s1, ok := p1[name]; ok {
			pi.CPUPercent = pct(p0[name].ticks, s1.ticks)
			pi.UserCPUs, pi.SystemCPUs = float64(s1.user)/userHZ, float64(s1.sys)/userHZ
		}
		if p, err := procfs.NewProc(pid); err == nil {
			if st, err := p.Stat(); err == nil {
				pi.RSSBytes, pi.Threads = uint64(st.ResidentMemory()), st.NumThreads
			}
		}
		out.Processes = append(out.Processes, pi)
	}
	sort.Slice(out.Processes, func(i, j int) bool { return out.Processes[i].Name < out.Processes[j].Name })
	for tid, s1 := range t1 {
		ti := ThreadInfo{TID: tid, Comm: s1.Comm, Core: -1, PinnedCPU: -1, LastCPU: int(s1.Processor)}
		if s0, ok := t0[tid]; ok {
			ti.CPUPercent = pct(uint64(s0.UTime+s0.STime), uint64(s1.UTime+s1.STime))
		}
		if c, ok := cores[tid]; ok {
			ti.Role, ti.Core, ti.PinnedCPU = "io", c[0], c[1]
		} else if l, ok := loops[tid]; ok {
			ti.Role, ti.Core, ti.PinnedCPU = "net", l[0], l[1]
		}
		out.Threads = append(out.Threads, ti)
	}
	sort.Slice(out.Threads, func(i, j int) bool {
		a, b := out.Threads[i], out.Threads[j]
		if a.CPUPercent != b.CPUPercent {
			return a.CPUPercent > b.CPUPercent
		}
		return a.TID < b.TID
	})
	n.writeJSON(w, http.StatusOK, out)
}
