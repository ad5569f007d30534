package analyze

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
)

// gunzipBounded returns b gunzipped (b itself when it is not gzip), at
// most limit bytes.
func gunzipBounded(b []byte, limit int64) ([]byte, error) {
	if !isGzip(b) {
		return b, nil
	}
	zr, err := gzip.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("analyze: bad gzip: %v", err)
	}
	out, err := io.ReadAll(io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, fmt.Errorf("analyze: bad gzip: %v", err)
	}
	if int64(len(out)) > limit {
		return nil, fmt.Errorf("analyze: the profile is over %d bytes uncompressed", limit)
	}
	return out, nil
}
