package profiling_test

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/claudefs/claudefs/dataplane"
	"github.com/claudefs/claudefs/dataplane/dpconfig"
	"github.com/claudefs/claudefs/dataplane/sidecar"
	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
	"github.com/claudefs/claudefs/profiling"
	"github.com/claudefs/claudefs/profiling/analyze"
	"github.com/claudefs/claudefs/profiling/flamegraph"
)

// ringSubmit matches the io_uring ring's submit path as a frame's title.
var ringSubmit = regexp.MustCompile(`<title>github\.com/claudefs/claudefs/nvme/uring\.\(\*Ring\)\.(Submit|SubmitAndWait|SubmitAndWaitTimeout|submit|enter) \(`)

// TestBusyDataplaneFlamegraph profiles a dataplane (io_uring engine, two I/O
// cores) over its sidecar channel while clients write and read shards, cuts
// the profile by core, draws it, finds the ring's submit function in the
// SVG and opens the SVG in headless Chromium for a screenshot.
func TestBusyDataplaneFlamegraph(t *testing.T) {
	dir, err := os.MkdirTemp("", "cfs-pf")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	cfg := dpconfig.Default()
	cfg.Device = filepath.Join(dir, "dev")
	cfg.DeviceSize = 64 << 20
	cfg.Listen = "127.0.0.1:0"
	cfg.ControlSocket = filepath.Join(dir, "ctl.sock")
	cfg.IOEngine = "io_uring"
	cfg.IOThreads = 2
	cfg.EventLoops = 2
	n, err := dataplane.StartNode(cfg, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := n.Stop(ctx); err != nil {
			t.Error(err)
		}
	}()

	// The load: writers and readers of 4 KiB shards on every core.
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var loadErr error
	var once sync.Once
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cl := dataplane.NewClient(n.Addr().String(), netio.ClientOptions{})
			defer cl.Close()
			data := bytes.Repeat([]byte{byte(w)}, 4096)
			buf := make([]byte, 4096)
			for i := 0; ctx.Err() == nil; i++ {
				id := chunkstore.ID{Hi: uint64(w), Lo: uint64(i % 256)}
				err := cl.WriteShard(ctx, id, uint64(i+1), 0, data)
				if err == nil {
					_, _, err = cl.ReadShard(ctx, id, 0, buf)
				}
				if err != nil && ctx.Err() == nil {
					once.Do(func() { loadErr = err })
					return
				}
			}
		}(w)
	}
	sc := sidecar.NewClient(cfg.ControlSocket, sidecar.ClientOptions{})
	defer sc.Close()
	p, err := sc.ProfileCPU(context.Background(), 2*time.Second)
	cancel()
	wg.Wait()
	if err != nil {
		t.Fatalf("profile.cpu: %v", err)
	}
	if loadErr != nil {
		t.Fatalf("the load failed: %v", loadErr)
	}
	// A second profile while none runs works; one during another is busy.
	if _, err := profiling.CPU(context.Background(), time.Millisecond, 1<<20); err != nil {
		t.Fatalf("a profile after the first: %v", err)
	}

	prof, err := analyze.Decode(p.Pprof)
	if err != nil {
		t.Fatal(err)
	}
	cores := analyze.LabelValues(prof, profiling.LabelCore)
	roles := analyze.LabelValues(prof, profiling.LabelRole)
	if strings.Join(cores, ",") != "0,1" || !strings.Contains(strings.Join(roles, ","), "io") {
		t.Fatalf("labels: cores %v, roles %v; want cores 0,1 and role io", cores, roles)
	}
	all := analyze.Total(prof)
	var svg bytes.Buffer
	if err := flamegraph.Render(&svg, analyze.Folded(prof), flamegraph.Options{Subtitle: "busy dataplane, 2 s"}); err != nil {
		t.Fatal(err)
	}
	if !ringSubmit.Match(svg.Bytes()) {
		t.Fatalf("the flame graph of %d samples does not name the ring's submit function", all)
	}
	// Core 0 alone: fewer samples, each labelled core 0, its ring still there.
	core0, kept := analyze.KeepLabel(prof, profiling.LabelCore, "0")
	if kept == 0 || analyze.Total(core0) >= all {
		t.Fatalf("core 0: %d samples of %d", analyze.Total(core0), all)
	}
	for _, s := range core0.Sample {
		if v := s.Label[profiling.LabelCore]; len(v) != 1 || v[0] != "0" {
			t.Fatalf("a sample labelled %v in core 0's profile", s.Label)
		}
	}
	t.Logf("%d samples; core 0 has %d; cores %v, roles %v", all, analyze.Total(core0), cores, roles)

	file := filepath.Join(t.TempDir(), "flame.svg")
	if err := os.WriteFile(file, svg.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	screenshot(t, file)
}

// screenshot opens file in headless Chromium and checks the screenshot is a
// real picture (not blank).
func screenshot(t *testing.T, file string) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (make tools installs Debian's chromium package)")
	}
	shot := filepath.Join(t.TempDir(), "flame.png")
	profileDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir="+profileDir, "--screenshot="+shot, "--window-size=1200,900", "file://"+file)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	b := img.Bounds()
	if b.Dx() != 1200 || b.Dy() != 900 {
		t.Errorf("screenshot %v, want 1200x900", b)
	}
	// Frames are drawn in warm colours: count distinct colours and the
	// reddish pixels (the background is near white).
	colours := map[uint32]bool{}
	warm := 0
	for y := b.Min.Y; y < b.Max.Y; y += 3 {
		for x := b.Min.X; x < b.Max.X; x += 3 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[(r>>11)<<10|(g>>11)<<5|bl>>11] = true
			if r>>8 > 190 && bl>>8 < 120 {
				warm++
			}
		}
	}
	if len(colours) < 8 || warm < 200 {
		t.Fatalf("the screenshot looks blank: %d colours, %d frame pixels", len(colours), warm)
	}
	if keep := os.Getenv("CFS_KEEP_SCREENSHOT"); keep != "" {
		if b, err := os.ReadFile(shot); err == nil {
			_ = os.WriteFile(keep, b, 0o644)
		}
	}
	t.Logf("screenshot %s: %d colours, %d frame pixels sampled", shot, len(colours), warm)
}
