package sidecar

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/claudefs/claudefs/dataplane/dpconfig"
)

func TestFrames(t *testing.T) {
	var buf bytes.Buffer
	for _, msg := range []string{"{}", `{"id":1,"op":"health"}`, strings.Repeat("x", MaxFrame)} {
		if err := WriteFrame(&buf, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []int{2, 22, MaxFrame} {
		b, err := ReadFrame(&buf, MaxFrame, make([]byte, 0, 64))
		if err != nil || len(b) != want {
			t.Fatalf("ReadFrame: %d bytes, %v; want %d", len(b), err, want)
		}
	}
	if _, err := ReadFrame(&buf, MaxFrame, nil); err != io.EOF {
		t.Fatalf("at the end: %v, want EOF", err)
	}
	if err := WriteFrame(&buf, nil); err == nil {
		t.Error("empty frame written")
	}
	if err := WriteFrame(&buf, make([]byte, MaxFrame+1)); err == nil {
		t.Error("oversized frame written")
	}
	// A length out of range is refused from the header alone: the reader
	// below would fail if anything past it were read.
	for _, n := range []uint32{0, MaxFrame + 1, 1<<32 - 1} {
		r := io.MultiReader(bytes.NewReader(binary.BigEndian.AppendUint32(nil, n)), failReader{})
		if _, err := ReadFrame(r, MaxFrame, nil); !errors.Is(err, errFrameSize) {
			t.Errorf("length %d: %v, want a frame-size error", n, err)
		}
	}
	// A body cut short.
	r := bytes.NewReader(append(binary.BigEndian.AppendUint32(nil, 10), "abc"...))
	if _, err := ReadFrame(r, MaxFrame, nil); err != io.ErrUnexpectedEOF {
		t.Errorf("short body: %v", err)
	}
}

type failReader struct{}

func (failReader) Read([]byte) (int, error) { return 0, errors.New("read past the header") }

func TestDecodeRequest(t *testing.T) {
	one := func(s string) *string { return &s }
	e := uint64(9)
	thirty := int64(30 * time.Second)
	for _, c := range []struct {
		msg  string
		want Request
	}{
		{`{"id":1,"op":"config.get"}`, Request{ID: 1, Op: OpConfigGet}},
		{`{"id":2,"op":"config.get","key":"nvme.queue_depth"}`, Request{ID: 2, Op: OpConfigGet, Key: "nvme.queue_depth"}},
		{`{"id":3,"op":"config.set","key":"cpu.affinity","value":""}`, Request{ID: 3, Op: OpConfigSet, Key: "cpu.affinity", Value: one("")}},
		{` {"op":"epoch.set","epoch":9,"id":4} `, Request{ID: 4, Op: OpEpochSet, Epoch: &e}},
		{`{"id":5,"op":"stats"}`, Request{ID: 5, Op: OpStats}},
		{`{"id":6,"op":"profile.cpu","duration_ns":30000000000}`, Request{ID: 6, Op: OpProfileCPU, DurationNs: &thirty}},
	} {
		got, err := DecodeRequest([]byte(c.msg))
		if err != nil || !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: %+v, %v", c.msg, got, err)
		}
	}
	for _, c := range []struct{ msg, code string }{
		{``, CodeBadRequest},
		{`null`, CodeUnknownOp}, // decodes to an empty request
		{`{"id":6,"op":"health","key":"x"}`, CodeBadRequest},
		{`{"id":7,"op":"config.get","epoch":1}`, CodeBadRequest},
		{`{"id":8,"op":"epoch.set","epoch":1.5}`, CodeBadRequest},
		{`{"id":9,"op":"epoch.set","epoch":18446744073709551616}`, CodeBadRequest},
		{`{"id":10,"op":"config.set","value":"1"}`, CodeBadRequest},
		{`{"id":11,"op":"config.get","key":"` + strings.Repeat("k", maxKeyBytes+1) + `"}`, CodeBadRequest},
		{`{"id":12,"op":"drop.all"}`, CodeUnknownOp},
		{`{"id":13,"op":"health"}x`, CodeBadRequest},
		{"\xff\xfe", CodeBadRequest},
		{`{"id":14,"op":"profile.cpu"}`, CodeBadRequest},
		{`{"id":15,"op":"profile.cpu","duration_ns":999999999}`, CodeBadRequest},
		{`{"id":16,"op":"profile.cpu","duration_ns":120000000001}`, CodeBadRequest},
		{`{"id":17,"op":"stats","duration_ns":1000000000}`, CodeBadRequest},
	} {
		req, err := DecodeRequest([]byte(c.msg))
		var se *Error
		if !errors.As(err, &se) || se.Code != c.code {
			t.Errorf("%.40s: %+v, %v; want code %s", c.msg, req, err, c.code)
		}
		var id struct{ ID uint64 }
		if json.Unmarshal([]byte(c.msg), &id) == nil && req.ID != id.ID {
			t.Errorf("%.40s: error response would carry id %d, want %d", c.msg, req.ID, id.ID)
		}
	}
}

func TestErrorSentinels(t *testing.T) {
	for code, s := range map[string]error{CodeBadRequest: ErrBadRequest, CodeUnknownOp: ErrUnknownOp, CodeUnknownKey: dpconfig.ErrUnknownKey,
		CodeBadValue: dpconfig.ErrBadValue, CodeStaleEpoch: ErrStaleEpoch, CodeBusy: ErrBusy, CodeTimeout: ErrTimeout,
		CodeUnavailable: ErrUnavailable, CodeInternal: ErrInternal} {
		err := error(&Error{Code: code, Message: "m"})
		if !errors.Is(err, s) || CodeOf(err) != code || CodeOf(fmt.Errorf("wrapped: %w", s)) != code {
			t.Errorf("code %s and sentinel %v do not match both ways", code, s)
		}
	}
	if CodeOf(errors.New("other")) != CodeInternal || errors.Is(&Error{Code: "new_code"}, ErrInternal) {
		t.Error("unknown errors and codes")
	}
	_, err := dpconfig.Check("no.such", "1")
	if CodeOf(err) != CodeUnknownKey {
		t.Errorf("dpconfig's unknown key maps to %s", CodeOf(err))
	}
}

func TestDecodeResponse(t *testing.T) {
	good := []string{
		`{"id":1,"ok":true,"result":{"epoch":3}}`,
		`{"id":1,"ok":false,"error":{"code":"busy","message":"m"}}`,
		`{"id":1,"ok":true,"result":{},"new_field":[1,2]}`, // later versions may add fields
	}
	for _, s := range good {
		if _, err := DecodeResponse([]byte(s)); err != nil {
			t.Errorf("%s: %v", s, err)
		}
	}
	for _, s := range []string{`{"id":1}`, `{"id":1,"ok":true,"error":{"code":"x"}}`, `{"ok":false,"error":{"message":"no code"}}`, `[`, `"x"`} {
		if _, err := DecodeResponse([]byte(s)); err == nil {
			t.Errorf("%s: accepted", s)
		}
	}
}

func TestClientNoServer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	c := NewClient(path, ClientOptions{})
	defer c.Close()
	_, err := c.Health(context.Background())
	if err == nil || !strings.Contains(err.Error(), "dialling "+path) {
		t.Fatalf("health with no server: %v", err)
	}
	c.Close()
	if _, err := c.Stats(context.Background()); err == nil || !strings.Contains(err.Error(), "closed") {
		t.Fatalf("call after Close: %v", err)
	}
}
