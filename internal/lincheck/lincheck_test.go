package lincheck

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

func TestByKey(t *testing.T) {
	h := []porcupine.Operation{{Input: "b1"}, {Input: "a1"}, {Input: "b2"}, {Input: "c1"}, {Input: "a2"}}
	parts := ByKey(func(in any) string { return in.(string)[:1] })(h)
	want := [][]string{{"b1", "b2"}, {"a1", "a2"}, {"c1"}}
	if len(parts) != len(want) {
		t.Fatalf("%d parts, want %d", len(parts), len(want))
	}
	for i, p := range parts {
		if len(p) != len(want[i]) {
			t.Fatalf("part %d: %d operations, want %d", i, len(p), len(want[i]))
		}
		for j, op := range p {
			if op.Input != want[i][j] {
				t.Fatalf("part %d[%d] = %v, want %s", i, j, op.Input, want[i][j])
			}
		}
	}
}
