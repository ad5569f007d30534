// Package flamegraph draws CPU profiles as interactive SVG flame graphs:
// one rectangle per frame, its width proportional to the samples under
// it, callers below callees; each frame's <title> names the function,
// its samples and their share; a click zooms to a frame (its subtree
// fills the width), "Reset zoom" or a click on the bottom frame zooms
// out, and "Search" highlights the frames matching a regular expression
// and shows their share. The layout is deterministic: children sort by
// name, colours come from a hash of the name.
//
// It is our own code (not Brendan Gregg's flamegraph.pl nor pprof's web
// UI): the SVG has to come from the cfsctl binary alone, on a machine
// with no Perl, no browser-side server and no network.
package flamegraph

import (
	"bufio"
	"errors"
	"fmt"
	"hash/fnv"
	"html"
	"io"
	"sort"
	"strings"
	"unicode/utf8"
)

// Sample is one call stack, root (outermost caller) first, and its weight
// (samples, or nanoseconds: Options.Unit names it).
type Sample struct {
	Stack []string
	Value int64
}

// Options shape the graph. Zero values take the defaults noted.
type Options struct {
	Title    string // default "CPU flame graph"
	Subtitle string // e.g. the node, core and duration
	Unit     string // what Value counts, default "samples"
	Width    int    // pixels, default 1200
}

// Layout bounds and constants (pixels).
const (
	frameHeight = 16
	topMargin   = 60
	sideMargin  = 10
	bottomPad   = 30
	fontSize    = 12
	charWidth   = 0.59 * fontSize // average glyph width of the monospace-ish font
	// MinFrameWidth: frames narrower than this are not drawn (nor their
	// callees), as flame graphs do; the title of the caller still counts them.
	MinFrameWidth = 0.1
	// MaxDepth bounds the stack depth drawn (deeper frames are cut).
	MaxDepth = 1024
	// MaxFrames bounds the rectangles drawn.
	MaxFrames = 200000
)

// ErrEmpty is returned for samples that weigh nothing.
var ErrEmpty = errors.New("flamegraph: no samples to draw")

// node is one frame in the merged call tree.
type node struct {
	name     string
	value    int64
	children map[string]*node
}

func (n *node) child(name string) *node {
	c := n.children[name]
	if c == nil {
		if n.children == nil {
			n.children = map[string]*node{}
		}
		c = &node{name: name}
		n.children[name] = c
	}
	return c
}

func (n *node) sorted() []*node {
	out := make([]*node, 0, len(n.children))
	for _, c := range n.children {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// Tree merges samples into a call tree whose root is "all"; samples with a
// value <= 0 are skipped, stacks are cut at MaxDepth.
func tree(samples []Sample) *node {
	root := &node{name: "all"}
	for _, s := range samples {
		if s.Value <= 0 {
			continue
		}
		root.value += s.Value
		n := root
		for i, f := range s.Stack {
			if i >= MaxDepth {
				break
			}
			n = n.child(f)
			n.value += s.Value
		}
	}
	return root
}

// Frame is one rectangle as Layout places it.
type Frame struct {
	Name   string
	Depth  int     // 0 for the root ("all")
	Offset int64   // weight left of it, in Unit
	Value  int64   // its weight (itself and its callees), in Unit
	X, W   float64 // pixels
}

// Layout places the frames of samples in a graph width pixels wide (the
// drawable width, margins excluded), depth first, children by name.
func Layout(samples []Sample, width float64) ([]Frame, int64, error) {
	root := tree(samples)
	if root.value == 0 {
		return nil, 0, ErrEmpty
	}
	scale := width / float64(root.value)
	var frames []Frame
	var walk func(n *node, depth int, off int64)
	walk = func(n *node, depth int, off int64) {
		w := float64(n.value) * scale
		if w < MinFrameWidth || len(frames) >= MaxFrames {
			return
		}
		frames = append(frames, Frame{Name: n.name, Depth: depth, Offset: off, Value: n.value, X: float64(off) * scale, W: w})
		for _, c := range n.sorted() {
			walk(c, depth+1, off)
			off += c.value
		}
	}
	walk(root, 0, 0)
	return frames, root.value, nil
}

// Render writes the SVG of samples to w.
func Render(w io.Writer, samples []Sample, opt Options) error {
	if opt.Title == "" {
		opt.Title = "CPU flame graph"
	}
	if opt.Unit == "" {
		opt.Unit = "samples"
	}
	if opt.Width <= 0 {
		opt.Width = 1200
	}
	inner := float64(opt.Width - 2*sideMargin)
	frames, total, err := Layout(samples, inner)
	if err != nil {
		return err
	}
	maxDepth := 0
	for _, f := range frames {
		maxDepth = max(maxDepth, f.Depth)
	}
	height := topMargin + (maxDepth+1)*frameHeight + bottomPad
	bw := bufio.NewWriter(w)
	fmt.Fprintf(bw, `<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="%d" height="%d" viewBox="0 0 %d %d" xmlns="http://www.w3.org/2000/svg" data-total="%d" data-unit="%s">
<style>
text { font-family: Verdana, sans-serif; font-size: %dpx; fill: #000; }
.f text { pointer-events: none; }
.f:hover rect { stroke: #000; stroke-width: 0.5; cursor: pointer; }
.hl rect { fill: #e040e0 !important; }
#title { font-size: 17px; text-anchor: middle; }
#details, #matched { font-size: 12px; }
.btn { cursor: pointer; fill: #004080; }
</style>
<rect x="0" y="0" width="%d" height="%d" fill="#f8f8f0"/>
<text id="title" x="%d" y="22">%s</text>
<text id="subtitle" x="%d" y="40" text-anchor="middle">%s</text>
<text id="reset" class="btn" x="%d" y="22" visibility="hidden">Reset zoom</text>
<text id="search" class="btn" x="%d" y="22" text-anchor="end">Search</text>
<text id="matched" x="%d" y="%d" text-anchor="end"></text>
<text id="details" x="%d" y="%d"> </text>
<g id="frames">
`, opt.Width, height, opt.Width, height, total, esc(opt.Unit), fontSize, opt.Width, height,
		opt.Width/2, esc(opt.Title), opt.Width/2, esc(opt.Subtitle), sideMargin, opt.Width-sideMargin,
		opt.Width-sideMargin, height-10, sideMargin, height-10)
	for _, f := range frames {
		y := height - bottomPad - (f.Depth+1)*frameHeight
		pct := 100 * float64(f.Value) / float64(total)
		name := esc(f.Name)
		fmt.Fprintf(bw, `<g class="f" data-o="%d" data-v="%d" data-d="%d"><title>%s (%d %s, %.2f%%)</title><rect x="%.2f" y="%d" width="%.2f" height="%d" rx="2" fill="%s"/><text x="%.2f" y="%d">%s</text></g>
`, f.Offset, f.Value, f.Depth, name, f.Value, esc(opt.Unit), pct, sideMargin+f.X, y, f.W, frameHeight-1, colour(f.Name),
			sideMargin+f.X+3, y+frameHeight-4, esc(clip(short(f.Name), f.W)))
	}
	fmt.Fprintf(bw, "</g>\n<script type=\"text/ecmascript\"><![CDATA[\n%s]]></script>\n</svg>\n", script)
	return bw.Flush()
}

// clip shortens name to what fits in w pixels, ".." marking a cut; "" when
// not even three characters fit.
func clip(name string, w float64) string {
	fit := int((w - 6) / charWidth)
	if fit < 3 {
		return ""
	}
	if utf8.RuneCountInString(name) <= fit {
		return name
	}
	r := []rune(name)
	return string(r[:fit-2]) + ".."
}

// short is a frame's label: the name without its package's import path
// ("github.com/a/b/pkg.F" is drawn "pkg.F"; the title keeps it whole).
func short(name string) string {
	if strings.HasPrefix(name, "[") {
		return name
	}
	if i := strings.LastIndex(name, "/"); i >= 0 {
		return name[i+1:]
	}
	return name
}

// esc makes s safe as XML text or an attribute value: markup characters
// escaped, characters XML 1.0 forbids (controls, invalid UTF-8) replaced
// by U+FFFD.
func esc(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || (r < 0x20 && r != '\t' && r != '\n' && r != '\r') || r == 0xFFFE || r == 0xFFFF || (r >= 0xD800 && r <= 0xDFFF) {
			r = '\uFFFD'
		}
		b.WriteRune(r)
	}
	return html.EscapeString(b.String())
}

// colour is a warm colour from a hash of name (the same name, the same
// colour, in every graph).
func colour(name string) string {
	h := fnv.New32a()
	h.Write([]byte(name))
	v := h.Sum32()
	r := 205 + v%50
	g := 80 + (v>>8)%150
	b := 30 + (v>>16)%50
	return fmt.Sprintf("rgb(%d,%d,%d)", r, g, b)
}

// script zooms and searches. Each frame's group carries its offset (data-o),
// weight (data-v) and depth (data-d) in the unit of the root's data-total;
// zooming to a frame lays every frame out again from those, hiding those
// outside the zoomed frame's span, and re-clips the labels.
const script = `(function () {
  var svg = document.documentElement;
  var total = +svg.getAttribute("data-total");
  var unit = svg.getAttribute("data-unit");
  var width = +svg.getAttribute("width");
  var margin = ` + "10" + `, charW = ` + "7.08" + `;
  var frames = Array.prototype.slice.call(document.querySelectorAll("#frames .f"));
  var details = document.getElementById("details");
  var reset = document.getElementById("reset");
  var matched = document.getElementById("matched");
  function nameOf(g) { var t = g.querySelector("title").textContent; return t.substring(0, t.lastIndexOf(" (")); }
  function label(g, w) {
    var name = nameOf(g), fit = Math.floor((w - 6) / charW);
    if (name.charAt(0) !== "[") name = name.substring(name.lastIndexOf("/") + 1);
    var txt = g.querySelector("text");
    if (fit < 3) { txt.textContent = ""; return; }
    txt.textContent = name.length <= fit ? name : name.substring(0, fit - 2) + "..";
  }
  function zoom(z) {
    var zo = +z.getAttribute("data-o"), zv = +z.getAttribute("data-v"), zd = +z.getAttribute("data-d");
    var scale = (width - 2 * margin) / zv;
    frames.forEach(function (g) {
      var o = +g.getAttribute("data-o"), v = +g.getAttribute("data-v"), d = +g.getAttribute("data-d");
      var rect = g.querySelector("rect"), txt = g.querySelector("text");
      var inside = o >= zo && o + v <= zo + zv;
      var ancestor = d < zd && o <= zo && o + v >= zo + zv;
      if (!inside && !ancestor) { g.style.display = "none"; return; }
      g.style.display = "";
      var x = ancestor ? 0 : (o - zo) * scale, w = ancestor ? width - 2 * margin : v * scale;
      rect.setAttribute("x", margin + x); rect.setAttribute("width", w);
      txt.setAttribute("x", margin + x + 3);
      g.style.opacity = ancestor ? "0.6" : "";
      label(g, w);
    });
    reset.setAttribute("visibility", zv === total ? "hidden" : "visible");
  }
  frames.forEach(function (g) {
    g.addEventListener("click", function () { zoom(g); });
    g.addEventListener("mouseover", function () { details.textContent = g.querySelector("title").textContent; });
    g.addEventListener("mouseout", function () { details.textContent = " "; });
  });
  reset.addEventListener("click", function () { zoom(frames[0]); });
  document.getElementById("search").addEventListener("click", function () {
    var term = window.prompt("Search for (a regular expression; empty clears):", "");
    if (term === null) return;
    var re = null;
    try { re = term ? new RegExp(term) : null; } catch (e) { matched.textContent = "bad expression"; return; }
    var spans = [];
    frames.forEach(function (g) {
      var hit = re !== null && re.test(nameOf(g));
      g.classList.toggle("hl", hit);
      if (hit) spans.push([+g.getAttribute("data-o"), +g.getAttribute("data-v")]);
    });
    // Share of the total under a match, counting nested matches once.
    spans.sort(function (a, b) { return a[0] - b[0] || b[1] - a[1]; });
    var sum = 0, end = -1;
    spans.forEach(function (s) { if (s[0] >= end) { sum += s[1]; end = s[0] + s[1]; } });
    matched.textContent = re === null ? "" : "Matched: " + (100 * sum / total).toFixed(2) + "% of " + total + " " + unit;
  });
})();
`
