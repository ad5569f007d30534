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
