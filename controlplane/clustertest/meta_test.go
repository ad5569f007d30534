package clustertest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/claudefs/claudefs/client/metaclient"
	"github.com/claudefs/claudefs/controlplane/meta"
)

// The metadata service under faults, on real processes: a porcupine check
// of concurrent namespace operations while shard leaders are killed and
// frozen, and a crash test of cross-shard renames and mkdirs whose
// control processes and whose client are SIGKILLed at random moments.

func (c *cluster) raftAddrs() []string {
	var out []string
	for _, n := range c.status().Nodes {
		out = append(out, n.Control.RaftAddr)
	}
	return out
}

func (c *cluster) metaClient(t *testing.T) *metaclient.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	mc, err := metaclient.Dial(ctx, c.raftAddrs(), metaclient.Options{Logf: func(string, ...any) {}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mc.Close() })
	return mc
}

// twoDirs makes two directories of the root on two shards other than the root's.
func twoDirs(ctx context.Context, t *testing.T, mc *metaclient.Client, prefix string) (meta.Inode, meta.Inode) {
	t.Helper()
	var dirs []meta.Inode
	for i := 0; len(dirs) < 2 && i < 64; i++ {
		d, err := mc.Mkdir(ctx, meta.RootIno, fmt.Sprintf("%s%d", prefix, i), 0o755, metaclient.Owner{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Ino.Shard() != meta.RootIno.Shard() && (len(dirs) == 0 || dirs[0].Ino.Shard() != d.Ino.Shard()) {
			dirs = append(dirs, d)
		}
	}
	if len(dirs) < 2 {
		t.Fatal("no two directories on distinct shards")
	}
	return dirs[0], dirs[1]
}

// nsSlots is the namespace the porcupine clients share: names in two
// directories on two shards.
const nsNames = 3

type nsInput struct {
	Op       string // create, unlink, rename, stat
	Slot, To int    // slot = dir*nsNames + name
}

type nsOutput struct {
	Ino     uint64
	Err     syscall.Errno
	Unknown bool
}

// unknownIno marks a file whose create's outcome was not learnt.
const unknownIno = math.MaxUint64

type nsState [2 * nsNames]uint64

var nsModel = porcupine.NondeterministicModel{
	Init: func() []any { return []any{nsState{}} },
	Step: func(state, input, output any) []any {
		st, in, out := state.(nsState), input.(nsInput), output.(nsOutput)
		applied := st
		var ok bool // the output is possible if the op applied
		switch in.Op {
		case "stat":
			if out.Unknown {
				return []any{st}
			}
			if st[in.Slot] == 0 {
				return onlyIf(out.Err == syscall.ENOENT, st)
			}
			return onlyIf(out.Err == 0 && (st[in.Slot] == unknownIno || st[in.Slot] == out.Ino), st)
		case "create":
			ok = st[in.Slot] == 0
			if ok {
				applied[in.Slot] = out.Ino
				if out.Unknown {
					applied[in.Slot] = unknownIno
				}
			}
			if !out.Unknown {
				if ok {
					return onlyIf(out.Err == 0, applied)
				}
				return onlyIf(out.Err == syscall.EEXIST, st)
			}
		case "unlink":
			ok = st[in.Slot] != 0
			applied[in.Slot] = 0
			if !out.Unknown {
				if ok {
					return onlyIf(out.Err == 0, applied)
				}
				return onlyIf(out.Err == syscall.ENOENT, st)
			}
		case "rename":
			ok = st[in.Slot] != 0
			applied[in.To], applied[in.Slot] = st[in.Slot], 0
			if !out.Unknown {
				if ok {
					return onlyIf(out.Err == 0, applied)
				}
				return onlyIf(out.Err == syscall.ENOENT, st)
			}
		}
		// Outcome unknown: it applied, or not.
		if ok {
			return []any{st, applied}
		}
		return []any{st}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(nsInput), output.(nsOutput)
		return fmt.Sprintf("%s(%d→%d) → ino %x err %v unknown %v", in.Op, in.Slot, in.To, out.Ino, out.Err, out.Unknown)
	},
}

func onlyIf(cond bool, st nsState) []any {
	if cond {
		return []any{st}
	}
	return nil
}

// TestMetadataLinearizableUnderFaults: clients create, rename (across the
// two shards), unlink and stat names while the leaders of the shards
// involved are SIGKILLed (restarted by their supervisor) or frozen; the
// history must be linearizable.
func TestMetadataLinearizableUnderFaults(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of real processes")
	}
	c := devUp(t, 3, 8)
	mc := c.metaClient(t)
	ctx0, cancel0 := context.WithTimeout(context.Background(), time.Minute)
	defer cancel0()
	d1, d2 := twoDirs(ctx0, t, mc, "lin")
	dirs := []meta.Ino{d1.Ino, d2.Ino}
	slot := func(s int) (meta.Ino, string) { return dirs[s/nsNames], fmt.Sprintf("n%d", s%nsNames) }

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var mu sync.Mutex
	var history []porcupine.Operation
	var done, unknown int
	const clients = 4
	var wg sync.WaitGroup
	for cl := range clients {
		wg.Add(1)
		cc := c.metaClient(t)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(cl), 11))
			for ctx.Err() == nil {
				in := nsInput{Slot: rng.IntN(2 * nsNames)}
				switch r := rng.IntN(10); {
				case r < 3:
					in.Op = "stat"
				case r < 6:
					in.Op = "create"
				case r < 8:
					in.Op, in.To = "rename", rng.IntN(2*nsNames)
					if in.To == in.Slot {
						in.Op = "stat"
					}
				default:
					in.Op = "unlink"
				}
				d, n := slot(in.Slot)
				call := time.Since(start).Nanoseconds()
				octx, ocancel := context.WithTimeout(context.Background(), 8*time.Second)
				var out nsOutput
				var err error
				switch in.Op {
				case "stat":
					var e meta.Entry
					e, err = cc.Lookup(octx, d, n)
					out.Ino = uint64(e.Ino)
				case "create":
					var f meta.Inode
					f, _, err = cc.Create(octx, d, n, 0o644, 0, metaclient.Owner{}, true)
					out.Ino = uint64(f.Ino)
				case "rename":
					d2, n2 := slot(in.To)
					err = cc.Rename(octx, d, n, d2, n2, 0)
				case "unlink":
					err = cc.Unlink(octx, d, n)
				}
				ocancel()
				ret := time.Since(start).Nanoseconds()
				var errno syscall.Errno
				switch {
				case err == nil:
				case errors.As(err, &errno) && (errno == syscall.ENOENT || errno == syscall.EEXIST):
					out.Err = errno
				default:
					out = nsOutput{Unknown: true}
				}
				mu.Lock()
				if out.Unknown {
					unknown++
					if in.Op != "stat" {
						history = append(history, porcupine.Operation{ClientId: cl, Input: in, Call: call, Output: out, Return: math.MaxInt64})
					}
				} else {
					done++
					history = append(history, porcupine.Operation{ClientId: cl, Input: in, Call: call, Output: out, Return: ret})
				}
				mu.Unlock()
				if out.Unknown {
					time.Sleep(50 * time.Millisecond)
				}
			}
		}()
	}
	faults := leaderFaults(ctx, t, c, start, []uint32{d1.Ino.Shard(), d2.Ino.Shard(), meta.RootIno.Shard()}, 5)
	wg.Wait()
	t.Logf("%d faults; %d operations completed, %d with unknown outcome", faults, done, unknown)
	if faults < 3 {
		t.Fatalf("only %d faults injected", faults)
	}
	if done < 200 {
		t.Fatalf("only %d operations completed: the metadata service was unavailable too much", done)
	}
	model := nsModel.ToModel()
	res, info := porcupine.CheckOperationsVerbose(model, history, 90*time.Second)
	if res != porcupine.Ok {
		viz := filepath.Join(os.TempDir(), fmt.Sprintf("cfs-meta-linearizability-%d.html", os.Getpid()))
		if err := porcupine.VisualizePath(model, info, viz); err == nil {
			t.Logf("porcupine's picture of the history: %s", viz)
		}
		t.Fatalf("history of %d operations is %v (want linearizable)", len(history), res)
	}
}

// The crash test's driver runs as a child process (this test binary, run
// with CFS_META_DRIVER set) so that it can be SIGKILLed in the middle of a
// transaction. It moves files between the two directories and makes and
// removes directories (on other shards) in the first, printing "start"
// before and "ack" after each operation.
const driverEnv = "CFS_META_DRIVER"

func TestMetadataDriverChild(t *testing.T) {
	spec := os.Getenv(driverEnv)
	if spec == "" {
		t.Skip("the crash test's child process")
	}
	// spec: addrs;d1;d2;files;seed
	f := strings.Split(spec, ";")
	d1, _ := strconv.ParseUint(f[1], 10, 64)
	d2, _ := strconv.ParseUint(f[2], 10, 64)
	files, _ := strconv.Atoi(f[3])
	seed, _ := strconv.ParseUint(f[4], 10, 64)
	ctx := context.Background()
	mc, err := metaclient.Dial(ctx, strings.Split(f[0], ","), metaclient.Options{})
	if err != nil {
		fmt.Println("dial", err)
		os.Exit(1)
	}
	dirs := []meta.Ino{meta.Ino(d1), meta.Ino(d2)}
	out := bufio.NewWriter(os.Stdout)
	say := func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...); out.Flush() }
	rng := rand.New(rand.NewPCG(seed, 3))
	for {
		i := rng.IntN(files)
		name := fmt.Sprintf("f%d", i)
		if rng.IntN(3) == 0 {
			m := fmt.Sprintf("m%d", i)
			if _, err := mc.Lookup(ctx, dirs[0], m); err == nil {
				say("start rmdir %d", i)
				if err := mc.Rmdir(ctx, dirs[0], m); err == nil {
					say("ack rmdir %d", i)
				}
			} else {
				say("start mkdir %d", i)
				if _, err := mc.Mkdir(ctx, dirs[0], m, 0o755, metaclient.Owner{}); err == nil {
					say("ack mkdir %d", i)
				}
			}
			continue
		}
		from := 0
		if _, err := mc.Lookup(ctx, dirs[0], name); err != nil {
			from = 1
		}
		say("start rename %d %d", i, 1-from)
		if err := mc.Rename(ctx, dirs[from], name, dirs[1-from], name, 0); err == nil {
			say("ack rename %d %d", i, 1-from)
		} else {
			say("error rename %d: %v", i, err)
		}
	}
}

// TestMetadataCrossShardCrash: rounds of the driver above, each ended by
// SIGKILL of the driver, often with a SIGKILL of a control process leading
// one of the shards involved in the middle. After each round every file is
// at exactly one of its names (the acknowledged one, or either when its
// rename was cut off), every directory entry names a live inode, and link
// counts are right. At the end every transaction left behind is resolved
// and the inode count matches the tree: no orphan stays.
func TestMetadataCrossShardCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of real processes")
	}
	c := devUp(t, 3, 8)
	mc := c.metaClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	d1, d2 := twoDirs(ctx, t, mc, "crash")
	dirs := []meta.Ino{d1.Ino, d2.Ino}
	const files = 6
	for i := 0; i < files; i++ {
		if _, _, err := mc.Create(ctx, d1.Ino, fmt.Sprintf("f%d", i), 0o644, 0, metaclient.Owner{}, true); err != nil {
			t.Fatal(err)
		}
	}
	where := make([]int, files)    // the acknowledged directory of each file
	cutOff := make([]int, files)   // -1, or the target of a rename without ack
	mdir := make([]int, files)     // 0 absent, 1 present (acknowledged)
	mdirCut := make([]bool, files) // a mkdir/rmdir without ack
	addrs := strings.Join(c.raftAddrs(), ",")
	rounds, controlKills, totalAcks := 12, 0, 0
	rng := rand.New(rand.NewPCG(42, 42))
	for round := 0; round < rounds; round++ {
		for i := range cutOff {
			cutOff[i], mdirCut[i] = -1, false
		}
		cmd := exec.Command(os.Args[0], "-test.run=^TestMetadataDriverChild$", "-test.v")
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s;%d;%d;%d;%d", driverEnv, addrs, d1.Ino, d2.Ino, files, round))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Every line the driver wrote must be read before Wait closes the
		// pipe: a lost "start" would make a cut-off rename look like a bug.
		var lines []string
		read := make(chan struct{})
		go func() {
			defer close(read)
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines = append(lines, sc.Text())
			}
		}()
		runFor := time.Duration(500+rng.IntN(2000)) * time.Millisecond
		if rng.IntN(2) == 0 {
			time.Sleep(runFor / 2)
			g := dirs[rng.IntN(2)].Shard()
			if pid, who := leaderControlPid(c, g); pid != 0 {
				t.Logf("round %d: SIGKILL %s's control process (leader of shard %d)", round, who, g)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				controlKills++
			}
			time.Sleep(runFor / 2)
		} else {
			time.Sleep(runFor)
		}
		_ = cmd.Process.Kill()
		<-read // EOF: the killed driver's end of the pipe is closed
		_ = cmd.Wait()
		acks := 0
		for _, l := range lines {
			var i, to int
			switch {
			case sscan(l, "start rename %d %d", &i, &to):
				cutOff[i] = to
			case sscan(l, "ack rename %d %d", &i, &to):
				where[i], cutOff[i] = to, -1
				acks++
			case sscan(l, "start mkdir %d", &i), sscan(l, "start rmdir %d", &i):
				mdirCut[i] = true
			case sscan(l, "ack mkdir %d", &i):
				mdir[i], mdirCut[i] = 1, false
				acks++
			case sscan(l, "ack rmdir %d", &i):
				mdir[i], mdirCut[i] = 0, false
				acks++
			}
		}
		t.Logf("round %d: driver killed after %v, %d acknowledged operations", round, runFor, acks)
		totalAcks += acks
		// Check. Reads meet the locks the killed driver left and resolve
		// them (ResolveAfter), so each check sees a decided state.
		for i := 0; i < files; i++ {
			name := fmt.Sprintf("f%d", i)
			var at []int
			for d := range dirs {
				e, err := mc.Lookup(ctx, dirs[d], name)
				if err == nil {
					at = append(at, d)
					if e.Attr.Nlink != 1 {
						t.Fatalf("round %d: %s has nlink %d", round, name, e.Attr.Nlink)
					}
				} else if !errors.Is(err, syscall.ENOENT) {
					t.Fatalf("round %d: lookup %s: %v", round, name, err)
				}
			}
			if len(at) != 1 {
				t.Fatalf("round %d: %s is in %d directories %v (want exactly one)", round, name, len(at), at)
			}
			if at[0] != where[i] && at[0] != cutOff[i] {
				t.Fatalf("round %d: %s is in directory %d; acknowledged in %d, cut off moving to %d", round, name, at[0], where[i], cutOff[i])
			}
			where[i] = at[0]
			m := fmt.Sprintf("m%d", i)
			e, err := mc.Lookup(ctx, d1.Ino, m)
			present := 0
			if err == nil {
				present = 1
				if e.Attr == nil || !meta.IsDir(e.Attr.Mode) || e.Attr.Parent != d1.Ino {
					t.Fatalf("round %d: %s: %+v", round, m, e.Attr)
				}
			} else if !errors.Is(err, syscall.ENOENT) {
				t.Fatalf("round %d: lookup %s: %v", round, m, err)
			}
			if present != mdir[i] && !mdirCut[i] {
				t.Fatalf("round %d: %s present=%d, acknowledged %d", round, m, present, mdir[i])
			}
			mdir[i] = present
		}
		subdirs := 0
		for _, p := range mdir {
			subdirs += p
		}
		for d, want := range []uint32{uint32(2 + subdirs), 2} {
			in, err := mc.GetAttr(ctx, dirs[d])
			if err != nil {
				t.Fatal(err)
			}
			if in.Nlink != want {
				t.Fatalf("round %d: directory %d has nlink %d, want %d", round, d, in.Nlink, want)
			}
		}
	}
	if controlKills < 3 || totalAcks < 5*rounds {
		t.Fatalf("only %d control processes killed and %d operations acknowledged: the test did not test", controlKills, totalAcks)
	}
	// Every transaction left behind must be resolved by the nodes' own
	// resolvers (within resolveAge + resolveEvery), even the ones no reader
	// meets (a mkdir cut off after preparing its new directory's inode).
	waitFor(t, 90*time.Second, "every prepared transaction resolved", func() bool {
		for _, s := range mc.Shards() {
			in, err := mc.Intents(ctx, s, time.Now())
			if err != nil || len(in) > 0 {
				return false
			}
		}
		return true
	})
	st, err := mc.StatFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	subdirs := 0
	for _, p := range mdir {
		subdirs += p
	}
	// The root, the crash* directories twoDirs made, the files and the m dirs.
	ents, _, err := mc.ReadDir(ctx, meta.RootIno, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	want := uint64(1 + len(ents) + files + subdirs)
	if st.Inodes != want {
		t.Fatalf("%d inodes in use, want %d: an orphan was left", st.Inodes, want)
	}

	// The metadata benchmark on the same cluster: its JSON, and nothing left behind.
	out, err := exec.Command(cfsBin, "bench", "run", "--target", "cluster:"+addrs, "--profile", "metadata",
		"--numjobs", "2", "--dirs", "3", "--files", "20", "--output-format=json").Output()
	if err != nil {
		t.Fatalf("cfs bench run --profile metadata: %v\n%s", err, out)
	}
	var rep struct {
		Create, Stat, Readdir, Unlink struct {
			Ops       uint64  `json:"ops"`
			Errors    uint64  `json:"errors"`
			OpsPerSec float64 `json:"ops_per_sec"`
			P50       float64 `json:"p50_us"`
		}
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("the benchmark's JSON: %v\n%s", err, out)
	}
	if rep.Create.Ops != 40 || rep.Stat.Ops != 40 || rep.Unlink.Ops != 40 || rep.Readdir.Ops < 3 || rep.Create.Errors+rep.Unlink.Errors != 0 || rep.Create.OpsPerSec <= 0 || rep.Create.P50 <= 0 {
		t.Fatalf("benchmark report: %+v", rep)
	}
	after, _, err := mc.ReadDir(ctx, meta.RootIno, "", 1000)
	if err != nil || len(after) != len(ents) {
		t.Fatalf("the benchmark left %d entries in the root (had %d): %v", len(after), len(ents), err)
	}
}

// sscan reports whether line matches format exactly.
func sscan(line, format string, args ...any) bool {
	n, err := fmt.Sscanf(line, format, args...)
	return err == nil && n == len(args)
}

// TestMetadataInodeLimit: with metadata.inode_limit set, creates fail with
// ENOSPC once the file system holds that many inodes, counted across
// shards (a second directory's shard learns the first's count), and
// capacity-check reports the figures.
func TestMetadataInodeLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cluster of real processes")
	}
	c := devUp(t, 3, 8)
	mc := c.metaClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d1, d2 := twoDirs(ctx, t, mc, "lim")
	creds := []string{"--cert", filepath.Join(c.dir, "admin.pem"), "--ca", filepath.Join(c.dir, "ca.crt"), "--endpoint", c.status().Nodes[0].Control.Addr}
	const limit = 1024
	if out, err := cfs(t, append([]string{"admin", "config", "set", fmt.Sprintf("metadata.inode_limit=%d", limit)}, creds...)...); err != nil {
		t.Fatalf("config set: %v\n%s", err, out)
	}
	if out, err := cfs(t, append([]string{"admin", "config", "set", "metadata.inode_limit=10"}, creds...)...); err == nil || !strings.Contains(out, "1024..") {
		t.Fatalf("config set of a limit out of range: %v\n%s", err, out)
	}
	for i := 0; i < 600; i++ {
		if _, _, err := mc.Create(ctx, d1.Ino, fmt.Sprintf("a%d", i), 0o644, 0, metaclient.Owner{}, true); err != nil {
			t.Fatalf("create a%d: %v", i, err)
		}
	}
	time.Sleep(12 * time.Second) // a round of the nodes' limit loops (10 s)
	made := 0
	var err error
	for made < 2*limit {
		if _, _, err = mc.Create(ctx, d2.Ino, fmt.Sprintf("b%d", made), 0o644, 0, metaclient.Owner{}, true); err != nil {
			break
		}
		made++
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("after %d creates in the second directory: %v, want ENOSPC", made, err)
	}
	st, err := mc.StatFS(ctx)
	if err != nil {
		t.Fatal(err)
	}
	slack := uint64(16 + 8) // the loop's slack, and the root and directories made meanwhile
	if st.Inodes+slack < limit || st.Inodes > limit+slack {
		t.Fatalf("ENOSPC at %d inodes, limit %d", st.Inodes, limit)
	}
	out, err := cfs(t, append([]string{"admin", "capacity-check", "--json"}, creds...)...)
	if err != nil || !strings.Contains(out, fmt.Sprintf(`"limit": %d`, limit)) || !strings.Contains(out, `"inodes_over_80pct": true`) {
		t.Fatalf("capacity-check --json: %v\n%s", err, out)
	}
	t.Logf("ENOSPC after %d + %d creates, at %d inodes (limit %d)", 600, made, st.Inodes, limit)
}
