package node

import (
	"strings"
	"testing"
)

// FuzzSplitJoinToken: a join token is typed or pasted by an operator; it parses or is
// refused saying how to make a good one.
func FuzzSplitJoinToken(f *testing.F) {
	f.Add("cfsjoin-00ff." + strings.Repeat("0a", 32))
	f.Add("cfsjoin-00ff")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		secret, pin, err := SplitJoinToken(tok)
		if err == nil && (secret == "" || len(pin) != 64) {
			t.Fatalf("accepted %q as %q, %q", tok, secret, pin)
		}
	})
}
