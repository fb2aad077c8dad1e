package securechan

// ReplayWindow is the number of most recent counters a datagram session
// remembers. Datagram transports (UDP, unixgram) may reorder and duplicate;
// 2048 frames of reordering is far more than a host-local or
// top-of-rack path produces, and costs 264 bytes per live epoch.
const ReplayWindow = 2048

// windowWords holds one word more than ReplayWindow needs: the word of the
// highest counter is only partly inside the window, and without the spare
// word the oldest counters in the window would share a slot with the newest.
const windowWords = ReplayWindow/64 + 1

// replayWindow accepts each counter at most once. On a stream transport it
// accepts only the next counter (a stream neither drops nor reorders, so any
// gap is an attack); on a datagram transport it accepts any counter not seen
// before that is no older than ReplayWindow behind the highest seen.
//
// check and accept are split so that a frame is checked before the costly
// authentication and the window changes only after it succeeded: a forged
// frame never moves the window.
type replayWindow struct {
	stream bool
	next   uint64 // lowest counter never accepted; the highest accepted is next-1
	bits   [windowWords]uint64
}

func (w *replayWindow) check(c uint64) error {
	if w.stream {
		switch {
		case c < w.next:
			return ErrReplay
		case c > w.next:
			return ErrReorder
		}
		return nil
	}
	if c >= w.next {
		return nil
	}
	if w.next-c > ReplayWindow {
		return ErrReplay
	}
	if w.bits[(c/64)%windowWords]&(1<<(c%64)) != 0 {
		return ErrReplay
	}
	return nil
}

// accept records c, which check has accepted.
func (w *replayWindow) accept(c uint64) {
	if w.stream {
		w.next = c + 1
		return
	}
	if c >= w.next {
		// Clear the words the window slides over. Counters between the
		// old and the new head were never seen.
		oldWord, newWord := w.next/64, c/64
		if newWord-oldWord >= windowWords {
			w.bits = [windowWords]uint64{}
		} else {
			for i := oldWord + 1; i <= newWord; i++ {
				w.bits[i%windowWords] = 0
			}
		}
		w.next = c + 1
	}
	w.bits[(c/64)%windowWords] |= 1 << (c % 64)
}
