package chunkstore

// crashForTest stops every partition without writing the final checkpoint,
// so the next Open must replay the log, as after a crash.
func (s *Store) crashForTest() {
	s.closeOnce.Do(func() {
		for _, p := range s.parts {
			p.call(&request{kind: opClose, abandon: true, done: make(chan struct{}, 1)})
		}
		s.dev.Close()
	})
}

// maxSentForTest reads partition 0's largest submit so far, on its
// goroutine (from a read's callback), and the chunk id it read.
func maxSentForTest(s *Store, id ID) (int, error) {
	p := s.parts[0]
	var n int
	done := make(chan struct{})
	err := s.GetRefAsync(id, 0, 1, func(ref ReadRef, err error) {
		n = p.maxSent
		ref.Release()
		close(done)
	})
	if err != nil {
		return 0, err
	}
	<-done
	return n, nil
}

// resetMaxSentForTest zeroes partition 0's largest submit, on its goroutine.
func resetMaxSentForTest(s *Store) {
	p := s.parts[0]
	done := make(chan struct{})
	if err := s.GetRefAsync(ID{Lo: 1}, 0, 1, func(ref ReadRef, err error) {
		p.maxSent = 0
		ref.Release()
		close(done)
	}); err != nil {
		panic(err)
	}
	<-done
}
