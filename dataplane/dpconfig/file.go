package dpconfig

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// LoadFile reads the configuration file at path (format in the package
// doc) into c: every key it sets replaces c's value. On error c is
// unchanged.
func (c *Config) LoadFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("configuration file: %w", err)
	}
	defer f.Close()
	return c.Load(f, path)
}

// Load reads a configuration in the file format from r into c; name is
// what errors call the source. On error c is unchanged.
func (c *Config) Load(r io.Reader, name string) error {
	data, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if len(data) > MaxFileBytes {
		return fmt.Errorf("%s: larger than %d bytes; a dataplane configuration is a few lines", name, MaxFileBytes)
	}
	tmp := *c
	seen := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 512), MaxLineBytes)
	line := 0
	for sc.Scan() {
		line++
		where := fmt.Sprintf("%s:%d", name, line)
		text := strings.TrimSpace(sc.Text())
		if text == "" || text[0] == '#' {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		if !ok {
			return fmt.Errorf("%s: %q is not KEY = VALUE", where, clip(text))
		}
		key, value = strings.TrimSpace(key), strings.TrimSpace(value)
		if strings.HasPrefix(value, `"`) {
			v, err := strconv.Unquote(value)
			if err != nil {
				return fmt.Errorf("%s: %s: the value %q opens a quote that is not a valid Go string", where, clip(key), clip(value))
			}
			value = v
		}
		k, err := Lookup(key)
		if err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
		if first, dup := seen[k.Name]; dup {
			return fmt.Errorf("%s: %s is already set on line %d", where, k.Name, first)
		}
		seen[k.Name] = line
		if err := tmp.setKey(k, value); err != nil {
			return fmt.Errorf("%s: %w", where, err)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%s:%d: line longer than %d bytes", name, line+1, MaxLineBytes)
		}
		return fmt.Errorf("%s: %w", name, err)
	}
	*c = tmp
	return nil
}
