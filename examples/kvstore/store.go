package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
)

// Commands the store applies: an op byte, then length-prefixed fields.
const (
	opPut        = 'p' // key, value
	opDelete     = 'd' // key
	opSetHTTP    = 'h' // member ID, its HTTP address
	opForgetHTTP = 'f' // member ID
)

// Limits of the HTTP API, checked before anything is proposed.
const (
	maxKeyBytes   = 1 << 10
	maxValueBytes = 1 << 20
)

// store is the replicated state: the key-value map, and the HTTP address
// of each member (so that any member can tell where the others serve).
type store struct {
	mu   sync.Mutex
	data map[string][]byte
	http map[uint64]string
}

func newStore() *store {
	return &store{data: make(map[string][]byte), http: make(map[uint64]string)}
}

func appendField(b, f []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(f)))
	return append(b, f...)
}

func encodePut(key string, value []byte) []byte {
	return appendField(appendField([]byte{opPut}, []byte(key)), value)
}

func encodeDelete(key string) []byte { return appendField([]byte{opDelete}, []byte(key)) }

func encodeSetHTTP(id uint64, addr string) []byte {
	return appendField(binary.AppendUvarint([]byte{opSetHTTP}, id), []byte(addr))
}

func encodeForgetHTTP(id uint64) []byte { return binary.AppendUvarint([]byte{opForgetHTTP}, id) }

// fields splits b into length-prefixed fields.
func field(b []byte) ([]byte, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, errors.New("kvstore: malformed command")
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

// Apply implements node.StateMachine. A malformed command changes nothing
// and returns an error (a command comes only from this program).
func (s *store) Apply(index uint64, cmd []byte) any {
	if len(cmd) == 0 {
		return errors.New("kvstore: empty command")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch op, rest := cmd[0], cmd[1:]; op {
	case opPut:
		k, rest, err := field(rest)
		if err != nil {
			return err
		}
		v, _, err := field(rest)
		if err != nil {
			return err
		}
		s.data[string(k)] = bytes.Clone(v)
	case opDelete:
		k, _, err := field(rest)
		if err != nil {
			return err
		}
		delete(s.data, string(k))
	case opSetHTTP:
		id, n := binary.Uvarint(rest)
		if n <= 0 {
			return errors.New("kvstore: malformed command")
		}
		a, _, err := field(rest[n:])
		if err != nil {
			return err
		}
		s.http[id] = string(a)
	case opForgetHTTP:
		id, n := binary.Uvarint(rest)
		if n <= 0 {
			return errors.New("kvstore: malformed command")
		}
		delete(s.http, id)
	default:
		return fmt.Errorf("kvstore: unknown command %q", op)
	}
	return nil
}

// Query implements node.StateMachine: the query is a key; the answer its
// value, or nil when absent.
func (s *store) Query(q []byte) (any, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.data[string(q)]
	if !ok {
		return nil, nil
	}
	return v, nil
}

func (s *store) httpAddrs() map[uint64]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.http)
}

// Snapshot implements node.StateMachine in two phases: a shallow copy of
// the maps under the lock (values are never modified in place), then the
// encoding, which may run while Apply goes on.
func (s *store) Snapshot() (func(io.Writer) error, error) {
	s.mu.Lock()
	data, addrs := maps.Clone(s.data), maps.Clone(s.http)
	s.mu.Unlock()
	return func(w io.Writer) error {
		bw := bufio.NewWriterSize(w, 64<<10)
		var b []byte
		b = binary.AppendUvarint(b, uint64(len(addrs)))
		for _, id := range slices.Sorted(maps.Keys(addrs)) {
			b = binary.AppendUvarint(b, id)
			b = appendField(b, []byte(addrs[id]))
		}
		b = binary.AppendUvarint(b, uint64(len(data)))
		if _, err := bw.Write(b); err != nil {
			return err
		}
		for _, k := range slices.Sorted(maps.Keys(data)) {
			b = appendField(appendField(b[:0], []byte(k)), data[k])
			if _, err := bw.Write(b); err != nil {
				return err
			}
		}
		return bw.Flush()
	}, nil
}

// Restore implements node.StateMachine.
func (s *store) Restore(index uint64, r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return fmt.Errorf("kvstore: restore: %w", err)
	}
	addrs := make(map[uint64]string)
	for range n {
		id, err := binary.ReadUvarint(br)
		if err != nil {
			return fmt.Errorf("kvstore: restore: %w", err)
		}
		a, err := readField(br, maxKeyBytes)
		if err != nil {
			return err
		}
		addrs[id] = string(a)
	}
	if n, err = binary.ReadUvarint(br); err != nil {
		return fmt.Errorf("kvstore: restore: %w", err)
	}
	data := make(map[string][]byte)
	for range n {
		k, err := readField(br, maxKeyBytes)
		if err != nil {
			return err
		}
		v, err := readField(br, maxValueBytes)
		if err != nil {
			return err
		}
		data[string(k)] = v
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return errors.New("kvstore: restore: trailing bytes")
	}
	s.mu.Lock()
	s.data, s.http = data, addrs
	s.mu.Unlock()
	return nil
}

func readField(br *bufio.Reader, max uint64) ([]byte, error) {
	n, err := binary.ReadUvarint(br)
	if err != nil {
		return nil, fmt.Errorf("kvstore: restore: %w", err)
	}
	if n > max {
		return nil, fmt.Errorf("kvstore: restore: field of %d bytes", n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(br, b); err != nil {
		return nil, fmt.Errorf("kvstore: restore: %w", err)
	}
	return b, nil
}
