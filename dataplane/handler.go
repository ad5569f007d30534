package dataplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/claudefs/claudefs/dataplane/dpconfig"
	"github.com/claudefs/claudefs/dataplane/sidecar"
	"github.com/claudefs/claudefs/nvme/chunkstore"
	"github.com/claudefs/claudefs/profiling"
)

// The sidecar channel's operations (sidecar.Handler).

var _ sidecar.Handler = (*Node)(nil)

// ConfigGet returns key's value in force, or every key's when key is "".
func (n *Node) ConfigGet(_ context.Context, key string) ([]sidecar.ConfigValue, error) {
	cfg := n.Config()
	value := func(k dpconfig.Key) sidecar.ConfigValue {
		return sidecar.ConfigValue{Key: k.Name, Value: k.Value(&cfg), Default: k.Default, Range: k.Range, Live: k.Live, Help: k.Help}
	}
	if key != "" {
		k, err := dpconfig.Lookup(key)
		if err != nil {
			return nil, err
		}
		return []sidecar.ConfigValue{value(k)}, nil
	}
	var out []sidecar.ConfigValue
	for _, k := range dpconfig.Keys() {
		out = append(out, value(k))
	}
	return out, nil
}

// ConfigSet applies a live key at once; a restart key's value is only
// validated. A value already in force is reported applied either way.
func (n *Node) ConfigSet(_ context.Context, key, value string) (sidecar.SetResult, error) {
	k, err := dpconfig.Lookup(key)
	if err != nil {
		return sidecar.SetResult{}, err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	next := n.cfg
	if err := next.Set(key, value); err != nil {
		return sidecar.SetResult{}, err
	}
	res := sidecar.SetResult{Key: k.Name, Value: k.Value(&n.cfg), Requested: k.Value(&next)}
	if res.Requested == res.Value {
		res.Applied = true
		return res, nil
	}
	if !k.Live || !n.canApply(k.Name, &next) {
		res.RestartRequired = true
		n.logf("sidecar: %s = %s takes a restart; %s stays in force", k.Name, res.Requested, res.Value)
		return res, nil
	}
	if err := n.apply(k.Name, &next); err != nil {
		return sidecar.SetResult{}, err
	}
	n.cfg = next
	res.Value, res.Applied = res.Requested, true
	n.logf("sidecar: %s set to %s", k.Name, res.Value)
	return res, nil
}

// canApply reports whether a live key's new value can be applied without
// a restart: a socket buffer size, once set on connections, cannot go
// back to the kernel's autotuning (0).
func (n *Node) canApply(key string, next *dpconfig.Config) bool {
	switch key {
	case "network.tcp_sndbuf":
		return next.TCPSndBuf != 0
	case "network.tcp_rcvbuf":
		return next.TCPRcvBuf != 0
	}
	return true
}

// apply puts a live key's new value in force; n.mu is held.
func (n *Node) apply(key string, next *dpconfig.Config) error {
	switch key {
	case "nvme.queue_depth":
		return n.store.SetQueueLimit(next.QueueDepth)
	case "data.drain_timeout":
		return nil // read at Stop
	case "network.tcp_nodelay", "network.tcp_sndbuf", "network.tcp_rcvbuf":
		conns, err := n.socks.set(tcpOpts{NoDelay: next.TCPNoDelay, SndBuf: next.TCPSndBuf, RcvBuf: next.TCPRcvBuf})
		if err != nil {
			return fmt.Errorf("applying %s to the shard connections: %w (%d updated)", key, err, conns)
		}
		n.logf("sidecar: %s applied to %d open connections; new ones get it on their first request", key, conns)
		return nil
	}
	return fmt.Errorf("%s is marked live but the dataplane has no way to apply it: this is a bug", key)
}

// SetEpoch raises the placement epoch; an older epoch is refused.
func (n *Node) SetEpoch(_ context.Context, epoch uint64) (uint64, error) {
	if cur := n.srv.SetEpoch(epoch); cur != epoch {
		return cur, &sidecar.Error{Code: sidecar.CodeStaleEpoch, Message: fmt.Sprintf(
			"placement epoch %d is older than the dataplane's epoch %d: epochs only move forward (push the current placement map's epoch)", epoch, cur)}
	}
	return epoch, nil
}

// Health reports the dataplane's state.
func (n *Node) Health(context.Context) (sidecar.Health, error) {
	cfg := n.Config()
	h := sidecar.Health{PID: os.Getpid(), Device: cfg.Device, Listen: n.srv.Addr().String(),
		Partitions: n.store.Partitions(), Epoch: n.srv.Epoch(), StartedAt: n.start,
		UptimeNs: int64(time.Since(n.start)), Errors: n.errCount.Load()}
	if e := n.lastErr.Load(); e != nil {
		at := e.at
		h.LastError, h.LastErrorAt = e.msg, &at
	}
	st, err := n.store.Stats()
	h.StoreOpen = err == nil && n.storeOpen.Load()
	if err == nil {
		h.CapacityBytes = int64(st.Segments * st.SegmentSize)
		h.FreeBytes = int64(st.FreeSegments * st.SegmentSize)
		h.UsedBytes = h.CapacityBytes - h.FreeBytes
		h.LiveBytes, h.LiveChunks = int64(st.LiveBytes), int64(st.LiveChunks)
	}
	return h, nil
}

// Stats reports per-core, per-event-loop and network figures.
func (n *Node) Stats(context.Context) (sidecar.Stats, error) {
	cores, err := n.store.PartitionStats()
	if err != nil {
		return sidecar.Stats{}, fmt.Errorf("%w: %v", sidecar.ErrUnavailable, err)
	}
	parts, loops := n.place.threads()
	out := sidecar.Stats{UptimeNs: int64(time.Since(n.start)), Epoch: n.srv.Epoch()}
	for i, c := range cores {
		cs := sidecar.CoreStats{Partition: c.Partition, CPU: -1,
			Reads: c.Gets, Writes: c.Puts, Deletes: c.Deletes, BytesRead: c.BytesRead, BytesWritten: c.BytesWritten,
			Failed: c.Failed, Refused: c.Refused, QueueDepth: c.Queued, QueueLimit: c.QueueLimit, DeviceOps: c.DeviceOps,
			ReadLatency: c.ReadLatency[:], WriteLatency: c.WriteLatency[:],
			Batches: c.Batches, BatchRecords: c.BatchRecords, BatchBytes: c.BatchBytes,
			LiveChunks: c.LiveChunks, LiveBytes: c.LiveBytes, Segments: c.Segments, FreeSegments: c.FreeSegments}
		if i < len(parts) {
			cs.TID, cs.CPU = parts[i].TID, parts[i].CPU
			if u, s, err := threadCPU(cs.TID); err == nil {
				cs.UserCPUNs, cs.SystemCPUNs = int64(u), int64(s)
			}
		}
		out.Cores = append(out.Cores, cs)
	}
	for _, t := range loops {
		ls := sidecar.LoopStats{Loop: t.Index, TID: t.TID, CPU: t.CPU}
		if u, s, err := threadCPU(t.TID); err == nil {
			ls.UserCPUNs, ls.SystemCPUNs = int64(u), int64(s)
		}
		out.EventLoops = append(out.EventLoops, ls)
	}
	c := n.srv.Counters()
	out.Network = sidecar.NetStats{InFlight: n.srv.InFlight(), WorkerBusy: n.srv.Busy(),
		BadMagic: c.BadMagic.Load(), BadVersion: c.BadVersion.Load(), BadHeaderCRC: c.BadHeaderCRC.Load(),
		TooLarge: c.TooLarge.Load(), BadPayloadCRC: c.BadPayloadCRC.Load(), BadFlags: c.BadFlags.Load(),
		UnknownOpcode: c.UnknownOpcode.Load(), Truncated: c.Truncated.Load(), WindowOverrun: c.WindowOverrun.Load(),
		UnknownResponse: c.UnknownResponse.Load()}
	return out, nil
}

// The latency histograms travel as slices of chunkstore's fixed buckets.
var _ [sidecar.LatencyBuckets]uint64 = chunkstore.Histogram{}

// ProfileCPU takes a CPU profile of the dataplane (its samples labelled by
// core, role and op: labels.go). A profile cut short by ctx (the request's
// deadline) is answered with what it holds.
func (n *Node) ProfileCPU(ctx context.Context, d time.Duration) ([]byte, error) {
	b, err := profiling.CPU(ctx, d, sidecar.MaxProfileBytes)
	if errors.Is(err, profiling.ErrBusy) {
		return nil, &sidecar.Error{Code: sidecar.CodeBusy, Message: "a CPU profile of this dataplane is already being taken: wait for it to finish"}
	}
	return b, err
}
