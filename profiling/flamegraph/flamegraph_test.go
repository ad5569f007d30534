package flamegraph

import (
	"bytes"
	"encoding/xml"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"
)

func TestLayoutWidthsProportional(t *testing.T) {
	samples := []Sample{
		{Stack: []string{"main", "a", "x"}, Value: 30},
		{Stack: []string{"main", "a"}, Value: 10},
		{Stack: []string{"main", "b"}, Value: 60},
		{Stack: []string{"main", "b"}, Value: 0}, // weighs nothing
	}
	frames, total, err := Layout(samples, 1000)
	if err != nil || total != 100 {
		t.Fatalf("Layout: total %d, %v", total, err)
	}
	want := map[string][4]float64{ // depth, x, w, value
		"all":  {0, 0, 1000, 100},
		"main": {1, 0, 1000, 100},
		"a":    {2, 0, 400, 40},
		"x":    {3, 0, 300, 30},
		"b":    {2, 400, 600, 60}, // after a: children sort by name
	}
	if len(frames) != len(want) {
		t.Fatalf("%d frames, want %d: %+v", len(frames), len(want), frames)
	}
	for _, f := range frames {
		w, ok := want[f.Name]
		if !ok || float64(f.Depth) != w[0] || math.Abs(f.X-w[1]) > 1e-9 || math.Abs(f.W-w[2]) > 1e-9 || float64(f.Value) != w[3] {
			t.Errorf("frame %+v, want depth/x/w/value %v", f, w)
		}
	}
	// Deterministic: the same samples in another order lay out the same.
	again, _, _ := Layout([]Sample{samples[2], samples[0], samples[1]}, 1000)
	for i := range frames {
		if frames[i] != again[i] {
			t.Fatalf("layout depends on sample order: %+v vs %+v", frames[i], again[i])
		}
	}
	if _, _, err := Layout(nil, 100); err != ErrEmpty {
		t.Errorf("no samples: %v, want ErrEmpty", err)
	}
	// A frame under MinFrameWidth is not drawn.
	frames, _, _ = Layout([]Sample{{Stack: []string{"big"}, Value: 1e9}, {Stack: []string{"tiny"}, Value: 1}}, 100)
	for _, f := range frames {
		if f.Name == "tiny" {
			t.Errorf("a frame %.6f px wide was drawn", f.W)
		}
	}
}

// svgDoc is what the tests read back from the SVG.
type svgDoc struct {
	Width  string `xml:"width,attr"`
	Frames []struct {
		O     string `xml:"data-o,attr"`
		V     string `xml:"data-v,attr"`
		Title string `xml:"title"`
		Rect  struct {
			W string `xml:"width,attr"`
		} `xml:"rect"`
		Text string `xml:"text"`
	} `xml:"g>g"`
	Script string `xml:"script"`
}

func render(t *testing.T, samples []Sample, opt Options) (string, svgDoc) {
	t.Helper()
	var b bytes.Buffer
	if err := Render(&b, samples, opt); err != nil {
		t.Fatal(err)
	}
	var doc svgDoc
	if err := xml.Unmarshal(b.Bytes(), &doc); err != nil {
		t.Fatalf("the SVG is not well-formed XML: %v\n%s", err, b.String())
	}
	return b.String(), doc
}

func TestRenderSVG(t *testing.T) {
	samples := []Sample{
		{Stack: []string{"main", "io.(*Ring).Submit"}, Value: 75},
		{Stack: []string{"main", `evil<script>alert("x")</script>&'`}, Value: 25},
		{Stack: []string{"main", "bad\x00utf8\xff"}, Value: 0},
	}
	out, doc := render(t, samples, Options{Title: "t<1>", Subtitle: "node-1 & core 0", Width: 1020})
	if len(doc.Frames) != 4 {
		t.Fatalf("%d frames drawn, want 4", len(doc.Frames))
	}
	byTitle := map[string]float64{}
	for _, f := range doc.Frames {
		w, err := strconv.ParseFloat(f.Rect.W, 64)
		if err != nil {
			t.Fatal(err)
		}
		byTitle[f.Title] = w
	}
	if w := byTitle["io.(*Ring).Submit (75 samples, 75.00%)"]; math.Abs(w-750) > 0.01 {
		t.Errorf("Submit is %.2f px wide, want 750 (75%% of 1000): %v", w, byTitle)
	}
	if w := byTitle[`evil<script>alert("x")</script>&' (25 samples, 25.00%)`]; math.Abs(w-250) > 0.01 {
		t.Errorf("the escaped frame is %.2f px wide, want 250: %v", w, byTitle)
	}
	if strings.Contains(out, "<script>alert") || !strings.Contains(out, "evil&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;&amp;&#39;") {
		t.Errorf("a frame's name is not escaped:\n%s", out)
	}
	if !strings.Contains(out, "t&lt;1&gt;") || !strings.Contains(out, "node-1 &amp; core 0") {
		t.Error("title or subtitle not escaped")
	}
	for _, want := range []string{"function zoom(", `addEventListener("click"`, "Reset zoom", "RegExp(term)"} {
		if !strings.Contains(doc.Script+out, want) {
			t.Errorf("the SVG lacks %q (zoom and search script)", want)
		}
	}
	// Control characters and invalid UTF-8 are replaced (XML forbids them).
	_, doc = render(t, []Sample{{Stack: []string{"bad\x00utf8\xff"}, Value: 1}}, Options{})
	if got := doc.Frames[1].Title; got != "bad\uFFFDutf8\uFFFD (1 samples, 100.00%)" {
		t.Errorf("title %q", got)
	}
	if doc.Width != "1200" {
		t.Errorf("default width %s", doc.Width)
	}
	if err := Render(io.Discard, nil, Options{}); err != ErrEmpty {
		t.Errorf("no samples: %v", err)
	}
}

func TestShort(t *testing.T) {
	for in, want := range map[string]string{"github.com/x/y/pkg.(*T).F": "pkg.(*T).F", "main.main": "main.main", "[/usr/bin/dash]": "[/usr/bin/dash]"} {
		if got := short(in); got != want {
			t.Errorf("short(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestClip(t *testing.T) {
	for _, c := range []struct {
		name string
		w    float64
		want string
	}{
		{"runtime.mallocgc", 1000, "runtime.mallocgc"},
		{"runtime.mallocgc", 6 + 8*charWidth, "runtim.."},
		{"runtime.mallocgc", 10, ""},
	} {
		if got := clip(c.name, c.w); got != c.want {
			t.Errorf("clip(%q, %.1f) = %q, want %q", c.name, c.w, got, c.want)
		}
	}
}
