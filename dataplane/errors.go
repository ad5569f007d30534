package dataplane

import (
	"errors"
	"strconv"

	"github.com/claudefs/claudefs/netio"
	"github.com/claudefs/claudefs/nvme/chunkstore"
)

// Errors of the dataplane itself. A client's errors match them, and the
// chunk store's sentinels, with errors.Is (see Error).
var (
	ErrStaleEpoch = errors.New("stale placement epoch")
	ErrBusy       = errors.New("dataplane busy")
	ErrBadRequest = errBadRequest
)

// Error is an error reply from a dataplane, as a Client returns it. It
// matches, with errors.Is, the sentinel its code stands for:
// chunkstore.ErrNotFound, ErrStaleVersion, ErrNoSpace, ErrClosed,
// chunkstore.ErrCorrupt (so chunkstore.IsCorrupt holds), ErrStaleEpoch,
// ErrBusy or ErrBadRequest.
type Error struct {
	Code    uint16
	Message string
}

func (e *Error) Error() string {
	return "dataplane: " + e.Message + " (code " + strconv.Itoa(int(e.Code)) + ")"
}

// Is reports whether target is the sentinel of e's code.
func (e *Error) Is(target error) bool {
	s := sentinel(e.Code)
	return s != nil && s == target
}

func sentinel(code uint16) error {
	switch code {
	case CodeNotFound:
		return chunkstore.ErrNotFound
	case CodeStaleVersion:
		return chunkstore.ErrStaleVersion
	case CodeStaleEpoch:
		return ErrStaleEpoch
	case CodeNoSpace:
		return chunkstore.ErrNoSpace
	case CodeCorrupt:
		return chunkstore.ErrCorrupt
	case CodeClosed:
		return chunkstore.ErrClosed
	case CodeBadRequest:
		return ErrBadRequest
	case CodeBusy:
		return ErrBusy
	}
	return nil
}

// codeOf maps a store (or decoding) error to its error-reply code.
func codeOf(err error) uint16 {
	switch {
	case errors.Is(err, chunkstore.ErrNotFound):
		return CodeNotFound
	case errors.Is(err, chunkstore.ErrStaleVersion):
		return CodeStaleVersion
	case errors.Is(err, ErrStaleEpoch):
		return CodeStaleEpoch
	case errors.Is(err, chunkstore.ErrQueueFull):
		return CodeBusy // the core holds nvme.queue_depth requests already
	case errors.Is(err, chunkstore.ErrNoSpace):
		return CodeNoSpace
	case chunkstore.IsCorrupt(err):
		return CodeCorrupt
	case errors.Is(err, chunkstore.ErrClosed):
		return CodeClosed
	case errors.Is(err, errBadRequest), errors.Is(err, chunkstore.ErrTooLarge), errors.Is(err, chunkstore.ErrEmpty):
		return CodeBadRequest
	}
	return CodeStoreError
}

// fromRemote turns a netio error reply with a dataplane code into *Error;
// other errors pass through.
func fromRemote(err error) error {
	if err == nil {
		return nil // before errors.As, whose target would cost an allocation
	}
	var re *netio.RemoteError
	if errors.As(err, &re) && re.Code >= netio.CodeFirstUser {
		return &Error{Code: re.Code, Message: re.Message}
	}
	return err
}
