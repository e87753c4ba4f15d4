// Package wal will hold stepraft's durable raft log and hard state, built
// on github.com/tidwall/wal with per-record CRC32C checks, torn-tail repair
// and a configurable fsync policy (see DESIGN.md). It is not written yet.
package wal
