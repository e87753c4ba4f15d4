// Package transport carries core.Message between nodes.
//
// So far it holds only the wire codec (wire.go): length-prefixed frames
// (uint32 length | uint8 wire version | one msgpack value) and a
// hand-written, bounded msgpack encoding of core.Message whose decoder
// checks every declared length against the bytes it was given before
// allocating. The Transport interface, the TCP transport and the in-memory
// one described in DESIGN.md are not written yet.
package transport
