package wal

import "testing"

func TestParseSyncPolicy(t *testing.T) {
	for s, want := range map[string]SyncPolicy{"each": SyncEachBatch, "each-batch": SyncEachBatch, "interval": SyncInterval, "never": SyncNever} {
		if got, err := ParseSyncPolicy(s); err != nil || got != want {
			t.Errorf("ParseSyncPolicy(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, p := range []SyncPolicy{SyncEachBatch, SyncInterval, SyncNever} {
		if got, err := ParseSyncPolicy(p.String()); err != nil || got != p {
			t.Errorf("ParseSyncPolicy(%v.String()) = %v, %v", p, got, err)
		}
	}
	for _, s := range []string{"", "always", "Each"} {
		if _, err := ParseSyncPolicy(s); err == nil {
			t.Errorf("ParseSyncPolicy(%q) accepted", s)
		}
	}
}
