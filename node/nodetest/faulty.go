package nodetest

import (
	"errors"
	"sync"

	"github.com/stepraft/stepraft/core"
	"github.com/stepraft/stepraft/node"
)

// ErrInjected is what FaultyStore returns for the failures it injects.
var ErrInjected = errors.New("nodetest: injected failure")

// FaultyStore is a node.LogStore that fails on demand, to test the
// fail-stop path: a node whose write or fsync fails must stop and say why.
type FaultyStore struct {
	node.LogStore

	mu        sync.Mutex
	failWrite bool // the next Save writes nothing and fails
	failSync  bool // the next Save that must sync writes, then fails
	saves     int
}

// NewFaultyStore wraps s.
func NewFaultyStore(s node.LogStore) *FaultyStore { return &FaultyStore{LogStore: s} }

// FailNextWrite makes the next Save fail without writing.
func (f *FaultyStore) FailNextWrite() {
	f.mu.Lock()
	f.failWrite = true
	f.mu.Unlock()
}

// FailNextSync makes the next Save that must be durable write and then
// fail, as a failed fsync does (the data may or may not be on disk).
func (f *FaultyStore) FailNextSync() {
	f.mu.Lock()
	f.failSync = true
	f.mu.Unlock()
}

// Saves is the number of Save calls so far.
func (f *FaultyStore) Saves() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.saves
}

// Save implements node.LogStore.
func (f *FaultyStore) Save(rd core.Ready) error {
	f.mu.Lock()
	f.saves++
	failWrite := f.failWrite
	failSync := f.failSync && rd.MustSync
	if failWrite {
		f.failWrite = false
	}
	if failSync {
		f.failSync = false
	}
	f.mu.Unlock()
	if failWrite {
		return ErrInjected
	}
	if err := f.LogStore.Save(rd); err != nil {
		return err
	}
	if failSync {
		return ErrInjected
	}
	return nil
}
