package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// ConfigFile is the name of a node's identity file inside its directory.
const ConfigFile = "node.json"

// MaxConfigBytes bounds node.json.
const MaxConfigBytes = 1 << 20

// Config is a node's identity and addresses, written once by `cfs server bootstrap` or
// `cfs server join` into DIR/node.json and read by every later start of the node's
// processes. Addresses are concrete (no port 0): peers store them.
type Config struct {
	ID          string `json:"id"`           // "node-1", given by the cluster
	ClusterName string `json:"cluster_name"` // set at bootstrap, learnt at join

	RaftAddr      string `json:"raft_addr"`      // multiplexed Raft transport, HOST:PORT
	GossipAddr    string `json:"gossip_addr"`    // memberlist, HOST:PORT (TCP and UDP)
	ClientAddr    string `json:"client_addr"`    // client and admin API, HOST:PORT
	DataplaneAddr string `json:"dataplane_addr"` // the dataplane's data port, HOST:PORT
	// MetricsAddr is where the dataplane serves Prometheus /metrics (plain HTTP),
	// HOST:PORT; "" when it does not.
	MetricsAddr string `json:"dataplane_metrics_addr,omitempty"`

	Device     string `json:"device"`      // the dataplane's device (file or block device)
	DeviceSize string `json:"device_size"` // size of a file device laid out on first start

	// Bootstrap is set on the first node of a new cluster until its cluster group exists.
	Bootstrap *Bootstrap `json:"bootstrap,omitempty"`
	// Seeds are peers' gossip addresses to meet at start (learnt at join).
	Seeds []string `json:"seeds,omitempty"`

	// WriteCombining is raft.write_combining: combine the Raft log appends of all groups
	// on this node into shared durable writes.
	WriteCombining bool `json:"raft_write_combining"`
}

// Bootstrap describes the cluster the first node creates.
type Bootstrap struct {
	ClusterName  string `json:"cluster_name"`
	InitialNodes int    `json:"initial_nodes"`
	Shards       int    `json:"shards"`
	Replicas     int    `json:"replicas"`
	K            int    `json:"k"`
	M            int    `json:"m"`
	PGs          int    `json:"pgs"`
}

// Paths derived from a node directory.
func DataplaneSocket(dir string) string { return filepath.Join(dir, "dataplane.sock") }
func RaftDir(dir string) string         { return filepath.Join(dir, "raft") }
func PidFile(dir string) string         { return filepath.Join(dir, "pids.json") }

// Validate says what is wrong with c, naming the field.
func (c *Config) Validate() error {
	if c.ID == "" {
		return errors.New("node.json: id is empty")
	}
	for name, addr := range map[string]string{"raft_addr": c.RaftAddr, "gossip_addr": c.GossipAddr, "client_addr": c.ClientAddr, "dataplane_addr": c.DataplaneAddr} {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || host == "" || port == "" || port == "0" {
			return fmt.Errorf("node.json: %s %q: want HOST:PORT with a fixed port", name, addr)
		}
	}
	if c.MetricsAddr != "" {
		host, port, err := net.SplitHostPort(c.MetricsAddr)
		if err != nil || host == "" || port == "" || port == "0" {
			return fmt.Errorf("node.json: dataplane_metrics_addr %q: want HOST:PORT with a fixed port, or none", c.MetricsAddr)
		}
	}
	if c.Device == "" {
		return errors.New("node.json: device is empty")
	}
	if len(c.Seeds) > 64 {
		return fmt.Errorf("node.json: %d seeds, at most 64", len(c.Seeds))
	}
	if b := c.Bootstrap; b != nil && (b.ClusterName == "" || b.InitialNodes < 1 || b.Shards < 1) {
		return fmt.Errorf("node.json: bootstrap %+v: needs cluster_name, initial_nodes ≥ 1 and shards ≥ 1", *b)
	}
	return nil
}

// ParseConfig reads node.json's bytes strictly: unknown fields are errors naming them.
func ParseConfig(b []byte) (*Config, error) {
	if len(b) > MaxConfigBytes {
		return nil, fmt.Errorf("node.json: %d bytes, at most %d", len(b), MaxConfigBytes)
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	var c Config
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("node.json: %w", err)
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return &c, nil
}

// LoadConfig reads DIR/node.json.
func LoadConfig(dir string) (*Config, error) {
	p := filepath.Join(dir, ConfigFile)
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s does not exist: make the node with `cfs server bootstrap` or `cfs server join` first", p)
		}
		return nil, err
	}
	defer f.Close()
	b := make([]byte, MaxConfigBytes+1)
	n, _ := f.Read(b)
	c, err := ParseConfig(b[:n])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return c, nil
}

// SaveConfig writes DIR/node.json atomically (temp file, fsync, rename, fsync dir).
func SaveConfig(dir string, c *Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, ConfigFile), append(b, '\n'))
}

func writeFileAtomic(path string, b []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
