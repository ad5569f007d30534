package flamegraph

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// zoomHarness loads flame.svg in an <object>, clicks frame "a", then
// "Search"es for "^x$" (window.prompt answered by the harness), and writes
// every frame's title, width and visibility, the reset button's state and
// the search result into <pre id="out">.
const zoomHarness = `<html><body><object id="o" data="flame.svg" type="image/svg+xml" width="1200" height="300"></object>
<pre id="out">pending</pre>
<script>
document.getElementById("o").addEventListener("load", function () {
  var d = this.contentDocument, w = this.contentWindow, out = [];
  var gs = d.querySelectorAll("#frames .f"), a = null;
  gs.forEach(function (g) { if (g.querySelector("title").textContent.indexOf("a (") === 0) a = g; });
  a.dispatchEvent(new MouseEvent("click"));
  gs.forEach(function (g) { out.push(g.querySelector("title").textContent + " w=" + g.querySelector("rect").getAttribute("width") + " " + (g.style.display || "shown")); });
  out.push("reset=" + d.getElementById("reset").getAttribute("visibility"));
  w.prompt = function () { return "^x$"; };
  d.getElementById("search").dispatchEvent(new MouseEvent("click"));
  out.push("search=" + d.getElementById("matched").textContent + " hl=" + d.querySelectorAll(".hl").length);
  d.getElementById("reset").dispatchEvent(new MouseEvent("click"));
  out.push("after reset b=" + (gs[gs.length - 1].style.display || "shown"));
  document.getElementById("out").textContent = out.join("\n");
});
</script></body></html>`

// TestZoomAndSearchInChromium runs the graph's script in headless Chromium:
// a click zooms to the frame (it and its callees fill the width, the rest
// of the graph hides, "Reset zoom" shows), search highlights and reports the
// share matched, reset brings everything back.
func TestZoomAndSearchInChromium(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (make tools installs Debian's chromium package)")
	}
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "flame.svg"))
	if err != nil {
		t.Fatal(err)
	}
	err = Render(f, []Sample{{Stack: []string{"main", "a", "x"}, Value: 30}, {Stack: []string{"main", "b"}, Value: 70}}, Options{Width: 1200})
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(dir, "zoom.html")
	if err := os.WriteFile(page, []byte(zoomHarness), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--allow-file-access-from-files", "--user-data-dir="+t.TempDir(), "--virtual-time-budget=5000", "--dump-dom", "file://"+page).Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	dom := string(out)
	i, j := strings.Index(dom, `<pre id="out">`), strings.Index(dom, "</pre>")
	if i < 0 || j < i {
		t.Fatalf("no result in the DOM:\n%s", dom)
	}
	got := dom[i+len(`<pre id="out">`) : j]
	for _, want := range []string{
		"a (30 samples, 30.00%) w=1180 shown", // zoomed: the full drawable width
		"x (30 samples, 30.00%) w=1180 shown",
		"main (100 samples, 100.00%) w=1180 shown", // an ancestor stays, full width
		"b (70 samples, 70.00%) w=826.00 none",     // outside the zoomed frame: hidden
		"reset=visible",
		"search=Matched: 30.00% of 100 samples hl=1",
		"after reset b=shown",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("after the clicks, want %q in:\n%s", want, got)
		}
	}
}
