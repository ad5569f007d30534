package metaclient

import (
	"context"
	"testing"
	"time"

	"github.com/claudefs/claudefs/controlplane/meta/metatest"
)

// hosts is a multi-Raft cluster in this process running the real metadata
// shards (metatest), and the test that owns it.
type hosts struct {
	t      *testing.T
	shards map[uint32][]string
}

func newHosts(t *testing.T, nodes, shards int) *hosts {
	t.Helper()
	return &hosts{t: t, shards: metatest.Start(t, nodes, shards).Shards}
}

// client dials the hosts' shards; it is closed when the test ends.
func (h *hosts) client(opts Options) *Client {
	h.t.Helper()
	opts.Shards = h.shards
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := Dial(ctx, nil, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { c.Close() })
	return c
}
