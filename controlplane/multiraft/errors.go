package multiraft

import (
	"errors"
	"fmt"
)

// NotLeaderError says this node is not the group's leader; the command was
// not applied and may be sent to LeaderAddr (empty while an election runs).
type NotLeaderError struct {
	Group      uint32
	LeaderID   string
	LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	if e.LeaderAddr == "" {
		return fmt.Sprintf("multiraft: group %d: not the leader, and no leader is known yet", e.Group)
	}
	return fmt.Sprintf("multiraft: group %d: not the leader; the leader is %s at %s", e.Group, e.LeaderID, e.LeaderAddr)
}

// NoGroupError says the node does not run the group.
type NoGroupError struct {
	Group uint32
	Node  string
}

func (e *NoGroupError) Error() string {
	return fmt.Sprintf("multiraft: group %d does not run on node %s", e.Group, e.Node)
}

var (
	// ErrOutcomeUnknown: leadership was lost (or the wait was abandoned)
	// while a command was in flight; it may or may not have been applied.
	// Retrying is only safe for idempotent or conditional commands.
	ErrOutcomeUnknown = errors.New("multiraft: outcome unknown: the command may or may not have been applied")
	// ErrClosed: the host or group is closed.
	ErrClosed = errors.New("multiraft: closed")
	// ErrTooLarge: a command over Config.MaxCommandBytes.
	ErrTooLarge = errors.New("multiraft: command too large")
)
