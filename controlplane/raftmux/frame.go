package raftmux

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
)

// A frame on the wire: u32 BE length of what follows | kind | body.

// beginFrame starts a frame of kind in dst; finishFrame fills its length.
func beginFrame(dst []byte, kind byte) ([]byte, int) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0, kind)
	return dst, start
}

func finishFrame(dst []byte, start int) []byte {
	binary.BigEndian.PutUint32(dst[start:], uint32(len(dst)-start-frameHeaderLen))
	return dst
}

// readFrame reads one frame. The length is checked against maxBytes before
// the body is allocated; the body is freshly allocated and never reused, so
// decoded requests may alias it for as long as raft keeps them.
func readFrame(r *bufio.Reader, maxBytes int) (kind byte, body []byte, err error) {
	var hdr [frameHeaderLen]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 {
		return 0, nil, fmt.Errorf("%w: empty frame", ErrMalformed)
	}
	if uint64(n) > uint64(maxBytes) {
		return 0, nil, fmt.Errorf("%w: frame of %d bytes, the limit is %d (Config.MaxFrameBytes)", ErrMalformed, n, maxBytes)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return buf[0], buf[1:], nil
}
