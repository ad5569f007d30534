package bench

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// statusLine prints a line that is rewritten in place (with '\r') when w is
// a terminal, and printed as a new line each update otherwise.
type statusLine struct {
	w      io.Writer
	tty    bool
	width  int // length of the last line written to a terminal
	active bool
}

func newStatusLine(w io.Writer) *statusLine {
	return &statusLine{w: w, tty: isTerminal(w)}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}

func (l *statusLine) update(s string) {
	if !l.tty {
		fmt.Fprintln(l.w, s)
		return
	}
	pad := ""
	if n := l.width - len(s); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	fmt.Fprint(l.w, "\r"+s+pad)
	l.width, l.active = len(s), true
}

// finish ends a line left open on a terminal.
func (l *statusLine) finish() {
	if l.tty && l.active {
		fmt.Fprintln(l.w)
		l.width, l.active = 0, false
	}
}

// formatETA renders a remaining time fio-style: 4s, 1m05s, 2h03m00s.
func formatETA(d time.Duration) string {
	s := int64(max(d, 0).Round(time.Second) / time.Second)
	switch {
	case s >= 3600:
		return fmt.Sprintf("%dh%02dm%02ds", s/3600, s/60%60, s%60)
	case s >= 60:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	}
	return fmt.Sprintf("%ds", s)
}
