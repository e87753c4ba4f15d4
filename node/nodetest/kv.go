package nodetest

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
)

// KV is a small key-value state machine for tests: a command is
// EncodePut(key, value) and returns the index it was applied at; a query
// is a key and returns its value (nil when absent). It records every
// index it applied, so tests can compare members.
type KV struct {
	mu      sync.Mutex
	data    map[string]string
	applied uint64
	log     []uint64 // indexes applied since the last Restore
	// restored is the index of the last snapshot restored.
	restored uint64
}

// NewKV returns an empty KV.
func NewKV() *KV { return &KV{data: make(map[string]string)} }

// EncodePut encodes a put of value at key.
func EncodePut(key, value string) []byte {
	b := binary.AppendUvarint(nil, uint64(len(key)))
	b = append(b, key...)
	return append(b, value...)
}

func decodePut(cmd []byte) (string, string, error) {
	n, k := binary.Uvarint(cmd)
	if k <= 0 || n > uint64(len(cmd)-k) {
		return "", "", errors.New("bad put")
	}
	return string(cmd[k : k+int(n)]), string(cmd[k+int(n):]), nil
}

// Apply implements node.StateMachine.
func (s *KV) Apply(index uint64, cmd []byte) any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if index <= s.applied {
		return index
	}
	k, v, err := decodePut(cmd)
	if err != nil {
		return err
	}
	s.data[k] = v
	s.applied = index
	s.log = append(s.log, index)
	return index
}

// Query implements node.StateMachine.
func (s *KV) Query(q []byte) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[string(q)]
	if !ok {
		return nil, nil
	}
	return v, nil
}

// Snapshot implements node.StateMachine: it copies the map, and the write
// function encodes the copy.
func (s *KV) Snapshot() (func(io.Writer) error, error) {
	s.mu.Lock()
	data := maps.Clone(s.data)
	s.mu.Unlock()
	return func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		keys := slices.Sorted(maps.Keys(data))
		var b []byte
		for _, k := range keys {
			b = binary.AppendUvarint(b[:0], uint64(len(k)))
			b = append(b, k...)
			b = binary.AppendUvarint(b, uint64(len(data[k])))
			b = append(b, data[k]...)
			if _, err := bw.Write(b); err != nil {
				return err
			}
		}
		return bw.Flush()
	}, nil
}

// Restore implements node.StateMachine.
func (s *KV) Restore(index uint64, r io.Reader) error {
	br := bufio.NewReader(r)
	data := make(map[string]string)
	for {
		k, err := readString(br)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		v, err := readString(br)
		if err != nil {
			return fmt.Errorf("value of %q: %w", k, err)
		}
		data[k] = v
	}
	s.mu.Lock()
	s.data, s.applied, s.log, s.restored = data, index, nil, index
	s.mu.Unlock()
	return nil
}

func readString(br *bufio.Reader) (string, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return "", err
	}
	if n > 1<<20 {
		return "", errors.New("string too long")
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return "", io.ErrUnexpectedEOF
	}
	return string(b), nil
}

// Get returns the value at key.
func (s *KV) Get(key string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[key]
	return v, ok
}

// Len is the number of keys.
func (s *KV) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.data)
}

// Data returns a copy of the map.
func (s *KV) Data() map[string]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.data)
}

// RestoredAt is the index of the last snapshot restored (0 if none).
func (s *KV) RestoredAt() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.restored
}
