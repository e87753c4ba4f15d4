// Package transport will carry core.Message between nodes: the Transport
// interface, a TCP implementation with bounded msgpack frames, and an
// in-memory one with fault injection (see DESIGN.md). It is not written yet.
package transport
