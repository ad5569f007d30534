package chunkstore

// Segment cleaning. When a partition runs low on free segments it picks the
// used segment with the fewest live bytes, reads each record still live in
// it and appends it again (same version and stamp) through the ordinary
// write combiner, a few at a time so callers' I/O keeps flowing. When the
// last relocation is durable the segment has no references left and is
// free. A record whose checksum fails is left where it is (reads of it keep
// reporting the corruption) and the segment is skipped from then on.

const (
	// relocInFlight bounds relocations being read or written at once.
	relocInFlight = 16
	// cleanLowWater starts cleaning when this few segments are free
	// (beyond the reserve).
	cleanLowWater = 2
)

type cleanState struct {
	active   bool
	victim   int
	ids      []ID // live records of the victim still to relocate
	next     int
	inflight int
	failed   int
	skip     map[int]bool // segments holding unreadable records
	pool     []*request
}

// holds reports whether segment i is the one being cleaned.
func (c *cleanState) holds(i int) bool { return c.active && c.victim == i }

func (p *partition) cleanStep() {
	c := &p.clean
	if !c.active {
		if len(p.free) > reserveSegments+cleanLowWater || p.closing != nil || !p.pickVictim() {
			return
		}
	}
	if p.closing != nil {
		c.next = len(c.ids) // closing: finish what is in flight, start nothing new
	}
	for c.next < len(c.ids) && c.inflight < relocInFlight {
		id := c.ids[c.next]
		c.next++
		e, ok := p.index[id]
		if !ok || p.segOf(e.crcLoc) != c.victim {
			continue // rewritten or deleted since the scan
		}
		r := p.relocReq()
		r.id, r.version, r.ent = id, e.version, e
		c.inflight++
		if e.tomb {
			p.queueReloc(r)
		} else {
			p.startGet(r)
		}
	}
	if c.next == len(c.ids) && c.inflight == 0 {
		v := c.victim
		c.active = false
		c.ids = c.ids[:0]
		switch {
		case p.closing != nil:
			// Cut short by close; the segment is picked again later.
		case c.failed > 0 || p.segs[v].live > 0:
			if c.skip == nil {
				c.skip = make(map[int]bool)
			}
			c.skip[v] = true
			p.logf("chunkstore: partition %d: segment %d keeps %d records that could not be moved; it will not be cleaned again", p.idx, v, p.segs[v].live)
		default:
			p.stats.SegmentsCleaned++
		}
		p.maybeFree(v)
	}
}

// pickVictim chooses the used segment with the fewest live bytes, if it
// would give back at least a tenth of a segment.
func (p *partition) pickVictim() bool {
	c := &p.clean
	best, bestLive := -1, int64(p.s.sb.SegmentSize)*9/10
	for i := range p.segs {
		sg := &p.segs[i]
		if sg.state != segUsed || c.skip[i] {
			continue
		}
		if sg.liveBytes < bestLive {
			best, bestLive = i, sg.liveBytes
		}
	}
	if best < 0 {
		return false
	}
	c.active, c.victim, c.next, c.failed = true, best, 0, 0
	c.ids = c.ids[:0]
	for id, e := range p.index {
		if p.segOf(e.crcLoc) == best {
			c.ids = append(c.ids, id)
		}
	}
	return true
}

func (p *partition) relocReq() *request {
	c := &p.clean
	if n := len(c.pool); n > 0 {
		r := c.pool[n-1]
		c.pool = c.pool[:n-1]
		return r
	}
	return &request{kind: opReloc, crcBuf: -1}
}

// relocRead continues a relocation once its data has been read and checked.
func (p *partition) relocRead(r *request) {
	if r.err != nil {
		p.logf("chunkstore: partition %d: cleaning: cannot move chunk %v: %v", p.idx, r.id, r.err)
		p.clean.failed++
		p.releaseRead(r)
		p.relocDone(r, false)
		return
	}
	p.queueReloc(r)
}

// queueReloc adds a relocation to the open batch, or queues it behind the
// writes waiting for room.
func (p *partition) queueReloc(r *request) {
	if !p.waitPut.empty() || !p.cur.fits(reqLen(r)) {
		p.waitPut.push(r)
		return
	}
	p.addRecord(r)
}

// relocDone ends a relocation, written or not.
func (p *partition) relocDone(r *request, applied bool) {
	if applied {
		p.stats.Relocated++
	}
	p.clean.inflight--
	*r = request{kind: opReloc, crcBuf: -1}
	p.clean.pool = append(p.clean.pool, r)
}
