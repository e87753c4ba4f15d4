// Package lincheck holds what the linearizability tests (the node
// simulator, the kvstore process tests) share around porcupine. It is for
// tests only: no library package imports it.
package lincheck

import "github.com/anishathalye/porcupine"

// ByKey returns a porcupine Partition function that checks the operations
// of each key apart, key giving an operation's key from its input. The
// parts come in the order their keys first appear.
func ByKey(key func(input any) string) func([]porcupine.Operation) [][]porcupine.Operation {
	return func(h []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range h {
			k := key(op.Input)
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	}
}
