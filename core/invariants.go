package core

import "fmt"

// panicf reports a broken invariant of core itself: a bug, never bad
// input. Arguments are formatted only when it fires.
func panicf(format string, args ...any) {
	panic(fmt.Sprintf("core: invariant broken: "+format, args...))
}

// CheckInvariants verifies what must hold of a node between calls, for
// simulations and tests to run after every step. It returns the first
// violation found.
func (r *Raft) CheckInvariants() error {
	l := r.log
	switch {
	case l.applied > l.committed:
		return fmt.Errorf("node %d: applied %d > committed %d", r.id, l.applied, l.committed)
	case l.applying < l.applied:
		return fmt.Errorf("node %d: applying %d < applied %d", r.id, l.applying, l.applied)
	case l.committed > l.lastIndex():
		return fmt.Errorf("node %d: committed %d > last index %d", r.id, l.committed, l.lastIndex())
	case l.firstIndex() > l.lastIndex()+1:
		return fmt.Errorf("node %d: first index %d > last index %d + 1", r.id, l.firstIndex(), l.lastIndex())
	case r.role == RoleLeader && r.lead != r.id:
		return fmt.Errorf("node %d: leader with lead %d", r.id, r.lead)
	case r.role == RoleCandidate && r.Vote != r.id:
		return fmt.Errorf("node %d: candidate voted for %d", r.id, r.Vote)
	}
	for id, pr := range r.progress {
		if r.role == RoleLeader && pr.Match >= pr.Next {
			return fmt.Errorf("node %d: progress of %d has match %d >= next %d", r.id, id, pr.Match, pr.Next)
		}
	}
	return nil
}
