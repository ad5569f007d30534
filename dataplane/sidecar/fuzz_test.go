package sidecar

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func frame(s string) []byte { return append(binary.BigEndian.AppendUint32(nil, uint32(len(s))), s...) }

// FuzzServerStream feeds an arbitrary byte stream to what a server
// connection runs: frames are read and decoded until the stream ends or
// its framing is lost. Nothing may panic, no frame over MaxFrame may be
// read, every refusal is an *Error with a code, and every request that
// decodes re-encodes to one that decodes the same.
func FuzzServerStream(f *testing.F) {
	f.Add(frame(`{"id":1,"op":"health"}`))
	f.Add(append(frame(`{"id":1,"op":"config.set","key":"nvme.queue_depth","value":"64"}`), frame(`{"id":2,"op":"epoch.set","epoch":7}`)...))
	f.Add(frame(`{"id":3,"op":"config.get","key":"cpu.affinity"}`))
	f.Add(frame(`{"id":4,"op":"stats","key":"x"}`))
	f.Add(frame(`{"id":5,"op":"nope"}`))
	f.Add(frame(`{"id":6,"op":"health"`))
	f.Add(binary.BigEndian.AppendUint32(nil, MaxFrame+1))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte{0, 0, 1})
	f.Add(frame(`{"id":7,"op":"profile.cpu","duration_ns":2000000000}`))
	f.Add(frame(`{"id":8,"op":"profile.cpu","duration_ns":-1}`))
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		for {
			msg, err := ReadFrame(r, MaxFrame, nil)
			if err != nil {
				if len(msg) > MaxFrame {
					t.Fatalf("read a frame of %d bytes", len(msg))
				}
				return
			}
			req, err := DecodeRequest(msg)
			if err != nil {
				var se *Error
				if !errors.As(err, &se) || se.Code == "" || sentinel(se.Code) == nil {
					t.Fatalf("refusal %v is not an *Error with a known code", err)
				}
				// The error response must be encodable within a frame.
				var buf bytes.Buffer
				if err := writeResponse(&buf, errorResponse(req.ID, err)); err != nil {
					t.Fatalf("error response: %v", err)
				}
				continue
			}
			b, err := json.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			again, err := DecodeRequest(b)
			if err != nil || !reflect.DeepEqual(again, req) {
				t.Fatalf("request %+v re-decodes as %+v, %v", req, again, err)
			}
		}
	})
}

// FuzzClientResponse feeds arbitrary bytes to the client's response
// decoding: it may refuse them, never panic, and what it accepts is
// either a result or an error with a code.
func FuzzClientResponse(f *testing.F) {
	f.Add([]byte(`{"id":1,"ok":true,"result":{"epoch":3}}`))
	f.Add([]byte(`{"id":2,"ok":false,"error":{"code":"stale_epoch","message":"m"}}`))
	f.Add([]byte(`{"id":3,"ok":true,"result":{"cores":[{"partition":0,"read_latency_log2_us":[1,2]}]}}`))
	f.Add([]byte(`{"id":4,"ok":true,"error":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		resp, err := DecodeResponse(b)
		if err != nil {
			return
		}
		if resp.OK == (resp.Error != nil) || (resp.Error != nil && resp.Error.Code == "") {
			t.Fatalf("accepted an ill-formed response: %+v", resp)
		}
		if resp.OK {
			var st Stats
			_ = json.Unmarshal(resp.Result, &st) // may fail, must not panic
		}
	})
}

// FuzzProfileReply feeds arbitrary bytes to the decoding of profile.cpu's
// result: it may refuse them, never panic, and what it accepts is a
// gzipped profile within MaxProfileBytes and a duration in range.
func FuzzProfileReply(f *testing.F) {
	f.Add([]byte(`{"duration_ns":1000000000,"pprof":"H4sIAAAAAAAA/w=="}`))
	f.Add([]byte(`{"duration_ns":5,"pprof":"H4s="}`))
	f.Add([]byte(`{"duration_ns":1000000000,"pprof":"AAAA"}`))
	f.Add([]byte(`{"pprof":null}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeCPUProfile(b)
		if err != nil {
			return
		}
		if len(p.Pprof) > MaxProfileBytes || len(p.Pprof) < 2 || p.Pprof[0] != 0x1f || p.DurationNs < int64(MinProfile) {
			t.Fatalf("accepted %d bytes of profile over %v", len(p.Pprof), p.DurationNs)
		}
	})
}
