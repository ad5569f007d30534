package fusefs

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"syscall"

	"github.com/claudefs/claudefs/controlplane/meta"
)

// aclAccessXattr is the extended attribute a POSIX access ACL is set
// through (setfacl, cp -a, tar --acls), in Linux's posix_acl_xattr format.
const aclAccessXattr = "system.posix_acl_access"

// POSIX ACL entry tags (linux/posix_acl.h).
const (
	aclUserObj  = 0x01
	aclUser     = 0x02
	aclGroupObj = 0x04
	aclGroup    = 0x08
	aclMask     = 0x10
	aclOther    = 0x20
)

// maxACLEntries bounds an ACL's entries (the value's size is bounded by
// meta.MaxXattrValueBytes too).
const maxACLEntries = 1024

// parseAccessACL reads an access ACL in posix_acl_xattr format (a 4-byte
// version 2, then 8-byte entries: tag, permissions, id, little-endian) and
// returns the permission bits it implies (owner, group or mask, other) and
// whether it says more than those bits can (named users or groups).
func parseAccessACL(b []byte) (perm uint32, extended bool, err error) {
	if len(b) < 4 || binary.LittleEndian.Uint32(b) != 2 {
		return 0, false, errors.New("not a version 2 POSIX ACL")
	}
	b = b[4:]
	if len(b)%8 != 0 || len(b)/8 > maxACLEntries {
		return 0, false, fmt.Errorf("ACL of %d bytes of entries: not whole 8-byte entries, or more than %d", len(b), maxACLEntries)
	}
	var seen [0x21]int
	var user, group, mask, other uint32
	for ; len(b) > 0; b = b[8:] {
		tag, p := binary.LittleEndian.Uint16(b), uint32(binary.LittleEndian.Uint16(b[2:]))
		if p&^7 != 0 {
			return 0, false, fmt.Errorf("ACL entry permissions %#o", p)
		}
		switch tag {
		case aclUserObj:
			user = p
		case aclGroupObj:
			group = p
		case aclMask:
			mask = p
		case aclOther:
			other = p
		case aclUser, aclGroup:
		default:
			return 0, false, fmt.Errorf("ACL entry tag %#x", tag)
		}
		seen[tag]++
	}
	if seen[aclUserObj] != 1 || seen[aclGroupObj] != 1 || seen[aclOther] != 1 || seen[aclMask] > 1 {
		return 0, false, errors.New("ACL without exactly one owner, group and other entry")
	}
	named := seen[aclUser]+seen[aclGroup] > 0
	if named && seen[aclMask] == 0 {
		return 0, false, errors.New("ACL with named entries and no mask")
	}
	if seen[aclMask] == 1 {
		group = mask // with a mask, the group bits are the mask's
	}
	return user<<6 | group<<3 | other, named || seen[aclMask] == 1, nil
}

// setAccessACL sets n's access ACL as Linux file systems do
// (posix_acl_update_mode): the mode's permission bits become the ACL's
// owner, group (or mask) and other permissions; an ACL that says no more
// than those bits (a minimal one, what cp -a sets on every file) is not
// stored — a stored one is removed — and reads back as absent (getfacl
// shows it from the mode); an extended one is stored too. Permission is
// checked by the kernel (default_permissions: the owner or CAP_FOWNER).
// The kernel does not enforce stored ACLs on this mount (no FUSE ACL
// support asked for): access follows the mode bits.
func (n *node) setAccessACL(ctx context.Context, value []byte) error {
	perm, extended, err := parseAccessACL(value)
	if err != nil {
		n.fs.logf("setxattr %s: %v", aclAccessXattr, err)
		return syscall.EINVAL
	}
	var cur meta.Inode
	if of := n.fs.opened(n.ino); of != nil {
		cur = n.fs.openAttr(of)
	} else if cur, err = n.fs.mc.GetAttr(ctx, n.ino); err != nil {
		return err
	}
	mode := meta.SetAttr{Mask: meta.AttrMode, Mode: cur.Mode&0o7000 | perm}
	if extended {
		n.fs.xattrsChanged(n.ino)
		if err := n.fs.mc.SetXattr(ctx, n.ino, aclAccessXattr, value, 0); err != nil {
			return err
		}
	}
	if _, err := n.setattr(ctx, mode); err != nil || extended || n.fs.knownNoXattrs(n.ino) {
		return err // stored; or minimal, with none stored to remove
	}
	if err := n.fs.mc.RemoveXattr(ctx, n.ino, aclAccessXattr); err != nil && !errors.Is(err, syscall.ENODATA) {
		return err
	}
	return nil
}
