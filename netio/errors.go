package netio

import (
	"encoding/binary"
	"errors"
	"strconv"
)

// Protocol-level error codes carried by error replies. Codes from
// CodeFirstUser up are the dataplane's.
const (
	CodeInternal      uint16 = 1
	CodeUnknownOpcode uint16 = 2
	CodeBadPayloadCRC uint16 = 3
	CodeBadFlags      uint16 = 4
	CodeTooLarge      uint16 = 5
	CodeShuttingDown  uint16 = 6
	CodeFirstUser     uint16 = 256
)

// RemoteError is an error reply from the server: the request reached it
// and was refused or failed there.
type RemoteError struct {
	Code    uint16
	Message string
}

func (e *RemoteError) Error() string {
	return "netio: remote error " + strconv.Itoa(int(e.Code)) + ": " + e.Message
}

// AppendErrorPayload appends the payload of an error reply to dst.
func AppendErrorPayload(dst []byte, code uint16, msg string) []byte {
	dst = binary.LittleEndian.AppendUint16(dst, code)
	return append(dst, msg...)
}

// ParseErrorPayload decodes an error reply's payload.
func ParseErrorPayload(p []byte) *RemoteError {
	if len(p) < 2 {
		return &RemoteError{Code: CodeInternal, Message: "malformed error reply"}
	}
	return &RemoteError{Code: binary.LittleEndian.Uint16(p), Message: string(p[2:])}
}

// Client-side errors.
var (
	// ErrConnBroken is returned when the connection carrying a call failed
	// before its response arrived (the call may or may not have run).
	ErrConnBroken = errors.New("netio: connection broken")
	// ErrAttemptTimeout is returned when an attempt outlived
	// ClientOptions.AttemptTimeout (the call may or may not have run).
	ErrAttemptTimeout = errors.New("netio: attempt timed out")
	ErrClientClosed   = errors.New("netio: client closed")
	ErrServerClosed   = errors.New("netio: server stopped")
	ErrPayloadTooBig  = errors.New("netio: payload larger than the maximum")
)
